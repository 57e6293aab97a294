//! The contracts of [`BlobBytes`], checked through the trait alone: appends at an
//! upload's end and only there, aborted chunks that leave nothing, completion after the
//! digest with blobs stored once, range reads across the backend's pieces, removal.
//!
//! A backend's tests call [`check_all`] with a function that opens fresh, empty blob
//! bytes each time. The blobs are a few hundred KB, cut into appends of uneven sizes, so
//! a backend that stores bytes in pieces (PostgreSQL's rows) is read across their
//! boundaries when its piece is configured small (64 KiB).

use outpost_shared::media::BlobId;
use sha2::Digest as _;

use crate::{BlobAppend, BlobBytes, BytesError};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `n` bytes that differ at every position (so a misplaced piece shows), and their name.
fn data(n: usize, seed: u8) -> (Vec<u8>, BlobId) {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8)));
    let id = BlobId(sha2::Sha256::digest(&b).into());
    (b, id)
}

/// Appends `bytes` at `offset` in pieces of `piece` bytes and commits.
async fn append<B: BlobBytes>(b: &B, owner: &str, blob: BlobId, offset: u64, bytes: &[u8], piece: usize) -> u64 {
    let mut chunk = ok(b.append(owner, blob, offset).await);
    for p in bytes.chunks(piece.max(1)) {
        ok(chunk.write(p).await);
    }
    ok(chunk.commit().await)
}

/// Uploads `bytes` whole as `owner`, in appends of the given sizes, and completes it.
async fn upload<B: BlobBytes>(b: &B, owner: &str, bytes: &[u8], blob: BlobId, appends: &[usize]) -> bool {
    ok(b.partial_create(owner, blob).await);
    let mut at = 0;
    for n in appends.iter().copied().chain([usize::MAX]) {
        if at >= bytes.len() {
            break;
        }
        let end = at.saturating_add(n).min(bytes.len());
        let len = append(b, owner, blob, at as u64, &bytes[at..end], 10_000).await;
        assert_eq!(len, end as u64, "an append answers the upload's new length");
        at = end;
    }
    let (digest, _) = ok(b.partial_digest(owner, blob, 16).await);
    assert_eq!(digest, blob.0, "the upload's digest is that of the bytes sent");
    ok(b.promote(owner, blob, bytes.len() as u64).await)
}

/// Runs every check, each on fresh bytes from `open`.
pub async fn check_all<B: BlobBytes>(open: impl Fn() -> B) {
    an_upload_grows_only_at_its_end_and_says_where_it_stands(&open).await;
    an_aborted_chunk_leaves_the_upload_as_it_was(&open).await;
    a_finished_upload_becomes_its_blob_stored_once(&open).await;
    ranges_read_the_bytes_asked_for_across_pieces(&open).await;
    removed_blobs_and_uploads_are_gone(&open).await;
}

/// An upload starts empty, grows by committed appends at its end, refuses an append
/// anywhere else with its real length, and reports when it last grew.
pub async fn an_upload_grows_only_at_its_end_and_says_where_it_stands<B: BlobBytes>(open: &impl Fn() -> B) {
    let b = open();
    let (bytes, blob) = data(300_000, 1);
    let owner = "user:amina";
    assert_eq!(ok(b.partial_touched(owner, blob).await), None, "no upload yet");
    ok(b.partial_create(owner, blob).await);
    ok(b.partial_create(owner, blob).await);
    assert_eq!(ok(b.partial_len(owner, blob).await), 0);
    assert!(ok(b.partial_touched(owner, blob).await).is_some(), "a new upload has a time");
    // In pieces smaller and larger than any backend's row.
    assert_eq!(append(&b, owner, blob, 0, &bytes[..70_000], 3_000).await, 70_000);
    assert_eq!(append(&b, owner, blob, 70_000, &bytes[70_000..200_000], 100_000).await, 200_000);
    assert_eq!(ok(b.partial_len(owner, blob).await), 200_000);
    for wrong in [0, 70_000, 199_999, 200_001] {
        match b.append(owner, blob, wrong).await {
            Err(BytesError::Offset(at)) => assert_eq!(at, 200_000, "a refusal says where the upload is"),
            Err(e) => panic!("append at {wrong}: {e}"),
            Ok(_) => panic!("an append at {wrong} of an upload at 200000 was taken"),
        }
    }
    // Another owner's upload of the same blob is its own.
    assert_eq!(ok(b.partial_len("peer:hub-1", blob).await), 0);
    assert_eq!(append(&b, owner, blob, 200_000, &bytes[200_000..], 7).await, bytes.len() as u64);
    let (digest, head) = ok(b.partial_digest(owner, blob, 9).await);
    assert_eq!(digest, blob.0);
    assert_eq!(head, b"%PDF-1.7\n", "the head names the type");
    // An upload never created has length 0, and its first chunk creates it.
    assert_eq!(append(&b, "user:juma", blob, 0, &bytes[..1_000], 1_000).await, 1_000);
    assert_eq!(ok(b.partial_len("user:juma", blob).await), 1_000);
}

