//! What Outpost needs from storage, independent of any database.
//!
//! The engine (sessions, the HTTP API, media, the link) is written against these types
//! and traits; a backend implements them. SQLite (`outpost-store-sqlite`) is the embedded
//! default of the hub and the cloud; a cloud that outgrows one machine adds another
//! backend here without touching the engine. Every backend keeps the same contracts: an
//! append or an import is answered only after its commit, imports are idempotent by
//! message id, and errors carry a stable [`StoreError::code`].
//!
//! What this crate does not hold: SQL, connections, threads, or anything of the engine's
//! (routing, sessions, HTTP).

mod audit;
mod bytes;
#[cfg(feature = "conformance")]
pub mod conformance;
mod hook;
mod link;
mod log;
mod media;
mod query;
mod security;
mod types;

pub use audit::{AuditEvent, AuditKind, AuditRecord};
pub use bytes::{BlobAppend, BlobBytes, BytesError};
pub use hook::HookStore;
pub use link::LinkStore;

/// Everything the engine and the applications need of one backend.
pub trait Storage: LogStore + SecurityStore + MediaStore + LinkStore + HookStore {}

impl<T: LogStore + SecurityStore + MediaStore + LinkStore + HookStore> Storage for T {}
pub use log::LogStore;
pub use media::{BlobRecord, BlobSource, CompleteBlob, MediaStore, MediaUsage, PendingUpload, RetentionBasis};
pub use query::{Backlog, Outbound, OutboundQuery, Replay, ReplayQuery};
pub use security::SecurityStore;
pub use types::{
    AppendRequest, Appended, Audience, Forwarded, KnownPeer, LogEntry, PeerState, Publisher, Reply, RetentionStats,
    SessionId, StoreError, Workflow,
};
