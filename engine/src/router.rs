//! Live fan-out: which connected sessions should see a new entry right now.
//!
//! The router never blocks and never buffers without bound. Each session has two bounded
//! lanes in its [`Mailbox`], one for emergencies and one for everything else; the store's
//! writer thread offers each committed entry. When a lane is full the entry is dropped
//! and the session is marked *lagged*: it then re-reads what it missed from the log (the
//! log is the buffer), so a phone that stops reading costs the hub a disk read later,
//! never memory now. Ephemeral events (typing, presence) are simply dropped when a lane is
//! full; they are not worth catching up on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::mailbox::{Lane, Live, Mailbox};
use axum::extract::ws::Utf8Bytes;
use outpost_shared::{DeviceId, Priority, RoomId, UserId};
use outpost_storage::{Audience, LogEntry, Publisher, SessionId};

/// The router's side of one session.
#[derive(Debug)]
pub struct SessionLink {
    pub id: SessionId,
    pub user: UserId,
    pub device: DeviceId,
    pub rooms: Arc<[RoomId]>,
    /// Shared with the session, which takes from it.
    pub mailbox: Arc<Mailbox>,
    lagged: AtomicBool,
}

impl SessionLink {
    fn offer(&self, priority: Priority, live: Live) {
        let lane = if priority == Priority::Emergency { Lane::Urgent } else { Lane::Normal };
        let is_log = matches!(live, Live::Log { .. });
        if !self.mailbox.offer(lane, live) && is_log {
            self.lagged.store(true, Ordering::Release);
        }
    }

    /// Whether live entries were dropped and not yet caught up (without clearing it).
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// True once after live entries were dropped for this session.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Arc<SessionLink>>,
    rooms: HashMap<RoomId, HashSet<SessionId>>,
    users: HashMap<UserId, HashSet<SessionId>>,
    last_seen: HashMap<UserId, u64>,
}

#[derive(Default)]
pub struct Router {
    inner: RwLock<Inner>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("sessions", &self.session_count()).finish()
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn session_count(&self) -> usize {
        self.inner.read().map(|i| i.sessions.len()).unwrap_or(0)
    }

    /// Adds a session whose live entries go to `mailbox`. Returns its link and whether
    /// its user just came online.
    pub fn register(
        &self,
        user: UserId,
        device: DeviceId,
        rooms: Arc<[RoomId]>,
        mailbox: Arc<Mailbox>,
    ) -> (Arc<SessionLink>, bool) {
        let id = SessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let link = Arc::new(SessionLink {
            id,
            user: user.clone(),
            device,
            rooms: rooms.clone(),
            mailbox,
            lagged: AtomicBool::new(false),
        });
        let mut came_online = false;
        if let Ok(mut inner) = self.inner.write() {
            inner.sessions.insert(id, link.clone());
            for r in rooms.iter() {
                inner.rooms.entry(r.clone()).or_default().insert(id);
            }
            let set = inner.users.entry(user).or_default();
            came_online = set.is_empty();
            set.insert(id);
        }
        (link, came_online)
    }

    /// Tells every session the hub is shutting down (each closes with 1001). A session
    /// that registers after this sees the hub's shutdown token already cancelled.
    pub fn close_all(&self) {
        self.each_mailbox(Mailbox::close);
    }

    /// Tells every session a new revocation list was loaded.
    pub fn recheck_all(&self) {
        self.each_mailbox(Mailbox::recheck);
    }

    fn each_mailbox(&self, f: impl Fn(&Mailbox)) {
        if let Ok(inner) = self.inner.read() {
            for s in inner.sessions.values() {
                f(&s.mailbox);
            }
        }
    }