/// A chunk aborted (refused, checksum mismatch) leaves no trace: the upload's length and
/// bytes are as before and the same offset is taken again.
pub async fn an_aborted_chunk_leaves_the_upload_as_it_was<B: BlobBytes>(open: &impl Fn() -> B) {
    let b = open();
    let (bytes, blob) = data(150_000, 2);
    let owner = "user:juma";
    ok(b.partial_create(owner, blob).await);
    assert_eq!(append(&b, owner, blob, 0, &bytes[..50_000], 50_000).await, 50_000);
    let mut chunk = ok(b.append(owner, blob, 50_000).await);
    ok(chunk.write(&[0xAA; 90_000]).await);
    ok(chunk.abort().await);
    assert_eq!(ok(b.partial_len(owner, blob).await), 50_000, "an aborted chunk adds nothing");
    // An append that writes nothing and commits leaves the upload where it was.
    assert_eq!(append(&b, owner, blob, 50_000, &[], 1).await, 50_000);
    assert_eq!(append(&b, owner, blob, 50_000, &bytes[50_000..], 40_000).await, bytes.len() as u64);
    assert_eq!(ok(b.partial_digest(owner, blob, 0).await).0, blob.0, "the aborted bytes are nowhere in it");
}

/// A finished upload becomes the blob (and is no longer an upload); a second upload of
/// the same bytes is dropped in favour of the first; a blob's bytes are counted once.
pub async fn a_finished_upload_becomes_its_blob_stored_once<B: BlobBytes>(open: &impl Fn() -> B) {
    let b = open();
    let (bytes, blob) = data(200_000, 3);
    let before = ok(b.used().await);
    assert!(upload(&b, "user:amina", &bytes, blob, &[65_536, 1, 80_000]).await, "the first copy is stored");
    assert_eq!(ok(b.partial_len("user:amina", blob).await), 0, "the upload is gone");
    assert_eq!(ok(b.partial_touched("user:amina", blob).await), None);
    assert_eq!(ok(b.read_at(blob, 0, bytes.len()).await), bytes);
    assert!(!upload(&b, "peer:hub-1", &bytes, blob, &[100_000]).await, "the same bytes again are not stored again");
    assert_eq!(ok(b.read_at(blob, 0, bytes.len()).await), bytes);
    assert_eq!(ok(b.used().await) - before, bytes.len() as u64, "held once");
    // A wrong digest is the caller's to see before it promotes.
    let (other, other_id) = data(10_000, 4);
    ok(b.partial_create("user:juma", other_id).await);
    append(&b, "user:juma", other_id, 0, &other[..9_000], 9_000).await;
    assert_ne!(ok(b.partial_digest("user:juma", other_id, 0).await).0, other_id.0, "an unfinished upload's digest");
}

/// Reads return exactly the range asked for, wherever the backend's pieces begin and end;
/// at the end of the blob fewer bytes, past it none; an unknown blob is missing.
pub async fn ranges_read_the_bytes_asked_for_across_pieces<B: BlobBytes>(open: &impl Fn() -> B) {
    let b = open();
    let (bytes, blob) = data(400_000, 5);
    upload(&b, "user:amina", &bytes, blob, &[1_000, 64 << 10, 100_003, 130_000]).await;
    let n = bytes.len();
    for (offset, len) in [
        (0, 1),
        (0, n),
        (999, 2),
        (1_000, 65_536),
        (65_535, 65_538),
        (66_530, 200_000),
        (131_071, 1),
        (n - 1, 1),
        (n - 10, 1_000),
        (123_457, 64 << 10),
    ] {
        let got = ok(b.read_at(blob, offset as u64, len).await);
        let end = (offset + len).min(n);
        assert!(got == bytes[offset..end], "bytes {offset}..{end} read back as they were sent");
    }
    assert!(ok(b.read_at(blob, n as u64, 10).await).is_empty(), "nothing past the end");
    let (_, unknown) = data(10, 6);
    assert_eq!(b.read_at(unknown, 0, 10).await, Err(BytesError::Missing));
}

/// Removing a blob's bytes (retention) or an upload (abandoned, stale) frees them; a
/// second removal finds nothing; a removed blob may arrive again.
pub async fn removed_blobs_and_uploads_are_gone<B: BlobBytes>(open: &impl Fn() -> B) {
    let b = open();
    let (bytes, blob) = data(120_000, 7);
    let empty = ok(b.used().await);
    upload(&b, "user:amina", &bytes, blob, &[70_000]).await;
    assert!(ok(b.remove(blob).await));
    assert!(!ok(b.remove(blob).await), "nothing left to remove");
    assert_eq!(b.read_at(blob, 0, 10).await, Err(BytesError::Missing));
    assert_eq!(ok(b.used().await), empty);
    assert!(upload(&b, "user:amina", &bytes, blob, &[]).await, "the bytes arrive again and are stored");
    assert_eq!(ok(b.read_at(blob, 60_000, 100).await), bytes[60_000..60_100]);

    let (partial, pid) = data(90_000, 8);
    ok(b.partial_create("user:juma", pid).await);
    append(&b, "user:juma", pid, 0, &partial[..80_000], 30_000).await;
    assert!(ok(b.partial_remove("user:juma", pid).await));
    assert!(!ok(b.partial_remove("user:juma", pid).await));
    assert_eq!(ok(b.partial_len("user:juma", pid).await), 0);
    assert_eq!(ok(b.partial_touched("user:juma", pid).await), None);
    assert_eq!(ok(b.used().await) - empty, bytes.len() as u64, "only the blob is held");
    assert_eq!(ok(b.sweep(u64::MAX).await), 0, "no chunk was left unfinished");
}
