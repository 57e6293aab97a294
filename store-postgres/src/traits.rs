//! The PostgreSQL store as `outpost-storage`'s traits. Writes go to the node's writer
//! (src/writer.rs); reads to the pool (src/reader.rs).

use std::future::Future;
use std::sync::Arc;

use outpost_shared::frames::{HistoryPage, Positioned};
use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Claims, Cursor, DeviceId, Epoch, MessageId, Revocation, RevocationList, RoomId, UserId};
use outpost_storage::{
    AppendRequest, Appended, AuditEvent, AuditRecord, Backlog, Forwarded, HookStore, LinkStore, LogStore, Outbound,
    OutboundQuery, PeerState, Replay, ReplayQuery, Reply, SecurityStore, StoreError,
};
use tokio::sync::oneshot;

use crate::{Command, PgStore, now_ms};

impl LogStore for PgStore {
    fn epoch(&self) -> Epoch {
        self.shared.epoch.clone()
    }
    fn head(&self) -> Cursor {
        Cursor(*self.head_rx.borrow())
    }
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head_rx.clone()
    }
    fn rooms(&self) -> Vec<RoomId> {
        self.shared.known_rooms.read().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }
    fn room_known(&self, room: &RoomId) -> bool {
        self.shared.known_rooms.read().map(|r| r.contains(room)).unwrap_or(false)
    }
    fn note_rooms(&self, rooms: &[RoomId]) -> impl Future<Output = ()> + Send {
        let fresh: Vec<RoomId> = match self.shared.known_rooms.read() {
            Ok(known) => rooms.iter().filter(|r| !known.contains(*r)).cloned().collect(),
            Err(_) => Vec::new(),
        };
        async move {
            if !fresh.is_empty() {
                self.send(Command::Rooms(fresh)).await;
            }
        }
    }
    fn used_bytes(&self) -> u64 {
        PgStore::used_bytes(self)
    }
    async fn append(&self, req: AppendRequest, reply: Reply) {
        if let Err(tokio::sync::mpsc::error::SendError(Command::Append(_, reply))) =
            self.tx.send(Command::Append(req, reply)).await
        {
            reply(Err(StoreError::Closed));
        }
    }
    async fn append_wait(&self, req: AppendRequest) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        LogStore::append(self, req, Box::new(move |r| drop(tx.send(r)))).await;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
    async fn ack(&self, device: DeviceId, user: UserId, rooms: Arc<[RoomId]>, cursor: Cursor, at: u64) {
        self.send(Command::Ack { device, user, rooms, cursor, at }).await;
    }
    async fn read(&self, user: UserId, room: RoomId, id: MessageId, at: u64) {
        self.send(Command::Read { user, room, id, at }).await;
    }
    fn read_marks(&self, user: UserId) -> impl Future<Output = Result<Vec<(RoomId, Cursor)>, StoreError>> + Send {
        PgStore::read_marks(self, user)
    }
    fn message_cursor(
        &self,
        room: RoomId,
        id: MessageId,
    ) -> impl Future<Output = Result<Option<Cursor>, StoreError>> + Send {
        PgStore::message_cursor(self, room, id)
    }
    fn replay(&self, q: ReplayQuery) -> impl Future<Output = Result<Replay, StoreError>> + Send {
        PgStore::replay(self, q)
    }
    fn room_floor(&self, room: RoomId, keep: u32) -> impl Future<Output = Result<Cursor, StoreError>> + Send {
        PgStore::room_floor(self, room, keep)
    }
    fn history(
        &self,
        room: RoomId,
        before: Option<Cursor>,
        limit: u32,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send {
        PgStore::history(self, room, before, limit)
    }
    fn history_before_hlc(
        &self,
        room: RoomId,
        before_hlc: outpost_shared::Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        PgStore::history_before_hlc(self, room, before_hlc, limit, max_bytes)
    }
    fn workflow_events(
        &self,
        room: RoomId,
        workflow: outpost_storage::Workflow,
        since_hlc: outpost_shared::Hlc,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        PgStore::workflow_events(self, room, workflow, since_hlc, limit)
    }
    fn room_since(
        &self,
        room: RoomId,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        PgStore::room_since(self, room, after, limit)
    }
    fn events(
        &self,
        rooms: Option<Arc<[RoomId]>>,
        after: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Positioned>, bool), StoreError>> + Send {
        PgStore::events(self, rooms, after, limit)
    }
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        PgStore::ping(self)
    }
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        PgStore::shutdown(self)
    }
}

