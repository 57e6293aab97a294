//! Hubs' batches committed on several connections and nodes at once (import.rs): every
//! entry is published once and in cursor order on every node, even though transactions
//! commit out of cursor order; an import still committing holds readers back below it;
//! and the range of a connection that died before committing is reclaimed so that
//! nobody waits for it forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outpost_shared::frames::ReceiptState;
use outpost_shared::uplink::batch::{Entry, WireMessage, WireReceipt};
use outpost_shared::{Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, RoomId, Seq, UserId};
use outpost_storage::{AppendRequest, LinkStore, LogStore};
use outpost_store_postgres::testing::TestCluster;
use outpost_store_postgres::{PgOptions, PgStore};

mod common;
use common::{Seen, ok};

static DB: AtomicU32 = AtomicU32::new(0);

fn fresh_db(c: &TestCluster) -> String {
    ok(c.create_database(&format!("importers_{}", DB.fetch_add(1, Ordering::Relaxed))))
}

/// Small groups, so that a few hundred batches make many transactions that overlap.
fn opts() -> PgOptions {
    PgOptions {
        poll_interval: Duration::from_millis(200),
        import_writers: 3,
        import_group_entries: 60,
        ..PgOptions::default()
    }
}

fn room(s: &str) -> RoomId {
    ok(RoomId::new(s))
}

fn wire_message(hub: usize, n: u64, room: &RoomId) -> Entry {
    Entry::Message(WireMessage {
        cursor: Cursor(n),
        id: MessageId(uuid::Uuid::now_v7()),
        room: room.clone(),
        kind: ok(MessageKind::new("chat")),
        priority: Priority::Normal,
        body: format!("{{\"text\":\"hub {hub} entry {n}\"}}"),
        seq: Seq(n),
        reply_to: None,
        from: ok(UserId::new(format!("worker-{hub}"))),
        device: ok(DeviceId::new("phone-1")),
        hlc: Hlc(n),
        at: 1_700_000_000_000 + n,
    })
}

/// A hub's log: messages, and now and then a read receipt about its previous message.
fn hub_log(hub: usize, batches: usize, per_batch: usize) -> Vec<Vec<Entry>> {
    let r = room(&format!("village-{}", hub % 7));
    let mut n = 0u64;
    let mut last: Option<MessageId> = None;
    (0..batches)
        .map(|_| {
            (0..per_batch)
                .map(|_| {
                    n += 1;
                    match last.take() {
                        Some(id) if n.is_multiple_of(5) => Entry::Receipt(WireReceipt {
                            cursor: Cursor(n),
                            id,
                            state: ReceiptState::Read,
                            by: Some(ok(UserId::new(format!("nurse-{hub}")))),
                            target: ok(UserId::new(format!("worker-{hub}"))),
                            room: r.clone(),
                            at: 1_700_000_000_000 + n,
                        }),
                        _ => {
                            let e = wire_message(hub, n, &r);
                            if let Entry::Message(m) = &e {
                                last = Some(m.id);
                            }
                            e
                        }
                    }
                })
                .collect()
        })
        .collect()
}

async fn client(url: &str) -> tokio_postgres::Client {
    let cfg = ok(outpost_store_postgres::parse_url(url));
    let (c, conn) = ok(cfg.connect(tokio_postgres::NoTls).await);
    tokio::spawn(conn);
    c
}

/// Every stored entry's cursor, and each message's by its text.
async fn stored(url: &str) -> (Vec<u64>, HashMap<String, u64>) {
    let c = client(url).await;
    let rows = ok(c.query("SELECT cursor FROM messages UNION ALL SELECT cursor FROM receipts ORDER BY 1", &[]).await);
    let all = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
    let rows = ok(c.query("SELECT body::json->>'text', cursor FROM messages", &[]).await);
    let by_text = rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect();
    (all, by_text)
}

