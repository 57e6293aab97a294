//! The hub ↔ cloud link: a thin quinn shell around the pure link protocol in
//! `outpost_shared::uplink`.
//!
//! After the handshake (hub `Hello`, cloud `Welcome`, see [`uplink`] and the cloud crate)
//! both ends run the same [`run`]: a sender that pages its log out to the peer in
//! batches (one QUIC stream each; emergencies on their own higher-priority streams) and a
//! receiver that applies the peer's batches and acknowledges each after its commit. One
//! bidirectional control stream carries acks and room announcements. Any task's failure
//! ends the whole link; the hub's dialer reconnects with backoff and both sides resume
//! from their durable high-water marks.

mod bulk;
pub mod certs;
pub mod history;
pub mod tls;
pub mod tunnel;
pub mod uplink;

pub use outpost_storage::LinkStore;
use outpost_storage::Storage;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_shared::media::BlobId;
use outpost_shared::uplink::batch::{self, BatchHeader, Entry, Lane};
use outpost_shared::uplink::control::Control;
use outpost_shared::uplink::dict;
use outpost_shared::uplink::flow::{FlowConfig, Queue, SendState};
use outpost_shared::uplink::handshake::HandshakeError;
use outpost_shared::{Cursor, RoomId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::renewal::Renewal;
use outpost_storage::{Forwarded, OutboundQuery, StoreError};

/// Largest batch accepted from a peer, compressed (bounded read of a stream).
pub const MAX_BATCH_WIRE: usize = 4 << 20;
/// Largest batch accepted from a peer, inflated.
pub const MAX_BATCH_RAW: usize = 16 << 20;
/// Files asked for by the peer and not yet sent, at most (it asks again if dropped).
const WANTS_QUEUE: usize = 1024;
/// Entries per emergency batch: emergencies are few; each goes out at once.
const EMERGENCY_PAGE: usize = 64;
/// Entries per normal batch at most.
const NORMAL_PAGE: usize = 1024;
/// Normal batches smaller than this wait up to `FlowConfig::linger` for more entries.
const LINGER_BELOW: usize = 64;
/// Stream priorities (quinn sends higher first).
const PRIORITY_EMERGENCY: i32 = 100;
/// The newest-first pass of a rebuild: before ordinary batches, after emergencies.
const PRIORITY_RECENT: i32 = 10;
/// Batch ids of the newest-first pass: a range the flow state never uses, so their acks
/// are recognised as outside the window (they move no high-water mark).
const RECENT_BATCH_IDS: u64 = 1 << 63;
/// Emergencies that were waiting when the link came up: after fresh ones, before the rest.
const PRIORITY_BACKLOG_EMERGENCY: i32 = 50;
const PRIORITY_NORMAL: i32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    #[error("the peer refused the link: {code}: {message}")]
    Refused { code: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shutting down")]
    Shutdown,
}

impl From<HandshakeError> for LinkError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Refused { code, message } => Self::Refused { code, message },
            HandshakeError::Protocol(m) => Self::Protocol(m),
            HandshakeError::TimedOut(what) => Self::Stream(what.into()),
        }
    }
}

/// Who we are talking to, as the store knows them.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The store's name for the peer (`cloud` on a hub, the relay id on the cloud).
    pub name: String,
    /// Rooms the peer serves (only the cloud filters what it sends; a hub sends all).
    pub rooms: Option<Arc<Mutex<HashSet<RoomId>>>>,
    /// Where our sender resumes (the peer holds our log up to here).
    pub start: Cursor,
    /// The link version both ends speak: frames newer than it are never sent to this peer
    /// (see `LINK_VERSION`).
    pub version: u16,
    /// Our log up to here was there when the peer came back with a new database
    /// (`PeerState::own_until`). While `start` is below it the peer is being rebuilt, and
    /// each room's latest messages go first ([`recent_first`]).
    pub rebuild_until: Cursor,
}

/// How a link runs: the batch lanes' flow control and, when this server keeps media,
/// its blob store (the bulk lane).
#[derive(Debug, Clone)]
pub struct LinkOptions<S: Storage> {
    pub flow: FlowConfig,
    pub blobs: Option<crate::media::Blobs<S>>,
    /// Token renewal: on a hub, its key asks the cloud for delegations and takes them; on
    /// the cloud, it signs them (see [`crate::renewal`]). None: neither.
    pub renewal: Option<Arc<Renewal>>,
    /// A hub's handle for history asked of the cloud (attached while this link, of
    /// version 2 or later, is up); `None` on the cloud.
    pub history: Option<Arc<history::CloudHistory>>,
    /// A hub's LAN certificate, named and renewed through this link (version 3).
    pub lan: Option<Arc<crate::lan_cert::LanCert>>,
    /// The cloud's issuer of its hubs' LAN certificates (its `[acme]` section).
    pub issuer: Option<Arc<dyn certs::CertIssuer>>,
}

