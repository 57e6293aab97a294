//! Token revocation: the cloud's list of tokens that must no longer be accepted.
//!
//! Tokens are verified offline, so a stolen phone's token would stay valid until it
//! expires. The cloud keeps a revocation list; it travels to every hub over the uplink
//! (and can be entered on a hub by hand when the uplink is down) and each server checks it
//! at `hello` and closes live sessions whose token it names. Two kinds of entry:
//!
//! - a single token, by its `jti` (a lost phone);
//! - a user, for every token issued up to a moment (`issued_before`, seconds): someone who
//!   left the programme; tokens issued to them later are valid again.
//!
//! A relay (hub) is revoked with a user entry for `relay/RELAY` (a name no user can have:
//! user ids never contain `/`, and hubs that predate relay entries store it harmlessly):
//! every delegation the cloud gave that relay up to the moment is void, with every token a
//! hub renewed under it, and the cloud gives that relay no delegation again.
//!
//! Entries are idempotent facts; applying the same list twice changes nothing, and
//! receiving them in any order gives the same result (a user entry keeps the latest
//! `issued_before`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::token::Claims;

/// The user-entry name that revokes a relay's delegations (see the module docs).
pub fn relay_entry(relay: &str) -> String {
    format!("relay/{relay}")
}

/// What an entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revoked {
    /// One token, by its `jti`.
    Token(String),
    /// Every token of this user issued at or before `issued_before` (seconds).
    User { user: String, issued_before: u64 },
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub what: Revoked,
    /// Why (shown in the audit log, never to the device).
    pub reason: String,
    /// When it was decided, milliseconds since the Unix epoch.
    pub at: u64,
}

impl Revocation {
    /// The key an entry is stored and merged under: `("token", jti)` or `("user", id)`.
    pub fn key(&self) -> (&'static str, &str) {
        match &self.what {
            Revoked::Token(jti) => ("token", jti),
            Revoked::User { user, .. } => ("user", user),
        }
    }

    /// `issued_before` of a user entry, 0 for a token entry.
    pub fn issued_before(&self) -> u64 {
        match self.what {
            Revoked::Token(_) => 0,
            Revoked::User { issued_before, .. } => issued_before,
        }
    }

    /// Rebuilds an entry from its stored key and `issued_before`.
    pub fn from_key(kind: &str, value: String, issued_before: u64, reason: String, at: u64) -> Option<Self> {
        let what = match kind {
            "token" => Revoked::Token(value),
            "user" => Revoked::User { user: value, issued_before },
            _ => return None,
        };
        Some(Self { what, reason, at })
    }
}

/// The list as a server checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    tokens: HashMap<String, Revocation>,
    users: HashMap<String, Revocation>,
}

impl RevocationList {
    pub fn new(entries: impl IntoIterator<Item = Revocation>) -> Self {
        let mut list = Self::default();
        for e in entries {
            list.insert(e);
        }
        list
    }

    /// Adds an entry; a user entry keeps the later `issued_before`. Returns whether the
    /// list changed.
    pub fn insert(&mut self, e: Revocation) -> bool {
        match &e.what {
            Revoked::Token(jti) => {
                if self.tokens.contains_key(jti) {
                    return false;
                }
                self.tokens.insert(jti.clone(), e);
                true
            }
            Revoked::User { user, issued_before } => match self.users.get(user) {
                Some(old) if old.issued_before() >= *issued_before => false,
                _ => {
                    self.users.insert(user.clone(), e);
                    true
                }
            },
        }
    }

    /// The entry that revokes these claims, if any. A renewed token is revoked with its
    /// line: by its own `jti`, its origin's, the delegation it was signed under, or a user
    /// entry covering its origin's issue time (a renewal made after the user was revoked,
    /// by a hub that had not heard yet, is still caught once it hears).
    pub fn revokes(&self, claims: &Claims) -> Option<&Revocation> {
        let delegation = claims.delegation();
        self.tokens
            .get(&claims.jti)
            .or_else(|| self.tokens.get(claims.origin_jti()))
            .or_else(|| delegation.as_ref().and_then(|d| self.tokens.get(&d.jti)))
            .or_else(|| self.users.get(claims.sub.as_str()).filter(|e| claims.origin_iat() <= e.issued_before()))
            .or_else(|| {
                let d = delegation.as_ref()?;
                self.users.get(&relay_entry(&d.relay)).filter(|e| d.iat <= e.issued_before())
            })
    }

