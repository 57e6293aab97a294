//! The cloud's QUIC endpoint: relays connect here.
//!
//! Only relays presenting a certificate issued by this cloud's `enroll-relay` get past
//! the TLS handshake (mutual TLS under the relay CA). The relay id claimed in `Hello`
//! must be the name in that certificate. A relay that reconnects replaces its previous
//! connection. After the handshake the link is symmetric (`outpost_engine::link::run`):
//! the relay's batches are applied and acknowledged after commit; replies and receipts
//! for the relay's rooms are sent down.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_engine::link::{self, LinkError, LinkOptions, Peer, read_control, tls, write_control};
use outpost_engine::media::Blobs;
use outpost_engine::ratelimit::TokenBucket;
use outpost_engine::renewal::Renewal;
use outpost_shared::uplink::control::Control;
use outpost_shared::uplink::flow::FlowConfig;
use outpost_shared::uplink::handshake::{Accepted, Acceptor, Decision};
use outpost_storage::Storage;
use outpost_store_sqlite::{AuditEvent, AuditKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The current connection of each relay: a generation number and its stop token.
type Live = Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>;

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Refused relay connections recorded in the audit log per second at most.
const REFUSALS_AUDITED_PER_SEC: u32 = 5;

/// How long a relay has to open its control stream and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// What every relay link of this cloud runs with.
#[derive(Clone)]
pub struct Links<S: Storage> {
    pub store: S,
    pub blobs: Option<Blobs<S>>,
    /// Signs hubs' delegations.
    pub renewal: Arc<Renewal>,
    pub flow: FlowConfig,
    pub cloud_id: String,
    /// Issues the hubs' LAN certificates (`[acme]`), when configured.
    pub issuer: Option<Arc<dyn outpost_engine::link::certs::CertIssuer>>,
}

/// Accepts relay connections on every endpoint (the UDP one, and the TCP path's) until
/// `shutdown`. A relay's connections share one table whichever endpoint they came in on,
/// so a relay that moves between QUIC and TCP replaces its older connection.
pub async fn accept<S: Storage>(endpoints: Vec<quinn::Endpoint>, links: Links<S>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let live: Live = Arc::default();
    // Refusals are audited at most this often: an address scanning the QUIC port must not
    // fill the disk with audit rows.
    let refusals =
        Arc::new(Mutex::new(TokenBucket::new(REFUSALS_AUDITED_PER_SEC, REFUSALS_AUDITED_PER_SEC, Duration::ZERO)));
    let started = tokio::time::Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for endpoint in &endpoints {
        let (endpoint, tracker, links, live, shutdown) =
            (endpoint.clone(), tracker.clone(), links.clone(), live.clone(), shutdown.clone());
        let refusals = refusals.clone();
        loops.spawn(async move {
            loop {
                let incoming = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    i = endpoint.accept() => match i { Some(i) => i, None => break },
                };
                let (links, live, stop) = (links.clone(), live.clone(), shutdown.child_token());
                let refusals = refusals.clone();
                tracker.spawn(async move {
                    let remote = incoming.remote_address();
                    let store = links.store.clone();
                    match serve(incoming, links, live, stop).await {
                        Ok(end) => tracing::info!(%remote, reason = %end, "relay link ended"),
                        Err(e) => {
                            tracing::info!(%remote, error = %e, "relay refused");
                            if refusals.lock().is_ok_and(|mut b| b.try_take(started.elapsed())) {
                                store.audit(AuditEvent::new(AuditKind::RelayRefused, e.to_string()).peer(remote)).await;
                            }
                        }
                    }
                });
            }
        });
    }
    while loops.join_next().await.is_some() {}
    tracker.close();
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"cloud stopping");
    }
    tracker.wait().await;
    for endpoint in &endpoints {
        endpoint.wait_idle().await;
    }
}

async fn serve<S: Storage>(
    incoming: quinn::Incoming,
    links: Links<S>,
    live: Live,
    stop: CancellationToken,
) -> Result<LinkError, LinkError> {
    let Links { store, blobs, renewal, flow, cloud_id, issuer } = links;
    let conn = incoming.await?;
    // The handshake's rules are shared::uplink::handshake's; this only carries its frames
    // and its deadline (the relay has HELLO_TIMEOUT to open its control stream and say
    // Hello).
    let origin = tokio::time::Instant::now();
    let mut acceptor = Acceptor::new(Duration::ZERO, HELLO_TIMEOUT);
    let deadline = origin + acceptor.poll_timeout().unwrap_or(HELLO_TIMEOUT);
    let first = tokio::time::timeout_at(deadline, async {
        let (send, mut recv) = conn.accept_bi().await?;
        let hello = read_control(&mut recv).await?;
        Ok::<_, LinkError>((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match first {
        Ok(r) => r?,
        Err(_) => {
            let e = acceptor.handle_timeout(origin.elapsed());
            return Err(e.map_or_else(|| LinkError::Protocol("no hello".into()), LinkError::from));
        }
    };
    let Accepted { relay, epoch, rooms, v } =
        match acceptor.handle_control(hello, |relay| tls::peer_is(&conn, relay))? {
            Decision::Accept(a) => a,
            Decision::Refuse(refusal) => {
                let _ = write_control(&mut send, &refusal).await;
                let _ = send.finish();
                let err = match refusal {
                    Control::Refused { code, message } => LinkError::Refused { code, message },
                    _ => LinkError::Shutdown,
                };
                // Give the refusal a moment to reach the relay before the connection closes.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
                return Err(err);
            }
        };
    // A reconnecting relay replaces its old connection.
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut l) = live.lock()
        && let Some((_, old)) = l.insert(relay.clone(), (generation, stop.clone()))
    {
        old.cancel();
    }
    let state = store.peer_hello(&relay, &epoch, rooms).await?;
    write_control(&mut send, &Acceptor::welcome(cloud_id, store.epoch().0, state.recv_hwm, v)).await?;
    tracing::info!(%relay, resume_after = state.sent_hwm.0, rooms = state.rooms.len(), "relay connected");
    let detail = format!("epoch {epoch}, resuming after {}", state.sent_hwm.0);
    store
        .audit(AuditEvent::new(AuditKind::RelayConnected, detail).actor(relay.as_str()).peer(conn.remote_address()))
        .await;
    let peer = Peer {
        name: relay.clone(),
        rooms: Some(Arc::new(Mutex::new(state.rooms.into_iter().collect::<HashSet<_>>()))),
        start: state.sent_hwm,
        version: v,
        rebuild_until: state.own_until,
    };
    let opts = LinkOptions { flow, blobs, renewal: Some(renewal), history: None, lan: None, issuer };
    let end = link::run(conn, send, recv, store, peer, opts, stop.clone()).await;
    if let Ok(mut l) = live.lock()
        && l.get(&relay).is_some_and(|(g, _)| *g == generation)
    {
        l.remove(&relay);
    }
    Ok(end)
}