/// History requests a cloud serves at once per hub link; more wait their turn (each is
/// one bounded read).
const HISTORY_ANSWERS_AT_ONCE: usize = 4;

/// Reads one length-prefixed control frame.
pub async fn read_control(recv: &mut quinn::RecvStream) -> Result<Option<Control>, LinkError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(LinkError::Stream(e.to_string())),
    }
    let len = Control::check_len(prefix).map_err(|e| LinkError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| LinkError::Stream(e.to_string()))?;
    Control::decode(&body).map(Some).map_err(|e| LinkError::Protocol(e.to_string()))
}

pub async fn write_control(send: &mut quinn::SendStream, c: &Control) -> Result<(), LinkError> {
    send.write_all(&c.encode()).await.map_err(|e| LinkError::Stream(e.to_string()))
}

/// Runs an established link until it fails or `shutdown` fires.
pub async fn run<S: Storage>(
    conn: quinn::Connection,
    mut ctrl_send: quinn::SendStream,
    mut ctrl_recv: quinn::RecvStream,
    store: S,
    peer: Peer,
    opts: LinkOptions<S>,
    shutdown: CancellationToken,
) -> LinkError {
    let LinkOptions { flow, blobs, renewal, history, lan, issuer } = opts;
    // Certificates travel only on a link of version 3 or later.
    let certs = if peer.version >= 3 { certs::Certs::new(lan, issuer) } else { certs::Certs::None };
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(1024);
    let (ack_tx, ack_rx) = mpsc::channel::<u64>(4096);
    let (reset_tx, reset_rx) = mpsc::channel::<()>(4);
    // Files the peer asked for (`WantBlobs`), for our bulk sender; full means it asks again.
    let (want_tx, want_rx) = mpsc::channel::<BlobId>(WANTS_QUEUE);
    let mut tasks: JoinSet<LinkError> = JoinSet::new();

    tasks.spawn(async move {
        while let Some(c) = ctl_rx.recv().await {
            if let Err(e) = write_control(&mut ctrl_send, &c).await {
                return e;
            }
        }
        LinkError::Shutdown
    });

    let reader_store = store.clone();
    let reader_peer = peer.clone();
    let reader_reset = reset_tx.clone();
    // A hub asks its cloud for history only on a link that can carry the frames.
    let history = history.filter(|_| peer.rooms.is_none() && peer.version >= 2);
    if let Some(h) = &history {
        h.attach(ctl_tx.clone());
    }
    let reader_history = history.clone();
    let reader_ctl = ctl_tx.clone();
    let answers = Arc::new(tokio::sync::Semaphore::new(HISTORY_ANSWERS_AT_ONCE));
    let reader_renewal = renewal.clone();
    let reader_certs = certs.clone();
    tasks.spawn(async move {
        // Answers to history requests (cloud side); aborted with the link.
        let mut answering: JoinSet<()> = JoinSet::new();
        loop {
            let c = match read_control(&mut ctrl_recv).await {
                Ok(Some(c)) => c,
                Ok(None) => return LinkError::Protocol("the peer closed the control stream".into()),
                Err(e) => return e,
            };
            match c {
                Control::Ack { batch } => {
                    if ack_tx.send(batch).await.is_err() {
                        return LinkError::Shutdown;
                    }
                }
                Control::Rooms { rooms } => {
                    if let Err(e) = add_rooms(&reader_store, &reader_peer, rooms, &reader_reset).await {
                        return e;
                    }
                }
                Control::Refused { code, message } => return LinkError::Refused { code, message },
                // Only a cloud revokes tokens: a hub's list would let one village lock out
                // another's workers.
                Control::Revocations { .. } if reader_peer.rooms.is_some() => {
                    return LinkError::Protocol("a hub may not send revocations".into());
                }
                Control::Revocations { entries } => {
                    let n = entries.len();
                    match reader_store.apply_revocations(&reader_peer.name, entries).await {
                        Ok(fresh) => tracing::info!(received = n, fresh, "revocation list received"),
                        Err(e) => return LinkError::Store(e),
                    }
                }
                Control::WantBlobs { blobs } => {
                    for b in blobs {
                        let _ = want_tx.try_send(b);
                    }
                }
                // Version 2 frames: only a peer that said it speaks version 2 sends them.
                Control::RenewalKey { .. } | Control::Delegation { .. } if reader_peer.version < 2 => {
                    return LinkError::Protocol("a version-2 frame from a version-1 peer".into());
                }
                Control::RenewalKey { key } if reader_peer.rooms.is_some() => {
                    if let Err(e) =
                        delegate(&reader_store, &reader_peer, reader_renewal.as_deref(), key, &reader_ctl).await
                    {
                        return e;
                    }
                }
                Control::RenewalKey { .. } => return LinkError::Protocol("a cloud does not send renewal keys".into()),
                // Only the cloud's key delegates: a hub's delegation would be refused by
                // every verifier anyway, but a hub that tries is broken or hostile.
                Control::Delegation { .. } if reader_peer.rooms.is_some() => {
                    return LinkError::Protocol("a hub may not send delegations".into());
                }
                Control::Delegation { token } => {
                    if let Err(e) = take_delegation(&reader_store, reader_renewal.as_deref(), token).await {
                        return e;
                    }
                }
                Control::Hello { .. } | Control::Welcome { .. } | Control::WelcomeV2 { .. } => {
                    return LinkError::Protocol("handshake frame after the handshake".into());
                }
                Control::HistoryRequest { id, room, before_hlc, limit } => {
                    let Some(rooms) = &reader_peer.rooms else {
                        return LinkError::Protocol("a cloud may not ask a hub for history".into());
                    };
                    while answering.try_join_next().is_some() {}
                    if answering.len() >= history::MAX_PENDING {
                        // A hub asking faster than it could ever wait for: refuse at once.
                        let busy = Control::HistoryAnswer {
                            id,
                            messages: Vec::new(),
                            more: false,
                            error: Some("busy".into()),
                        };
                        if reader_ctl.send(busy).await.is_err() {
                            return LinkError::Shutdown;
                        }
                        continue;
                    }
                    let allowed = rooms.lock().map(|r| r.contains(&room)).unwrap_or(false);
                    let (store, ctl, permits) = (reader_store.clone(), reader_ctl.clone(), answers.clone());
                    answering.spawn(async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        let a = history::answer(&store, allowed, id, room, before_hlc, limit).await;
                        let _ = ctl.send(a).await;
                    });
                }
                c @ (Control::LanName { .. }
                | Control::CertRequest { .. }
                | Control::CertIssued { .. }
                | Control::CertRefused { .. }) => {
                    if reader_peer.version < 3 {
                        return LinkError::Protocol("a version-3 frame on an older link".into());
                    }
                    let hub_peer = reader_peer.rooms.is_some();
                    if let Err(e) = reader_certs.on_frame(c, hub_peer, &reader_peer.name, &reader_ctl) {
                        return e;
                    }
                }
                Control::HistoryAnswer { id, messages, more, error } => match &reader_history {
                    Some(h) => h.answered(id, error.map_or(Ok((messages, more)), Err)),
                    None => return LinkError::Protocol("an unasked history answer".into()),
                },
            }
        }
    });

    if peer.rooms.is_some() {
        tasks.spawn(publish_revocations(store.revocations(), ctl_tx.clone()));
        if let Some(named) = certs.name_frame(&peer.name) {
            let _ = ctl_tx.send(named).await;
        }
    }
    if let certs::Certs::Hub(lan) = &certs {
        tasks.spawn(certs::ask(lan.clone(), ctl_tx.clone()));
    }
    if peer.rooms.is_none()
        && peer.version >= 2
        && let Some(renewal) = renewal.clone()
        && let Some(key) = renewal.public_key()
    {
        tasks.spawn(ask_for_delegations(renewal, key, ctl_tx.clone()));
    }
    tasks.spawn(receive(conn.clone(), store.clone(), peer.clone(), ctl_tx.clone(), reset_tx));
    // The bulk lane: blobs both ways (engine/src/link/bulk.rs).
    if let Some(blobs) = blobs {
        // A hub asks the cloud for files its devices want and it lacks (a cloud that
        // speaks version 1 would not understand the frame).
        if peer.rooms.is_none() && peer.version >= 2 {
            tasks.spawn(ask_for_wanted(blobs.clone(), ctl_tx.clone()));
        }
        tasks.spawn(bulk::sender(conn.clone(), blobs.clone(), peer.name.clone(), peer.rooms.clone(), want_rx));
        tasks.spawn(bulk::serve(conn.clone(), blobs, peer.name.clone()));
    }
    tasks.spawn(send(conn.clone(), store, peer, flow, ctl_tx, ack_rx, reset_rx));

    let end = tokio::select! {
        biased;
        () = shutdown.cancelled() => LinkError::Shutdown,
        r = conn.closed() => LinkError::Connection(r),
        Some(r) = tasks.join_next() => r.unwrap_or_else(|e| LinkError::Protocol(format!("link task failed: {e}"))),
    };
    conn.close(0u32.into(), b"link ended");
    tasks.abort_all();
    if let Some(h) = &history {
        h.detach();
    }
    end
}

