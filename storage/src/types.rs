//! The log's request and answer types, and the error every storage call can return.

use outpost_shared::frames::{MessageBody, OutgoingMsg};
use outpost_shared::{Cursor, DeviceId, ErrorCode, MessageId, Priority, RoomId, UserId};

/// Identifies one live connection (opaque to the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// Who should see a new log entry.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every session in the room except the one that sent it.
    Room { room: RoomId, except: Option<SessionId> },
    /// Every session of one user (custody receipts go to the sender).
    User(UserId),
}

/// A committed log entry, already encoded as the frame devices receive.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub cursor: Cursor,
    pub priority: Priority,
    pub audience: Audience,
    pub frame: String,
}

/// Receives entries after they committed (the router implements it).
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, entry: LogEntry);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage is full ({used} of {quota} bytes used); only emergency messages are accepted")]
    StorageFull { used: u64, quota: u64 },
    #[error("the store is shutting down")]
    Closed,
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::StorageFull { .. } => ErrorCode::StorageFull,
            Self::Closed | Self::Database(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::DiskFull
        {
            return Self::StorageFull { used: 0, quota: 0 };
        }
        Self::Database(e.to_string())
    }
}

/// What a committed `send` produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: MessageId,
    pub cursor: Cursor,
    /// The message's stamp: where it sorts in its room, on every server (the sender has
    /// no other way to learn it; see `Stored::hlc`).
    pub hlc: outpost_shared::Hlc,
    pub duplicate: bool,
}

/// Called by the writer thread once the send's fate is known (after the commit).
pub type Reply = Box<dyn FnOnce(Result<Appended, StoreError>) + Send>;

/// A message to append, with what the hub knows about its sender.
#[derive(Debug)]
pub struct AppendRequest {
    pub msg: OutgoingMsg,
    pub from: UserId,
    pub device: DeviceId,
    /// Server receive time, ms since the Unix epoch.
    pub at: u64,
    pub origin: Option<SessionId>,
}

impl AppendRequest {
    /// The most storage a send may find in use and still be taken: all of `quota` for an
    /// emergency, the quota less the emergency reserve for the rest.
    pub fn storage_limit(&self, quota: u64, emergency_reserve: u64) -> u64 {
        if self.msg.priority == Priority::Emergency { quota } else { quota.saturating_sub(emergency_reserve) }
    }

    /// The message as stored, with the server's clock stamp, and the audit event an
    /// emergency alert must be recorded with (in the same transaction as the message).
    pub fn into_stored(self, hlc: outpost_shared::Hlc) -> (MessageBody, Option<crate::AuditEvent>) {
        let AppendRequest { msg, from, device, at, origin: _ } = self;
        let alert = (msg.priority == Priority::Emergency).then(|| {
            crate::AuditEvent::new(crate::AuditKind::Emergency, format!("message {} ({})", msg.id, msg.kind))
                .actor(from.as_str())
                .device(device.as_str())
                .room(msg.room.as_str())
        });
        let body = MessageBody {
            id: msg.id,
            room: msg.room,
            kind: msg.kind,
            priority: msg.priority,
            body: msg.body,
            seq: msg.seq,
            reply_to: msg.reply_to,
            from,
            device,
            hlc,
            at,
        };
        (body, alert)
    }
}

/// A peer's handshake state (see the link module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Our log up to here the peer holds durably.
    pub sent_hwm: Cursor,
    /// The peer's own record of what we hold of its log.
    pub recv_hwm: Cursor,
    /// Rooms the peer serves.
    pub rooms: Vec<RoomId>,
    /// Our log up to here was there when the peer came back with a new database: a
    /// sender whose peer holds less than this is rebuilding it (newest first, see the link).
    pub own_until: Cursor,
}

/// What a store knows of a peer without a handshake (read only; see
/// [`crate::LinkStore::peer_known`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownPeer {
    /// The peer's database epoch at its last handshake ("" before any).
    pub epoch: String,
    /// Our log up to here the peer holds durably.
    pub sent_hwm: Cursor,
    /// The peer's log up to here we hold.
    pub recv_hwm: Cursor,
    /// Rooms the peer serves.
    pub rooms: Vec<RoomId>,
}

/// What retention removed from a store, for the status page and metrics. Counts are
/// totals since the database was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionStats {
    /// Messages removed because they were older than the retention period.
    pub pruned_by_age: u64,
    /// Messages removed early, oldest first, because storage neared its quota.
    pub pruned_by_quota: u64,
    /// When retention last removed anything (ms since the Unix epoch).
    pub last_prune_at: Option<u64>,
    /// Receive time of the oldest message still held.
    pub oldest_held_at: Option<u64>,
    /// Every log position up to here may have been removed: a device resuming below it
    /// finds older history in the cloud.
    pub pruned_through: u64,
}

/// A message of ours that a peer acknowledged: its sender gets `forwarded`.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub id: MessageId,
    pub sender: UserId,
    pub room: RoomId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_the_protocol_code_a_client_acts_on() {
        assert_eq!(StoreError::StorageFull { used: 9, quota: 8 }.code(), ErrorCode::StorageFull);
        assert_eq!(StoreError::Closed.code(), ErrorCode::Internal);
        assert_eq!(StoreError::Database("disk I/O error".into()).code(), ErrorCode::Internal);
    }
}

/// A clinical workflow whose state is derived from its messages on every read: which
/// message kinds feed it. Each has a partial index of those kinds alone in every backend
/// (`messages_queue`, `messages_record`), so a read costs the workflow's messages, not
/// the room's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    /// Doctors' queues: `queue.book` and `queue.update` (outpost_shared::queue).
    Queue,
    /// Patients' shared records: `record.edit` (outpost_shared::record).
    Record,
}

impl Workflow {
    /// The SQL condition on `kind`, written exactly as in the partial index's `WHERE`
    /// (SQLite uses a partial index only for a query that repeats its condition).
    pub fn kind_sql(self) -> &'static str {
        match self {
            Self::Queue => "kind IN ('queue.book', 'queue.update')",
            Self::Record => "kind = 'record.edit'",
        }
    }
}
