use std::sync::{Arc, Mutex};

use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{Body, Cursor, DeviceId, MessageId, MessageKind, Priority, RoomId, Seq, UserId};

use super::*;
use outpost_shared::uplink::batch::Lane;

#[derive(Default)]
struct Collect(Mutex<Vec<LogEntry>>);

impl Publisher for Collect {
    fn publish(&self, entry: LogEntry) {
        if let Ok(mut v) = self.0.lock() {
            v.push(entry);
        }
    }
}

impl Collect {
    fn cursors(&self) -> Vec<u64> {
        self.0.lock().map(|v| v.iter().map(|e| e.cursor.0).collect()).unwrap_or_default()
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        quota_bytes: 1 << 30,
        emergency_reserve_bytes: 1 << 20,
        max_batch: 4096,
        max_receipts_per_ack: 100,
        readers: 2,
    }
}

fn id(s: &str) -> RoomId {
    RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn req(room: &str, priority: Priority, seq: u64) -> AppendRequest {
    AppendRequest {
        msg: OutgoingMsg {
            id: MessageId(uuid::Uuid::now_v7()),
            room: id(room),
            kind: MessageKind::new("chat").unwrap_or_else(|e| panic!("{e}")),
            priority,
            body: Body::from_json(r#"{"text":"hi"}"#).unwrap_or_else(|e| panic!("{e}")),
            seq: Seq(seq),
            reply_to: None,
        },
        from: UserId::new("amina").unwrap_or_else(|e| panic!("{e}")),
        device: DeviceId::new("phone").unwrap_or_else(|e| panic!("{e}")),
        at: 1_700_000_000_000 + seq,
        origin: None,
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn append_dedupes_forever_and_survives_reopen() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("r.db");
    let publ = Arc::new(Collect::default());
    let store = ok(Store::open(&path, opts(), publ.clone()));
    let first = req("clinic", Priority::Normal, 1);
    let again = AppendRequest { msg: first.msg.clone(), ..req("clinic", Priority::Normal, 1) };
    let a = ok(store.append_wait(first).await);
    assert!(!a.duplicate);
    let b = ok(store.append_wait(again).await);
    assert_eq!((b.cursor, b.duplicate), (a.cursor, true));
    assert_eq!(publ.cursors(), vec![a.cursor.0], "a duplicate is not published again");
    let next = ok(store.append_wait(req("clinic", Priority::Normal, 2)).await);
    assert_eq!(next.cursor.0, a.cursor.0 + 1, "a duplicate leaves no hole in the log");
    let epoch = store.epoch().clone();
    store.shutdown().await;

    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    assert_eq!(store.epoch(), &epoch);
    assert_eq!(store.head(), next.cursor);
    let mut resent = req("elsewhere", Priority::Normal, 9);
    resent.msg.id = a.id;
    let c = ok(store.append_wait(resent).await);
    assert_eq!((c.cursor, c.duplicate), (a.cursor, true), "dedupe is not a time window: it survives restarts");
    let d = ok(store.append_wait(req("clinic", Priority::Normal, 3)).await);
    assert_eq!(d.cursor.0, next.cursor.0 + 1, "cursors continue after a restart");
    store.shutdown().await;
}

/// Commands already queued when the writer starts form one drained group: the
/// emergency among them is committed and published first.
#[test]
fn emergencies_in_a_group_commit_and_publish_first() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("r.db");
    ok(create(&path));
    let mut conn = ok(connect(&path, OpenFlags::default()));
    ok(schema::migrate(&mut conn, "e"));
    let state = ok(writer::State::load(&conn));
    let (tx, rx) = mpsc::channel(64);
    let publ = Arc::new(Collect::default());
    let answers = Arc::new(Mutex::new(Vec::new()));
    for seq in 1..=10 {
        let p = if seq == 8 { Priority::Emergency } else { Priority::Normal };
        let answers = answers.clone();
        let cmd = Command::Append(
            req("ward", p, seq),
            Box::new(move |r| {
                if let (Ok(a), Ok(mut v)) = (r, answers.lock()) {
                    v.push((seq, a.cursor.0));
                }
            }),
        );
        assert!(tx.try_send(cmd).is_ok());
    }
    drop(tx);
    let w = writer::Writer::new(
        conn,
        rx,
        publ.clone(),
        state,
        opts(),
        Arc::new(Gauges::default()),
        tokio::sync::watch::channel(0).0,
        Arc::new(std::sync::RwLock::new(Default::default())),
    );
    w.run();
    let answers = answers.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(answers.first(), Some(&(8, 1)), "the emergency got the first cursor: {answers:?}");
    assert_eq!(publ.0.lock().map(|v| v[0].priority).ok(), Some(Priority::Emergency));
    let normal: Vec<u64> = answers.iter().skip(1).map(|(_, c)| *c).collect();
    assert_eq!(normal, (2..=10).collect::<Vec<_>>(), "the rest keep their order");
}

#[tokio::test]
async fn quota_keeps_a_reserve_for_emergencies() {
    let dir = ok(tempfile::tempdir());
    let o = StoreOptions { quota_bytes: 300_000, emergency_reserve_bytes: 150_000, ..opts() };
    let store = ok(Store::open(&dir.path().join("r.db"), o, Arc::new(Collect::default())));
    let mut refused = false;
    let mut first = None;
    for seq in 0..1000 {
        let mut r = req("ward", Priority::Bulk, seq);
        r.msg.body = ok(Body::from_value(&"x".repeat(4000)));
        let msg = r.msg.clone();
        match store.append_wait(r).await {
            Ok(a) => {
                first.get_or_insert((msg, a.cursor));
            }
            Err(StoreError::StorageFull { .. }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused, "bulk traffic is refused before the quota");
    // A phone that never saw its `stored` sends again: it is told the message is safe.
    let (msg, cursor) = first.unwrap_or_else(|| panic!("nothing was stored"));
    let again = ok(store.append_wait(AppendRequest { msg, ..req("ward", Priority::Bulk, 0) }).await);
    assert_eq!((again.cursor, again.duplicate), (cursor, true), "a re-send is answered even when full");
    assert!(store.append_wait(req("ward", Priority::Emergency, 5000)).await.is_ok(), "the reserve takes emergencies");
    assert_eq!(
        store.append_wait(req("ward", Priority::Normal, 5001)).await.map(|_| ()).err().map(|e| e.code()),
        Some(outpost_shared::ErrorCode::StorageFull)
    );
    store.shutdown().await;
}

#[tokio::test]
async fn replay_filters_rooms_and_the_devices_own_messages() {
    let dir = ok(tempfile::tempdir());
    let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
    let mine = ok(store.append_wait(req("clinic", Priority::Normal, 1)).await);
    let mut other = req("clinic", Priority::Normal, 2);
    other.device = ok(DeviceId::new("other"));
    let theirs = ok(store.append_wait(other).await);
    let mut elsewhere = req("maternity", Priority::Normal, 3);
    elsewhere.device = ok(DeviceId::new("other"));
    ok(store.append_wait(elsewhere).await);
    let q = |own_visible_until| ReplayQuery {
        after: Cursor(0),
        rooms: Arc::from(vec![id("clinic")]),
        user: ok(UserId::new("amina")),
        own_device: ok(DeviceId::new("phone")),
        own_visible_until,
        limit: 10,
        max_bytes: usize::MAX,
        floors: None,
    };
    let resume = ok(store.replay(q(Cursor(0))).await);
    assert_eq!(resume.frames.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![theirs.cursor]);
    assert!(resume.done);
    let full = ok(store.replay(q(store.head())).await);
    assert_eq!(full.frames.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![mine.cursor, theirs.cursor]);
    store.shutdown().await;
}

#[tokio::test]
async fn a_replay_page_ends_at_its_byte_bound_and_the_next_page_goes_on() {
    let dir = ok(tempfile::tempdir());
    let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
    let mut cursors = Vec::new();
    for seq in 1..=5 {
        let mut r = req("clinic", Priority::Normal, seq);
        r.device = ok(DeviceId::new("other"));
        cursors.push(ok(store.append_wait(r).await).cursor);
    }
    let page = |after, max_bytes| {
        let q = ReplayQuery {
            after,
            rooms: Arc::from(vec![id("clinic")]),
            user: ok(UserId::new("amina")),
            own_device: ok(DeviceId::new("phone")),
            own_visible_until: Cursor(0),
            limit: 100,
            max_bytes,
            floors: None,
        };
        let store = store.clone();
        async move { ok(store.replay(q).await) }
    };
    let one = page(Cursor(0), usize::MAX).await.frames[0].1.len();
    // Room for two frames and a bit: the page ends after the frame that reaches the bound.
    let bound = one * 2 + 1;
    let mut seen = Vec::new();
    let mut after = Cursor(0);
    loop {
        let p = page(after, bound).await;
        assert!(p.frames.len() <= 3, "a page stops at its byte bound: {} frames", p.frames.len());
        seen.extend(p.frames.iter().map(|(c, _)| *c));
        after = p.scanned_to;
        if p.done {
            break;
        }
    }
    assert_eq!(seen, cursors, "pages bounded by bytes lose and repeat nothing");
    let tiny = page(Cursor(0), 1).await;
    assert_eq!((tiny.frames.len(), tiny.done), (1, false), "a bound below one frame still makes progress");
    store.shutdown().await;
}

#[tokio::test]
async fn outbound_reads_a_lane_between_two_cursors() {
    let dir = ok(tempfile::tempdir());
    let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
    let mut emergencies = Vec::new();
    for seq in 1..=6 {
        let priority = if seq % 2 == 0 { Priority::Emergency } else { Priority::Normal };
        let c = ok(store.append_wait(req("clinic", priority, seq)).await).cursor;
        if priority == Priority::Emergency {
            emergencies.push(c);
        }
    }
    let read = |after, until| {
        let q = OutboundQuery {
            peer: "cloud".into(),
            rooms: None,
            after,
            until,
            lane: Lane::Emergency,
            limit: 100,
            max_bytes: usize::MAX,
            newest_first: false,
        };
        let store = store.clone();
        async move { ok(store.outbound(q).await) }
    };
    // The backlog: emergencies up to the split (the fourth message's cursor).
    let split = emergencies[1];
    let old = read(Cursor(0), Some(split)).await;
    assert_eq!(old.entries.iter().map(Entry::cursor).collect::<Vec<_>>(), emergencies[..2].to_vec());
    assert_eq!(old.scanned_to, split, "examined up to the bound, not the head");
    let fresh = read(split, None).await;
    assert_eq!(fresh.entries.iter().map(Entry::cursor).collect::<Vec<_>>(), emergencies[2..].to_vec());
    assert_eq!(fresh.scanned_to, store.head());
    store.shutdown().await;
}

#[tokio::test]
async fn the_backlog_counts_what_the_cloud_does_not_hold() {
    let dir = ok(tempfile::tempdir());
    let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
    let empty = ok(store.backlog("cloud").await);
    assert_eq!((empty.messages, empty.receipts, empty.oldest_at), (0, 0, None));
    for (seq, priority) in [(1, Priority::Normal), (2, Priority::Emergency), (3, Priority::Normal)] {
        ok(store.append_wait(req("clinic", priority, seq)).await);
    }
    let b = ok(store.backlog("cloud").await);
    assert_eq!(b.messages, 3);
    assert_eq!(b.bytes, 3 * r#"{"text":"hi"}"#.len() as u64);
    assert_eq!(b.oldest_at, Some(1_700_000_000_001));
    assert_eq!(b.oldest_emergency_at, Some(1_700_000_000_002));
    assert_eq!((b.acked_through, b.files), (0, 0));
    store.shutdown().await;
}

#[tokio::test]
async fn a_storm_of_reads_shares_a_few_connections_and_the_uplink_never_waits_behind_it() {
    let dir = ok(tempfile::tempdir());
    let store =
        ok(Store::open(&dir.path().join("r.db"), StoreOptions { readers: 1, ..opts() }, Arc::new(Collect::default())));
    ok(store.append_wait(req("clinic", Priority::Emergency, 1)).await);

    // A phone's read holds the devices' only permit until we let it go.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .read_with(move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        }
    });
    ok(running.await);
    // Fifty more phones ask for history at once; they queue for the permit.
    let storm: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.history(id("clinic"), None, 10).await })
        })
        .collect();
    // The uplink's reads have permits of their own: they finish while every phone waits
    // (if they shared the phones' permit this would wait for `release`, which is only
    // sent below, and the timeout would fail the test).
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(60), store.backlog("cloud")).await;
    let waiting = ok(waiting.map_err(|_| "the uplink's read waited behind the phones' reads"));
    assert_eq!(ok(waiting).oldest_emergency_at, Some(1_700_000_000_001));
    assert!(storm.iter().all(|t| !t.is_finished()), "a phone's read ran without a permit");

    ok(release.send(()));
    ok(ok(blocker.await));
    for t in storm {
        assert_eq!(ok(ok(t.await)).messages.len(), 1);
    }
    // One connection per lane served all 52 reads.
    assert_eq!(store.readers.opened(), 2);
    store.shutdown().await;
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("r.db");
    ok(create(&path));
    let conn = ok(Connection::open(&path));
    ok(conn.pragma_update(None, "user_version", schema::current_version() + 1));
    drop(conn);
    match Store::open(&path, opts(), Arc::new(Collect::default())) {
        Err(OpenError::Migrate(MigrateError::TooNew { .. })) => {}
        other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
    }
}