/// Hub side: asks the cloud for each file a device wants that is not here, once per
/// connection (everything still wanted is asked again after a reconnect).
async fn ask_for_wanted<S: Storage>(blobs: crate::media::Blobs<S>, ctl: mpsc::Sender<Control>) -> LinkError {
    use outpost_shared::uplink::control::WANTS_PER_FRAME;
    let mut changed = blobs.subscribe_wanted();
    let mut asked: HashSet<BlobId> = HashSet::new();
    loop {
        changed.borrow_and_update();
        let fresh: Vec<BlobId> = match blobs.wanted().await {
            Ok(w) => w.into_iter().filter(|b| asked.insert(*b)).collect(),
            Err(e) => return LinkError::Stream(e.to_string()),
        };
        for chunk in fresh.chunks(WANTS_PER_FRAME) {
            tracing::info!(files = chunk.len(), "asking the cloud for files devices want");
            if ctl.send(Control::WantBlobs { blobs: chunk.to_vec() }).await.is_err() {
                return LinkError::Shutdown;
            }
        }
        if changed.changed().await.is_err() {
            return LinkError::Shutdown;
        }
    }
}

/// Hub side: sends the hub's renewal key after the handshake, and again whenever the
/// delegation the cloud answered with passes half its life (a wake-up at that instant).
async fn ask_for_delegations(renewal: Arc<Renewal>, key: [u8; 32], ctl: mpsc::Sender<Control>) -> LinkError {
    let mut installed = renewal.subscribe();
    loop {
        installed.borrow_and_update();
        if ctl.send(Control::RenewalKey { key }).await.is_err() {
            return LinkError::Shutdown;
        }
        // Wait for the answer, then for its half-life.
        if installed.changed().await.is_err() {
            return LinkError::Shutdown;
        }
        let Some(half) = renewal.delegation().map(|d| d.half_life()) else { continue };
        let wait = Duration::from_secs(half.saturating_sub(now_ms() / 1000));
        tokio::time::sleep(wait).await;
    }
}