fn append(room: &RoomId, n: u64) -> AppendRequest {
    common::chat_from("dr-okafor", "desk", room, &format!("doctor {n}"), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_on_many_connections_reach_every_node_once_and_in_cursor_order() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let a = ok(PgStore::open(&url, opts(), seen_a.clone()).await);
    let b = ok(PgStore::open(&url, opts(), seen_b.clone()).await);
    const HUBS: usize = 40;
    let logs: Vec<Vec<Vec<Entry>>> = (0..HUBS).map(|h| hub_log(h, 8, 25)).collect();
    let sent: usize = logs.iter().flatten().map(Vec::len).sum();
    let mut tasks = tokio::task::JoinSet::new();
    for (h, log) in logs.iter().cloned().enumerate() {
        // Half the hubs on each node; each awaits a batch before the next, as a link does.
        let node = if h % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let mut fresh = 0;
            for batch in log {
                let hwm = batch.last().map_or(Cursor(0), Entry::cursor);
                fresh += ok(node.import(&format!("hub-{h}"), batch, hwm).await);
            }
            fresh
        });
    }
    // A doctor writes on node A meanwhile (the writer's transactions, between the
    // importers' ranges).
    let ward = room("village-0");
    let doctor = {
        let a = a.clone();
        tokio::spawn(async move {
            for n in 0..50 {
                ok(a.append_wait(append(&ward, n)).await);
            }
        })
    };
    let mut fresh = 0;
    while let Some(r) = tasks.join_next().await {
        fresh += ok(r);
    }
    ok(doctor.await);
    assert_eq!(fresh, sent, "every entry of every hub was new once");

    let (all, by_text) = stored(&url).await;
    assert_eq!(all.len(), sent + 50, "every hub's entry and every doctor's message is stored once");
    let last = *all.last().unwrap_or(&0);
    seen_a.until(last).await;
    seen_b.until(last).await;
    for (name, seen) in [("A", &seen_a), ("B", &seen_b)] {
        assert_eq!(seen.cursors(), all, "node {name} published every stored entry once, in cursor order");
    }
    // Each hub's log keeps its order in the cloud's.
    for (h, log) in logs.iter().enumerate() {
        let cursors: Vec<u64> = log
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Message(m) => Some(by_text[&format!("hub {h} entry {}", m.cursor.0)]),
                Entry::Receipt(_) => None,
            })
            .collect();
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "hub {h}'s messages are in its order: {cursors:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Reserves `n` cursors on `conn` the way an importer does; returns the first.
async fn reserve(conn: &tokio_postgres::Client, n: i64) -> i64 {
    let row = ok(conn
        .query_one(
            "WITH h AS (UPDATE log_head SET head = head + $1 RETURNING head)
             INSERT INTO open_ranges (first, last, pid, started)
               SELECT head - $1 + 1, head, pg_backend_pid(),
                      (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
                 FROM h
             RETURNING first",
            &[&n],
        )
        .await);
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_still_committing_holds_readers_back_and_a_dead_ones_range_is_reclaimed() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let seen = Arc::new(Seen::default());
    let node = ok(PgStore::open(&url, opts(), seen.clone()).await);
    let ward = room("village-3");

    // Another node's importer reserved a range and is still committing it.
    let other = client(&url).await;
    let first = reserve(&other, 10).await;
    // This node commits a message above the range.
    let doctor = {
        let node = node.clone();
        let ward = ward.clone();
        tokio::spawn(async move { node.append_wait(append(&ward, 1)).await })
    };
    let probe = client(&url).await;
    let above = loop {
        let row = ok(probe.query_opt("SELECT cursor FROM messages WHERE body::json->>'text' = 'doctor 1'", &[]).await);
        if let Some(r) = row {
            break r.get::<_, i64>(0);
        }
        tokio::task::yield_now().await;
    };
    assert!(above > first + 9, "the message was given a cursor above the open range");
    // Committed, but not published while the range below it may still commit: a phone
    // that got it live would resume past whatever commits in the range. Two polls'
    // time is far longer than publication takes when nothing is open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!seen.has_text("doctor 1"), "nothing above an open range is published");
    assert!(!doctor.is_finished(), "its sender is answered once it is published");

    // The range commits with an entry at its first cursor: both are published, in order.
    let body = "{\"text\":\"late import\"}";
    ok(other
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO messages (cursor, id, room, kind, priority, body, seq, sender, device, hlc, at, origin_peer)
               VALUES ({first}, '\\x{id}', 'village-3', 'chat', 1, '{body}', 1, 'worker-1', 'phone-1', 1, 1, 'hub-x');
             DELETE FROM open_ranges WHERE first = {first};
             NOTIFY outpost_log;
             COMMIT",
            id = uuid::Uuid::now_v7().simple()
        ))
        .await);
    ok(ok(ok(tokio::time::timeout(Duration::from_secs(20), doctor).await)));
    let got = seen.cursors();
    let (late, mine) = (first as u64, above as u64);
    assert!(seen.has_text("late import") && seen.has_text("doctor 1"));
    let pos = |c: u64| got.iter().position(|x| *x == c);
    assert!(pos(late) < pos(mine), "the range's entry first, then the one above: {got:?}");

    // A second range whose connection dies before committing: reclaimed by the node's
    // tail, after which what came above it is published and answered.
    let doomed = client(&url).await;
    let gone = reserve(&doomed, 10).await;
    let answer = {
        let node = node.clone();
        let ward = ward.clone();
        tokio::spawn(async move { node.append_wait(append(&ward, 2)).await })
    };
    drop(doomed);
    let appended = ok(ok(ok(tokio::time::timeout(Duration::from_secs(20), answer).await)));
    assert!(appended.cursor.0 > gone as u64 + 9);
    seen.until(appended.cursor.0).await;
    let open: i64 = ok(probe.query_one("SELECT count(*) FROM open_ranges", &[]).await).get(0);
    assert_eq!(open, 0, "the dead connection's range is gone");
    let got = seen.cursors();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "published in cursor order: {got:?}");
    assert!(got.iter().all(|c| !(gone as u64..gone as u64 + 10).contains(c)), "nothing from the dead range");
    node.shutdown().await;
}

