//! The hub's side of the link: find the cloud whenever an uplink appears.
//!
//! The dialer connects with jittered exponential backoff (1 s doubling to 30 s, reset
//! only after a connection that lasted), authenticates with the hub's certificate,
//! says `Hello` (relay id, database epoch, rooms it serves), resumes from the higher of
//! its own and the cloud's high-water mark, and runs the link until it breaks. A hub
//! with no uplink keeps serving its village; traffic waits in the log.
//!
//! A cloud of several nodes has several addresses. Which one is dialled, and when, is
//! `outpost_shared::uplink::failover`'s policy: when one fails the next is dialled at
//! once, the backoff applies between rounds, and while on any but the first the first is
//! tried again every `uplink.primary_retry_secs`. The hub moves back only once the first
//! has completed the handshake, while the link on the other keeps running, so going back
//! costs no outage. Whichever node it reaches, the handshake resumes from the marks in
//! the cloud's database, which every node shares.

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_shared::uplink::backoff::Backoff;
use outpost_shared::uplink::dict;
use outpost_shared::uplink::failover::Failover;
use outpost_shared::uplink::flow::FlowConfig;
use outpost_shared::uplink::handshake::{Dialer, HelloParams, Welcomed};
use tokio_util::sync::CancellationToken;

use super::tls::{self, SERVER_NAME};
use super::{LinkError, Peer, read_control, write_control};
use crate::clock::now_ms;
use crate::config::UplinkConfig;

/// The store's name for a hub's cloud.
pub const CLOUD_PEER: &str = "cloud";
/// How long connecting and the handshake may take before the attempt counts as failed.
/// A QUIC handshake plus our Hello/Welcome is about four round trips: ~5 s on 2G with
/// some loss; a peer that vanished mid-handshake should not hold the hub much longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the status page and metrics show about the uplink.
#[derive(Debug, Clone, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    /// The cloud address connected to, or being dialled (none before the first attempt).
    pub address: Option<String>,
    /// Last time a connection was established (ms since the Unix epoch).
    pub last_contact: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UplinkSettings {
    /// The cloud's addresses, in the order they are tried; the first is the one the hub
    /// returns to.
    pub clouds: Vec<String>,
    pub relay_id: String,
    pub client: quinn::ClientConfig,
    pub flow: FlowConfig,
    pub backoff: Backoff,
    /// While on any address but the first, how often the first is tried again.
    pub primary_retry: Duration,
    /// The hub's token renewal (asks the cloud for delegations over the link).
    pub renewal: Option<Arc<crate::renewal::Renewal>>,
    /// The hub's LAN certificate (named and renewed over the link), when `[lan_https]`
    /// is on.
    pub lan: Option<Arc<crate::lan_cert::LanCert>>,
}

impl UplinkSettings {
    /// Reads the identity written by `outpost-relay init` from `dir/identity`; the rest
    /// comes from the hub's `[uplink]` settings.
    pub fn from_dir(dir: &Path, relay_id: &str, uplink: &UplinkConfig) -> Result<Self, String> {
        let read =
            |f: &str| std::fs::read_to_string(dir.join("identity").join(f)).map_err(|e| format!("identity/{f}: {e}"));
        let mut client = tls::client_config(&read("ca.crt")?, &read("relay.crt")?, &read("relay.key")?)
            .map_err(|e| e.to_string())?;
        client.transport_config(tls::transport_with_idle(uplink.idle_timeout()));
        let flow = FlowConfig { linger: Duration::from_millis(uplink.linger_ms), ..FlowConfig::default() };
        Ok(Self {
            clouds: uplink.cloud.clone(),
            relay_id: relay_id.to_owned(),
            client,
            flow,
            backoff: Backoff::with(
                Duration::from_millis(uplink.retry_initial_ms),
                Duration::from_secs(uplink.retry_max_secs),
            ),
            primary_retry: Duration::from_secs(uplink.primary_retry_secs),
            renewal: None,
            lan: None,
        })
    }
}