/// Cloud side: a hub's renewal key gets a delegation (audited), sent back at once.
async fn delegate<S: Storage>(
    store: &S,
    peer: &Peer,
    renewal: Option<&Renewal>,
    key: [u8; 32],
    ctl: &mpsc::Sender<Control>,
) -> Result<(), LinkError> {
    if store.revocations().borrow().relay_revoked(&peer.name).is_some() {
        tracing::info!(relay = %peer.name, "the relay is revoked; no delegation");
        return Ok(());
    }
    let Some((token, jti, exp)) = renewal.and_then(|r| r.delegate(&peer.name, &key, now_ms() / 1000)) else {
        return Ok(());
    };
    let detail = format!("delegation {jti} to relay {}'s renewal key, expires {exp}", peer.name);
    store
        .audit(
            outpost_storage::AuditEvent::new(outpost_storage::AuditKind::Delegation, detail).actor(peer.name.as_str()),
        )
        .await;
    tracing::info!(relay = %peer.name, %jti, exp, "delegation sent");
    ctl.send(Control::Delegation { token }).await.map_err(|_| LinkError::Shutdown)
}

/// Hub side: checks the cloud's delegation, renews with it from now on, and keeps it.
async fn take_delegation<S: Storage>(store: &S, renewal: Option<&Renewal>, token: String) -> Result<(), LinkError> {
    let Some(renewal) = renewal else { return Ok(()) };
    match renewal.install(&token, now_ms() / 1000) {
        Ok(d) => {
            tracing::info!(jti = %d.jti, exp = d.exp, "delegation received; tokens are renewed here");
            store.save_delegation(token).await?;
            let detail = format!("delegation {} received, expires {}", d.jti, d.exp);
            store
                .audit(outpost_storage::AuditEvent::new(outpost_storage::AuditKind::Delegation, detail).actor("cloud"))
                .await;
        }
        // Not fatal: the hub serves as before, without renewing.
        Err(e) => tracing::warn!(error = %e, "delegation from the cloud refused"),
    }
    Ok(())
}

