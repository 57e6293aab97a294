//! What the link needs from storage, as a trait.
//!
//! The hub and the embedded cloud use the SQLite store; a cloud that outgrows one
//! machine implements this on PostgreSQL (several cloud nodes sharing one database, new
//! entries signalled with LISTEN/NOTIFY instead of the in-process head watch) without
//! touching the link. Every method keeps the store's contract: imports are idempotent by
//! message id and answered only after their commit.

use std::future::Future;

use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Cursor, RoomId};

use crate::{Backlog, Forwarded, KnownPeer, LogStore, Outbound, OutboundQuery, PeerState, SecurityStore, StoreError};

/// A peer link's storage: the log and the security store, plus the peers' bookkeeping.
pub trait LinkStore: LogStore + SecurityStore {
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
    /// What we know of `peer` (its epoch and both marks), without recording anything;
    /// `None` if it never spoke to us.
    fn peer_known(&self, peer: &str) -> impl Future<Output = Result<Option<KnownPeer>, StoreError>> + Send;
    /// What waits to go to a peer (status page, metrics).
    fn backlog(&self, peer: &str) -> impl Future<Output = Result<Backlog, StoreError>> + Send;
}
