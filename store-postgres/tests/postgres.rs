//! The PostgreSQL store against a private cluster: the backend-neutral conformance suite,
//! and what only several nodes on one database can show — one order across nodes, live
//! publication of other nodes' entries, idempotent imports from a hub connected to two
//! nodes at once, migrations by nodes starting together, writes that wait out a
//! database restart, and an SQLite cloud (database and media files) moved in.
//! Media bytes on several nodes are in blob_bytes.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outpost_shared::uplink::batch::{Entry, WireMessage};
use outpost_shared::{Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, RoomId, Seq, UserId};
use outpost_storage::conformance::Published;
use outpost_storage::{AppendRequest, LinkStore, LogStore, Publisher};
use outpost_store_postgres::testing::TestCluster;
use outpost_store_postgres::{PgOptions, PgStore};

mod common;
use common::{Seen, ok};

fn cluster() -> TestCluster {
    ok(TestCluster::start())
}

static DB: AtomicU32 = AtomicU32::new(0);

fn fresh_db(c: &TestCluster) -> String {
    ok(c.create_database(&format!("outpost_{}", DB.fetch_add(1, Ordering::Relaxed))))
}

fn opts() -> PgOptions {
    PgOptions { poll_interval: Duration::from_millis(200), ..PgOptions::default() }
}