    /// Removes a session. Returns true when it was its user's last one (now offline).
    pub fn unregister(&self, link: &SessionLink, now_ms: u64) -> bool {
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        inner.sessions.remove(&link.id);
        for r in link.rooms.iter() {
            if let Some(set) = inner.rooms.get_mut(r) {
                set.remove(&link.id);
                if set.is_empty() {
                    inner.rooms.remove(r);
                }
            }
        }
        let mut went_offline = false;
        if let Some(set) = inner.users.get_mut(&link.user) {
            set.remove(&link.id);
            if set.is_empty() {
                inner.users.remove(&link.user);
                went_offline = true;
            }
        }
        if went_offline {
            inner.last_seen.insert(link.user.clone(), now_ms);
        }
        went_offline
    }

    /// Starts (`true`) or stops live delivery of `room` to one session.
    pub fn set_room(&self, link: &SessionLink, room: &RoomId, live: bool) {
        let Ok(mut inner) = self.inner.write() else { return };
        if live {
            inner.rooms.entry(room.clone()).or_default().insert(link.id);
        } else if let Some(set) = inner.rooms.get_mut(room) {
            set.remove(&link.id);
            if set.is_empty() {
                inner.rooms.remove(room);
            }
        }
    }

    /// Sends an ephemeral frame to every session in `room` except `except`.
    pub fn to_room(&self, room: &RoomId, except: SessionId, text: Utf8Bytes) {
        let Ok(inner) = self.inner.read() else { return };
        if let Some(ids) = inner.rooms.get(room) {
            for id in ids.iter().filter(|id| **id != except) {
                if let Some(s) = inner.sessions.get(id) {
                    s.offer(Priority::Normal, Live::Ephemeral(text.clone()));
                }
            }
        }
    }

    /// Sends an ephemeral frame to every session of `user` except `except` (what one of a
    /// person's devices did that their others should show: a room read).
    pub fn to_user(&self, user: &UserId, except: SessionId, text: Utf8Bytes) {
        let Ok(inner) = self.inner.read() else { return };
        for id in inner.users.get(user).into_iter().flatten().filter(|id| **id != except) {
            if let Some(s) = inner.sessions.get(id) {
                s.offer(Priority::Normal, Live::Ephemeral(text.clone()));
            }
        }
    }

    /// Sends a call step to `user`'s sessions whose token holds `room` (only `device`'s,
    /// when given), but `except`, in the emergency lane: a ring or an ICE candidate must
    /// not wait behind a replay. Returns how many sessions it was offered to.
    pub fn to_call_party(
        &self,
        user: &UserId,
        room: &RoomId,
        device: Option<&DeviceId>,
        except: SessionId,
        text: Utf8Bytes,
    ) -> usize {
        let Ok(inner) = self.inner.read() else { return 0 };
        let mut n = 0;
        for id in inner.users.get(user).into_iter().flatten().filter(|id| **id != except) {
            if let Some(s) = inner.sessions.get(id)
                && s.rooms.contains(room)
                && device.is_none_or(|d| *d == s.device)
            {
                s.offer(Priority::Emergency, Live::Ephemeral(text.clone()));
                n += 1;
            }
        }
        n
    }

    /// Sends an ephemeral frame once to every other user's session sharing a room in `rooms`.
    pub fn to_co_members(&self, user: &UserId, rooms: &[RoomId], text: Utf8Bytes) {
        let Ok(inner) = self.inner.read() else { return };
        let mut seen = HashSet::new();
        for r in rooms {
            for id in inner.rooms.get(r).into_iter().flatten() {
                if let Some(s) = inner.sessions.get(id)
                    && &s.user != user
                    && seen.insert(*id)
                {
                    s.offer(Priority::Normal, Live::Ephemeral(text.clone()));
                }
            }
        }
    }

    /// Other users online in any of `rooms`.
    pub fn online_in(&self, user: &UserId, rooms: &[RoomId]) -> Vec<UserId> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut users: Vec<UserId> = rooms
            .iter()
            .flat_map(|r| inner.rooms.get(r).into_iter().flatten())
            .filter_map(|id| inner.sessions.get(id).map(|s| s.user.clone()))
            .filter(|u| u != user)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        users.sort();
        users
    }
}

