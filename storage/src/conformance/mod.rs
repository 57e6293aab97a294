//! The conformance suite every storage backend must pass: the contracts of
//! [`LogStore`], [`SecurityStore`], [`LinkStore`] and [`HookStore`] checked through the
//! traits alone, so the same checks run against SQLite and PostgreSQL and any later
//! backend; [`bytes`] does the same for the blob bytes ([`crate::BlobBytes`]).
//!
//! A backend's tests call [`check_all`] with a function that opens a fresh, empty store
//! handing committed entries to the given publisher (its own temporary directory or
//! database each time). Each check panics with what broke. Durability under kill -9 and
//! power loss is a property of the backend's commit, not of its API, so it is proven by
//! the process tests (`tests/`), not here.

pub mod bytes;

use std::sync::{Arc, Mutex};

use outpost_shared::frames::OutgoingMsg;
use outpost_shared::uplink::batch::{Entry, Lane, WireMessage};
use outpost_shared::{Body, Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, Revocation, RoomId, Seq, UserId};

use crate::{AppendRequest, AuditEvent, AuditKind, HookStore, LinkStore, LogEntry, OutboundQuery, Publisher, Workflow};

/// Everything the backend published, in order.
#[derive(Debug, Default)]
pub struct Published(Mutex<Vec<LogEntry>>);

impl Publisher for Published {
    fn publish(&self, entry: LogEntry) {
        if let Ok(mut v) = self.0.lock() {
            v.push(entry);
        }
    }
}

impl Published {
    fn cursors(&self) -> Vec<Cursor> {
        self.0.lock().map(|v| v.iter().map(|e| e.cursor).collect()).unwrap_or_default()
    }
}

/// Runs every check, each on a fresh store from `open`.
pub async fn check_all<S: LinkStore + HookStore>(open: impl Fn(Arc<Published>) -> S) {
    appends_are_read_back_in_order_and_published(&open).await;
    a_message_id_is_stored_once_forever(&open).await;
    history_pages_back_from_a_cursor(&open).await;
    history_pages_back_by_stamp(&open).await;
    workflow_events_are_the_rooms_messages_of_those_kinds_by_stamp(&open).await;
    events_follow_the_log_across_rooms(&open).await;
    events_page_without_loss_or_repeats(&open).await;
    peer_imports_are_idempotent_and_the_resume_point_is_kept(&open).await;
    a_peer_with_a_new_database_is_rebuilt_newest_first(&open).await;
    audit_events_are_kept_in_order(&open).await;
    revocations_are_recorded_once(&open).await;
    a_hook_position_moves_forward_for_its_holder_and_survives(&open).await;
    a_hook_lease_has_one_holder_until_it_expires(&open).await;
}

fn id(s: &str) -> RoomId {
    RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn append(room: &RoomId, n: u64, mid: MessageId) -> AppendRequest {
    let msg = OutgoingMsg {
        id: mid,
        room: room.clone(),
        kind: MessageKind::new("chat").unwrap_or_else(|e| panic!("{e}")),
        priority: Priority::Normal,
        body: Body::from_json(&format!("{{\"text\":\"message {n}\"}}")).unwrap_or_else(|e| panic!("{e}")),
        seq: Seq(n),
        reply_to: None,
    };
    AppendRequest {
        msg,
        from: UserId::new("amina").unwrap_or_else(|e| panic!("{e}")),
        device: DeviceId::new("phone-1").unwrap_or_else(|e| panic!("{e}")),
        at: 1_700_000_000_000 + n,
        origin: None,
    }
}

fn new_id() -> MessageId {
    MessageId(uuid::Uuid::now_v7())
}

/// Appends are answered with increasing cursors, read back in that order, and each
/// reaches the publisher after its commit.
pub async fn appends_are_read_back_in_order_and_published<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let published = Arc::new(Published::default());
    let store = open(published.clone());
    let room = id("clinic");
    let mut cursors = Vec::new();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let mid = new_id();
        let a = store.append_wait(append(&room, n, mid)).await.unwrap_or_else(|e| panic!("append: {e}"));
        assert!(!a.duplicate, "a new id is not a duplicate");
        assert_eq!(a.id, mid);
        cursors.push(a.cursor);
        ids.push(mid);
    }
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase: {cursors:?}");
    assert_eq!(store.head(), cursors[2], "the head is the newest commit");
    let (read, more) = store.room_since(room.clone(), Cursor(0), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!more);
    assert_eq!(read.iter().map(|p| p.msg.id).collect::<Vec<_>>(), ids, "read back in the order appended");
    assert_eq!(read.iter().map(|p| p.cursor).collect::<Vec<_>>(), cursors);
    let seen: Vec<Cursor> = published.cursors().into_iter().filter(|c| cursors.contains(c)).collect();
    assert_eq!(seen, cursors, "each message was published once, in cursor order");
    assert!(store.room_known(&room), "a room with messages is known");
}

