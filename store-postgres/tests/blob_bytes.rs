//! Media bytes in PostgreSQL against a private cluster: the backend-neutral conformance
//! suite for blob bytes, and what only several nodes on one database show — an upload
//! begun on one node resumed and completed on another and read there by range, two
//! nodes appending at the same offset at once (one wins, nothing interleaves), two nodes
//! completing the same blob at once (stored once), and a chunk whose node died mid-way
//! removed by the sweep without touching what was committed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outpost_shared::media::BlobId;
use outpost_storage::conformance::Published;
use outpost_storage::{BlobAppend, BlobBytes, BytesError, MediaStore};
use outpost_store_postgres::testing::TestCluster;
use outpost_store_postgres::{PgBytes, PgOptions, PgStore};
use sha2::Digest as _;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

static DB: AtomicU32 = AtomicU32::new(0);

fn fresh_db(c: &TestCluster) -> String {
    ok(c.create_database(&format!("bytes_{}", DB.fetch_add(1, Ordering::Relaxed))))
}

/// Rows of 64 KiB: the blobs below span many rows, and reads cross their boundaries.
const ROW: usize = 64 << 10;

async fn node(url: &str) -> (PgStore, PgBytes) {
    let opts = PgOptions { poll_interval: Duration::from_millis(200), blob_chunk_bytes: ROW, ..PgOptions::default() };
    let store = ok(PgStore::open(url, opts, Arc::new(Published::default())).await);
    // PostgreSQL keeps no files: the place is not used.
    let bytes = ok(store.blob_bytes(Path::new("/nonexistent/cloud.db")));
    (store, bytes)
}

/// A photo-sized blob that differs at every position, and its name.
fn data(n: usize, seed: u8) -> (Vec<u8>, BlobId) {
    let b: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ ((i >> 9) as u8)).collect();
    let id = BlobId(sha2::Sha256::digest(&b).into());
    (b, id)
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

async fn append(b: &PgBytes, owner: &str, blob: BlobId, offset: u64, bytes: &[u8]) -> Result<u64, BytesError> {
    let mut chunk = b.append(owner, blob, offset).await?;
    for p in bytes.chunks(10_000) {
        chunk.write(p).await?;
    }
    chunk.commit().await
}