/// The fixture for schema version 1: a database as the first schema wrote it, with a
/// message, a receipt, a device cursor and a read mark. Regenerate only when adding the
/// fixture of a new released version (`cargo test -p outpost-relay -- --ignored fixture`).
fn v1_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v1.db")
}

#[test]
#[ignore = "writes the committed fixture; run by hand for a new schema version"]
fn write_schema_v1_fixture() {
    let path = v1_fixture();
    let _ = std::fs::remove_file(&path);
    let conn = ok(Connection::open(&path));
    ok(conn.execute_batch("BEGIN"));
    ok(conn.execute_batch(schema::MIGRATIONS[0]));
    ok(conn.execute_batch(
        "INSERT INTO meta (key, value) VALUES ('epoch', 'fixture-epoch-v1');
         INSERT INTO messages (cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at)
           VALUES (1, X'0190b6d27f3a70008000000000000001', 'clinic', 'chat', 1, '{\"text\":\"from v1\"}', 1, NULL,
                   'amina', 'amina-phone', 117309906370969600, 1790000000000);
         INSERT INTO receipts (cursor, msg_id, state, by_user, target, room, at)
           VALUES (2, X'0190b6d27f3a70008000000000000001', 'delivered', 'baraka', 'amina', 'clinic', 1790000001000);
         INSERT INTO device_cursors (user, device, acked, updated) VALUES ('baraka', 'baraka-phone', 1, 1790000001000);
         INSERT INTO read_marks (user, room, cursor) VALUES ('baraka', 'clinic', 1);
         INSERT INTO rooms (room) VALUES ('clinic');
         PRAGMA user_version = 1;",
    ));
    ok(conn.execute_batch("COMMIT"));
    ok(conn.execute_batch("VACUUM"));
}