/// Cloud side: sends the whole revocation list after the handshake and again whenever it
/// changes (lists are small; the hub merges idempotently, so resending is harmless).
async fn publish_revocations(
    mut list: tokio::sync::watch::Receiver<Arc<outpost_shared::RevocationList>>,
    ctl: mpsc::Sender<Control>,
) -> LinkError {
    use outpost_shared::uplink::control::REVOCATIONS_PER_FRAME;
    loop {
        let current = list.borrow_and_update().clone();
        let entries: Vec<_> = current.entries().cloned().collect();
        for chunk in entries.chunks(REVOCATIONS_PER_FRAME) {
            if ctl.send(Control::Revocations { entries: chunk.to_vec() }).await.is_err() {
                return LinkError::Shutdown;
            }
        }
        if list.changed().await.is_err() {
            return LinkError::Shutdown;
        }
    }
}

/// The cloud learns rooms a hub serves (from its announcements and its messages); new
/// ones restart our sender from the beginning so older entries in them go down too.
async fn add_rooms<S: LinkStore>(
    store: &S,
    peer: &Peer,
    rooms: Vec<RoomId>,
    reset: &mpsc::Sender<()>,
) -> Result<(), LinkError> {
    let Some(filter) = &peer.rooms else { return Ok(()) };
    let fresh: Vec<RoomId> = match filter.lock() {
        Ok(f) => rooms.into_iter().filter(|r| !f.contains(r)).collect(),
        Err(_) => return Ok(()),
    };
    if fresh.is_empty() {
        return Ok(());
    }
    if let Ok(mut f) = filter.lock() {
        f.extend(fresh.iter().cloned());
    }
    if store.peer_rooms(&peer.name, fresh).await? > 0 {
        let _ = reset.try_send(());
    }
    Ok(())
}