/// Contract 3: a message id already held is answered `duplicate` with its first cursor
/// and never stored twice.
pub async fn a_message_id_is_stored_once_forever<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let room = id("clinic");
    let mid = new_id();
    let first = store.append_wait(append(&room, 1, mid)).await.unwrap_or_else(|e| panic!("{e}"));
    store.append_wait(append(&room, 2, new_id())).await.unwrap_or_else(|e| panic!("{e}"));
    let again = store.append_wait(append(&room, 1, mid)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(again.duplicate, "the same id again is a duplicate");
    assert_eq!(again.cursor, first.cursor, "a duplicate is answered with the original cursor");
    let (read, _) = store.room_since(room, Cursor(0), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.iter().filter(|p| p.msg.id == mid).count(), 1, "stored once");
}

/// `history` pages back from a cursor: only older messages, at most `limit`, oldest
/// first within the page, and says whether there are more.
pub async fn history_pages_back_from_a_cursor<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let room = id("clinic");
    let mut cursors = Vec::new();
    for n in 1..=5 {
        cursors.push(store.append_wait(append(&room, n, new_id())).await.unwrap_or_else(|e| panic!("{e}")).cursor);
    }
    let newest = store.history(room.clone(), None, 2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(newest.messages.iter().map(|p| p.cursor).collect::<Vec<_>>(), cursors[3..]);
    assert!(newest.more, "three older messages remain");
    let older = store.history(room.clone(), Some(cursors[3]), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(older.messages.iter().map(|p| p.cursor).collect::<Vec<_>>(), cursors[..3]);
    assert!(!older.more, "nothing before the first message");
}

/// `history_before_hlc` (what a hub asks its cloud for past its retention): messages
/// stamped before the given stamp, oldest first, at most `limit`, and whether more
/// remain; another room's never.
pub async fn history_pages_back_by_stamp<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let (room, other) = (id("clinic"), id("ward"));
    let mut stamps = Vec::new();
    for n in 1..=5 {
        stamps.push(store.append_wait(append(&room, n, new_id())).await.unwrap_or_else(|e| panic!("{e}")).hlc);
        store.append_wait(append(&other, n, new_id())).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let (page, more) =
        store.history_before_hlc(room.clone(), stamps[4], 2, usize::MAX).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.iter().map(|p| p.msg.hlc).collect::<Vec<_>>(), stamps[2..4], "the two before, oldest first");
    assert!(more, "two older remain");
    let (page, more) = store
        .history_before_hlc(room.clone(), Hlc(u64::MAX >> 1), 10, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.iter().map(|p| p.msg.hlc).collect::<Vec<_>>(), stamps);
    assert!(!more);
    assert!(page.iter().all(|p| p.msg.room == room), "only the room asked for");
    let (page, more) =
        store.history_before_hlc(room, Hlc(u64::MAX >> 1), 10, 1).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((page.len(), more), (1, true), "a byte budget cuts the page short but never empty");
}