impl SecurityStore for PgStore {
    async fn audit(&self, event: AuditEvent) {
        self.send(Command::Audit(event, now_ms())).await;
    }
    async fn audit_committed(&self, event: AuditEvent) -> Result<(), StoreError> {
        SecurityStore::audit(self, event).await;
        PgStore::ping(self).await
    }
    fn audit_page(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<AuditRecord>, bool), StoreError>> + Send {
        PgStore::audit_page(self, after, limit)
    }
    fn watch_revocations(
        self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        PgStore::watch_revocations(self, every, stop)
    }
    fn is_revoked(&self, claims: &Claims) -> bool {
        self.shared.revocations.borrow().revokes(claims).is_some()
    }
    fn revocations(&self) -> tokio::sync::watch::Receiver<Arc<RevocationList>> {
        self.shared.revocations.subscribe()
    }
    fn apply_revocations(
        &self,
        from: &str,
        entries: Vec<Revocation>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let from = from.to_owned();
        async move { self.ask(|reply| Command::Revoke { from, entries, reply }).await }
    }
    // Only a hub keeps a delegation (the cloud signs its own renewals and delegations
    // on demand), and hubs run on SQLite: a cloud node has nothing to keep, and the link
    // refuses a `Delegation` frame from a hub before it gets here.
    async fn save_delegation(&self, _token: String) -> Result<(), StoreError> {
        Err(StoreError::Database("a cloud keeps no delegation".into()))
    }
    async fn delegation(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

impl LinkStore for PgStore {
    fn import(
        &self,
        peer: &str,
        entries: Vec<Entry>,
        peer_hwm: Cursor,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let peer = peer.to_owned();
        async move {
            match &self.imports {
                Some(q) => {
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    if q.send(crate::import::Batch { peer, entries, peer_hwm, reply }).await.is_err() {
                        return Err(StoreError::Closed);
                    }
                    rx.await.unwrap_or(Err(StoreError::Closed))
                }
                None => self.ask(|reply| Command::Import { peer, entries, peer_hwm, reply }).await,
            }
        }
    }
    fn peer_acked(
        &self,
        peer: &str,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
    ) -> impl Future<Output = ()> + Send {
        let peer = peer.to_owned();
        async move {
            self.send(Command::PeerAcked { peer, sent_hwm, forwarded, at }).await;
        }
    }
    fn peer_hello(
        &self,
        peer: &str,
        epoch: &str,
        rooms: Vec<RoomId>,
    ) -> impl Future<Output = Result<PeerState, StoreError>> + Send {
        let (peer, epoch) = (peer.to_owned(), epoch.to_owned());
        async move { self.ask(|reply| Command::PeerHello { peer, epoch, rooms, reply }).await }
    }
    fn peer_rooms(&self, peer: &str, rooms: Vec<RoomId>) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let peer = peer.to_owned();
        async move { self.ask(|reply| Command::PeerRooms { peer, rooms, reply }).await }
    }
    fn outbound(&self, q: OutboundQuery) -> impl Future<Output = Result<Outbound, StoreError>> + Send {
        PgStore::outbound(self, q)
    }
    fn peer_known(
        &self,
        peer: &str,
    ) -> impl Future<Output = Result<Option<outpost_storage::KnownPeer>, StoreError>> + Send {
        let peer = peer.to_owned();
        async move {
            let rows = self.rows("SELECT epoch, sent_hwm, recv_hwm FROM peers WHERE peer = $1", &[&peer]).await?;
            let Some(r) = rows.first() else { return Ok(None) };
            let rooms = self.rows("SELECT room FROM peer_rooms WHERE peer = $1 ORDER BY room", &[&peer]).await?;
            Ok(Some(outpost_storage::KnownPeer {
                epoch: r.get(0),
                sent_hwm: Cursor(crate::from_sql(r.get(1))),
                recv_hwm: Cursor(crate::from_sql(r.get(2))),
                rooms: rooms.iter().filter_map(|r| RoomId::new(r.get::<_, String>(0)).ok()).collect(),
            }))
        }
    }
    fn backlog(&self, peer: &str) -> impl Future<Output = Result<Backlog, StoreError>> + Send {
        let peer = peer.to_owned();
        async move { PgStore::backlog(self, &peer).await }
    }
}

/// Webhook positions and leases: single-row compare-and-set statements on pooled
/// connections (no log cursor is touched, so they need not wait for the writer).
impl HookStore for PgStore {
    async fn hook_position(&self, name: &str) -> Result<Cursor, StoreError> {
        let rows = self.rows("SELECT position FROM hooks WHERE name = $1", &[&name]).await?;
        Ok(Cursor(rows.first().map_or(0, |r| crate::from_sql(r.get(0)))))
    }

    async fn hook_lease(&self, name: &str, holder: &str, now_ms: u64, ttl_ms: u64) -> Result<bool, StoreError> {
        let until = crate::to_sql(now_ms.saturating_add(ttl_ms));
        let n = self
            .write_count(
                "INSERT INTO hooks (name, holder, lease_until) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
                   WHERE hooks.holder = excluded.holder OR hooks.lease_until <= $3",
                &[&name, &holder, &crate::to_sql(now_ms), &until],
            )
            .await?;
        Ok(n > 0)
    }

    async fn hook_advance(&self, name: &str, holder: &str, cursor: Cursor) -> Result<bool, StoreError> {
        let n = self
            .write_count(
                "UPDATE hooks SET position = greatest(position, $3) WHERE name = $1 AND holder = $2",
                &[&name, &holder, &crate::to_sql(cursor.0)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn hook_release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.write_count("UPDATE hooks SET lease_until = 0 WHERE name = $1 AND holder = $2", &[&name, &holder])
            .await
            .map(drop)
    }
}