/// Accepts the peer's batch streams; imports emergencies at once and the rest in the
/// order the peer opened them (so each sender's messages keep their order here).
async fn receive<S: LinkStore>(
    conn: quinn::Connection,
    store: S,
    peer: Peer,
    ctl: mpsc::Sender<Control>,
    reset: mpsc::Sender<()>,
) -> LinkError {
    type Decoded = Option<(BatchHeader, Vec<Entry>)>;
    // Unbounded on purpose: accepting must never wait for imports, or an emergency stream
    // would wait behind normal batches still arriving. QUIC's stream limit (256
    // concurrent) bounds how many can be pending.
    let (order_tx, mut order_rx) = mpsc::unbounded_channel::<oneshot::Receiver<Result<Decoded, LinkError>>>();
    let mut tasks: JoinSet<LinkError> = JoinSet::new();

    let imp_store = store.clone();
    let imp_peer = peer.clone();
    let imp_ctl = ctl.clone();
    let imp_reset = reset.clone();
    tasks.spawn(async move {
        let reset = imp_reset;
        while let Some(rx) = order_rx.recv().await {
            match rx.await {
                Ok(Ok(Some((h, entries)))) => {
                    if let Err(e) = apply(&imp_store, &imp_peer, &imp_ctl, &reset, h, entries).await {
                        return e;
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return e,
                Err(_) => return LinkError::Shutdown,
            }
        }
        LinkError::Shutdown
    });

    let accept = async {
        // Each batch stream is read and decoded in a task of its own (so a slow stream
        // never holds up the next one's emergency); the set owns them, reaps them as they
        // finish, and aborts what is left when the link ends. An aborted import was not
        // acknowledged, so the peer sends that batch again on its next connection.
        let mut streams = JoinSet::new();
        loop {
            while streams.try_join_next().is_some() {}
            let mut stream = match conn.accept_uni().await {
                Ok(s) => s,
                Err(e) => return LinkError::Connection(e),
            };
            let (tx, rx) = oneshot::channel();
            if order_tx.send(rx).is_err() {
                return LinkError::Shutdown;
            }
            let (store, peer, ctl, reset) = (store.clone(), peer.clone(), ctl.clone(), reset.clone());
            streams.spawn(async move {
                let result = async {
                    let bytes =
                        stream.read_to_end(MAX_BATCH_WIRE).await.map_err(|e| LinkError::Stream(e.to_string()))?;
                    let (h, entries) = tokio::task::spawn_blocking(move || batch::decode(&bytes, MAX_BATCH_RAW))
                        .await
                        .map_err(|e| LinkError::Protocol(e.to_string()))?
                        .map_err(|e| LinkError::Protocol(e.to_string()))?;
                    if h.lane == Lane::Emergency {
                        // Emergencies do not wait for earlier bulk batches.
                        apply(&store, &peer, &ctl, &reset, h, entries).await?;
                        return Ok(None);
                    }
                    Ok(Some((h, entries)))
                }
                .await;
                let _ = tx.send(result);
            });
        }
    };
    tokio::select! {
        e = accept => e,
        Some(r) = tasks.join_next() => r.unwrap_or(LinkError::Shutdown),
    }
}

async fn apply<S: LinkStore>(
    store: &S,
    peer: &Peer,
    ctl: &mpsc::Sender<Control>,
    reset: &mpsc::Sender<()>,
    h: BatchHeader,
    entries: Vec<Entry>,
) -> Result<(), LinkError> {
    let rooms: Vec<RoomId> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Message(m) => Some(m.room.clone()),
            Entry::Receipt(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let n = entries.len();
    let fresh = store.import(&peer.name, entries, h.hwm).await?;
    metrics::counter!("outpost_link_entries_received_total", "peer" => peer.name.clone()).increment(n as u64);
    tracing::debug!(peer = %peer.name, batch = h.batch, entries = n, fresh, lane = ?h.lane, "batch imported");
    ctl.send(Control::Ack { batch: h.batch }).await.map_err(|_| LinkError::Shutdown)?;
    add_rooms(store, peer, rooms, reset).await
}

/// Pages our log out to the peer within the flow window; records acks.
async fn send<S: LinkStore>(
    conn: quinn::Connection,
    store: S,
    peer: Peer,
    flow: FlowConfig,
    ctl: mpsc::Sender<Control>,
    mut acks: mpsc::Receiver<u64>,
    mut reset: mpsc::Receiver<()>,
) -> LinkError {
    let origin = tokio::time::Instant::now();
    if peer.start < peer.rebuild_until
        && flow.rebuild_recent_per_room > 0
        && let Err(e) = recent_first(&conn, &store, &peer, flow.rebuild_recent_per_room).await
    {
        return e;
    }
    let mut head = store.subscribe_head();
    let written = Cursor(*head.borrow_and_update());
    let mut state = SendState::new(peer.start, written, flow);
    let mut forwarded: HashMap<u64, Vec<Forwarded>> = HashMap::new();
    let mut writers: JoinSet<Result<(), LinkError>> = JoinSet::new();
    let mut announced: HashSet<RoomId> = HashSet::new();
    let dictionary = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
    let mut linger_until: Option<tokio::time::Instant> = None;
    // Batches whose stream the peer's transport has acknowledged in full (see the writers).
    let (received_tx, mut received) = mpsc::unbounded_channel::<u64>();
    loop {
        // Acks first: they open the window and move the high-water mark.
        while let Ok(id) = received.try_recv() {
            on_received(&peer, &mut state, id, origin.elapsed());
        }
        while let Ok(id) = acks.try_recv() {
            on_ack(&store, &peer, &mut state, &mut forwarded, id, origin.elapsed()).await;
        }
        if reset.try_recv().is_ok() {
            tracing::info!(peer = %peer.name, "peer serves new rooms; resending from the start");
            state.reset(Cursor(0));
        }
        if peer.rooms.is_none() {
            // A hub tells its cloud about rooms it serves as soon as it knows them.
            let fresh: Vec<RoomId> = store.rooms().into_iter().filter(|r| !announced.contains(r)).collect();
            if !fresh.is_empty() {
                announced.extend(fresh.iter().cloned());
                if ctl.send(Control::Rooms { rooms: fresh }).await.is_err() {
                    return LinkError::Shutdown;
                }
            }
        }
        let mut progressed = false;
        for queue in Queue::ALL {
            if !state.can_send(queue) {
                continue;
            }
            let lane = queue.lane();
            let rooms = peer
                .rooms
                .as_ref()
                .and_then(|r| r.lock().ok().map(|r| Arc::from(r.iter().cloned().collect::<Vec<_>>())));
            let (limit, max_bytes) = match queue {
                Queue::Emergency => (EMERGENCY_PAGE, usize::MAX),
                Queue::BacklogEmergency => (EMERGENCY_PAGE, state.batch_budget() as usize),
                Queue::Normal => (NORMAL_PAGE, state.batch_budget() as usize),
            };
            let (after, until) = state.read_range(queue);
            let q = OutboundQuery {
                peer: peer.name.clone(),
                rooms,
                after,
                until,
                lane,
                limit,
                max_bytes,
                newest_first: false,
            };
            let out = match store.outbound(q).await {
                Ok(o) => o,
                Err(e) => return e.into(),
            };
            if out.entries.is_empty() {
                state.on_scanned(queue, out.scanned_to);
                continue;
            }
            // Linger: a small normal batch of fresh entries waits briefly for company,
            // so a trickle of messages does not cost a stream, a header and an ack each.
            if lane == Lane::Normal && out.entries.len() < LINGER_BELOW {
                let age = Duration::from_millis(now_ms().saturating_sub(out.entries[0].at()));
                let linger = state.config().linger;
                if age < linger {
                    let until = tokio::time::Instant::now() + (linger - age);
                    linger_until = Some(linger_until.map_or(until, |u| u.min(until)));
                    continue;
                }
            }
            linger_until = None;
            let id = state.peek_batch_id();
            let hwm = state.hwm();
            let entries = out.entries;
            let (first, last) =
                (entries.first().map_or(Cursor(0), Entry::cursor), entries.last().map_or(Cursor(0), Entry::cursor));
            let encoded = tokio::task::spawn_blocking(move || batch::encode(id, lane, hwm, &entries, dictionary)).await;
            let bytes = match encoded {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return LinkError::Protocol(e.to_string()),
                Err(e) => return LinkError::Protocol(e.to_string()),
            };
            let sent = state.on_sent(queue, first, last, out.scanned_to, bytes.len() as u64, origin.elapsed());
            tracing::debug!(peer = %peer.name, batch = id, ?lane, ?queue, first = first.0, last = last.0, bytes = bytes.len(), window = state.window(), "batch sent");
            debug_assert_eq!(sent, id);
            let lane_name = if lane == Lane::Emergency { "emergency" } else { "normal" };
            metrics::counter!("outpost_link_batches_sent_total", "peer" => peer.name.clone(), "lane" => lane_name)
                .increment(1);
            metrics::histogram!("outpost_link_batch_bytes", "lane" => lane_name).record(bytes.len() as f64);
            forwarded.insert(id, out.forwardable);
            // The stream is opened here, in batch order, not in the writer: the peer
            // imports normal batches in the order of their streams (each sender's order
            // depends on it), and writer tasks may start in any order (tokio runs the
            // task spawned last first), which once put a later batch on an earlier stream.
            let mut s = match conn.open_uni().await {
                Ok(s) => s,
                Err(e) => return LinkError::Connection(e),
            };
            let received_tx = received_tx.clone();
            writers.spawn(async move {
                let _ = s.set_priority(match queue {
                    Queue::Emergency => PRIORITY_EMERGENCY,
                    Queue::BacklogEmergency => PRIORITY_BACKLOG_EMERGENCY,
                    Queue::Normal => PRIORITY_NORMAL,
                });
                s.write_all(&bytes).await.map_err(|e| LinkError::Stream(e.to_string()))?;
                s.finish().map_err(|e| LinkError::Stream(e.to_string()))?;
                // `stopped` completes with `None` once the peer's QUIC stack has acknowledged
                // every byte of the finished stream: the batch is out of the network and
                // no longer counts against the window, though its durable `Ack` may still
                // wait for an earlier batch's retransmission at the peer.
                match s.stopped().await {
                    Ok(None) => {
                        let _ = received_tx.send(id);
                        Ok(())
                    }
                    Ok(Some(code)) => Err(LinkError::Stream(format!("the peer stopped batch {id} ({code})"))),
                    // The connection ended: its own error is what the link reports.
                    Err(_) => Ok(()),
                }
            });
            progressed = true;
        }
        if progressed {
            continue;
        }
        tokio::select! {
            biased;
            Some(id) = received.recv() => on_received(&peer, &mut state, id, origin.elapsed()),
            Some(id) = acks.recv() => on_ack(&store, &peer, &mut state, &mut forwarded, id, origin.elapsed()).await,
            Some(()) = reset.recv() => {
                tracing::info!(peer = %peer.name, "peer serves new rooms; resending from the start");
                state.reset(Cursor(0));
            }
            Some(r) = writers.join_next() => {
                if let Ok(Err(e)) = r {
                    return e;
                }
            }
            // New entries may fill a lingering batch or be an emergency: look again.
            changed = head.changed() => if changed.is_err() { return LinkError::Shutdown },
            () = sleep_until_opt(linger_until) => {}
            // A peer that never acks still lets rooms and lanes be re-examined now and then.
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A peer rebuilding its database (it came back with a new one, and our log up to
/// `rebuild_until` was there) gets each room's latest `per_room` messages
/// (`limits.rebuild_recent_per_room`, 200: a screenful and then some, about a second per
/// room on 3G) first, so a phone opening the room sees the recent conversation while the
/// ordinary pass, oldest first, fills in the rest. Both passes send these messages; the
/// peer imports by message id, so the second copy changes nothing. Queued on streams
/// above ordinary batches (below emergencies) and outside the flow window: the pass is
/// bounded by rooms × `per_room`. Their acks move no mark: the ordinary
/// pass is what records what the peer holds, so a cut link repeats this pass next time,
/// and an idempotent import makes that harmless.
async fn recent_first<S: LinkStore>(
    conn: &quinn::Connection,
    store: &S,
    peer: &Peer,
    per_room: usize,
) -> Result<(), LinkError> {
    let rooms: Vec<RoomId> = match &peer.rooms {
        Some(r) => r.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default(),
        None => store.rooms(),
    };
    let dictionary = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
    let mut sent = 0usize;
    for (i, room) in rooms.iter().enumerate() {
        let mut entries = Vec::new();
        for lane in [Lane::Emergency, Lane::Normal] {
            let q = OutboundQuery {
                peer: peer.name.clone(),
                rooms: Some(Arc::from(vec![room.clone()])),
                after: peer.start,
                until: Some(peer.rebuild_until),
                lane,
                limit: per_room,
                max_bytes: usize::MAX,
                newest_first: true,
            };
            entries.extend(store.outbound(q).await?.entries);
        }
        entries.sort_by_key(Entry::cursor);
        let skip = entries.len().saturating_sub(per_room);
        let entries: Vec<Entry> = entries.into_iter().skip(skip).collect();
        if entries.is_empty() {
            continue;
        }
        sent += entries.len();
        let id = RECENT_BATCH_IDS | i as u64;
        let hwm = peer.start;
        let bytes = tokio::task::spawn_blocking(move || batch::encode(id, Lane::Normal, hwm, &entries, dictionary))
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        // Opened here, in order, before the ordinary pass opens any: the peer applies
        // normal-lane batches in the order their streams were opened. Written by a task
        // of its own so the ordinary pass (and its emergencies) starts at once.
        let mut s = conn.open_uni().await?;
        let _ = s.set_priority(PRIORITY_RECENT);
        tokio::spawn(async move {
            // A failed write is the link failing; the link's own tasks report that.
            if s.write_all(&bytes).await.is_ok() {
                let _ = s.finish();
            }
        });
    }
    tracing::info!(peer = %peer.name, rooms = rooms.len(), messages = sent, "rebuilding the peer: latest messages of each room sent first");
    Ok(())
}

fn on_received(peer: &Peer, state: &mut SendState, id: u64, now: Duration) {
    state.on_received(id, now);
    tracing::debug!(peer = %peer.name, batch = id, window = state.window(), "batch received");
}

async fn on_ack<S: LinkStore>(
    store: &S,
    peer: &Peer,
    state: &mut SendState,
    forwarded: &mut HashMap<u64, Vec<Forwarded>>,
    id: u64,
    now: Duration,
) {
    let acked = state.on_ack(id, now);
    if let Some(b) = &acked {
        tracing::debug!(peer = %peer.name, batch = id, queue = ?b.queue, bytes = b.bytes, window = state.window(), "batch acked");
    }
    let known = acked.is_some();
    let fwd = forwarded.remove(&id).unwrap_or_default();
    if known || !fwd.is_empty() {
        store.peer_acked(&peer.name, state.hwm(), fwd, now_ms()).await;
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