/// Every released schema version upgrades in place, keeping what it held.
#[tokio::test]
async fn a_version_1_database_upgrades_and_keeps_its_data() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("relay.db");
    ok(std::fs::copy(v1_fixture(), &path));
    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    assert_eq!(store.epoch().0, "fixture-epoch-v1", "the epoch survives: phones do not resync");
    assert_eq!(store.head(), Cursor(2));
    let q = ReplayQuery {
        after: Cursor(0),
        rooms: Arc::from(vec![id("clinic")]),
        user: ok(UserId::new("amina")),
        own_device: ok(DeviceId::new("other")),
        own_visible_until: Cursor(0),
        limit: 10,
        max_bytes: usize::MAX,
        floors: None,
    };
    let replay = ok(store.replay(q).await);
    assert_eq!(replay.frames.len(), 2, "the old message and its receipt replay");
    assert!(replay.frames[0].1.contains("from v1"));
    // New writes continue after the old cursors, and the link tables exist.
    let a = ok(store.append_wait(req("clinic", Priority::Normal, 2)).await);
    assert_eq!(a.cursor, Cursor(3));
    let peer = ok(store.peer_hello("cloud", "e", Vec::new()).await);
    assert_eq!(peer.sent_hwm, Cursor(0));
    store.shutdown().await;
    let conn = ok(Connection::open(&path));
    let version: u32 = ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0)));
    assert_eq!(version, schema::current_version());
}