/// `workflow_events`: a room's messages of the workflow's kinds (`queue.book` and
/// `queue.update`; `record.edit`) from a stamp on, in stamp order, at most `limit`; never
/// another kind or another room's.
pub async fn workflow_events_are_the_rooms_messages_of_those_kinds_by_stamp<S: LinkStore>(
    open: &impl Fn(Arc<Published>) -> S,
) {
    let store = open(Arc::new(Published::default()));
    let (room, other) = (id("clinic"), id("ward"));
    let (mut queue, mut record) = (Vec::new(), Vec::new());
    for n in 1..=12 {
        let kind = ["chat", "queue.book", "queue.update", "record.edit"][(n % 4) as usize];
        for r in [&room, &other] {
            let mut req = append(r, n, new_id());
            req.msg.kind = MessageKind::new(kind).unwrap_or_else(|e| panic!("{e}"));
            let a = store.append_wait(req).await.unwrap_or_else(|e| panic!("{e}"));
            match kind {
                "queue.book" | "queue.update" if r == &room => queue.push((a.hlc, a.id)),
                "record.edit" if r == &room => record.push((a.hlc, a.id)),
                _ => {}
            }
        }
    }
    let read = |workflow, since, limit| {
        let (store, room) = (store.clone(), room.clone());
        async move { store.workflow_events(room, workflow, since, limit).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let (all, more) = read(Workflow::Queue, Hlc(0), 100).await;
    assert!(!more);
    assert_eq!(all.iter().map(|p| (p.msg.hlc, p.msg.id)).collect::<Vec<_>>(), queue, "the room's, by stamp");
    let (page, more) = read(Workflow::Queue, queue[2].0, 2).await;
    assert_eq!(page.iter().map(|p| p.msg.id).collect::<Vec<_>>(), [queue[2].1, queue[3].1], "from the stamp on");
    assert!(more, "two more remain");
    let (all, more) = read(Workflow::Record, Hlc(0), 100).await;
    assert!(!more);
    assert_eq!(all.iter().map(|p| (p.msg.hlc, p.msg.id)).collect::<Vec<_>>(), record, "only record edits");
}

/// Every page of `events` from `after` with `limit`, until one says there is no more.
async fn all_events<S: LinkStore>(
    store: &S,
    rooms: Option<Arc<[RoomId]>>,
    mut after: Cursor,
    limit: u32,
) -> Vec<(Cursor, MessageId)> {
    let mut out = Vec::new();
    loop {
        let (page, more) = store.events(rooms.clone(), after, limit).await.unwrap_or_else(|e| panic!("events: {e}"));
        assert!(page.len() <= limit as usize, "a page holds at most `limit` events");
        assert!(page.first().is_none_or(|p| p.cursor > after), "a page starts after `after`");
        out.extend(page.iter().map(|p| (p.cursor, p.msg.id)));
        match page.last() {
            Some(last) if more => after = last.cursor,
            _ => {
                assert!(!more, "a page that says there is more is not empty");
                return out;
            }
        }
    }
}

/// `events` reads the rooms asked for, and only those, in one order across them: the
/// cursor order the appends were answered with.
pub async fn events_follow_the_log_across_rooms<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let (a, b, c) = (id("ward-a"), id("ward-b"), id("pharmacy"));
    let mut all = Vec::new();
    for (n, room) in [&a, &b, &c, &a, &a, &c, &b, &c, &c, &a].into_iter().enumerate() {
        let mid = new_id();
        let got = store.append_wait(append(room, n as u64, mid)).await.unwrap_or_else(|e| panic!("{e}"));
        all.push((room.clone(), got.cursor, mid));
    }
    let of = |rooms: &[&RoomId]| -> Vec<(Cursor, MessageId)> {
        all.iter().filter(|(r, ..)| rooms.contains(&r)).map(|(_, cursor, mid)| (*cursor, *mid)).collect()
    };
    let ab: Arc<[RoomId]> = Arc::from(vec![a.clone(), b.clone()]);
    let (page, more) = store.events(Some(ab.clone()), Cursor(0), 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!more);
    let got: Vec<(Cursor, MessageId)> = page.iter().map(|p| (p.cursor, p.msg.id)).collect();
    assert_eq!(got, of(&[&a, &b]), "both rooms' messages in cursor order, none of the third room's");
    assert!(page.iter().all(|p| p.msg.room == a || p.msg.room == b));

    let (page, _) = store.events(None, Cursor(0), 100).await.unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(Cursor, MessageId)> = page.iter().map(|p| (p.cursor, p.msg.id)).collect();
    assert_eq!(got, of(&[&a, &b, &c]), "no list: every room");

    let twice: Arc<[RoomId]> = Arc::from(vec![b.clone(), a.clone(), b.clone()]);
    let (page, _) = store.events(Some(twice), Cursor(0), 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.len(), of(&[&a, &b]).len(), "a room named twice is read once");

    let none: Arc<[RoomId]> = Arc::from(Vec::new());
    let (page, more) = store.events(Some(none), Cursor(0), 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.is_empty() && !more, "an empty list is no room");
    let unknown: Arc<[RoomId]> = Arc::from(vec![id("nobody-here")]);
    let (page, more) = store.events(Some(unknown), Cursor(0), 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.is_empty() && !more, "a room without messages has no events");
    let (page, more) = store.events(Some(ab), store.head(), 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.is_empty() && !more, "nothing after the head");
}

/// Paging `events` by the last cursor of each page gives every message once, also when
/// messages are appended between pages, and `more` is false exactly at the end.
pub async fn events_page_without_loss_or_repeats<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let rooms = [id("ward-a"), id("ward-b"), id("pharmacy")];
    let read: Arc<[RoomId]> = Arc::from(vec![rooms[0].clone(), rooms[1].clone()]);
    let mut expected = Vec::new();
    let mut n = 0u64;
    let mut add = async |count: usize, expected: &mut Vec<(Cursor, MessageId)>| {
        for _ in 0..count {
            let room = &rooms[(n % 3) as usize];
            let mid = new_id();
            let got = store.append_wait(append(room, n, mid)).await.unwrap_or_else(|e| panic!("{e}"));
            if room != &rooms[2] {
                expected.push((got.cursor, mid));
            }
            n += 1;
        }
    };
    add(12, &mut expected).await;
    // Exactly two pages of four (eight messages in the two rooms): the second says no more.
    let (first, more) = store.events(Some(read.clone()), Cursor(0), 4).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(more && first.len() == 4);
    let (second, more) = store.events(Some(read.clone()), first[3].cursor, 4).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.len(), 4);
    assert!(!more, "a page that ends at the last message says there is no more");
    let mut got: Vec<(Cursor, MessageId)> = first.iter().chain(&second).map(|p| (p.cursor, p.msg.id)).collect();
    assert_eq!(got, expected);
    // New messages after the reader caught up are the next pages, from the same cursor.
    add(9, &mut expected).await;
    got.extend(all_events(&store, Some(read.clone()), second[3].cursor, 2).await);
    assert_eq!(got, expected, "nothing lost, nothing twice");
    for limit in [1, 3, 5, 100] {
        assert_eq!(all_events(&store, Some(read.clone()), Cursor(0), limit).await, expected, "pages of {limit}");
    }
}