fn random() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Dials the cloud until `shutdown`.
pub async fn run<S: Storage>(
    store: S,
    blobs: Option<crate::media::Blobs<S>>,
    settings: UplinkSettings,
    status: Arc<Mutex<UplinkStatus>>,
    history: Arc<super::history::CloudHistory>,
    shutdown: CancellationToken,
) {
    let mut failover = Failover::new(settings.clouds.len(), settings.backoff.clone(), settings.primary_retry);
    let mut endpoints = Endpoints::default();
    // A connection to the first address, made while the hub was on another.
    let mut ready: Option<Dialled> = None;
    loop {
        let Some(target) = settings.clouds.get(failover.current()).cloned() else {
            tracing::error!("no cloud address to dial");
            break;
        };
        if let Ok(mut s) = status.lock() {
            s.address = Some(target.clone());
        }
        let started = tokio::time::Instant::now();
        let attempt = attempt(
            &store,
            blobs.clone(),
            &settings,
            &failover,
            &mut endpoints,
            ready.take(),
            &status,
            &history,
            &shutdown,
        );
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = attempt => r,
        };
        let end = match result {
            Ok(Ended::First(d)) => {
                failover.back_to_first();
                ready = Some(*d);
                continue;
            }
            Ok(Ended::Link(e)) | Err(e) => e,
        };
        let lasted = started.elapsed();
        let msg = end.to_string();
        if let Ok(mut s) = status.lock() {
            s.connected = false;
            s.last_error = Some(msg.clone());
        }
        if matches!(end, LinkError::Shutdown) && shutdown.is_cancelled() {
            break;
        }
        let next = failover.ended(lasted, random());
        let next_address = settings.clouds.get(next.index).map_or("", String::as_str);
        tracing::info!(error = %msg, address = %target, next = %next_address, retry_in_ms = next.delay.as_millis() as u64, "uplink down");
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(next.delay) => {}
        }
    }
    endpoints.close().await;
}

/// How an attempt on one address ended.
enum Ended {
    /// The link ran and ended, for this reason.
    Link(LinkError),
    /// The first address completed a handshake while the hub was on another; the link on
    /// the other has been stopped and this connection is ready for the link.
    First(Box<Dialled>),
}

/// One connection to the current address (or the ready one): why it ended (Ok), or why
/// it never started (Err). Success updates `status` when the handshake completes. While
/// on any address but the first, the first is dialled every `primary_retry` beside the
/// running link.
#[allow(clippy::too_many_arguments, reason = "one call site; the loop's state, lent for one attempt")]
async fn attempt<S: Storage>(
    store: &S,
    blobs: Option<crate::media::Blobs<S>>,
    settings: &UplinkSettings,
    failover: &Failover,
    endpoints: &mut Endpoints,
    ready: Option<Dialled>,
    status: &Mutex<UplinkStatus>,
    history: &Arc<super::history::CloudHistory>,
    shutdown: &CancellationToken,
) -> Result<Ended, LinkError> {
    let target = settings.clouds.get(failover.current()).map_or("", String::as_str);
    let dialled = match ready {
        Some(d) => d,
        None => dial(store, settings, endpoints, target, &AtomicBool::new(false)).await?,
    };
    let Dialled { conn, send, recv, welcomed: Welcomed { cloud, epoch, hwm, v }, addr } = dialled;
    let state = store.peer_hello(CLOUD_PEER, &epoch, Vec::new()).await?;
    let start = state.sent_hwm.max(hwm);
    tracing::info!(%cloud, address = %target, %addr, resume_after = start.0, link_version = v, "uplink connected");
    if let Ok(mut s) = status.lock() {
        s.connected = true;
        s.address = Some(target.to_owned());
        s.last_contact = Some(now_ms());
        s.last_error = None;
    }
    store.peer_acked(CLOUD_PEER, start, Vec::new(), now_ms()).await;
    let peer = Peer { name: CLOUD_PEER.to_owned(), rooms: None, start, version: v, rebuild_until: state.own_until };
    let opts = super::LinkOptions {
        flow: settings.flow.clone(),
        blobs,
        renewal: settings.renewal.clone(),
        history: Some(history.clone()),
        lan: settings.lan.clone(),
        issuer: None,
    };
    let stop = shutdown.child_token();
    let link = super::run(conn, send, recv, store.clone(), peer, opts, stop.clone());
    tokio::pin!(link);
    let (Some(every), Some(first)) = (failover.primary_retry(), settings.clouds.first()) else {
        return Ok(Ended::Link(link.await));
    };
    loop {
        tokio::select! {
            biased;
            end = &mut link => return Ok(Ended::Link(end)),
            () = tokio::time::sleep(every) => {}
        }
        let reached = AtomicBool::new(false);
        let probe = dial(store, settings, endpoints, first, &reached);
        tokio::pin!(probe);
        // Why the link ended while the first address was being tried, if it did.
        let mut lost = None;
        let answer = loop {
            tokio::select! {
                biased;
                end = &mut link, if lost.is_none() => {
                    if !reached.load(Ordering::Relaxed) {
                        // Nothing answered there yet: fail over now, not after the try.
                        return Ok(Ended::Link(end));
                    }
                    // The first node is alive and reading our Hello. A cloud that sees a
                    // relay's new connection ends its older one (cloud/src/relays.rs), so
                    // this is expected, and the Welcome is a round trip away.
                    lost = Some(end);
                }
                r = &mut probe => break r,
            }
        };
        match (answer, lost) {
            (Ok(d), lost) => {
                tracing::info!(from = %target, to = %first, "the first cloud address answers again; moving back to it");
                if lost.is_none() {
                    stop.cancel();
                    let _ = (&mut link).await;
                }
                return Ok(Ended::First(Box::new(d)));
            }
            (Err(_), Some(end)) => return Ok(Ended::Link(end)),
            (Err(e), None) => {
                tracing::debug!(address = %first, error = %e, "the first cloud address does not answer yet");
            }
        }
    }
}