#[tokio::test]
async fn the_audit_log_is_append_only_and_revocations_reach_the_list() {
    use outpost_shared::{Revocation, Revoked};
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("r.db");
    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(store.clone().watch_revocations(std::time::Duration::from_millis(10), stop.clone()));
    let mut list = store.revocations();

    let user = |before| Revocation {
        what: Revoked::User { user: "amina".into(), issued_before: before },
        reason: "left".into(),
        at: 1,
    };
    assert_eq!(ok(store.apply_revocations("cloud", vec![user(100), user(100)]).await), 1);
    ok(list.changed().await);
    assert_eq!(list.borrow_and_update().len(), 1);
    // An older entry changes nothing; a later one replaces it.
    assert_eq!(ok(store.apply_revocations("cloud", vec![user(50)]).await), 0);
    assert_eq!(ok(store.apply_revocations("cloud", vec![user(200)]).await), 1);
    ok(list.changed().await);
    let later = list.borrow_and_update().entries().map(Revocation::issued_before).collect::<Vec<_>>();
    assert_eq!(later, vec![200]);

    ok(store.audit_committed(AuditEvent::new(AuditKind::Login, "token t").actor("amina")).await);
    // An alert is audited once, however often the phone sends it.
    let alert = req("ward", Priority::Emergency, 1);
    let resent = AppendRequest { msg: alert.msg.clone(), ..req("ward", Priority::Emergency, 1) };
    assert!(!ok(store.append_wait(alert).await).duplicate);
    assert!(ok(store.append_wait(resent).await).duplicate);
    let (events, more) = ok(store.audit_page(0, 10).await);
    assert!(!more);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["revocation", "revocation", "login", "emergency"]);

    // Not even a direct connection can rewrite or erase history.
    let conn = ok(rusqlite::Connection::open(&path));
    let upd = conn.execute("UPDATE audit SET detail = 'nothing happened'", []);
    assert!(upd.is_err_and(|e| e.to_string().contains("append-only")));
    assert!(conn.execute("DELETE FROM audit", []).is_err());
    stop.cancel();
    store.shutdown().await;
}

