//! Media blobs (photos, voice notes, documents) on a hub or a cloud.
//!
//! Blobs are content-addressed: named by their SHA-256 and stored once. Their metadata
//! (`blobs`, `blob_owners`, `uploads`, `media_refs`, `blob_peers`) is written through the
//! store like everything else ([`MediaStore`]); their bytes go where the backend keeps
//! them ([`BlobBytes`]): files in `media/` beside the SQLite database on a hub and a
//! one-node cloud, the database itself for cloud nodes on PostgreSQL, so every node
//! serves every blob and resumes every upload. An upload's bytes are durable before each
//! answer, so it resumes after a restart exactly where the last acknowledged chunk ended.
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
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use outpost_shared::media::{BlobId, sniff};
use outpost_shared::{RoomId, UserId};

use crate::clock::now_ms;
use crate::config::{MediaConfig, RetentionBasis, StorageConfig};
use outpost_storage::{BlobAppend as _, BlobBytes, BytesError, MediaStore, StoreError};
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

impl MediaError {
    /// A byte store's refusal, for `blob`.
    fn bytes(blob: BlobId) -> impl Fn(BytesError) -> MediaError {
        move |e| match e {
            BytesError::Offset(at) => MediaError::OffsetMismatch(at),
            BytesError::Missing => MediaError::NotFound(blob),
            BytesError::Io(e) => MediaError::Io(e),
            BytesError::Store(e) => MediaError::Store(e),
        }
    }
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

/// Held while an upload's bytes and rows change; weak in the map so finished uploads
/// leave nothing behind.
type UploadLock = Weak<tokio::sync::Mutex<()>>;

/// The blob store. Cheap to clone.
#[derive(Clone)]
pub struct Blobs<S: MediaStore> {
    inner: Arc<Inner<S>>,
}

struct Inner<S: MediaStore> {
    bytes: S::Bytes,
    cfg: MediaConfig,
    /// Uploads are refused once the store would pass this many bytes (the quota less
    /// the emergency reserve: media never takes the space kept for alerts).
    bulk_limit: u64,
    store: S,
    /// One writer per upload at a time (two tabs resuming the same upload).
    locks: Mutex<HashMap<(String, BlobId), UploadLock>>,
    /// Files a device asked for that this server knows only from a message (a hub rebuilt
    /// from the cloud gets older files on demand): the uplink asks the cloud for them.
    /// Bounded by [`MAX_WANTED`]; forgotten once here, or [`WANT_FOR`] after the last
    /// request (the cloud may not hold it either).
    wanted: Mutex<HashMap<BlobId, tokio::time::Instant>>,
    /// Bumped when `wanted` grows, for the uplink to wake on.
    wanted_gen: tokio::sync::watch::Sender<u64>,
}

/// Most files asked of the cloud at once: each is a small request, and a phone scrolling
/// back through a year of photos must not queue an unbounded list.
pub const MAX_WANTED: usize = 256;
/// How long a request for a file stays standing without a device asking again (the web
/// client asks every few seconds while the message is on screen).
const WANT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

impl<S: Storage> std::fmt::Debug for Blobs<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("max_blob_bytes", &self.inner.cfg.max_blob_bytes).finish_non_exhaustive()
    }
}

/// Bytes read from a blob at a time for a download: what one response holds in memory.
const DOWNLOAD_PIECE: usize = 64 << 10;

/// Bytes of a finished upload that name its type (`sniff`).
const SNIFF_HEAD: usize = 64;

