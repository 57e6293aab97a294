//! The SQLite store as `outpost-storage`'s traits: each method is the inherent one of the
//! same name (those carry the documentation of how SQLite does it).

use std::future::Future;
use std::sync::Arc;

use outpost_shared::frames::{HistoryPage, Positioned};
use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Claims, Cursor, DeviceId, Epoch, Hlc, MessageId, Revocation, RevocationList, RoomId, UserId};
use outpost_storage::{
    AppendRequest, Appended, AuditEvent, AuditRecord, Backlog, Forwarded, LinkStore, LogStore, Outbound, OutboundQuery,
    PeerState, Replay, ReplayQuery, Reply, RetentionStats, SecurityStore, StoreError,
};

use crate::Store;

impl LogStore for Store {
    fn epoch(&self) -> Epoch {
        Store::epoch(self).clone()
    }
    fn head(&self) -> Cursor {
        Store::head(self)
    }
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        Store::subscribe_head(self)
    }
    fn rooms(&self) -> Vec<RoomId> {
        Store::rooms(self)
    }
    fn room_known(&self, room: &RoomId) -> bool {
        Store::room_known(self, room)
    }
    fn note_rooms(&self, rooms: &[RoomId]) -> impl Future<Output = ()> + Send {
        Store::note_rooms(self, rooms)
    }
    fn used_bytes(&self) -> u64 {
        Store::used_bytes(self)
    }
    fn append(&self, req: AppendRequest, reply: Reply) -> impl Future<Output = ()> + Send {
        Store::append(self, req, reply)
    }
    fn append_wait(&self, req: AppendRequest) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        Store::append_wait(self, req)
    }
    fn ack(
        &self,
        device: DeviceId,
        user: UserId,
        rooms: Arc<[RoomId]>,
        cursor: Cursor,
        at: u64,
    ) -> impl Future<Output = ()> + Send {
        Store::ack(self, device, user, rooms, cursor, at)
    }
    fn read(&self, user: UserId, room: RoomId, id: MessageId, at: u64) -> impl Future<Output = ()> + Send {
        Store::read(self, user, room, id, at)
    }
    fn read_marks(&self, user: UserId) -> impl Future<Output = Result<Vec<(RoomId, Cursor)>, StoreError>> + Send {
        Store::read_marks(self, user)
    }
    fn message_cursor(
        &self,
        room: RoomId,
        id: MessageId,
    ) -> impl Future<Output = Result<Option<Cursor>, StoreError>> + Send {
        Store::message_cursor(self, room, id)
    }
    fn replay(&self, q: ReplayQuery) -> impl Future<Output = Result<Replay, StoreError>> + Send {
        Store::replay(self, q)
    }
    fn room_floor(&self, room: RoomId, keep: u32) -> impl Future<Output = Result<Cursor, StoreError>> + Send {
        Store::room_floor(self, room, keep)
    }
    fn history(
        &self,
        room: RoomId,
        before: Option<Cursor>,
        limit: u32,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send {
        Store::history(self, room, before, limit)
    }
    fn room_since(
        &self,
        room: RoomId,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        Store::room_since(self, room, after, limit)
    }
    fn events(
        &self,
        rooms: Option<Arc<[RoomId]>>,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        Store::events(self, rooms, after, limit)
    }
    fn history_before_hlc(
        &self,
        room: RoomId,
        before_hlc: Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        Store::history_before_hlc(self, room, before_hlc, limit, max_bytes)
    }
    fn workflow_events(
        &self,
        room: RoomId,
        workflow: outpost_storage::Workflow,
        since_hlc: Hlc,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        Store::workflow_events(self, room, workflow, since_hlc, limit)
    }
    fn pruned_floor(&self, room: RoomId) -> impl Future<Output = Result<Option<Hlc>, StoreError>> + Send {
        Store::pruned_floor(self, room)
    }
    fn retention(&self) -> impl Future<Output = Option<RetentionStats>> + Send {
        let stats = self.retention_stats();
        async move { Some(stats) }
    }
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        Store::ping(self)
    }
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        Store::shutdown(self)
    }
}

impl SecurityStore for Store {
    fn audit(&self, event: AuditEvent) -> impl Future<Output = ()> + Send {
        Store::audit(self, event)
    }
    fn audit_committed(&self, event: AuditEvent) -> impl Future<Output = Result<(), StoreError>> + Send {
        Store::audit_committed(self, event)
    }
    fn audit_page(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<AuditRecord>, bool), StoreError>> + Send {
        Store::audit_page(self, after, limit)
    }
    fn watch_revocations(
        self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        Store::watch_revocations(self, every, stop)
    }
    fn is_revoked(&self, claims: &Claims) -> bool {
        Store::is_revoked(self, claims)
    }
    fn revocations(&self) -> tokio::sync::watch::Receiver<Arc<RevocationList>> {
        Store::revocations(self)
    }
    fn apply_revocations(
        &self,
        from: &str,
        entries: Vec<Revocation>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        Store::apply_revocations(self, from, entries)
    }
    fn save_delegation(&self, token: String) -> impl Future<Output = Result<(), StoreError>> + Send {
        Store::save_delegation(self, token)
    }
    fn delegation(&self) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        Store::delegation(self)
    }
}

impl LinkStore for Store {
    fn import(
        &self,
        peer: &str,
        entries: Vec<Entry>,
        peer_hwm: Cursor,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        Store::import(self, peer, entries, peer_hwm)
    }
    fn peer_acked(
        &self,
        peer: &str,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
    ) -> impl Future<Output = ()> + Send {
        Store::peer_acked(self, peer, sent_hwm, forwarded, at)
    }
    fn peer_hello(
        &self,
        peer: &str,
        epoch: &str,
        rooms: Vec<RoomId>,
    ) -> impl Future<Output = Result<PeerState, StoreError>> + Send {
        Store::peer_hello(self, peer, epoch, rooms)
    }
    fn peer_known(
        &self,
        peer: &str,
    ) -> impl Future<Output = Result<Option<outpost_storage::KnownPeer>, StoreError>> + Send {
        let peer = peer.to_owned();
        async move { self.on_reader(crate::ReadLane::Peers, move |r| r.peer_known(&peer)).await }
    }
    fn peer_rooms(&self, peer: &str, rooms: Vec<RoomId>) -> impl Future<Output = Result<usize, StoreError>> + Send {
        Store::peer_rooms(self, peer, rooms)
    }
    fn outbound(&self, q: OutboundQuery) -> impl Future<Output = Result<Outbound, StoreError>> + Send {
        Store::outbound(self, q)
    }
    fn backlog(&self, peer: &str) -> impl Future<Output = Result<Backlog, StoreError>> + Send {
        Store::backlog(self, peer)
    }
}