/// A connection to the cloud whose handshake completed.
struct Dialled {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    welcomed: Welcomed,
    /// Where `target` resolved to.
    addr: SocketAddr,
}

/// Connects to `target` and completes the handshake, within [`CONNECT_TIMEOUT`]. Sets
/// `reached` once the QUIC handshake is done (something with the cloud's certificate
/// answers there) and only our `Hello` and its answer remain.
async fn dial<S: Storage>(
    store: &S,
    settings: &UplinkSettings,
    endpoints: &mut Endpoints,
    target: &str,
    reached: &AtomicBool,
) -> Result<Dialled, LinkError> {
    let addr: SocketAddr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| LinkError::Stream(format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| LinkError::Stream(format!("{target} has no address")))?;
    let ep = endpoints.for_addr(addr, &settings.client)?;
    // The handshake's rules are shared::uplink::handshake's; this only carries its frames
    // and its deadline.
    let origin = tokio::time::Instant::now();
    let params = HelloParams {
        relay: settings.relay_id.clone(),
        epoch: store.epoch().0,
        rooms: store.rooms(),
        dicts: dict::known(),
    };
    let mut dialer = Dialer::new(params, Duration::ZERO, CONNECT_TIMEOUT);
    let deadline = origin + dialer.poll_timeout().unwrap_or(CONNECT_TIMEOUT);
    let handshake = async {
        let conn = ep.connect(addr, SERVER_NAME).map_err(|e| LinkError::Stream(e.to_string()))?.await?;
        reached.store(true, Ordering::Relaxed);
        let (mut send, mut recv) = conn.open_bi().await?;
        if let Some(hello) = dialer.poll_transmit() {
            write_control(&mut send, &hello).await?;
        }
        let welcomed = dialer.handle_control(read_control(&mut recv).await?)?;
        Ok::<_, LinkError>((conn, send, recv, welcomed))
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(r) => r.map(|(conn, send, recv, welcomed)| Dialled { conn, send, recv, welcomed, addr }),
        Err(_) => {
            let e = dialer.handle_timeout(origin.elapsed());
            Err(e.map_or_else(|| LinkError::Stream("connect timed out".into()), LinkError::from))
        }
    }
}

/// The hub's UDP sockets, one per address family, each opened when first needed: a
/// cloud's addresses may mix IPv4 and IPv6, and a link over one family must survive a try
/// at the first address over the other.
#[derive(Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Endpoints {
    fn for_addr(&mut self, addr: SocketAddr, client: &quinn::ClientConfig) -> Result<quinn::Endpoint, LinkError> {
        let (slot, bind) = if addr.is_ipv6() { (&mut self.v6, "[::]:0") } else { (&mut self.v4, "0.0.0.0:0") };
        if let Some(ep) = slot {
            return Ok(ep.clone());
        }
        let bind: SocketAddr = bind.parse().map_err(|_| LinkError::Shutdown)?;
        let mut ep =
            quinn::Endpoint::client(bind).map_err(|e| LinkError::Stream(format!("cannot open a UDP socket: {e}")))?;
        ep.set_default_client_config(client.clone());
        *slot = Some(ep.clone());
        Ok(ep)
    }

    async fn close(self) {
        for ep in [self.v4, self.v6].into_iter().flatten() {
            ep.close(0u32.into(), b"hub stopping");
            ep.wait_idle().await;
        }
    }
}
