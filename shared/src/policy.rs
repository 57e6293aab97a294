//! Who may do what: the role rules every server applies, on top of room membership.
//!
//! A token names a user, a role and the rooms the user belongs to. Membership is the
//! first gate for every room action (send, history, read, typing, join); the role rules
//! here are the second. The defaults follow what a health network expects:
//!
//! | action | worker | doctor | supervisor | admin |
//! | --- | --- | --- | --- | --- |
//! | send (normal/urgent/bulk) | yes | yes | yes | no |
//! | send `emergency` | yes | yes | yes | no |
//! | read a room's history | yes | yes | yes | no |
//! | typing, read receipts, join/leave | yes | yes | yes | no |
//! | read the audit log | no | no | no | yes |
//!
//! `admin` is an operator's role: it sees the audit log and the status of the system, not
//! the health data in rooms (an admin token may still list rooms, but no room action is
//! allowed for it). Each rule is configurable (`[policy]` in the configuration), and
//! `emergency_rooms`, when not empty, restricts emergencies to those rooms (e.g. an
//! `alerts` room watched by the hospital) — still only for members.

use serde::{Deserialize, Serialize};

use crate::ids::{Priority, RoomId};
use crate::token::{Claims, Role};

/// A room action a device asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Send {
        room: &'a RoomId,
        priority: Priority,
    },
    History {
        room: &'a RoomId,
    },
    /// `read`, `typing`, `join`, `leave`: taking part in a room without writing to its log.
    Participate {
        room: &'a RoomId,
    },
}

impl Action<'_> {
    pub fn room(&self) -> &RoomId {
        match self {
            Self::Send { room, .. } | Self::History { room } | Self::Participate { room } => room,
        }
    }
}

/// Why an action was refused; `Display` is the sentence the device sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("you are not a member of room {0}")]
    NotMember(RoomId),
    #[error("a token with role {role} may not {what}; ask for a token with another role")]
    Role { role: &'static str, what: &'static str },
    #[error("emergencies may be raised only in {allowed}; send this one there")]
    EmergencyRoom { allowed: String },
}

/// The configurable role rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Roles that may send messages (any priority but `emergency`).
    pub send_roles: Vec<Role>,
    /// Roles that may raise an `emergency`.
    pub emergency_roles: Vec<Role>,
    /// When not empty, the only rooms where an emergency may be raised.
    pub emergency_rooms: Vec<RoomId>,
    /// Roles that may read a room's history (older messages than the device holds).
    pub history_roles: Vec<Role>,
    /// Roles that may send typing/read and join/leave rooms.
    pub participate_roles: Vec<Role>,
    /// Roles that may read the audit log.
    pub audit_roles: Vec<Role>,
    /// Rooms whose message bodies must be end-to-end encrypted (see [`crate::e2e`]): the
    /// server accepts only encrypted envelopes there and cannot read them.
    pub encrypted_rooms: Vec<RoomId>,
    /// Fields of a patient's record that are the doctor's (docs/workflows.md): there a
    /// doctor's edit wins over a concurrent one by anyone else. Set the same on the cloud
    /// and on every hub, or they show such a conflict differently.
    pub record_doctor_fields: Vec<String>,
}

const MEMBERS: [Role; 3] = [Role::Worker, Role::Doctor, Role::Supervisor];

impl Default for Policy {
    fn default() -> Self {
        Self {
            send_roles: MEMBERS.to_vec(),
            emergency_roles: MEMBERS.to_vec(),
            emergency_rooms: Vec::new(),
            history_roles: MEMBERS.to_vec(),
            participate_roles: MEMBERS.to_vec(),
            audit_roles: vec![Role::Admin],
            encrypted_rooms: Vec::new(),
            record_doctor_fields: vec!["problems".to_owned()],
        }
    }
}

impl Policy {
    /// Membership first, then the role rule for the action.
    pub fn check(&self, claims: &Claims, action: Action<'_>) -> Result<(), Denied> {
        let room = action.room();
        if !claims.may_use_room(room) {
            return Err(Denied::NotMember(room.clone()));
        }
        let role = claims.role;
        let deny = |what| Err(Denied::Role { role: role.as_str(), what });
        match action {
            Action::Send { priority: Priority::Emergency, room } => {
                if !self.emergency_roles.contains(&role) {
                    return deny("raise an emergency");
                }
                if !self.emergency_rooms.is_empty() && !self.emergency_rooms.contains(room) {
                    let allowed = self.emergency_rooms.iter().map(RoomId::as_str).collect::<Vec<_>>().join(", ");
                    return Err(Denied::EmergencyRoom { allowed });
                }
                Ok(())
            }
            Action::Send { .. } if !self.send_roles.contains(&role) => deny("send messages"),
            Action::History { .. } if !self.history_roles.contains(&role) => deny("read a room's history"),
            Action::Participate { .. } if !self.participate_roles.contains(&role) => deny("take part in rooms"),
            _ => Ok(()),
        }
    }

