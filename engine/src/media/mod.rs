//! Media blobs (photos, voice notes, documents) on a hub or a cloud.
//!
//! The bytes are content-addressed files beside the database:
//!
//! ```text
//! DIR/media/blobs/9f/9f86d0…   complete blobs, named by their SHA-256 (stored once)
//! DIR/media/partial/OWNER-9f86d0…   unfinished uploads (a device's or a peer's)
//! ```
//! Their metadata (schema v4: `blobs`, `blob_owners`, `uploads`, `media_refs`,
//! `blob_peers`) is written through the store's writer like everything else. The bytes an
//! upload has received are its partial file's length, fsynced before each answer, so an
//! upload resumes after a hub restart exactly where the last acknowledged chunk ended.
//! Blob bytes count against `storage.quota_bytes` with the database. Retention removes a
//! blob's bytes (never its metadata or preview) `media.retention_days` after the moment
//! its [`RetentionBasis`] names: on a hub, after a peer (the cloud) confirmed it holds the
//! same bytes; on the cloud, after it arrived.
//!
//! [`http`] serves the device upload/download API; [`link`] carries blobs over the uplink.

pub mod http;
mod preview;
mod retention;
#[cfg(test)]
mod tests;
mod upload;

use outpost_storage::Storage;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use outpost_shared::media::{BlobId, sniff};
use outpost_shared::{RoomId, UserId};
use sha2::Digest as _;

use crate::clock::now_ms;
use crate::config::{MediaConfig, RetentionBasis, StorageConfig};
use outpost_storage::StoreError;
use outpost_storage::{BlobRecord, BlobSource, CompleteBlob, PendingUpload};

/// Who an upload belongs to: a user (HTTP) or a peer (the uplink).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    User(UserId),
    Peer(String),
}

impl Owner {
    fn key(&self) -> String {
        match self {
            Owner::User(u) => format!("user:{u}"),
            Owner::Peer(p) => format!("peer:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    StorageFull(String),
    #[error("no upload or blob {0} here for you; start the upload with POST /api/media")]
    NotFound(BlobId),
    #[error("this upload is at byte {0}; continue from there")]
    OffsetMismatch(u64),
    #[error("the bytes received do not hash to the blob's name; the upload was discarded, start again")]
    HashMismatch,
    #[error("the chunk does not match its Upload-Checksum; send it again")]
    ChecksumMismatch,
    #[error("the content is not an accepted type ({0}); send a photo, a voice note or a PDF")]
    UnsupportedType(String),
    #[error("the file store failed: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(e: std::io::Error) -> MediaError {
    MediaError::Io(e.to_string())
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// The blob is complete here.
    Complete { size: u64 },
    /// `offset` of `size` bytes are durable.
    Partial { offset: u64, size: u64 },
}

impl Upload {
    pub fn offset(&self) -> u64 {
        match *self {
            Upload::Complete { size } => size,
            Upload::Partial { offset, .. } => offset,
        }
    }
    pub fn size(&self) -> u64 {
        match *self {
            Upload::Complete { size } | Upload::Partial { size, .. } => size,
        }
    }
}

/// Held while an upload's file and rows change; weak in the map so finished uploads
/// leave nothing behind.
type UploadLock = Weak<tokio::sync::Mutex<()>>;

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct Blobs<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    root: PathBuf,
    cfg: MediaConfig,
    /// Uploads are refused once the store would pass this many bytes (the quota less
    /// the emergency reserve: media never takes the space kept for alerts).
    bulk_limit: u64,
    store: S,
    /// One writer per upload at a time (two tabs resuming the same upload).
    locks: Mutex<HashMap<(String, BlobId), UploadLock>>,
}

impl<S> std::fmt::Debug for Blobs<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

/// Bytes of the files under `dir` (recursively).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Makes a rename or a new file durable: fsync the directory holding it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl<S: Storage> Blobs<S> {
    /// Opens the blob store in `media/` beside the database at `db` and counts its bytes
    /// into the store's quota.
    pub fn open(store: S, db: &Path, cfg: MediaConfig, storage: &StorageConfig) -> std::io::Result<Self> {
        let root = db.parent().unwrap_or(Path::new(".")).join("media");
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("partial"))?;
        let bytes = dir_bytes(&root);
        store.add_blob_bytes(i64::try_from(bytes).unwrap_or(i64::MAX));
        let bulk_limit = storage.quota_bytes.saturating_sub(storage.emergency_reserve_bytes);
        Ok(Self { inner: Arc::new(Inner { root, cfg, bulk_limit, store, locks: Mutex::default() }) })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.cfg
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Where a complete blob's bytes are.
    pub fn blob_path(&self, blob: &BlobId) -> PathBuf {
        let hex = blob.hex();
        self.inner.root.join("blobs").join(&hex[..2]).join(hex)
    }

    fn partial_path(&self, owner: &Owner, blob: &BlobId) -> PathBuf {
        self.inner.root.join("partial").join(format!("{}-{}", hex_of(&owner.key()), blob.hex()))
    }

    async fn lock(&self, owner: &Owner, blob: BlobId) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.retain(|_, w| w.strong_count() > 0);
            let key = (owner.key(), blob);
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }

