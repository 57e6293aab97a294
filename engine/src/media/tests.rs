//! The blob store on its own: quota accounting, stale uploads, and retention by either
//! basis (a hub's: after a peer confirmed; the cloud's: after it arrived).

use rusqlite::params;
use std::sync::Arc;

use outpost_shared::UserId;
use outpost_shared::media::BlobId;
use sha2::Digest as _;

use super::*;
use crate::config::{MediaConfig, StorageConfig};
use outpost_store_sqlite::{LogEntry, Publisher, Store, StoreOptions};

struct Nobody;
impl Publisher for Nobody {
    fn publish(&self, _: LogEntry) {}
}

fn open(dir: &std::path::Path, cfg: MediaConfig) -> Blobs<Store> {
    let opts = StoreOptions {
        quota_bytes: 1 << 30,
        emergency_reserve_bytes: 1 << 20,
        max_batch: 64,
        max_receipts_per_ack: 10,
        readers: 2,
    };
    let db = dir.join("data/relay.db");
    let store = Store::open(&db, opts, Arc::new(Nobody)).unwrap_or_else(|e| panic!("{e}"));
    Blobs::open(store, &db, cfg, &StorageConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn pdf(n: usize, seed: u8) -> (Vec<u8>, BlobId) {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    let id = BlobId(sha2::Sha256::digest(&b).into());
    (b, id)
}

fn user(u: &str) -> Owner {
    Owner::User(UserId::new(u).unwrap_or_else(|e| panic!("{e}")))
}

async fn upload(blobs: &Blobs<Store>, owner: &Owner, bytes: &[u8], blob: BlobId) {
    let size = bytes.len() as u64;
    assert_eq!(blobs.begin(owner, blob, size, false).await, Ok(Upload::Partial { offset: 0, size }));
    let half = bytes.len() / 2;
    assert_eq!(
        blobs.write(owner, blob, 0, bytes[..half].to_vec()).await,
        Ok(Upload::Partial { offset: half as u64, size })
    );
    assert_eq!(blobs.write(owner, blob, half as u64, bytes[half..].to_vec()).await, Ok(Upload::Complete { size }));
}

#[tokio::test]
async fn blob_bytes_count_against_the_quota_and_are_stored_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blobs = open(dir.path(), MediaConfig::default());
    let before = blobs.store().used_bytes();
    let (bytes, blob) = pdf(100_000, 1);
    upload(&blobs, &user("amina"), &bytes, blob).await;
    assert_eq!(blobs.store().used_bytes() - before, bytes.len() as u64);
    // A second user sends the same bytes: the quota counts them once.
    upload(&blobs, &user("juma"), &bytes, blob).await;
    assert_eq!(blobs.store().used_bytes() - before, bytes.len() as u64);
    assert!(blobs.blob_path(&blob).exists());
    // A reopened store counts what is on disk.
    drop(blobs);
    let again = open(dir.path(), MediaConfig::default());
    assert!(again.store().used_bytes() >= bytes.len() as u64);
}

#[tokio::test]
async fn retention_removes_only_blobs_a_peer_confirmed_long_enough_ago() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blobs = open(dir.path(), MediaConfig { retention_days: 30, ..MediaConfig::default() });
    let (kept, kept_id) = pdf(50_000, 2);
    let (old, old_id) = pdf(60_000, 3);
    let (fresh, fresh_id) = pdf(70_000, 4);
    for (b, id) in [(&kept, kept_id), (&old, old_id), (&fresh, fresh_id)] {
        upload(&blobs, &user("amina"), b, id).await;
    }
    // `old` was confirmed by the cloud 31 days ago, `fresh` today; `kept` never.
    blobs.confirm(old_id, "cloud").await.unwrap_or_else(|e| panic!("{e}"));
    blobs.confirm(fresh_id, "cloud").await.unwrap_or_else(|e| panic!("{e}"));
    let long_ago = i64::try_from(now_ms()).unwrap_or(0) - 31 * 86_400_000;
    blobs
        .store()
        .exec(move |c| {
            c.execute("UPDATE blob_peers SET at = ?1 WHERE sha256 = ?2", params![long_ago, old_id.0.as_slice()])?;
            // Unconfirmed blobs are never removed, however old.
            c.execute("UPDATE blobs SET created = ?1", params![long_ago])?;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let used = blobs.store().used_bytes();
    assert_eq!(blobs.sweep().await, Ok(1));
    assert!(!blobs.blob_path(&old_id).exists());
    assert!(blobs.blob_path(&kept_id).exists() && blobs.blob_path(&fresh_id).exists());
    assert_eq!(used - blobs.store().used_bytes(), old.len() as u64);
    let info = blobs.info(old_id).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("metadata stays"));
    assert!(info.evicted);
    assert_eq!(blobs.sweep().await, Ok(0), "nothing more to remove");
}

#[tokio::test]
async fn retention_from_receipt_removes_old_blobs_whoever_holds_them_and_counts_again_on_return() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = MediaConfig { retention_days: 90, retention_basis: RetentionBasis::Received, ..MediaConfig::default() };
    let blobs = open(dir.path(), cfg);
    let (old, old_id) = pdf(40_000, 6);
    let (young, young_id) = pdf(30_000, 7);
    for (b, id) in [(&old, old_id), (&young, young_id)] {
        upload(&blobs, &user("dr-neema"), b, id).await;
    }
    let day = 86_400_000;
    let now = i64::try_from(now_ms()).unwrap_or(0);
    blobs
        .store()
        .exec(move |c| {
            c.execute("UPDATE blobs SET created = ?1 WHERE sha256 = ?2", params![now - 91 * day, old_id.0.as_slice()])?;
            c.execute(
                "UPDATE blobs SET created = ?1 WHERE sha256 = ?2",
                params![now - 89 * day, young_id.0.as_slice()],
            )?;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // No peer ever confirmed either: on this basis that does not matter.
    let used = blobs.store().used_bytes();
    assert_eq!(blobs.sweep().await, Ok(1));
    assert!(!blobs.blob_path(&old_id).exists() && blobs.blob_path(&young_id).exists());
    assert_eq!(used - blobs.store().used_bytes(), old.len() as u64);
    let info = blobs.info(old_id).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("metadata stays"));
    assert!(info.evicted);

    // The bytes arrive again: their retention period starts again, they are not removed
    // at the next sweep.
    upload(&blobs, &user("dr-neema"), &old, old_id).await;
    assert_eq!(blobs.sweep().await, Ok(0));
    let info = blobs.info(old_id).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("metadata stays"));
    assert!(!info.evicted && blobs.blob_path(&old_id).exists());
}

#[tokio::test]
async fn stale_unfinished_uploads_are_removed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blobs = open(dir.path(), MediaConfig { partial_ttl_hours: 0, ..MediaConfig::default() });
    let (bytes, blob) = pdf(10_000, 5);
    let owner = user("amina");
    blobs.begin(&owner, blob, bytes.len() as u64, false).await.unwrap_or_else(|e| panic!("{e}"));
    blobs.write(&owner, blob, 0, bytes[..4000].to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    let used = blobs.store().used_bytes();
    // Last progress an hour ago; with a TTL of 0 hours that is stale.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let f = std::fs::File::options().append(true).open(blobs.partial_path(&owner, &blob));
    f.and_then(|f| f.set_modified(hour_ago)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(blobs.sweep().await, Ok(1));
    assert_eq!(blobs.state(&owner, blob, false).await, Err(MediaError::NotFound(blob)));
    assert_eq!(used - blobs.store().used_bytes(), 4000);
}