    /// The entry that revokes `relay` (its delegations), if any.
    pub fn relay_revoked(&self, relay: &str) -> Option<&Revocation> {
        self.users.get(&relay_entry(relay))
    }

    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Revocation> {
        self.tokens.values().chain(self.users.values())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::UserId;
    use crate::token::Role;

    fn claims(user: &str, jti: &str, iat: u64) -> Claims {
        Claims::new(
            UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
            Role::Worker,
            vec![],
            iat,
            iat + 100,
            "c".into(),
            jti.into(),
        )
    }

    fn token(jti: &str) -> Revocation {
        Revocation { what: Revoked::Token(jti.into()), reason: "lost phone".into(), at: 1 }
    }

    fn user(u: &str, issued_before: u64) -> Revocation {
        Revocation { what: Revoked::User { user: u.into(), issued_before }, reason: "left".into(), at: 1 }
    }

    #[test]
    fn a_revoked_token_is_named_and_others_are_not() {
        let list = RevocationList::new([token("t1")]);
        assert_eq!(list.revokes(&claims("amina", "t1", 5)), Some(&token("t1")));
        assert_eq!(list.revokes(&claims("amina", "t2", 5)), None);
    }

    #[test]
    fn a_user_entry_revokes_tokens_issued_up_to_its_moment() {
        let list = RevocationList::new([user("amina", 100)]);
        assert!(list.revokes(&claims("amina", "old", 100)).is_some());
        assert!(list.revokes(&claims("amina", "new", 101)).is_none());
        assert!(list.revokes(&claims("baraka", "old", 50)).is_none());
    }

    #[test]
    fn a_renewal_is_revoked_with_its_origin_and_its_user_entry_by_the_origins_time() {
        let mut renewed = claims("amina", "r2", 500);
        renewed.lin = Some(crate::token::Lineage { jti: "t1".into(), iat: 50 });
        assert!(RevocationList::new([token("t1")]).revokes(&renewed).is_some());
        // Renewed (iat 500) after the user was revoked (up to 100): still revoked.
        assert!(RevocationList::new([user("amina", 100)]).revokes(&renewed).is_some());
        assert!(RevocationList::new([user("amina", 40)]).revokes(&renewed).is_none());
    }

    #[test]
    fn a_relay_entry_revokes_the_tokens_renewed_under_its_delegations_and_no_user() {
        let cloud = crate::TokenSigner::from_seed(&[1; 32], "c");
        let hub = crate::TokenSigner::from_seed(&[2; 32], "c");
        let dlg = crate::renewal::delegate(&cloud, "village-1", &hub.public_key(), 100, 1_000, "d1".into())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut renewed = claims("amina", "r2", 500);
        renewed.dlg = Some(dlg);
        let list = RevocationList::new([user("relay/village-1", 200)]);
        assert!(list.revokes(&renewed).is_some());
        assert!(list.relay_revoked("village-1").is_some() && list.relay_revoked("village-2").is_none());
        assert!(list.revokes(&claims("amina", "t1", 50)).is_none(), "a token the cloud signed is not touched");
        assert!(crate::UserId::new(relay_entry("village-1")).is_err(), "no user can be named like a relay entry");
        // By its delegation's id too.
        assert!(RevocationList::new([token("d1")]).revokes(&renewed).is_some());
    }

    proptest! {
        /// Entries are facts: any order, any repetition, the same list.
        #[test]
        fn merging_is_order_independent(ops in prop::collection::vec((0u8..4, 0u64..5), 0..20)) {
            let entries: Vec<Revocation> = ops
                .iter()
                .map(|(k, t)| if *k < 2 { token(&format!("t{k}")) } else { user(&format!("u{k}"), *t) })
                .collect();
            let forward = RevocationList::new(entries.clone());
            let backward = RevocationList::new(entries.iter().rev().cloned().chain(entries.clone()));
            let keys = |l: &RevocationList| {
                let mut v: Vec<_> = l.entries().map(|e| (e.key().0, e.key().1.to_owned(), e.issued_before())).collect();
                v.sort();
                v
            };
            prop_assert_eq!(keys(&forward), keys(&backward));
        }
    }
}
