//! What the link needs from storage, as a trait.
//!
//! The hub and the embedded cloud use the SQLite store; a cloud that outgrows one
//! machine implements this on PostgreSQL (several cloud nodes sharing one database, new
//! entries signalled with LISTEN/NOTIFY instead of the in-process head watch) without
//! touching the link. Every method keeps the store's contract: imports are idempotent by
//! message id and answered only after their commit.

use std::future::Future;

use outpost_shared::uplink::batch::Entry;
use std::sync::Arc;

use outpost_shared::{Cursor, Epoch, Revocation, RevocationList, RoomId};

use crate::{AuditEvent, Forwarded, Outbound, OutboundQuery, PeerState, StoreError};

pub trait LinkStore: Clone + Send + Sync + 'static {
    /// This database's epoch (sent in the handshake).
    fn epoch(&self) -> Epoch;
    /// Rooms this server serves (a hub announces them to its cloud).
    fn rooms(&self) -> Vec<RoomId>;
    /// Changes after every commit; link senders wait on it for new entries.
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Applies a peer's batch idempotently; resolves after the commit.
    fn import(
        &self,
        peer: &str,
        entries: Vec<Entry>,
        peer_hwm: Cursor,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// The peer holds our log up to `sent_hwm`; tell the senders of `forwarded`.
    fn peer_acked(
        &self,
        peer: &str,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
    ) -> impl Future<Output = ()> + Send;
    /// Records a handshake; returns where to resume.
    fn peer_hello(
        &self,
        peer: &str,
        epoch: &str,
        rooms: Vec<RoomId>,
    ) -> impl Future<Output = Result<PeerState, StoreError>> + Send;
    /// Adds rooms a peer serves; returns how many were new.
    fn peer_rooms(&self, peer: &str, rooms: Vec<RoomId>) -> impl Future<Output = Result<usize, StoreError>> + Send;
    /// The next page of our log for a peer.
    fn outbound(&self, q: OutboundQuery) -> impl Future<Output = Result<Outbound, StoreError>> + Send;
    /// Records a security event (relay connected or refused) in the audit log.
    fn audit(&self, event: AuditEvent) -> impl Future<Output = ()> + Send;
    /// The token revocation list (the cloud sends it to every hub); changes when it does.
    fn revocations(&self) -> tokio::sync::watch::Receiver<Arc<RevocationList>>;
    /// Records revocation entries received from the cloud; resolves after the commit.
    fn apply_revocations(
        &self,
        from: &str,
        entries: Vec<Revocation>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}