    /// The blob's metadata, if this server knows it.
    pub async fn info(&self, blob: BlobId) -> Result<Option<BlobRecord>, MediaError> {
        Ok(self.inner.store.blob(blob).await?)
    }

    /// The JPEG preview of an image blob.
    pub async fn preview(&self, blob: BlobId) -> Result<Option<Vec<u8>>, MediaError> {
        Ok(self.inner.store.blob_preview(blob).await?)
    }

    /// Whether `user` may name or download `blob`: they uploaded it here, or it was sent
    /// in a room for which `may_read` holds.
    pub async fn may_use(
        &self,
        user: &UserId,
        blob: BlobId,
        may_read: impl Fn(&RoomId) -> bool + Send + 'static,
    ) -> Result<bool, MediaError> {
        if self.inner.store.blob_uploaded_by(blob, user).await? {
            return Ok(true);
        }
        Ok(self.inner.store.blob_rooms(blob).await?.iter().any(may_read))
    }

    /// Bytes received of a blob this server knows only from a message (cloud side,
    /// before the uplink delivered it): the largest partial upload from a peer.
    pub async fn received(&self, blob: BlobId) -> Result<u64, MediaError> {
        let owners = self.inner.store.upload_owners(blob).await?;
        let root = self.inner.root.join("partial");
        Ok(owners
            .iter()
            .filter_map(|o| std::fs::metadata(root.join(format!("{}-{}", hex_of(o), blob.hex()))).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0))
    }

    /// Whether the blob's bytes are here (complete and not evicted).
    async fn complete_here(&self, blob: BlobId) -> Result<Option<u64>, MediaError> {
        Ok(self.info(blob).await?.filter(|i| !i.evicted).map(|i| i.size))
    }

    async fn upload_size(&self, owner: &Owner, blob: BlobId) -> Result<Option<u64>, MediaError> {
        Ok(self.inner.store.upload_size(&owner.key(), blob).await?)
    }