/// Rows of `blob_chunks` and stages, read directly.
async fn rows(url: &str) -> (i64, i64) {
    let (client, conn) = ok(tokio_postgres::connect(url, tokio_postgres::NoTls).await);
    tokio::spawn(conn);
    let chunks: i64 = ok(client.query_one("SELECT count(*) FROM blob_chunks", &[]).await).get(0);
    let stages: i64 = ok(client.query_one("SELECT count(*) FROM blob_stages", &[]).await).get(0);
    (chunks, stages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_blob_bytes_conformance_suite() {
    let c = ok(TestCluster::start());
    let stores = std::sync::Mutex::new(Vec::new());
    outpost_storage::conformance::bytes::check_all(|| {
        let url = fresh_db(&c);
        let (store, bytes) = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(node(&url)));
        if let Ok(mut s) = stores.lock() {
            s.push(store);
        }
        bytes
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_begun_on_one_node_is_resumed_completed_and_read_on_another() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let ((_a, on_a), (_b, on_b)) = (node(&url).await, node(&url).await);
    let (photo, blob) = data(1_000_000, 1);
    let owner = "user:amina";
    ok(on_a.partial_create(owner, blob).await);
    assert_eq!(ok(append(&on_a, owner, blob, 0, &photo[..300_000]).await), 300_000);
    // The phone's next request lands on node B: it sees what A committed and goes on.
    assert_eq!(ok(on_b.partial_len(owner, blob).await), 300_000, "B sees the bytes A acknowledged");
    assert_eq!(append(&on_b, owner, blob, 0, &photo[..10]).await, Err(BytesError::Offset(300_000)));
    assert_eq!(ok(append(&on_b, owner, blob, 300_000, &photo[300_000..]).await), photo.len() as u64);
    assert_eq!(ok(on_a.partial_digest(owner, blob, 4).await).0, blob.0, "A reads the whole upload B finished");
    assert!(ok(on_b.promote(owner, blob, photo.len() as u64).await));
    // Read by range on A, across rows, and whole.
    for (offset, len) in [(0, photo.len()), (65_530, 20), (999_000, 5_000), (300_000, ROW)] {
        let got = ok(on_a.read_at(blob, offset as u64, len).await);
        let end = (offset + len).min(photo.len());
        assert!(got == photo[offset..end], "bytes {offset}..{end} on node A");
    }
    assert_eq!(ok(on_a.used().await), photo.len() as u64);
    // Retention on A removes them for B too.
    assert!(ok(on_a.remove(blob).await));
    assert_eq!(on_b.read_at(blob, 0, 1).await, Err(BytesError::Missing));
    assert_eq!(rows(&url).await, (0, 0), "no row is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_at_one_offset_at_once_never_interleave() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let ((_a, on_a), (_b, on_b)) = (node(&url).await, node(&url).await);
    let (photo, blob) = data(400_000, 2);
    for round in 0..6 {
        // A resend after a lost answer, say: the same upload, the same offset, from two
        // nodes at once; A's chunk differs so that a mixture would show.
        let owner = format!("user:u{round}");
        ok(on_a.partial_create(&owner, blob).await);
        assert_eq!(ok(append(&on_a, &owner, blob, 0, &photo[..100_000]).await), 100_000);
        let other = vec![round as u8; 200_000];
        let (mut ca, mut cb) =
            (ok(on_a.append(&owner, blob, 100_000).await), ok(on_b.append(&owner, blob, 100_000).await));
        let write_a = async {
            for p in other.chunks(30_000) {
                ok(ca.write(p).await);
            }
            ca.commit().await
        };
        let write_b = async {
            for p in photo[100_000..300_000].chunks(30_000) {
                ok(cb.write(p).await);
            }
            cb.commit().await
        };
        let (ra, rb) = tokio::join!(write_a, write_b);
        let winner: &[u8] = match (ra, rb) {
            (Ok(300_000), Err(BytesError::Offset(300_000))) => &other,
            (Err(BytesError::Offset(300_000)), Ok(300_000)) => &photo[100_000..300_000],
            (ra, rb) => {
                panic!("round {round}: exactly one append wins, the other learns the new offset: {ra:?} {rb:?}")
            }
        };
        assert_eq!(ok(on_b.partial_len(&owner, blob).await), 300_000);
        let (digest, _) = ok(on_b.partial_digest(&owner, blob, 0).await);
        assert_eq!(digest, sha(&[&photo[..100_000], winner]), "round {round}: the upload is the winner's chunk whole");
        assert!(ok(on_a.partial_remove(&owner, blob).await));
    }
    assert_eq!(rows(&url).await, (0, 0), "the losers' rows went with their refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_completing_the_same_blob_at_once_store_it_once() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let ((_a, on_a), (_b, on_b)) = (node(&url).await, node(&url).await);
    let (photo, blob) = data(300_000, 3);
    // A worker's upload through A and the same photo from a hub through B.
    for (b, owner) in [(&on_a, "user:amina"), (&on_b, "peer:village-7")] {
        ok(b.partial_create(owner, blob).await);
        assert_eq!(ok(append(b, owner, blob, 0, &photo).await), photo.len() as u64);
    }
    let size = photo.len() as u64;
    let (ra, rb) = tokio::join!(on_a.promote("user:amina", blob, size), on_b.promote("peer:village-7", blob, size));
    assert!(ok(ra) ^ ok(rb), "one node stored the bytes, the other found them");
    assert_eq!(ok(on_b.read_at(blob, 0, photo.len()).await), photo);
    assert_eq!(ok(on_a.used().await), size, "held once");
    let (chunks, _) = rows(&url).await;
    assert_eq!(chunks as usize, photo.len().div_ceil(ROW), "one set of rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_node_died_is_swept_and_a_swept_chunk_is_not_committed() {
    let c = ok(TestCluster::start());
    let url = fresh_db(&c);
    let ((_a, on_a), (_b, on_b)) = (node(&url).await, node(&url).await);
    let (photo, blob) = data(500_000, 4);
    let owner = "peer:village-7";
    ok(on_a.partial_create(owner, blob).await);
    assert_eq!(ok(append(&on_a, owner, blob, 0, &photo[..100_000]).await), 100_000);
    // Node A dies in the middle of the next chunk: three rows are written, none committed.
    let mut cut = ok(on_a.append(owner, blob, 100_000).await);
    ok(cut.write(&photo[100_000..300_000]).await);
    drop(cut);
    assert_eq!(ok(on_b.partial_len(owner, blob).await), 100_000, "an unfinished chunk is not part of the upload");
    let before = rows(&url).await;
    assert_eq!(before.1, 1, "its stage is left: {before:?}");
    // A sweep counts only stages older than it is told.
    assert_eq!(ok(on_b.sweep(0).await), 0);
    assert_eq!(ok(on_b.sweep(u64::MAX).await), 1);
    let (chunks, stages) = rows(&url).await;
    assert_eq!((chunks, stages), (2, 0), "only the committed chunk's rows stay");
    // A chunk still being written when a sweep takes it is refused at its commit.
    let mut slow = ok(on_b.append(owner, blob, 100_000).await);
    ok(slow.write(&photo[100_000..250_000]).await);
    assert_eq!(ok(on_a.sweep(u64::MAX).await), 1);
    assert_eq!(slow.commit().await, Err(BytesError::Offset(100_000)), "told to go on from what is committed");
    assert_eq!(ok(append(&on_b, owner, blob, 100_000, &photo[100_000..]).await), photo.len() as u64);
    assert_eq!(ok(on_a.partial_digest(owner, blob, 0).await).0, blob.0);
}