fn wire(room: &RoomId, cursor: u64) -> Entry {
    Entry::Message(WireMessage {
        cursor: Cursor(cursor),
        id: new_id(),
        room: room.clone(),
        kind: MessageKind::new("chat").unwrap_or_else(|e| panic!("{e}")),
        priority: Priority::Normal,
        body: format!("{{\"text\":\"from the peer {cursor}\"}}"),
        seq: Seq(cursor),
        reply_to: None,
        from: UserId::new("dr-okafor").unwrap_or_else(|e| panic!("{e}")),
        device: DeviceId::new("desk").unwrap_or_else(|e| panic!("{e}")),
        hlc: Hlc(cursor << 16),
        at: 1_700_000_000_000 + cursor,
    })
}

/// A peer's batch applied twice is imported once; what the peer holds of ours and what
/// we hold of its log survive to its next handshake.
pub async fn peer_imports_are_idempotent_and_the_resume_point_is_kept<S: LinkStore>(
    open: &impl Fn(Arc<Published>) -> S,
) {
    let store = open(Arc::new(Published::default()));
    let room = id("ward");
    let first = store.peer_hello("cloud", "peer-epoch", vec![room.clone()]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.sent_hwm, first.recv_hwm), (Cursor(0), Cursor(0)), "a new peer starts at the beginning");
    let batch = vec![wire(&room, 1), wire(&room, 2)];
    let fresh = store.import("cloud", batch.clone(), Cursor(2)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh, 2);
    let again = store.import("cloud", batch, Cursor(2)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, 0, "a batch sent twice is imported once");
    let (read, _) = store.room_since(room.clone(), Cursor(0), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.len(), 2);
    let ours = store.append_wait(append(&room, 1, new_id())).await.unwrap_or_else(|e| panic!("{e}"));
    store.peer_acked("cloud", ours.cursor, Vec::new(), 1_700_000_000_500).await;
    let later = store.peer_hello("cloud", "peer-epoch", vec![room]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(later.sent_hwm, ours.cursor, "the peer's acknowledgement is where we resume");
    assert_eq!(later.recv_hwm, Cursor(2), "what we hold of the peer's log is kept");
}