/// Operators script one-shot commands (`outpost-cloud token` for a village's phones) and
/// may run them side by side before the database exists. Every one of them must get
/// through: the first creates the file in rollback mode and switches it to WAL, and the
/// others meet that switch.
#[test]
fn one_shot_commands_creating_the_database_side_by_side_all_succeed() {
    const ROUNDS: usize = 25;
    const AT_ONCE: usize = 4;
    for round in 0..ROUNDS {
        let dir = ok(tempfile::tempdir());
        let path = dir.path().join("data").join("hub.db");
        let start = Arc::new(std::sync::Barrier::new(AT_ONCE));
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|k| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    let event = AuditEvent::new(AuditKind::TokenIssued, format!("token {k}"));
                    start.wait();
                    security::record_offline(&path, &[], &[event], "cli", 1).map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            let outcome = h.join().unwrap_or_else(|_| Err("the command thread panicked".into()));
            assert_eq!(outcome, Ok(0), "round {round}: a command failed");
        }
        let (events, _) = ok(security::read_offline(&path, 0, 100));
        assert_eq!(events.len(), AT_ONCE, "round {round}: every command's audit event is recorded");
    }
}

/// The backend-neutral suite (outpost_storage::conformance), each check on a fresh
/// database in its own directory.
#[tokio::test(flavor = "multi_thread")]
async fn passes_the_storage_conformance_suite() {
    let dirs = Mutex::new(Vec::new());
    outpost_storage::conformance::check_all(|published| {
        let dir = ok(tempfile::tempdir());
        let store = ok(Store::open(&dir.path().join("relay.db"), opts(), published));
        if let Ok(mut d) = dirs.lock() {
            d.push(dir);
        }
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn its_blob_files_pass_the_blob_bytes_conformance_suite() {
    use outpost_storage::MediaStore as _;
    let dirs = Mutex::new(Vec::new());
    outpost_storage::conformance::bytes::check_all(|| {
        let dir = ok(tempfile::tempdir());
        let db = dir.path().join("relay.db");
        let store = ok(Store::open(&db, opts(), Arc::new(Collect::default())));
        if let Ok(mut d) = dirs.lock() {
            d.push(dir);
        }
        ok(store.blob_bytes(&db))
    })
    .await;
}

/// The events feed reads by the primary key (every room) or by `messages_room` (some
/// rooms), never sorting a room's whole tail: in a log of 200,000 messages the ten of a
/// rare room come back in order, and the plans say how they were found.
#[tokio::test]
async fn events_use_the_primary_key_or_the_room_index_and_never_sort() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("r.db");
    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    {
        let mut conn = ok(connect(&path, OpenFlags::default()));
        let tx = ok(conn.transaction());
        {
            let mut insert = ok(tx.prepare(
                "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, sender, device, hlc, at)
                 VALUES (?1, ?2, ?3, 'chat', 1, '{}', ?1, 'amina', 'phone', 0, 0)",
            ));
            for cursor in 1..=200_000i64 {
                let room = if cursor % 20_000 == 0 { "rare".to_owned() } else { format!("busy-{}", cursor % 7) };
                ok(insert.execute(rusqlite::params![cursor, uuid::Uuid::now_v7().as_bytes().as_slice(), room]));
            }
        }
        ok(tx.commit());
    }
    let rare: Arc<[RoomId]> = Arc::from(vec![id("rare"), id("never-used")]);
    let (page, more) = ok(store.events(Some(rare.clone()), Cursor(0), 5).await);
    assert_eq!(page.iter().map(|p| p.cursor.0).collect::<Vec<_>>(), [20_000, 40_000, 60_000, 80_000, 100_000]);
    assert!(more);
    let (page, more) = ok(store.events(Some(rare), Cursor(100_000), 5).await);
    assert_eq!(page.iter().map(|p| p.cursor.0).collect::<Vec<_>>(), [120_000, 140_000, 160_000, 180_000, 200_000]);
    assert!(!more);
    let (page, more) = ok(store.events(None, Cursor(199_998), 5).await);
    assert_eq!(page.iter().map(|p| p.cursor.0).collect::<Vec<_>>(), [199_999, 200_000]);
    assert!(!more);

    let plans = ok(store
        .read_with(|c| {
            let plan = |sql: &str| -> Result<String, rusqlite::Error> {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let unbound = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
                let rows = stmt.query_map(rusqlite::params_from_iter(unbound), |r| r.get::<_, String>(3))?;
                rows.collect::<Result<Vec<_>, _>>().map(|v| v.join("; "))
            };
            Ok((plan(&reader::events_all_sql())?, plan(&reader::events_room_sql())?))
        })
        .await);
    let (all, room) = plans;
    assert!(all.contains("USING INTEGER PRIMARY KEY (rowid>?)"), "{all}");
    assert!(room.contains("USING INDEX messages_room (room=? AND cursor>?)"), "{room}");
    for plan in [&all, &room] {
        assert!(!plan.contains("TEMP B-TREE") && !plan.contains("SCAN"), "no sort, no full scan: {plan}");
    }
    store.shutdown().await;
}

/// A webhook's position and lease are in the database: a restarted server resumes
/// where the last one left off, and a lease still running is still held.
#[tokio::test]
async fn hook_positions_and_leases_survive_a_restart() {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("cloud.db");
    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    let now = 1_700_000_000_000;
    assert!(ok(store.hook_lease("his", "node-a", now, 30_000).await));
    assert!(ok(store.hook_advance("his", "node-a", Cursor(42)).await));
    store.shutdown().await;

    let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
    assert_eq!(ok(store.hook_position("his").await), Cursor(42));
    assert!(!ok(store.hook_lease("his", "node-b", now + 1_000, 30_000).await), "the lease outlived the restart");
    assert!(ok(store.hook_lease("his", "node-b", now + 30_000, 30_000).await));
    store.shutdown().await;
}

mod retention {
    use super::*;

    fn policy(high_water: Option<u64>) -> RetentionPolicy {
        RetentionPolicy {
            confirm_peer: Some("cloud".into()),
            quota_high_water_bytes: high_water,
            batch: 1000,
            clock_offset_ms: 0,
        }
    }

    async fn count(store: &Store) -> i64 {
        ok(store.read_with(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))).await)
    }

    #[tokio::test]
    async fn only_what_the_cloud_confirmed_goes_and_cursors_are_never_reused() {
        let dir = ok(tempfile::tempdir());
        let path = dir.path().join("r.db");
        let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
        let p = policy(None);
        ok(store.set_retention(p.clone()).await);
        let mut last = Cursor(0);
        for seq in 1..=10 {
            last = ok(store.append_wait(req("ward", Priority::Normal, seq)).await).cursor;
        }
        let cutoff = u64::MAX / 2;
        assert_eq!(ok(store.prune_aged(&p, cutoff, 1).await).removed, 0, "nothing is confirmed yet");
        store.peer_acked("cloud", Cursor(6), Vec::new(), 1).await;
        ok(store.ping().await);
        assert_eq!(ok(store.prune_aged(&p, cutoff, 1).await).removed, 6);
        assert_eq!(count(&store).await, 4, "the unconfirmed four stay");
        let stats = store.retention_stats();
        assert_eq!((stats.pruned_by_age, stats.pruned_through), (6, 6));
        assert!(ok(store.pruned_floor(id("ward")).await).is_some());
        // Everything confirmed and removed: a reopened store still continues after it.
        store.peer_acked("cloud", last, Vec::new(), 1).await;
        ok(store.ping().await);
        assert_eq!(ok(store.prune_aged(&p, cutoff, 1).await).removed, 4);
        store.shutdown().await;
        let store = ok(Store::open(&path, opts(), Arc::new(Collect::default())));
        let next = ok(store.append_wait(req("ward", Priority::Normal, 11)).await).cursor;
        assert!(next > last, "position {next:?} after {last:?}");
        assert_eq!(store.retention_stats().pruned_by_age, 10, "totals survive a restart");
        store.shutdown().await;
    }

    /// A patient's record is derived from its edits (outpost_shared::record): they stay
    /// however old and confirmed, by age and for the quota alike.
    #[tokio::test]
    async fn record_edits_are_never_pruned() {
        let dir = ok(tempfile::tempdir());
        let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
        let p = policy(Some(0));
        ok(store.set_retention(p.clone()).await);
        let mut last = Cursor(0);
        for seq in 1..=6 {
            let mut r = req("ward", Priority::Normal, seq);
            if seq % 2 == 0 {
                r.msg.kind = ok(MessageKind::new("record.edit"));
            }
            last = ok(store.append_wait(r).await).cursor;
        }
        store.peer_acked("cloud", last, Vec::new(), 1).await;
        ok(store.ping().await);
        // Over the quota's high-water mark from the start: every write is followed by quota
        // pruning, which removes what is confirmed, bar the edits.
        ok(store.append_wait(req("ward", Priority::Normal, 7)).await);
        ok(store.ping().await);
        assert!(ok(store.prune_aged(&p, u64::MAX / 2, 1).await).removed <= 3);
        let stats = store.retention_stats();
        assert_eq!(stats.pruned_by_age + stats.pruned_by_quota, 3, "the confirmed chat goes");
        let (edits, _) =
            ok(store.workflow_events(id("ward"), outpost_storage::Workflow::Record, outpost_shared::Hlc(0), 10).await);
        assert_eq!(edits.len(), 3, "the record's edits stay");
        assert_eq!(count(&store).await, 4, "the edits and the unconfirmed last message");
        store.shutdown().await;
    }

    #[tokio::test]
    async fn an_undelivered_emergency_stays_and_goes_once_delivered() {
        let dir = ok(tempfile::tempdir());
        let store = ok(Store::open(&dir.path().join("r.db"), opts(), Arc::new(Collect::default())));
        let p = policy(None);
        ok(store.set_retention(p.clone()).await);
        let alert = ok(store.append_wait(req("ward", Priority::Emergency, 1)).await).cursor;
        store.peer_acked("cloud", alert, Vec::new(), 1).await;
        ok(store.ping().await);
        assert_eq!(ok(store.prune_aged(&p, u64::MAX / 2, 1).await).removed, 0);
        let rooms: Arc<[RoomId]> = Arc::from(vec![id("ward")]);
        let nurse = UserId::new("nurse").unwrap_or_else(|e| panic!("{e}"));
        store.ack(DeviceId::new("tab").unwrap_or_else(|e| panic!("{e}")), nurse, rooms, alert, 2).await;
        ok(store.ping().await);
        // The receipt it made is ours to send only if the message came from the cloud.
        assert_eq!(ok(store.prune_aged(&p, u64::MAX / 2, 1).await).removed, 1);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn quota_prunes_confirmed_messages_before_refusing() {
        let dir = ok(tempfile::tempdir());
        let o = StoreOptions { quota_bytes: 600_000, emergency_reserve_bytes: 150_000, ..opts() };
        let store = ok(Store::open(&dir.path().join("r.db"), o, Arc::new(Collect::default())));
        ok(store.set_retention(policy(Some(400_000))).await);
        let mut refused_at = None;
        for seq in 0..400u64 {
            let mut r = req("ward", Priority::Bulk, seq);
            r.msg.body = ok(Body::from_value(&"x".repeat(4000)));
            match store.append_wait(r).await {
                Ok(a) => store.peer_acked("cloud", a.cursor, Vec::new(), 1).await,
                Err(StoreError::StorageFull { .. }) => {
                    refused_at = Some(seq);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused_at, None, "confirmed messages made room for every send");
        assert!(store.retention_stats().pruned_by_quota > 0);
        assert!(store.used_bytes() < 600_000 - 150_000);
        // Nothing confirmed any more: the quota refuses again, and the reserve still
        // takes an emergency.
        let mut refused = false;
        for seq in 400..800u64 {
            let mut r = req("ward", Priority::Bulk, seq);
            r.msg.body = ok(Body::from_value(&"x".repeat(4000)));
            if let Err(StoreError::StorageFull { .. }) = store.append_wait(r).await {
                refused = true;
                break;
            }
        }
        assert!(refused, "unconfirmed messages are never pruned");
        assert!(store.append_wait(req("ward", Priority::Emergency, 900)).await.is_ok());
        store.shutdown().await;
    }
}

#[tokio::test]
async fn a_new_devices_window_takes_each_rooms_latest_from_its_own_floor() {
    // A quiet room's few old messages, then a busy room's many: the window is the busy
    // room's latest and all of the quiet one, in cursor order, read page by page.
    let dir = ok(tempfile::tempdir());
    let store = ok(Store::open(&dir.path().join("w.db"), opts(), Arc::new(Collect::default())));
    let mut quiet = Vec::new();
    for seq in 1..=5 {
        quiet.push(ok(store.append_wait(req("village", Priority::Normal, seq)).await).cursor);
    }
    let mut busy = Vec::new();
    for seq in 6..=305 {
        busy.push(ok(store.append_wait(req("clinic", Priority::Normal, seq)).await).cursor);
    }
    let floors: Vec<(RoomId, Cursor)> = vec![
        (id("clinic"), ok(store.room_floor(id("clinic"), 200).await)),
        (id("village"), ok(store.room_floor(id("village"), 200).await)),
    ];
    assert_eq!(floors[0].1, busy[99], "below the latest 200");
    assert_eq!(floors[1].1, Cursor(0), "a room with fewer: all of it");
    let floors: Arc<[(RoomId, Cursor)]> = Arc::from(floors);
    let mut got = Vec::new();
    let mut after = Cursor(0);
    loop {
        let q = ReplayQuery {
            after,
            rooms: Arc::from(vec![id("clinic"), id("village")]),
            user: ok(UserId::new("zawadi")),
            own_device: ok(DeviceId::new("new-phone")),
            own_visible_until: Cursor(0),
            limit: 64,
            max_bytes: usize::MAX,
            floors: Some(floors.clone()),
        };
        let page = ok(store.replay(q).await);
        got.extend(page.frames.iter().map(|(c, _)| *c));
        after = page.scanned_to;
        if page.done {
            break;
        }
    }
    let want: Vec<Cursor> = quiet.iter().chain(&busy[100..]).copied().collect();
    assert_eq!(got, want);
}