impl Publisher for Router {
    fn publish(&self, entry: LogEntry) {
        metrics::counter!("outpost_log_entries_published_total").increment(1);
        let Ok(inner) = self.inner.read() else { return };
        let text = Utf8Bytes::from(entry.frame);
        let live = Live::Log { cursor: entry.cursor, text };
        match &entry.audience {
            Audience::Room { room, except } => {
                for id in inner.rooms.get(room).into_iter().flatten() {
                    if Some(*id) == *except {
                        continue;
                    }
                    if let Some(s) = inner.sessions.get(id) {
                        s.offer(entry.priority, live.clone());
                    }
                }
            }
            Audience::User(user) => {
                for id in inner.users.get(user).into_iter().flatten() {
                    if let Some(s) = inner.sessions.get(id) {
                        s.offer(entry.priority, live.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Item;
    use outpost_shared::Cursor;

    fn room(s: &str) -> RoomId {
        RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }
    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }
    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn entry(cursor: u64, r: &str, except: Option<SessionId>, priority: Priority) -> LogEntry {
        LogEntry {
            cursor: Cursor(cursor),
            priority,
            audience: Audience::Room { room: room(r), except },
            frame: format!("{{\"c\":{cursor}}}"),
        }
    }

    fn join(router: &Router, u: &str, r: &str, cap: usize) -> Arc<SessionLink> {
        router.register(user(u), dev(&format!("{u}1")), Arc::from(vec![room(r)]), Mailbox::new(cap, cap)).0
    }

    /// The cursor of the next live entry and the lane it was on.
    fn next(link: &SessionLink) -> Option<(&'static str, u64)> {
        match link.mailbox.try_next(false)? {
            Item::Urgent(Live::Log { cursor, .. }) => Some(("urgent", cursor.0)),
            Item::Normal(Live::Log { cursor, .. }) => Some(("normal", cursor.0)),
            _ => None,
        }
    }

    #[test]
    fn room_fan_out_skips_sender_and_other_rooms() {
        let router = Router::new();
        let (a, b, c) = (join(&router, "a", "r", 4), join(&router, "b", "r", 4), join(&router, "c", "other", 4));
        router.publish(entry(1, "r", Some(a.id), Priority::Normal));
        assert_eq!(next(&a), None);
        assert_eq!(next(&b), Some(("normal", 1)));
        assert_eq!(next(&c), None);
    }

    #[test]
    fn emergencies_take_their_own_lane() {
        let router = Router::new();
        let b = join(&router, "b", "r", 4);
        router.publish(entry(1, "r", None, Priority::Normal));
        router.publish(entry(2, "r", None, Priority::Emergency));
        assert_eq!(next(&b), Some(("urgent", 2)));
        assert_eq!(next(&b), Some(("normal", 1)));
    }

    #[test]
    fn a_full_lane_marks_the_session_lagged_instead_of_growing() {
        let router = Router::new();
        let b = join(&router, "b", "r", 2);
        for c in 1..=5 {
            router.publish(entry(c, "r", None, Priority::Normal));
        }
        assert!(b.take_lagged());
        assert!(!b.take_lagged(), "the flag is taken once");
        let mut got = 0;
        while next(&b).is_some() {
            got += 1;
        }
        assert_eq!(got, 2);
    }

    #[test]
    fn presence_bookkeeping() {
        let router = Router::new();
        let rooms: Arc<[RoomId]> = Arc::from(vec![room("r")]);
        let (s1, first) = router.register(user("a"), dev("a1"), rooms.clone(), Mailbox::new(2, 2));
        let (s2, second) = router.register(user("a"), dev("a2"), rooms.clone(), Mailbox::new(2, 2));
        assert!(first && !second);
        assert_eq!(router.online_in(&user("z"), &rooms), vec![user("a")]);
        assert!(!router.unregister(&s1, 5));
        assert!(router.unregister(&s2, 6));
        assert!(router.online_in(&user("z"), &rooms).is_empty());
    }
}