/// A peer that comes back with a new database starts over at the beginning, with its own
/// earlier messages (`own_until`), and a newest-first page gives a room's latest messages.
pub async fn a_peer_with_a_new_database_is_rebuilt_newest_first<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let room = id("ward");
    let hello = |epoch: &'static str| store.peer_hello("village-7", epoch, vec![id("ward")]);
    let first = hello("card-1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.own_until, Cursor(0), "a new peer has nothing of its own to get back");
    // Two of ours, three from the peer.
    let mut ours = Vec::new();
    for n in 1..=2 {
        ours.push(store.append_wait(append(&room, n, new_id())).await.unwrap_or_else(|e| panic!("{e}")).cursor);
    }
    store
        .import("village-7", vec![wire(&room, 1), wire(&room, 2), wire(&room, 3)], Cursor(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = store.head();
    store.peer_acked("village-7", head, Vec::new(), 1_700_000_000_500).await;
    let same = hello("card-1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((same.sent_hwm, same.own_until), (head, Cursor(0)), "the same database resumes where it was");

    let swapped = hello("card-2").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((swapped.sent_hwm, swapped.own_until), (Cursor(0), head), "a new database is rebuilt up to our head");
    let page = |newest_first: bool, limit: usize| OutboundQuery {
        peer: "village-7".into(),
        rooms: Some(Arc::from(vec![room.clone()])),
        after: Cursor(0),
        until: Some(head),
        lane: Lane::Normal,
        limit,
        max_bytes: usize::MAX,
        newest_first,
    };
    let all = store.outbound(page(false, 100)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.entries.len(), 5, "ours and the peer's own messages go back to it");
    let newest = store.outbound(page(true, 2)).await.unwrap_or_else(|e| panic!("{e}"));
    let cursors: Vec<Cursor> = newest.entries.iter().map(Entry::cursor).collect();
    let mut expect: Vec<Cursor> = all.entries.iter().map(Entry::cursor).rev().take(2).collect();
    expect.sort_by(|a, b| b.cmp(a));
    assert_eq!(cursors, expect, "a newest-first page holds the latest entries, newest first");
}

/// The audit log keeps committed events in order.
pub async fn audit_events_are_kept_in_order<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    store
        .audit_committed(AuditEvent::new(AuditKind::Login, "first").actor("amina"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .audit_committed(AuditEvent::new(AuditKind::Forbidden, "second").actor("amina").room("ward"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (records, more) = store.audit_page(0, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!more);
    let got: Vec<(&str, &str)> = records.iter().map(|r| (r.event.as_str(), r.detail.as_str())).collect();
    assert_eq!(got, [("login", "first"), ("forbidden", "second")]);
    assert!(records[0].seq < records[1].seq);
    let (rest, _) = store.audit_page(records[0].seq, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.len(), 1, "a page starts after the given sequence number");
}

/// A revocation recorded twice is new once.
pub async fn revocations_are_recorded_once<S: LinkStore>(open: &impl Fn(Arc<Published>) -> S) {
    let store = open(Arc::new(Published::default()));
    let entry = Revocation {
        what: outpost_shared::Revoked::Token("jti-1".into()),
        reason: "phone lost".into(),
        at: 1_700_000_000_000,
    };
    let fresh = store.apply_revocations("cloud", vec![entry.clone()]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh, 1);
    let again = store.apply_revocations("cloud", vec![entry]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, 0, "the same revocation again is not new");
}

/// A webhook's position starts at 0, is moved only by the lease's holder, never moves
/// back, is kept per endpoint, and is what a later handle on the same store reads.
pub async fn a_hook_position_moves_forward_for_its_holder_and_survives<S: LinkStore + HookStore>(
    open: &impl Fn(Arc<Published>) -> S,
) {
    let store = open(Arc::new(Published::default()));
    let position = |name: &'static str| {
        let store = store.clone();
        async move { store.hook_position(name).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let now = 1_700_000_000_000;
    assert_eq!(position("his").await, Cursor(0), "an endpoint never seen starts at the beginning");
    assert!(store.hook_lease("his", "node-a", now, 30_000).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(store.hook_advance("his", "node-a", Cursor(7)).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(position("his").await, Cursor(7));
    assert!(store.hook_advance("his", "node-a", Cursor(3)).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(position("his").await, Cursor(7), "a position never moves back");
    let moved = store.hook_advance("his", "node-b", Cursor(20)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!moved, "only the lease's holder moves the position");
    assert_eq!(position("his").await, Cursor(7));
    assert!(!store.hook_advance("lab", "node-a", Cursor(5)).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(position("lab").await, Cursor(0), "each endpoint has its own position");
    // Another handle (another server on the same database) reads what was committed.
    let other = store.clone();
    assert_eq!(other.hook_position("his").await.unwrap_or_else(|e| panic!("{e}")), Cursor(7));
}

/// One holder at a time: a lease is refused to others until it expires, the holder
/// renews it, another takes it over once it expired, the old holder is then refused and
/// moves nothing, and a released lease is free at once.
pub async fn a_hook_lease_has_one_holder_until_it_expires<S: LinkStore + HookStore>(
    open: &impl Fn(Arc<Published>) -> S,
) {
    let store = open(Arc::new(Published::default()));
    let lease = |holder: &'static str, now: u64| {
        let store = store.clone();
        async move { store.hook_lease("his", holder, now, 30_000).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let t0 = 1_700_000_000_000;
    assert!(lease("node-a", t0).await, "a free lease is granted");
    assert!(!lease("node-b", t0 + 1).await, "a held lease is refused to another");
    assert!(!lease("node-b", t0 + 29_999).await, "still held just before the expiry");
    assert!(lease("node-a", t0 + 20_000).await, "the holder renews it");
    assert!(!lease("node-b", t0 + 30_000).await, "the renewal moved the expiry");
    assert!(!lease("node-b", t0 + 49_999).await);
    assert!(lease("node-b", t0 + 50_000).await, "another holder takes an expired lease");
    assert!(!lease("node-a", t0 + 50_001).await, "the old holder lost it");
    let moved = store.hook_advance("his", "node-a", Cursor(9)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!moved, "the old holder no longer moves the position");
    assert!(store.hook_advance("his", "node-b", Cursor(9)).await.unwrap_or_else(|e| panic!("{e}")));
    store.hook_release("his", "node-a").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!lease("node-c", t0 + 50_002).await, "releasing another's lease does nothing");
    store.hook_release("his", "node-b").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(lease("node-c", t0 + 50_003).await, "a released lease is free at once");
    assert_eq!(
        store.hook_position("his").await.unwrap_or_else(|e| panic!("{e}")),
        Cursor(9),
        "a takeover keeps the position"
    );
    let other = store.hook_lease("lab", "node-a", t0 + 50_004, 30_000).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(other, "each endpoint has its own lease");
}