impl<S: Storage> Blobs<S> {
    /// Opens the store's blob bytes (files in `media/` beside the database at `db` on
    /// SQLite, counted into the store's quota; the database itself on PostgreSQL).
    pub fn open(store: S, db: &Path, cfg: MediaConfig, storage: &StorageConfig) -> Result<Self, MediaError> {
        let bytes = store.blob_bytes(db).map_err(|e| MediaError::Io(e.to_string()))?;
        let bulk_limit = storage.quota_bytes.saturating_sub(storage.emergency_reserve_bytes);
        let inner = Inner {
            bytes,
            cfg,
            bulk_limit,
            store,
            locks: Mutex::default(),
            wanted: Mutex::default(),
            wanted_gen: tokio::sync::watch::Sender::new(0),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A device asked for `blob`, which is not here: ask the peer that holds it (the
    /// cloud) when the uplink is up. Returns false when [`MAX_WANTED`] files are already
    /// asked for (the device asks again later).
    pub fn want(&self, blob: BlobId) -> bool {
        let now = tokio::time::Instant::now();
        let mut w = self.inner.wanted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = w.get_mut(&blob) {
            *at = now;
            return true;
        }
        w.retain(|_, at| now.duration_since(*at) < WANT_FOR);
        if w.len() >= MAX_WANTED {
            return false;
        }
        w.insert(blob, now);
        drop(w);
        self.inner.wanted_gen.send_modify(|g| *g += 1);
        true
    }

    /// The files asked for that are still not here (those that arrived are forgotten).
    pub async fn wanted(&self) -> Result<Vec<BlobId>, MediaError> {
        let asked: Vec<BlobId> =
            self.inner.wanted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect();
        let mut still = Vec::with_capacity(asked.len());
        for blob in asked {
            match self.info(blob).await? {
                Some(i) if !i.evicted => {
                    self.inner.wanted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&blob);
                }
                _ => still.push(blob),
            }
        }
        Ok(still)
    }

    /// Changes whenever a file is newly asked for.
    pub fn subscribe_wanted(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wanted_gen.subscribe()
    }

    /// `blob`'s size if a peer serving `rooms` (None: any) may be sent it now, on its
    /// request: whole here and named by a message in one of those rooms.
    pub async fn for_peer(&self, blob: BlobId, rooms: Option<Vec<RoomId>>) -> Result<Option<u64>, MediaError> {
        Ok(self.inner.store.blob_for_peer(blob, rooms).await?)
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.cfg
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    fn bytes(&self) -> &S::Bytes {
        &self.inner.bytes
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
        let mut most = 0;
        for owner in self.inner.store.upload_owners(blob).await? {
            most = most.max(self.bytes().partial_len(&owner, blob).await.map_err(MediaError::bytes(blob))?);
        }
        Ok(most)
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
        self.bytes().partial_create(&owner.key(), blob).await.map_err(MediaError::bytes(blob))?;
        self.inner.store.upload_begin(&owner.key(), blob, size, now_ms()).await?;
        self.partial_state(owner, blob, size).await
    }

    /// Unfinished uploads of a user and the bytes their files take here.
    async fn user_usage(&self, user: &UserId) -> Result<(u64, u64), MediaError> {
        let usage = self.inner.store.media_usage(&Owner::User(user.clone()).key(), user).await?;
        Ok((usage.pending_uploads, usage.bytes))
    }

    async fn partial_state(&self, owner: &Owner, blob: BlobId, size: u64) -> Result<Upload, MediaError> {
        let offset = self.bytes().partial_len(&owner.key(), blob).await.map_err(MediaError::bytes(blob))?;
        Ok(Upload::Partial { offset: offset.min(size), size })
    }

    /// Where an upload stands, for `owner` (HEAD). `may_use`: the caller may use the
    /// complete blob if it exists.
    pub async fn state(&self, owner: &Owner, blob: BlobId, may_use: bool) -> Result<Upload, MediaError> {
        // After a chunk in progress: a partial file grows as a chunk streams in, and only
        // what the chunk's answer covers (durable) may be reported.
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
            Some(_) => self.discard(owner, blob).await,
            None => Err(MediaError::NotFound(blob)),
        }
    }

    /// Removes an unfinished upload (refused, or abandoned).
    async fn discard(&self, owner: &Owner, blob: BlobId) -> Result<(), MediaError> {
        self.bytes().partial_remove(&owner.key(), blob).await.map_err(MediaError::bytes(blob))?;
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

    /// Reads `len` bytes of a complete blob at `offset` (fewer only at its end).
    pub async fn read_at(&self, blob: BlobId, offset: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        self.bytes().read_at(blob, offset, len).await.map_err(MediaError::bytes(blob))
    }

    /// Bytes `start..end` of a complete blob as a stream of pieces, for a response body:
    /// the first piece is read before this returns (so a missing blob is an error, not a
    /// cut body), the rest as the client takes them.
    pub async fn read_range(
        &self,
        blob: BlobId,
        start: u64,
        end: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>, MediaError>> + Send + 'static, MediaError> {
        let piece = move |at: u64| usize::try_from((end - at).min(DOWNLOAD_PIECE as u64)).unwrap_or(DOWNLOAD_PIECE);
        let first = if start < end { self.read_at(blob, start, piece(start)).await? } else { Vec::new() };
        let this = self.clone();
        let rest = futures_util::stream::try_unfold(start + first.len() as u64, move |at| {
            let this = this.clone();
            async move {
                if at >= end {
                    return Ok(None);
                }
                let bytes = this.read_at(blob, at, piece(at)).await?;
                if bytes.is_empty() {
                    return Err(MediaError::Io(format!("blob {blob} is shorter than its recorded size")));
                }
                let next = at + bytes.len() as u64;
                Ok(Some((bytes, next)))
            }
        });
        Ok(futures_util::StreamExt::chain(futures_util::stream::iter([Ok(first)]), rest))
    }
}

/// The file paths of the SQLite backend's blobs, for tests that look at the disk.
#[cfg(test)]
impl Blobs<outpost_store_sqlite::Store> {
    pub fn blob_path(&self, blob: &BlobId) -> std::path::PathBuf {
        self.bytes().blob_path(blob)
    }

    fn partial_path(&self, owner: &Owner, blob: &BlobId) -> std::path::PathBuf {
        self.bytes().partial_path(&owner.key(), blob)
    }
}
