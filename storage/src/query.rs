//! Reads of the log: a session's replay, a peer's next page, and what waits for a peer.

use std::sync::Arc;

use outpost_shared::uplink::batch::{Entry, Lane};
use outpost_shared::{Cursor, DeviceId, RoomId, UserId};

use crate::Forwarded;

/// What a session asks for when it (re)plays the log.
#[derive(Debug, Clone)]
pub struct ReplayQuery {
    /// Entries strictly after this cursor.
    pub after: Cursor,
    /// The rooms whose messages the session may see.
    pub rooms: Arc<[RoomId]>,
    /// Receipts addressed to this user are included.
    pub user: UserId,
    /// Messages sent by this device of this user are skipped above `own_visible_until`:
    /// the device already has them (it got `stored`), unless it asked for a full replay.
    pub own_device: DeviceId,
    pub own_visible_until: Cursor,
    /// Most entries in the page.
    pub limit: usize,
    /// The page ends after the frame that reaches this many bytes (at least one frame is
    /// always returned). A device that stops reading holds one page in the hub's memory,
    /// so this, not `limit`, is what a few hundred stalled replays cost.
    pub max_bytes: usize,
    /// A new device's window (docs/protocol.md, "What a new device gets"): each listed
    /// room's messages only after its floor, the rooms not listed not at all. `None`: every
    /// message of `rooms` after `after`. Receipts are not affected.
    pub floors: Option<Arc<[(RoomId, Cursor)]>>,
}

/// One page of replay.
#[derive(Debug)]
pub struct Replay {
    /// Encoded frames in cursor order.
    pub frames: Vec<(Cursor, String)>,
    /// The last cursor examined (resume the next page after it).
    pub scanned_to: Cursor,
    /// True when there was less than a page: the replay has caught up.
    pub done: bool,
}

/// What a link sender asks for: entries of our log that `peer` should get.
///
/// Messages not from `peer` (in `rooms`, when given: the cloud sends a hub only its
/// rooms) and receipts about messages that came from `peer` (not made by it). The
/// emergency lane holds emergency messages only; the normal lane everything else.
#[derive(Debug, Clone)]
pub struct OutboundQuery {
    pub peer: String,
    pub rooms: Option<Arc<[RoomId]>>,
    pub after: Cursor,
    /// Nothing past this cursor (inclusive bound), if set.
    pub until: Option<Cursor>,
    pub lane: Lane,
    /// Most entries returned.
    pub limit: usize,
    /// Stop adding entries past this many bytes of bodies (a batch-size target).
    pub max_bytes: usize,
    /// The newest entries of the range first, messages only (a peer rebuilding its
    /// database gets each room's latest messages before the rest; their receipts follow
    /// with the ordinary pass). `scanned_to` means nothing for such a page.
    pub newest_first: bool,
}

#[derive(Debug)]
pub struct Outbound {
    pub entries: Vec<Entry>,
    /// The log was examined up to here (inclusive) for this lane.
    pub scanned_to: Cursor,
    /// Messages among `entries` written on this server: their senders get `forwarded`
    /// once the peer acknowledged them.
    pub forwardable: Vec<Forwarded>,
}

/// What waits to go to a peer (for the status page and metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Backlog {
    /// Messages written here that the peer does not hold yet.
    pub messages: u64,
    /// Their bodies' bytes.
    pub bytes: u64,
    /// Receipts waiting for the peer.
    pub receipts: u64,
    /// Receive time of the oldest waiting message (ms since the Unix epoch).
    pub oldest_at: Option<u64>,
    /// Receive time of the oldest waiting emergency.
    pub oldest_emergency_at: Option<u64>,
    /// The peer's acknowledged mark.
    pub acked_through: u64,
    /// Media files named by messages here that the peer has not confirmed yet.
    pub files: u64,
    /// Their bytes.
    pub file_bytes: u64,
}
