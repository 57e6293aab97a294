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
    /// `quic`, or `tcp` when UDP does not pass and the link goes over TLS on TCP.
    pub transport: &'static str,
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
    /// The TCP path's outer TLS (`None`: no TCP fallback, `uplink.tcp_fallback = false`).
    pub tcp: Option<Arc<rustls::ClientConfig>>,
    /// The HTTP proxy the TCP path goes through, if any.
    pub proxy: Option<super::tunnel::Proxy>,
}

/// Where and how the hub dials: a cloud address over QUIC, or over the TCP path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub tcp: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tcp { write!(f, "{} (tcp)", self.address) } else { f.write_str(&self.address) }
    }
}

impl UplinkSettings {
    /// What the failover policy walks through: each address over QUIC, followed at once
    /// by the same address over TCP when the fallback is on. A blocked UDP path costs one
    /// QUIC attempt ([`CONNECT_TIMEOUT`]) before TCP is tried, and QUIC on the first
    /// address stays the "first" the hub keeps trying to return to.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        for a in &self.clouds {
            t.push(Target { address: a.clone(), tcp: false });
            if self.tcp.is_some() {
                t.push(Target { address: a.clone(), tcp: true });
            }
        }
        t
    }
}

/// The hub's identity written by `outpost-relay init` in `dir/identity` (PEM): the relay
/// CA's certificate, the hub's certificate and its key.
pub fn identity_files(dir: &Path) -> Result<(String, String, String), String> {
    let read =
        |f: &str| std::fs::read_to_string(dir.join("identity").join(f)).map_err(|e| format!("identity/{f}: {e}"));
    Ok((read("ca.crt")?, read("relay.crt")?, read("relay.key")?))
}

impl UplinkSettings {
    /// Reads the identity written by `outpost-relay init` from `dir/identity`; the rest
    /// comes from the hub's `[uplink]` settings.
    pub fn from_dir(dir: &Path, relay_id: &str, uplink: &UplinkConfig) -> Result<Self, String> {
        let (ca, cert, key) = identity_files(dir)?;
        let mut client = tls::client_config(&ca, &cert, &key).map_err(|e| e.to_string())?;
        let tcp = if uplink.tcp_fallback {
            Some(tls::tcp_client_config(&ca, &cert, &key).map_err(|e| e.to_string())?)
        } else {
            None
        };
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
            tcp,
            proxy: uplink.effective_proxy(),
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
    let targets = settings.targets();
    let mut failover = Failover::new(targets.len(), settings.backoff.clone(), settings.primary_retry);
    let mut endpoints = Endpoints::default();
    // A connection to the first address, made while the hub was on another.
    let mut ready: Option<Dialled> = None;
    loop {
        let Some(target) = targets.get(failover.current()).cloned() else {
            tracing::error!("no cloud address to dial");
            break;
        };
        if let Ok(mut s) = status.lock() {
            s.address = Some(target.address.clone());
            s.transport = if target.tcp { "tcp" } else { "quic" };
        }
        let started = tokio::time::Instant::now();
        let attempt = attempt(
            &store,
            blobs.clone(),
            &settings,
            &targets,
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
        let next_address = targets.get(next.index).map_or_else(String::new, ToString::to_string);
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
    targets: &[Target],
    failover: &Failover,
    endpoints: &mut Endpoints,
    ready: Option<Dialled>,
    status: &Mutex<UplinkStatus>,
    history: &Arc<super::history::CloudHistory>,
    shutdown: &CancellationToken,
) -> Result<Ended, LinkError> {
    let Some(target) = targets.get(failover.current()) else { return Err(LinkError::Shutdown) };
    let dialled = match ready {
        Some(d) => d,
        None => dial(store, settings, endpoints, target, &AtomicBool::new(false)).await?,
    };
    let Dialled { conn, send, recv, welcomed: Welcomed { cloud, epoch, hwm, v }, addr, tunnel: _tunnel } = dialled;
    let state = store.peer_hello(CLOUD_PEER, &epoch, Vec::new()).await?;
    let start = state.sent_hwm.max(hwm);
    let transport = if target.tcp { "tcp" } else { "quic" };
    tracing::info!(%cloud, address = %target.address, %addr, transport, resume_after = start.0, link_version = v, "uplink connected");
    if let Ok(mut s) = status.lock() {
        s.connected = true;
        s.address = Some(target.address.clone());
        s.transport = transport;
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
    let (Some(every), Some(first)) = (failover.primary_retry(), targets.first()) else {
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
    /// The TCP path's tunnel: closed when this is dropped (with the link).
    tunnel: Option<Tunnel>,
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
    target: &Target,
    reached: &AtomicBool,
) -> Result<Dialled, LinkError> {
    let host_port = target.address.as_str();
    let addr: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| LinkError::Stream(format!("cannot resolve {host_port}: {e}")))?
        .next()
        .ok_or_else(|| LinkError::Stream(format!("{host_port} has no address")))?;
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
    let mut tunnel = None;
    let handshake = async {
        let ep = match (&settings.tcp, target.tcp) {
            (Some(tls), true) => {
                let t = Tunnel::open(addr, host_port, tls, settings.proxy.as_ref(), &settings.client).await?;
                let ep = t.endpoint.clone();
                tunnel = Some(t);
                ep
            }
            _ => endpoints.for_addr(addr, &settings.client)?,
        };
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
        Ok(r) => r.map(|(conn, send, recv, welcomed)| Dialled { tunnel, conn, send, recv, welcomed, addr }),
        Err(_) => {
            let e = dialer.handle_timeout(origin.elapsed());
            Err(e.map_or_else(|| LinkError::Stream("connect timed out".into()), LinkError::from))
        }
    }
}

/// The TCP path to one cloud address: a TLS stream carrying a QUIC endpoint of its own
/// ([`super::tunnel`]). Dropping it closes the stream; the stream closing (the cloud or
/// a proxy cut it) closes the endpoint, so the link ends at once instead of idling out.
struct Tunnel {
    endpoint: quinn::Endpoint,
    _stop: tokio_util::sync::DropGuard,
}

impl Tunnel {
    async fn open(
        addr: SocketAddr,
        host_port: &str,
        tls: &Arc<rustls::ClientConfig>,
        proxy: Option<&super::tunnel::Proxy>,
        client: &quinn::ClientConfig,
    ) -> Result<Self, LinkError> {
        let failed = |what: &str, e: std::io::Error| LinkError::Stream(format!("TCP path to {host_port}: {what}: {e}"));
        let tcp = super::tunnel::connect_tcp(addr, host_port, proxy).await.map_err(|e| failed("cannot connect", e))?;
        let local = tcp.local_addr().map_err(|e| failed("no local address", e))?;
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME)
            .map_err(|e| LinkError::Stream(format!("server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| failed("TLS handshake", e))?;
        let socket = super::tunnel::TunnelSocket::new(local);
        let stop = CancellationToken::new();
        let ended = socket.attach(addr, stream, stop.clone());
        let mut endpoint = super::tunnel::endpoint(quinn::EndpointConfig::default(), None, socket)
            .map_err(|e| failed("cannot make an endpoint", e))?;
        endpoint.set_default_client_config(client.clone());
        let ep = endpoint.clone();
        tokio::spawn(async move {
            ended.cancelled().await;
            ep.close(0u32.into(), b"tcp path closed");
        });
        Ok(Self { endpoint, _stop: stop.drop_guard() })
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