async fn open(url: &str, publisher: Arc<dyn Publisher>) -> PgStore {
    ok(PgStore::open(url, opts(), publisher).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_storage_conformance_suite() {
    let c = cluster();
    outpost_storage::conformance::check_all(|published| {
        let url = fresh_db(&c);
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(open(&url, published)))
    })
    .await;
}

fn room(s: &str) -> RoomId {
    ok(RoomId::new(s))
}

fn msg(room: &RoomId, n: u64) -> AppendRequest {
    common::chat_from("amina", "phone-1", room, &format!("message {n}"), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_order_and_each_publishes_the_others_entries() {
    let c = cluster();
    let url = fresh_db(&c);
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let a = open(&url, seen_a.clone()).await;
    let b = open(&url, seen_b.clone()).await;
    assert_eq!(LogStore::epoch(&a), LogStore::epoch(&b), "one database, one epoch");
    let r = room("ward-1");
    // Both nodes write at once.
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let writes_a = async {
        for n in 0..200 {
            from_a.push(ok(a.append_wait(msg(&r, n)).await).cursor.0);
        }
    };
    let writes_b = async {
        for n in 0..200 {
            from_b.push(ok(b.append_wait(msg(&r, 1000 + n)).await).cursor.0);
        }
    };
    tokio::join!(writes_a, writes_b);
    let last = *from_a.iter().chain(&from_b).max().unwrap_or(&0);
    seen_a.until(last).await;
    seen_b.until(last).await;
    let mut all: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 400, "every append got its own cursor");
    for (name, seen) in [("a", &seen_a), ("b", &seen_b)] {
        let got = seen.cursors();
        assert_eq!(got, all, "node {name} published every entry of both nodes once, in cursor order");
    }
    // A page read on either node agrees with the order.
    let (page, _) = ok(b.room_since(r.clone(), Cursor(0), 1000).await);
    assert_eq!(page.iter().map(|p| p.cursor.0).collect::<Vec<_>>(), all);
    a.shutdown().await;
    b.shutdown().await;
}

fn wire(room: &RoomId, cursor: u64) -> Entry {
    Entry::Message(WireMessage {
        cursor: Cursor(cursor),
        id: MessageId(uuid::Uuid::now_v7()),
        room: room.clone(),
        kind: ok(MessageKind::new("chat")),
        priority: Priority::Normal,
        body: format!("{{\"text\":\"from the hub {cursor}\"}}"),
        seq: Seq(cursor),
        reply_to: None,
        from: ok(UserId::new("hub-user")),
        device: ok(DeviceId::new("phone-9")),
        hlc: Hlc(cursor),
        at: 1_700_000_000_000 + cursor,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_connected_to_two_nodes_at_once_is_imported_once() {
    let c = cluster();
    let url = fresh_db(&c);
    let a = open(&url, Arc::new(Published::default())).await;
    let b = open(&url, Arc::new(Published::default())).await;
    let r = room("village-7");
    let batches: Vec<Vec<Entry>> = (0..20).map(|i| (1..=50).map(|j| wire(&r, i * 50 + j)).collect()).collect();
    // The same batches through both nodes at the same time (a failover while the old
    // connection lingers).
    let via = |s: PgStore, batches: Vec<Vec<Entry>>| async move {
        let mut fresh = 0;
        for (i, b) in batches.into_iter().enumerate() {
            fresh += ok(s.import("hub-7", b, Cursor((i as u64 + 1) * 50)).await);
        }
        fresh
    };
    let (fa, fb) = tokio::join!(via(a.clone(), batches.clone()), via(b.clone(), batches.clone()));
    assert_eq!(fa + fb, 1000, "each of the 1000 entries was new exactly once across the two nodes");
    let (page, more) = ok(a.room_since(r.clone(), Cursor(0), 5000).await);
    assert!(!more);
    assert_eq!(page.len(), 1000, "every entry is stored once");
    let hello = ok(b.peer_hello("hub-7", "", vec![r.clone()]).await);
    assert_eq!(hello.recv_hwm, Cursor(1000), "the hub's resume point is the highest either node recorded");

    // The same batches twice through one node at once: they meet in one importer's
    // transaction, or in two of its importers' at once.
    let again: Vec<Vec<Entry>> = (0..20).map(|i| (1..=50).map(|j| wire(&r, 5000 + i * 50 + j)).collect()).collect();
    let (fa, fb) = tokio::join!(via(a.clone(), again.clone()), via(a.clone(), again));
    assert_eq!(fa + fb, 1000, "each entry new exactly once within one node too");
    let (page, _) = ok(a.room_since(r.clone(), Cursor(0), 5000).await);
    assert_eq!(page.len(), 2000);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let c = cluster();
    let url = fresh_db(&c);
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::open(&url, opts(), Arc::new(Published::default())).await })
    });
    let mut epochs = Vec::new();
    for o in opens {
        let s = ok(ok(o.await));
        epochs.push(LogStore::epoch(&s));
        s.shutdown().await;
    }
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "all four nodes see the one epoch: {epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_a_database_restart_and_nothing_is_lost() {
    let c = cluster();
    let url = fresh_db(&c);
    let seen = Arc::new(Seen::default());
    let s = open(&url, seen.clone()).await;
    let r = room("ward-2");
    let mut cursors = Vec::new();
    for n in 0..50 {
        cursors.push(ok(s.append_wait(msg(&r, n)).await).cursor.0);
    }
    ok(c.stop_immediately());
    // While the database is down, a send fails or waits; it never reports success.
    let during = tokio::time::timeout(Duration::from_secs(2), s.append_wait(msg(&r, 50))).await;
    if let Ok(Ok(a)) = &during {
        panic!("a send was acknowledged while the database was down: {a:?}");
    }
    ok(c.restart());
    // The sender retries, as devices and hubs do, until the store takes it again.
    let retried = msg(&r, 51);
    let id = retried.msg.id;
    let mut appended = None;
    for _ in 0..100 {
        let mut again = msg(&r, 51);
        again.msg.id = id;
        match tokio::time::timeout(Duration::from_secs(5), s.append_wait(again)).await {
            Ok(Ok(a)) => {
                appended = Some(a);
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    let a = appended.unwrap_or_else(|| panic!("the store did not recover after the restart:\n{}", c.log()));
    cursors.push(a.cursor.0);
    seen.until(a.cursor.0).await;
    let (page, _) = ok(s.room_since(r.clone(), Cursor(0), 1000).await);
    let stored: Vec<u64> = page.iter().map(|p| p.cursor.0).collect();
    for c in &cursors {
        assert!(stored.contains(c), "acknowledged cursor {c} survived the restart");
    }
    let ids: std::collections::HashSet<_> = page.iter().map(|p| p.msg.id).collect();
    assert_eq!(ids.len(), page.len(), "nothing doubled");
    s.shutdown().await;
}

/// The SQLite cloud's store at `path`, the side a move starts from.
fn sqlite_cloud(path: &std::path::Path) -> outpost_store_sqlite::Store {
    let opts = outpost_store_sqlite::StoreOptions {
        quota_bytes: 1 << 30,
        emergency_reserve_bytes: 1 << 20,
        max_batch: 1024,
        max_receipts_per_ack: 1000,
        readers: 2,
    };
    ok(outpost_store_sqlite::Store::open(path, opts, Arc::new(Published::default())))
}

/// What devices, hubs and auditors see of a store: it must be the same before and after
/// a move.
#[derive(Debug, PartialEq)]
struct Seen2 {
    epoch: String,
    head: u64,
    replay: Vec<(u64, String)>,
    hub: outpost_storage::PeerState,
    audit: Vec<outpost_storage::AuditRecord>,
    history: Vec<u64>,
}

async fn what_everyone_sees<S: LinkStore>(s: &S, r: &RoomId) -> Seen2 {
    use outpost_storage::ReplayQuery;
    let mut replay = Vec::new();
    let mut after = Cursor(0);
    loop {
        let page = ok(s
            .replay(ReplayQuery {
                after,
                rooms: vec![r.clone()].into(),
                user: ok(UserId::new("amina")),
                own_device: ok(DeviceId::new("tablet")),
                own_visible_until: Cursor(u64::MAX),
                limit: 100,
                max_bytes: 1 << 20,
                floors: None,
            })
            .await);
        replay.extend(page.frames.iter().map(|(c, f)| (c.0, f.clone())));
        after = page.scanned_to;
        if page.done {
            break;
        }
    }
    let history = ok(s.history(r.clone(), None, 1000).await).messages.iter().map(|m| m.cursor.0).collect();
    Seen2 {
        epoch: s.epoch().0,
        head: s.head().0,
        replay,
        hub: ok(s.peer_hello("hub-1", "hub-epoch", vec![]).await),
        audit: ok(s.audit_page(0, 1000).await).0,
        history,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_cloud_moves_into_postgres_and_everyone_resumes_where_they_were() {
    use outpost_storage::SecurityStore;
    let c = cluster();
    let url = fresh_db(&c);
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("cloud.db");
    let lite = sqlite_cloud(&path);
    let r = room("ward-9");
    ok(lite.peer_hello("hub-1", "hub-epoch", vec![r.clone()]).await);
    for n in 0..300 {
        ok(lite.append_wait(msg(&r, n)).await);
    }
    let batch: Vec<Entry> = (1..=200).map(|i| wire(&r, i)).collect();
    assert_eq!(ok(lite.import("hub-1", batch, Cursor(200)).await), 200);
    lite.peer_acked("hub-1", Cursor(150), vec![], 1_700_000_000_000).await;
    // Another user's device holds the log: amina gets `delivered` receipts.
    lite.ack(ok(DeviceId::new("phone-2")), ok(UserId::new("bob")), vec![r.clone()].into(), Cursor(250), 1).await;
    let revoked = outpost_shared::Revocation {
        what: outpost_shared::Revoked::Token("jti-1".into()),
        reason: "lost phone".into(),
        at: 1,
    };
    assert_eq!(ok(lite.apply_revocations("cli", vec![revoked]).await), 1);
    ok(lite.audit_committed(outpost_storage::AuditEvent::new(outpost_storage::AuditKind::Login, "signed in")).await);
    let before = what_everyone_sees(&lite, &r).await;
    lite.shutdown().await;
    assert!(before.replay.len() > 500, "messages and receipts to compare: {}", before.replay.len());

    let media = dir.path().join("media");
    let moved = ok(outpost_store_postgres::from_sqlite::move_sqlite(&path, &media, &url, 1 << 18).await);
    assert_eq!(moved.head, before.head);
    let pg = open(&url, Arc::new(Published::default())).await;
    let after = what_everyone_sees(&pg, &r).await;
    assert_eq!(after.epoch, before.epoch, "devices resume within the same epoch");
    assert_eq!(after.head, before.head);
    assert_eq!(after.hub, before.hub, "the hub's marks: nothing is sent again, nothing is missed");
    assert_eq!(after.audit, before.audit, "the audit log, with its sequence numbers");
    assert_eq!(after.history, before.history);
    assert_eq!(after.replay.len(), before.replay.len());
    assert!(after.replay == before.replay, "a device's replay gets the same frames at the same cursors");
    assert_eq!(pg.revocations().borrow().len(), 1, "the revocation list moved");
    let next = ok(pg.append_wait(msg(&r, 999)).await);
    assert!(next.cursor.0 > before.head, "new entries follow the moved log");
    pg.shutdown().await;

    let again = outpost_store_postgres::from_sqlite::move_sqlite(&path, &media, &url, 1 << 18).await;
    assert!(
        matches!(again, Err(outpost_store_postgres::from_sqlite::MoveError::NotEmpty(_))),
        "a second move into the same database is refused: {again:?}"
    );
}

/// `n` bytes of a document and their name.
fn doc(n: usize, seed: u8) -> (Vec<u8>, outpost_shared::media::BlobId) {
    use sha2::Digest as _;
    let b: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ ((i >> 10) as u8)).collect();
    let id = outpost_shared::media::BlobId(sha2::Sha256::digest(&b).into());
    (b, id)
}

async fn append_all<B: outpost_storage::BlobBytes>(
    b: &B,
    owner: &str,
    blob: outpost_shared::media::BlobId,
    at: u64,
    bytes: &[u8],
) {
    use outpost_storage::BlobAppend as _;
    let mut chunk = ok(b.append(owner, blob, at).await);
    ok(chunk.write(bytes).await);
    ok(chunk.commit().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_clouds_media_files_move_in_and_its_unfinished_uploads_resume() {
    use outpost_storage::{BlobBytes, BlobSource, BytesError, CompleteBlob, MediaStore};
    let c = cluster();
    let url = fresh_db(&c);
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("cloud.db");
    let lite = sqlite_cloud(&path);
    let files = ok(lite.blob_bytes(&path));
    let amina = ok(UserId::new("amina"));
    let complete = |blob, size| CompleteBlob {
        blob,
        size,
        mime: "application/pdf".into(),
        preview: None,
        source: BlobSource::User(amina.clone()),
        upload_owner: "user:amina".into(),
        at: 1_700_000_000_000,
    };
    // Kept, evicted by retention, and damaged on disk.
    let mut blobs = Vec::new();
    for (n, seed) in [(700_000, 1), (90_000, 2), (50_000, 3)] {
        let (bytes, id) = doc(n, seed);
        ok(files.partial_create("user:amina", id).await);
        append_all(&files, "user:amina", id, 0, &bytes).await;
        assert!(ok(files.promote("user:amina", id, n as u64).await));
        ok(lite.blob_complete(complete(id, n as u64)).await);
        blobs.push((bytes, id));
    }
    let (kept, evicted, damaged) = (&blobs[0], &blobs[1], &blobs[2]);
    ok(lite.blob_evicted(evicted.1, 1_700_000_000_001).await);
    assert!(ok(files.remove(evicted.1).await));
    ok(std::fs::write(files.blob_path(&damaged.1), b"not what it was"));
    // A hub's upload half received, and a worker's begun with nothing received yet.
    let (partial, pid) = doc(300_000, 4);
    ok(lite.upload_begin("peer:hub-1", pid, partial.len() as u64, 1).await);
    ok(files.partial_create("peer:hub-1", pid).await);
    append_all(&files, "peer:hub-1", pid, 0, &partial[..120_000]).await;
    let (fresh, fid) = doc(20_000, 5);
    ok(lite.upload_begin("user:juma", fid, fresh.len() as u64, 1).await);
    lite.shutdown().await;

    let media = dir.path().join("media");
    let moved = ok(outpost_store_postgres::from_sqlite::move_sqlite(&path, &media, &url, 64 << 10).await).media;
    assert_eq!((moved.blobs, moved.blob_bytes), (1, kept.0.len() as u64), "the blob still held moved: {moved:?}");
    assert_eq!((moved.uploads, moved.upload_bytes), (2, 120_000), "both unfinished uploads moved: {moved:?}");
    assert_eq!(moved.left.len(), 1, "the damaged file is listed: {:?}", moved.left);
    assert!(moved.left[0].contains(&damaged.1.hex()), "{:?}", moved.left);

    let pg = open(&url, Arc::new(Published::default())).await;
    let bytes = ok(pg.blob_bytes(&path));
    assert!(ok(bytes.read_at(kept.1, 0, kept.0.len()).await) == kept.0, "the blob's bytes are in PostgreSQL");
    assert!(ok(bytes.read_at(kept.1, 654_321, 1_000).await) == kept.0[654_321..655_321]);
    assert_eq!(bytes.read_at(evicted.1, 0, 1).await, Err(BytesError::Missing), "evicted stays evicted");
    assert_eq!(bytes.read_at(damaged.1, 0, 1).await, Err(BytesError::Missing));
    assert!(
        ok(pg.blob(damaged.1).await).is_some_and(|b| b.evicted),
        "a blob whose bytes did not move is recorded as removed, so it may be uploaded again"
    );
    assert!(ok(pg.blob(kept.1).await).is_some_and(|b| !b.evicted), "with its metadata");
    // The hub resumes at what the SQLite cloud had received; the worker starts at 0.
    assert_eq!(ok(bytes.partial_len("peer:hub-1", pid).await), 120_000);
    append_all(&bytes, "peer:hub-1", pid, 120_000, &partial[120_000..]).await;
    assert_eq!(ok(bytes.partial_digest("peer:hub-1", pid, 0).await).0, pid.0);
    assert_eq!(ok(bytes.partial_len("user:juma", fid).await), 0);
    append_all(&bytes, "user:juma", fid, 0, &fresh).await;
    assert_eq!(ok(bytes.partial_digest("user:juma", fid, 0).await).0, fid.0);
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_is_named_with_the_servers_reason() {
    let c = cluster();
    let missing = c.url("no_such_db");
    let err = PgStore::open(&missing, opts(), Arc::new(Published::default())).await.err().map(|e| e.to_string());
    let err = err.unwrap_or_else(|| panic!("opening a database that does not exist succeeded"));
    assert!(err.contains("no_such_db") && err.contains("does not exist"), "{err}");
    let refused = format!("postgres://postgres@127.0.0.1:{}/x", c.port().wrapping_add(1).max(1));
    let err = PgStore::open(&refused, opts(), Arc::new(Published::default())).await.err().map(|e| e.to_string());
    let err = err.unwrap_or_else(|| panic!("a port nothing listens on was reached"));
    assert!(err.contains("cannot connect to PostgreSQL at 127.0.0.1:"), "{err}");
}