    /// Whether bodies in `room` must be end-to-end encrypted envelopes.
    pub fn is_encrypted(&self, room: &RoomId) -> bool {
        self.encrypted_rooms.contains(room)
    }

    /// Whether the token may read the audit log.
    pub fn may_read_audit(&self, claims: &Claims) -> bool {
        self.audit_roles.contains(&claims.role)
    }

    /// Whether the token may receive a room's messages at all (live or replayed): the
    /// roles that may read history or take part. An admin token receives nothing.
    pub fn may_receive(&self, claims: &Claims) -> bool {
        self.participate_roles.contains(&claims.role) || self.history_roles.contains(&claims.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(role: Role, rooms: &[&str]) -> Claims {
        Claims {
            sub: crate::UserId::new("u").unwrap_or_else(|e| panic!("{e}")),
            role,
            rooms: rooms.iter().map(|r| room(r)).collect(),
            exp: 10,
            iat: 1,
            iss: "c".into(),
            jti: "j".into(),
            lin: None,
            dlg: None,
            org: None,
        }
    }

    #[test]
    fn membership_gates_every_action_for_every_role() {
        let p = Policy::default();
        let other = room("b");
        for role in [Role::Worker, Role::Doctor, Role::Supervisor, Role::Admin] {
            let c = claims(role, &["a"]);
            for action in [
                Action::Send { room: &other, priority: Priority::Normal },
                Action::Send { room: &other, priority: Priority::Emergency },
                Action::History { room: &other },
                Action::Participate { room: &other },
            ] {
                assert_eq!(p.check(&c, action), Err(Denied::NotMember(other.clone())), "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn default_roles_match_the_documented_table() {
        let p = Policy::default();
        let a = room("a");
        for role in [Role::Worker, Role::Doctor, Role::Supervisor] {
            let c = claims(role, &["a"]);
            for priority in Priority::ALL {
                assert_eq!(p.check(&c, Action::Send { room: &a, priority }), Ok(()));
            }
            assert_eq!(p.check(&c, Action::History { room: &a }), Ok(()));
            assert_eq!(p.check(&c, Action::Participate { room: &a }), Ok(()));
            assert!(!p.may_read_audit(&c));
            assert!(p.may_receive(&c));
        }
        let admin = claims(Role::Admin, &["a"]);
        assert!(p.check(&admin, Action::Send { room: &a, priority: Priority::Normal }).is_err());
        assert!(p.check(&admin, Action::Send { room: &a, priority: Priority::Emergency }).is_err());
        assert!(p.check(&admin, Action::History { room: &a }).is_err());
        assert!(p.check(&admin, Action::Participate { room: &a }).is_err());
        assert!(p.may_read_audit(&admin));
        assert!(!p.may_receive(&admin));
    }

    #[test]
    fn emergency_rules_restrict_roles_and_rooms() {
        let p =
            Policy { emergency_roles: vec![Role::Doctor], emergency_rooms: vec![room("alerts")], ..Policy::default() };
        let (alerts, ward) = (room("alerts"), room("ward"));
        let worker = claims(Role::Worker, &["alerts", "ward"]);
        let doctor = claims(Role::Doctor, &["alerts", "ward"]);
        let emergency = |room| Action::Send { room, priority: Priority::Emergency };
        assert!(matches!(p.check(&worker, emergency(&alerts)), Err(Denied::Role { .. })));
        assert_eq!(p.check(&worker, Action::Send { room: &ward, priority: Priority::Urgent }), Ok(()));
        assert_eq!(p.check(&doctor, emergency(&alerts)), Ok(()));
        assert!(matches!(p.check(&doctor, emergency(&ward)), Err(Denied::EmergencyRoom { .. })));
    }

    #[test]
    fn denial_messages_say_what_to_do() {
        let p = Policy::default();
        let a = room("a");
        let e = p.check(&claims(Role::Admin, &["a"]), Action::History { room: &a }).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("a token with role admin may not read a room's history; ask for a token with another role")
        );
    }
}
