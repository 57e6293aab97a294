//! What media needs from storage: the metadata of content-addressed blobs and of
//! unfinished uploads, written in the same transactions as the log so a crash never
//! leaves a blob half-recorded, and where their bytes are kept ([`MediaStore::blob_bytes`],
//! [`crate::BlobBytes`]).
//!
//! Uploads are keyed by an owner string the engine chooses (`user:ID` or `peer:NAME`);
//! a complete blob records who uploaded it (a user) or which peer sent it, and which
//! peers are known to hold it.

use std::future::Future;
use std::path::Path;

use outpost_shared::media::BlobId;
use outpost_shared::{Cursor, RoomId, UserId};

use crate::{BlobBytes, StoreError};

/// What is known about a complete blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub mime: String,
    /// Preview dimensions, when there is a preview.
    pub preview: Option<(u32, u32)>,
    /// The bytes were removed by retention (metadata and preview stay).
    pub evicted: bool,
    /// Peers known to hold the blob completely, in name order.
    pub peers: Vec<String>,
}

/// Where a complete blob came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// Uploaded by this user on this server.
    User(UserId),
    /// Sent by this peer over the link (the peer then holds it too).
    Peer(String),
}

/// A blob whose bytes have all arrived and are in place.
#[derive(Debug, Clone)]
pub struct CompleteBlob {
    pub blob: BlobId,
    pub size: u64,
    pub mime: String,
    /// JPEG preview with its width and height.
    pub preview: Option<(Vec<u8>, u32, u32)>,
    pub source: BlobSource,
    /// The upload this finishes (its owner key), removed in the same transaction.
    pub upload_owner: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// An unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub owner: String,
    pub blob: BlobId,
    pub size: u64,
}

/// A user's share of media storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaUsage {
    /// Unfinished uploads.
    pub pending_uploads: u64,
    /// Bytes of those uploads (their declared sizes) and of the user's complete blobs
    /// still held here.
    pub bytes: u64,
}

/// When a blob's retention period starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetentionBasis {
    /// When a peer first confirmed it holds the same bytes; a blob no peer confirmed is
    /// kept. A hub's rule: its photos wait until the cloud has them.
    #[default]
    PeerConfirmed,
    /// When this server received it completely (again, if its bytes were removed and
    /// arrived once more). The cloud's rule: it is the end of the line, no one upstream
    /// will ever confirm.
    Received,
}

pub trait MediaStore: Clone + Send + Sync + 'static {
    /// Where this backend keeps blob bytes.
    type Bytes: BlobBytes;

    /// This backend's blob bytes, opened once per server. A backend that keeps them as
    /// files puts them in `media/` beside `place` (its database file) and counts what is
    /// already there against the quota; one that keeps them in its database ignores it.
    fn blob_bytes(&self, place: &Path) -> Result<Self::Bytes, crate::BytesError>;
    /// A complete blob's metadata, if this server knows the blob.
    fn blob(&self, blob: BlobId) -> impl Future<Output = Result<Option<BlobRecord>, StoreError>> + Send;
    /// A complete image blob's preview.
    fn blob_preview(&self, blob: BlobId) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Whether `user` uploaded `blob` here.
    fn blob_uploaded_by(&self, blob: BlobId, user: &UserId) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The rooms of the messages that name `blob`.
    fn blob_rooms(&self, blob: BlobId) -> impl Future<Output = Result<Vec<RoomId>, StoreError>> + Send;
    /// Owners of unfinished uploads of `blob`.
    fn upload_owners(&self, blob: BlobId) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The declared size of `owner`'s unfinished upload of `blob`.
    fn upload_size(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Records an unfinished upload (kept as it is when it exists); after the commit.
    fn upload_begin(
        &self,
        owner: &str,
        blob: BlobId,
        size: u64,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets an unfinished upload; after the commit.
    fn upload_discard(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every unfinished upload (for the sweep of stale ones).
    fn uploads(&self) -> impl Future<Output = Result<Vec<PendingUpload>, StoreError>> + Send;
    /// What `owner` (the upload owner key of `user`) holds here.
    fn media_usage(&self, owner: &str, user: &UserId) -> impl Future<Output = Result<MediaUsage, StoreError>> + Send;
    /// Records a complete blob and ends its upload, in one transaction; a blob known
    /// before (evicted, or arriving again) is whole again. After the commit.
    fn blob_complete(&self, blob: CompleteBlob) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records that `peer` holds `blob` completely; after the commit.
    fn blob_confirmed(&self, blob: BlobId, peer: &str, at: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Blobs complete and not evicted here, named by our messages up to `through` (any
    /// room), that `peer` does not hold yet, the earliest message first, at most `limit`:
    /// what a USB stick carries beside the messages that name them (`outpost_engine::mule`).
    fn blobs_named_through(
        &self,
        peer: &str,
        through: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(BlobId, u64)>, StoreError>> + Send;
    /// The next blob `peer` should get: complete and not evicted here, named by a message
    /// the peer already holds, in one of `rooms` (None: any), not yet held by the peer;
    /// the earliest such message first.
    fn next_blob_for(
        &self,
        peer: &str,
        rooms: Option<Vec<RoomId>>,
    ) -> impl Future<Output = Result<Option<(BlobId, u64)>, StoreError>> + Send;
    /// `blob`'s size if a peer serving `rooms` (None: any) may have it now: it is whole
    /// and not evicted here, and a message in one of those rooms names it. For a peer
    /// that asked for it (a rebuilt hub gets older files on demand).
    fn blob_for_peer(
        &self,
        blob: BlobId,
        rooms: Option<Vec<RoomId>>,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Blobs still whole whose retention period (by `basis`) started before `before` (ms).
    fn blobs_retained_since(
        &self,
        basis: RetentionBasis,
        before: u64,
    ) -> impl Future<Output = Result<Vec<(BlobId, u64)>, StoreError>> + Send;
    /// Marks a blob's bytes as removed; after the commit.
    fn blob_evicted(&self, blob: BlobId, at: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
}