/// Waits (at most 20 s) until `probe` finds a row for `sql`, a count.
async fn until_counted(probe: &tokio_postgres::Client, sql: &str) {
    let wait = async {
        loop {
            if ok(probe.query_one(sql, &[]).await).get::<_, i64>(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    ok(tokio::time::timeout(Duration::from_secs(20), wait).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubs_batch_left_by_its_link_and_the_resend_do_not_interleave() {
    // A link that ends while its batch waits for an importer (the database was away)
    // leaves the batch to be committed later, while the hub, reconnected, sends the same
    // messages again cut into other batches. Both copies are in importers at once; the
    // hub's order must still be the cloud's.
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let node = ok(PgStore::open(&url, opts(), Arc::new(Seen::default())).await);
    let ward = room("ward-9");
    let log: Vec<Entry> = (1..=30).map(|n| wire_message(9, n, &ward)).collect();
    let id_of = |n: usize| match &log[n - 1] {
        Entry::Message(m) => m.id,
        Entry::Receipt(_) => unreachable!("only messages"),
    };
    let hwm = |n: u64| Cursor(n);
    ok(node.import("hub-9", log[..9].to_vec(), hwm(9)).await);

    // Message 10 is being written by another transaction (it stands for any commit the
    // left batch waits behind): the left batch, 10 to 30, reserves its cursors and then
    // waits at message 10.
    let blocker = client(&url).await;
    ok(blocker
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO messages (cursor, id, room, kind, priority, body, seq, sender, device, hlc, at, origin_peer)
               VALUES (1000000, '\\x{id}', 'ward-9', 'chat', 1, '{{}}', 10, 'worker-9', 'phone-1', 10, 10, 'hub-9')",
            id = id_of(10).0.simple()
        ))
        .await);
    let left = {
        let (node, batch) = (node.clone(), log[9..].to_vec());
        tokio::spawn(async move { node.import("hub-9", batch, hwm(30)).await })
    };
    let probe = client(&url).await;
    until_counted(
        &probe,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO messages%'",
    )
    .await;

    // The resend's second batch, 11 to 20, arrives meanwhile. It must not commit ahead
    // of the batch holding 21 to 30 with cursors that batch reserved below it.
    let resent = {
        let (node, batch) = (node.clone(), log[10..20].to_vec());
        tokio::spawn(async move { node.import("hub-9", batch, hwm(20)).await })
    };
    until_counted(
        &probe,
        &format!(
            "SELECT (SELECT count(*) FROM messages WHERE id = '\\x{id}')
                  + (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory')",
            id = id_of(11).0.simple()
        ),
    )
    .await;
    ok(blocker.batch_execute("ROLLBACK").await);
    ok(ok(ok(tokio::time::timeout(Duration::from_secs(20), left).await)));
    ok(ok(ok(tokio::time::timeout(Duration::from_secs(20), resent).await)));

    let (_, by_text) = stored(&url).await;
    let cursors: Vec<u64> = (1..=30).map(|n| by_text[&format!("hub 9 entry {n}")]).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "the hub's messages are in its order: {cursors:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_replay_never_passes_an_import_still_committing() {
    // Another connection has reserved cursors 10 to 20 for an import (as an importer does
    // before it writes the rows) and not finished; hub 8's batch, later, has committed at
    // 21 onwards. A doctor resuming now must not be handed 21 onwards: its cursor would
    // pass 10 to 20, which can still commit and would then never reach it.
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let node = ok(PgStore::open(&url, opts(), Arc::new(Seen::default())).await);
    let ward = room("ward-9");
    let nine: Vec<Entry> = (1..=9).map(|n| wire_message(9, n, &ward)).collect();
    let eight: Vec<Entry> = (1..=10).map(|n| wire_message(8, n, &ward)).collect();
    ok(node.import("hub-9", nine, Cursor(9)).await);
    let importer = client(&url).await;
    ok(importer
        .batch_execute(
            "WITH h AS (UPDATE log_head SET head = head + 11 RETURNING head)
             INSERT INTO open_ranges (first, last, pid, started)
               SELECT head - 10, head, pg_backend_pid(),
                      (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
                 FROM h",
        )
        .await);
    // Its answer waits for everything below it (the hub is told only what is in order);
    // its rows are committed meanwhile.
    let later = {
        let node = node.clone();
        tokio::spawn(async move { node.import("hub-8", eight, Cursor(10)).await })
    };
    until_counted(&importer, "SELECT count(*) FROM messages WHERE cursor = 30").await;

    let replay = |after: Cursor| {
        let (node, ward) = (node.clone(), ward.clone());
        async move {
            ok(node
                .replay(outpost_storage::ReplayQuery {
                    after,
                    rooms: Arc::from(vec![ward]),
                    user: ok(UserId::new("dr-neema")),
                    own_device: ok(DeviceId::new("laptop")),
                    own_visible_until: Cursor(0),
                    limit: 1000,
                    max_bytes: 1 << 20,
                    floors: None,
                })
                .await)
        }
    };
    let cursors = |r: &outpost_storage::Replay| -> Vec<u64> { r.frames.iter().map(|(c, _)| c.0).collect() };
    let first = replay(Cursor(0)).await;
    assert_eq!(cursors(&first), (1..=9).collect::<Vec<_>>(), "nothing past the open range");

    // The range closes (its import finished); resuming where the page ended gives the
    // rest, each once.
    ok(importer.batch_execute("DELETE FROM open_ranges").await);
    ok(ok(ok(tokio::time::timeout(Duration::from_secs(20), later).await)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let rest = loop {
        let r = replay(first.scanned_to).await;
        if !r.frames.is_empty() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "hub 8's messages never came");
        // The node's tail publishes them when the notification arrives; a replay is
        // what a reconnecting doctor would do.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cursors(&rest), (21..=30).collect::<Vec<_>>());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_devices_window_takes_each_rooms_latest_from_its_own_floor() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let node = ok(PgStore::open(&url, opts(), Arc::new(Seen::default())).await);
    let (quiet, busy) = (room("village"), room("clinic"));
    let mut log: Vec<Entry> = (1..=5).map(|n| wire_message(1, n, &quiet)).collect();
    log.extend((6..=305).map(|n| wire_message(1, n, &busy)));
    ok(node.import("hub-1", log, Cursor(305)).await);
    let floors: Vec<(RoomId, Cursor)> = vec![
        (busy.clone(), ok(node.room_floor(busy.clone(), 200).await)),
        (quiet.clone(), ok(node.room_floor(quiet.clone(), 200).await)),
    ];
    assert_eq!(floors[0].1, Cursor(105), "below the latest 200");
    assert_eq!(floors[1].1, Cursor(0), "a room with fewer: all of it");
    let floors: Arc<[(RoomId, Cursor)]> = Arc::from(floors);
    let mut got = Vec::new();
    let mut after = Cursor(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = ok(node
            .replay(outpost_storage::ReplayQuery {
                after,
                rooms: Arc::from(vec![busy.clone(), quiet.clone()]),
                user: ok(UserId::new("zawadi")),
                own_device: ok(DeviceId::new("new-phone")),
                own_visible_until: Cursor(0),
                limit: 64,
                max_bytes: usize::MAX,
                floors: Some(floors.clone()),
            })
            .await);
        got.extend(page.frames.iter().map(|(c, _)| c.0));
        after = page.scanned_to;
        if page.done && got.len() >= 205 {
            break;
        }
        // Until the node has published the import, its replay stops below it.
        assert!(tokio::time::Instant::now() < deadline, "replayed {got:?}");
        if page.done {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let want: Vec<u64> = (1..=5).chain(106..=305).collect();
    assert_eq!(got, want);
    node.shutdown().await;
}
