//! What media needs from storage for the bytes themselves, beside their metadata
//! ([`crate::MediaStore`]): unfinished uploads that grow by appends at their end, and
//! complete content-addressed blobs that are read by range and removed by retention.
//!
//! Where the bytes live is the backend's choice ([`crate::MediaStore::blob_bytes`]):
//! SQLite keeps them as files beside its database (a hub, a one-node cloud), PostgreSQL
//! in the database every cloud node shares, so a photo uploaded through one node is
//! downloaded through another and an upload begun on one resumes on any. The contracts
//! are the same for both:
//!
//! - **Durable before acknowledged.** [`BlobAppend::commit`] returns only once the chunk
//!   would survive a power cut (fsync, or a database commit); an upload resumes exactly
//!   where the last committed chunk ended.
//! - **One append at an offset.** An append names the offset it continues from and is
//!   refused with [`BytesError::Offset`] (carrying the real length) when the upload is
//!   elsewhere. Callers run one append per upload at a time within a process (the engine
//!   locks each upload), which is all the file store needs, since one process owns its
//!   files; the database store checks the offset again at the commit, so two nodes
//!   writing the same upload never interleave their bytes: one wins, the other learns
//!   where to go on from.
//! - **Checked before complete.** A finished upload's digest is read
//!   ([`BlobBytes::partial_digest`]) and checked by the caller before
//!   [`BlobBytes::promote`] makes it the blob named by that digest; bytes already held
//!   under that name are kept and the upload's copy dropped (stored once).
//! - **Counted against the quota.** Bytes kept outside the database count with it
//!   against `storage.quota_bytes`: the file store adds them to its store's count itself;
//!   bytes inside the database are counted with the database's size.
//!
//! Uploads are keyed by the owner string of [`crate::MediaStore`] (`user:ID`, `peer:NAME`).

use std::future::Future;

use outpost_shared::media::BlobId;

use crate::StoreError;

/// Why a byte operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    /// The upload holds this many bytes, not the offset asked for.
    #[error("this upload is at byte {0}; continue from there")]
    Offset(u64),
    /// No such unfinished upload, or no bytes of such a complete blob, here.
    #[error("no such upload or blob here")]
    Missing,
    /// A file could not be read or written.
    #[error("the file store failed: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<std::io::Error> for BytesError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Where blob bytes are kept. Cheap to clone.
pub trait BlobBytes: Clone + Send + Sync + 'static {
    /// One chunk being appended to an unfinished upload.
    type Append: BlobAppend;

    /// Bytes of `owner`'s unfinished upload of `blob` that are durable here (0 when there
    /// is none).
    fn partial_len(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<u64, BytesError>> + Send;

    /// Creates `owner`'s unfinished upload of `blob`, empty and durable; one that exists
    /// is kept as it is.
    fn partial_create(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<(), BytesError>> + Send;

    /// Starts a chunk of `owner`'s upload of `blob` at `offset`, which must be the
    /// upload's length ([`BytesError::Offset`] with the length otherwise). An upload not
    /// created yet has length 0. Until the chunk's commit or abort, what `partial_len`
    /// says of the upload is the backend's (a file grows as the chunk is written; the
    /// database shows committed chunks only), so callers that answer with it wait for
    /// the chunk first.
    fn append(
        &self,
        owner: &str,
        blob: BlobId,
        offset: u64,
    ) -> impl Future<Output = Result<Self::Append, BytesError>> + Send;

    /// When `owner`'s upload of `blob` last grew (or was created), milliseconds since the
    /// Unix epoch; None when there is no such upload.
    fn partial_touched(
        &self,
        owner: &str,
        blob: BlobId,
    ) -> impl Future<Output = Result<Option<u64>, BytesError>> + Send;

    /// Reads `owner`'s upload of `blob` whole: the SHA-256 of its bytes and its first
    /// `head` bytes (which tell its type).
    fn partial_digest(
        &self,
        owner: &str,
        blob: BlobId,
        head: usize,
    ) -> impl Future<Output = Result<([u8; 32], Vec<u8>), BytesError>> + Send;

    /// Removes `owner`'s upload of `blob` (refused, abandoned or stale); whether there
    /// was one.
    fn partial_remove(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<bool, BytesError>> + Send;

    /// Makes `owner`'s finished upload of `blob`, `size` bytes whose digest the caller
    /// checked, the complete blob `blob`, durably, and removes the upload. Returns false
    /// when the blob's bytes were here already (they are kept; the upload's are dropped).
    fn promote(&self, owner: &str, blob: BlobId, size: u64) -> impl Future<Output = Result<bool, BytesError>> + Send;

    /// Up to `len` bytes of the complete blob `blob` from `offset` (fewer only at its end).
    fn read_at(
        &self,
        blob: BlobId,
        offset: u64,
        len: usize,
    ) -> impl Future<Output = Result<Vec<u8>, BytesError>> + Send;

    /// Removes the complete blob's bytes (retention); whether they were here.
    fn remove(&self, blob: BlobId) -> impl Future<Output = Result<bool, BytesError>> + Send;

    /// Bytes held: complete blobs and unfinished uploads.
    fn used(&self) -> impl Future<Output = Result<u64, BytesError>> + Send;

    /// Removes what appends that never ended (a process killed mid-chunk) left behind,
    /// if they began before `before` (ms since the Unix epoch); how many.
    fn sweep(&self, before: u64) -> impl Future<Output = Result<usize, BytesError>> + Send;
}

/// A chunk on its way into an unfinished upload ([`BlobBytes::append`]). Dropped without
/// `commit` or `abort` (the request was cancelled), what was written may stay (the file
/// store keeps what reached the file, as after a cut without a checksum) or go (the
/// database store, [`BlobBytes::sweep`]); nothing committed is lost.
pub trait BlobAppend: Send + 'static {
    /// Adds `bytes` to the chunk (written as they come: a chunk need not fit in memory).
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), BytesError>> + Send;

    /// Makes the chunk durable and part of the upload, if the upload is still where the
    /// chunk began ([`BytesError::Offset`] otherwise); returns the upload's new length.
    fn commit(self) -> impl Future<Output = Result<u64, BytesError>> + Send;

    /// Drops the chunk: the upload stays as it was before it.
    fn abort(self) -> impl Future<Output = Result<(), BytesError>> + Send;
}
