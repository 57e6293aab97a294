//! What device sessions, the HTTP API and the status page need from storage: the message
//! log.
//!
//! Contracts every backend keeps (the conformance suite checks them): an append is
//! answered only after the transaction holding it committed durably; a message id
//! already held is answered `duplicate` with its original cursor, forever; after the
//! commit each new entry is handed to the [`Publisher`](crate::Publisher) the backend was
//! opened with (the live router), in cursor order; reads see every committed entry.

use std::future::Future;
use std::sync::Arc;

use outpost_shared::frames::{HistoryPage, Positioned};
use outpost_shared::{Cursor, DeviceId, Epoch, Hlc, MessageId, RoomId, UserId};

use crate::{AppendRequest, Appended, Replay, ReplayQuery, Reply, RetentionStats, StoreError, Workflow};

pub trait LogStore: Clone + Send + Sync + 'static {
    /// This database's epoch: devices resume only within it (contract 6).
    fn epoch(&self) -> Epoch;
    /// The newest committed cursor.
    fn head(&self) -> Cursor;
    /// Changes after every commit (carries the new head).
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Rooms this server has seen named (by a token, a message or a peer).
    fn rooms(&self) -> Vec<RoomId>;
    /// Whether `room` is one of [`LogStore::rooms`] (a typo is told apart from a refusal).
    fn room_known(&self, room: &RoomId) -> bool;
    /// Records rooms named by a signed-in token.
    fn note_rooms(&self, rooms: &[RoomId]) -> impl Future<Output = ()> + Send;
    /// Bytes of storage in use, as the quota counts them.
    fn used_bytes(&self) -> u64;
    /// Queues a message; `reply` is called once its fate is known (after the commit).
    fn append(&self, req: AppendRequest, reply: Reply) -> impl Future<Output = ()> + Send;
    /// [`LogStore::append`], answered to the caller.
    fn append_wait(&self, req: AppendRequest) -> impl Future<Output = Result<Appended, StoreError>> + Send;
    /// A device holds the log up to `cursor` in `rooms`: messages there are `delivered`
    /// to it.
    fn ack(
        &self,
        device: DeviceId,
        user: UserId,
        rooms: Arc<[RoomId]>,
        cursor: Cursor,
        at: u64,
    ) -> impl Future<Output = ()> + Send;
    /// `user` read message `id` of `room`.
    fn read(&self, user: UserId, room: RoomId, id: MessageId, at: u64) -> impl Future<Output = ()> + Send;
    /// How far `user` has read each room (`read_marks`): this server's cursor of the last
    /// message read there.
    fn read_marks(&self, user: UserId) -> impl Future<Output = Result<Vec<(RoomId, Cursor)>, StoreError>> + Send;
    /// This server's cursor of message `id` in `room`, if it holds it.
    fn message_cursor(
        &self,
        room: RoomId,
        id: MessageId,
    ) -> impl Future<Output = Result<Option<Cursor>, StoreError>> + Send;
    /// The next page of what a device missed.
    fn replay(&self, q: ReplayQuery) -> impl Future<Output = Result<Replay, StoreError>> + Send;
    /// The cursor below `room`'s `keep` latest messages: those after it are exactly the
    /// latest `keep` (0 when the room holds no more than `keep`). A new device's window.
    fn room_floor(&self, room: RoomId, keep: u32) -> impl Future<Output = Result<Cursor, StoreError>> + Send;
    /// Messages of `room` before `before` (newest first within the page's limit).
    fn history(
        &self,
        room: RoomId,
        before: Option<Cursor>,
        limit: u32,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;
    /// Messages of `room` after `after`, oldest first, and whether there are more.
    fn room_since(
        &self,
        room: RoomId,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send;
    /// Messages after `after` in `rooms` (every room when `None`), in cursor order across
    /// all of them, at most `limit`, and whether there are more: the feed of the events
    /// API and of webhooks. Receipts are not events. A cursor is the commit order, so a
    /// reader that resumes after the last cursor it was given misses nothing and gets
    /// nothing twice: a backend never makes visible a message below a cursor it has
    /// already shown. The cost must not grow with the log's length (a page near the head
    /// of a log of millions reads about `limit` messages, plus one look-up per room).
    fn events(
        &self,
        rooms: Option<Arc<[RoomId]>>,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send;
    /// Messages of `room` stamped before `before_hlc`, oldest first, at most `limit` and
    /// about `max_bytes` of bodies (at least one message), and whether older ones remain:
    /// what a hub asks its cloud for when retention removed a room's older history
    /// there. The stamp orders a room the same on every server, so the hub and the
    /// cloud agree on "before" though their cursors differ.
    fn history_before_hlc(
        &self,
        room: RoomId,
        before_hlc: Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send;
    /// The messages of `room` that feed `workflow` (a doctor's queue, a patient's record),
    /// stamped at or after `since_hlc`, in stamp order, at most `limit`, and whether more
    /// remain: what the workflow's state is derived from. Read through an index of those
    /// kinds alone, so the cost follows the workflow's messages, not the room's.
    fn workflow_events(
        &self,
        room: RoomId,
        workflow: Workflow,
        since_hlc: Hlc,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send;
    /// The newest stamp retention removed from `room` on this server, if it removed any
    /// (older history then lives with the peer that confirmed it). A store without
    /// retention answers `None`.
    fn pruned_floor(&self, room: RoomId) -> impl Future<Output = Result<Option<Hlc>, StoreError>> + Send {
        let _ = room;
        async { Ok(None) }
    }
    /// What retention removed here (status page, metrics); `None` for a store without it.
    fn retention(&self) -> impl Future<Output = Option<RetentionStats>> + Send {
        async { None }
    }
    /// Resolves once the store has completed a transaction (a liveness check).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Commits everything queued and stops; later calls answer `StoreError::Closed`.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}