    /// Starts (or finds) an upload of `size` bytes. A user who may already use the
    /// complete blob gets `Complete` at once; anyone else sends the bytes (knowing a hash
    /// is not holding the file), which are then stored once.
    pub async fn begin(&self, owner: &Owner, blob: BlobId, size: u64, may_use: bool) -> Result<Upload, MediaError> {
        let cfg = &self.inner.cfg;
        if size > cfg.max_blob_bytes {
            return Err(MediaError::TooLarge(format!(
                "the file is {size} bytes; the limit is {} (media.max_blob_bytes)",
                cfg.max_blob_bytes
            )));
        }
        if size == 0 {
            return Err(MediaError::BadRequest("Upload-Length must be greater than 0".into()));
        }
        let _guard = self.lock(owner, blob).await;
        if let Some(have) = self.complete_here(blob).await? {
            if have != size {
                return Err(MediaError::BadRequest(format!("blob {blob} is {have} bytes, not {size}")));
            }
            if may_use || matches!(owner, Owner::Peer(_)) {
                if let Owner::Peer(p) = owner {
                    self.confirm(blob, p).await?;
                }
                return Ok(Upload::Complete { size });
            }
        }
        if let Some(known) = self.upload_size(owner, blob).await? {
            if known != size {
                return Err(MediaError::BadRequest(format!(
                    "this upload was started with Upload-Length {known}, not {size}"
                )));
            }
            return self.partial_state(owner, blob, size).await;
        }
        if let Owner::User(user) = owner {
            let (pending, bytes) = self.user_usage(user).await?;
            if pending >= u64::from(cfg.max_pending_uploads) {
                return Err(MediaError::QuotaExceeded(format!(
                    "you have {pending} unfinished uploads (media.max_pending_uploads); finish or wait for them"
                )));
            }
            if bytes + size > cfg.quota_per_user_bytes {
                return Err(MediaError::QuotaExceeded(format!(
                    "your files on this server would take {} bytes; the limit is {} (media.quota_per_user_bytes)",
                    bytes + size,
                    cfg.quota_per_user_bytes
                )));
            }
        }
        let used = self.inner.store.used_bytes();
        if used + size > self.inner.bulk_limit {
            return Err(MediaError::StorageFull(format!(
                "this server keeps its remaining space for messages ({used} bytes used); try again after the uplink has drained"
            )));
        }
        let path = self.partial_path(owner, &blob);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.sync_all()?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))
        })
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?
        .map_err(io)?;
        self.inner.store.upload_begin(&owner.key(), blob, size, now_ms()).await?;
        self.partial_state(owner, blob, size).await
    }

    /// Unfinished uploads of a user and the bytes their files take here.
    async fn user_usage(&self, user: &UserId) -> Result<(u64, u64), MediaError> {
        let usage = self.inner.store.media_usage(&Owner::User(user.clone()).key(), user).await?;
        Ok((usage.pending_uploads, usage.bytes))
    }

    async fn partial_state(&self, owner: &Owner, blob: BlobId, size: u64) -> Result<Upload, MediaError> {
        let offset = tokio::fs::metadata(self.partial_path(owner, &blob)).await.map(|m| m.len()).unwrap_or(0);
        Ok(Upload::Partial { offset: offset.min(size), size })
    }

    /// Where an upload stands, for `owner` (HEAD). `may_use`: the caller may use the
    /// complete blob if it exists.
    pub async fn state(&self, owner: &Owner, blob: BlobId, may_use: bool) -> Result<Upload, MediaError> {
        // After a chunk in progress: the partial file grows as a chunk streams in, and
        // only what the chunk's answer covers (fsynced) may be reported.
        let _guard = self.lock(owner, blob).await;
        if may_use && let Some(size) = self.complete_here(blob).await? {
            return Ok(Upload::Complete { size });
        }
        match self.upload_size(owner, blob).await? {
            Some(size) => self.partial_state(owner, blob, size).await,
            None => Err(MediaError::NotFound(blob)),
        }
    }

    /// Removes `owner`'s unfinished upload of `blob`, if there is one.
    pub async fn abandon(&self, owner: &Owner, blob: BlobId) -> Result<(), MediaError> {
        let _guard = self.lock(owner, blob).await;
        match self.upload_size(owner, blob).await? {
            Some(size) => self.discard(owner, blob, size).await,
            None => Err(MediaError::NotFound(blob)),
        }
    }

    /// Removes an unfinished upload (refused, or abandoned).
    async fn discard(&self, owner: &Owner, blob: BlobId, _size: u64) -> Result<(), MediaError> {
        let path = self.partial_path(owner, &blob);
        let len = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if tokio::fs::remove_file(&path).await.is_ok() {
            self.inner.store.add_blob_bytes(-i64::try_from(len).unwrap_or(0));
        }
        Ok(self.inner.store.upload_discard(&owner.key(), blob).await?)
    }

    /// Records that `peer` holds the blob completely.
    pub async fn confirm(&self, blob: BlobId, peer: &str) -> Result<(), MediaError> {
        Ok(self.inner.store.blob_confirmed(blob, peer, now_ms()).await?)
    }

    /// The next blob `peer` should receive: complete here, named by a message the peer
    /// already holds (so the preview always arrives first), in a room the peer serves
    /// (`rooms` None: all), and not yet held by the peer. Oldest message first.
    pub async fn next_for(&self, peer: &str, rooms: Option<Vec<RoomId>>) -> Result<Option<(BlobId, u64)>, MediaError> {
        Ok(self.inner.store.next_blob_for(peer, rooms).await?)
    }

    /// Reads `len` bytes of a complete blob at `offset`.
    pub async fn read_at(&self, blob: BlobId, offset: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        let path = self.blob_path(&blob);
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::Seek as _;
            let mut f = std::fs::File::open(path)?;
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(len);
            f.take(len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?
        .map_err(io)
    }
}
