//! The hub's side of the link: find the cloud whenever an uplink appears.
//!
//! The dialer connects with jittered exponential backoff (1 s doubling to 30 s, reset
//! only after a connection that lasted), authenticates with the hub's certificate,
//! says `Hello` (relay id, database epoch, rooms it serves), resumes from the higher of
//! its own and the cloud's high-water mark, and runs the link until it breaks. A hub
//! with no uplink keeps serving its village; traffic waits in the log.

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_shared::uplink::backoff::Backoff;
use outpost_shared::uplink::dict;
use outpost_shared::uplink::flow::FlowConfig;
use outpost_shared::uplink::handshake::{Dialer, HelloParams, Welcomed};
use tokio_util::sync::CancellationToken;

use super::tls::{self, SERVER_NAME};
use super::{LinkError, Peer, read_control, write_control};
use crate::clock::now_ms;

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
    /// Last time a connection was established (ms since the Unix epoch).
    pub last_contact: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UplinkSettings {
    pub cloud_addr: String,
    pub relay_id: String,
    pub client: quinn::ClientConfig,
    pub flow: FlowConfig,
    pub backoff: Backoff,
}

impl UplinkSettings {
    /// Reads the identity written by `outpost-relay init` from `dir/identity`.
    pub fn from_dir(dir: &Path, cloud_addr: &str, relay_id: &str, backoff: Backoff) -> Result<Self, String> {
        let read =
            |f: &str| std::fs::read_to_string(dir.join("identity").join(f)).map_err(|e| format!("identity/{f}: {e}"));
        let client = tls::client_config(&read("ca.crt")?, &read("relay.crt")?, &read("relay.key")?)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cloud_addr: cloud_addr.to_owned(),
            relay_id: relay_id.to_owned(),
            client,
            flow: FlowConfig::default(),
            backoff,
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
    shutdown: CancellationToken,
) {
    let mut backoff = settings.backoff.clone();
    let mut endpoint: Option<(bool, quinn::Endpoint)> = None;
    loop {
        let started = tokio::time::Instant::now();
        let attempt = connect(&store, blobs.clone(), &settings, &mut endpoint, &status, &shutdown);
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = attempt => r,
        };
        let lasted = started.elapsed();
        let msg = match &result {
            Ok(e) | Err(e) => e.to_string(),
        };
        if let Ok(mut s) = status.lock() {
            s.connected = false;
            s.last_error = Some(msg.clone());
        }
        if matches!(result, Ok(LinkError::Shutdown)) && shutdown.is_cancelled() {
            break;
        }
        backoff.connection_ended(lasted);
        let delay = backoff.next_delay(random());
        tracing::info!(error = %msg, retry_in_ms = delay.as_millis() as u64, "uplink down");
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    if let Some((_, ep)) = endpoint {
        ep.close(0u32.into(), b"hub stopping");
        ep.wait_idle().await;
    }
}

/// One connection: returns why it ended (Ok) or why it never started (Err). Success
/// updates `status` when the handshake completes.
async fn connect<S: Storage>(
    store: &S,
    blobs: Option<crate::media::Blobs<S>>,
    settings: &UplinkSettings,
    endpoint: &mut Option<(bool, quinn::Endpoint)>,
    status: &Mutex<UplinkStatus>,
    shutdown: &CancellationToken,
) -> Result<LinkError, LinkError> {
    let addr: SocketAddr = tokio::net::lookup_host(&settings.cloud_addr)
        .await
        .map_err(|e| LinkError::Stream(format!("cannot resolve {}: {e}", settings.cloud_addr)))?
        .next()
        .ok_or_else(|| LinkError::Stream(format!("{} has no address", settings.cloud_addr)))?;
    let v6 = addr.is_ipv6();
    if endpoint.as_ref().is_none_or(|(is_v6, _)| *is_v6 != v6) {
        let bind: SocketAddr =
            if v6 { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.map_err(|_| LinkError::Shutdown)?;
        let mut ep =
            quinn::Endpoint::client(bind).map_err(|e| LinkError::Stream(format!("cannot open a UDP socket: {e}")))?;
        ep.set_default_client_config(settings.client.clone());
        *endpoint = Some((v6, ep));
    }
    let Some((_, ep)) = endpoint.as_ref() else { return Err(LinkError::Shutdown) };
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
        let (mut send, mut recv) = conn.open_bi().await?;
        if let Some(hello) = dialer.poll_transmit() {
            write_control(&mut send, &hello).await?;
        }
        let welcomed = dialer.handle_control(read_control(&mut recv).await?)?;
        Ok::<_, LinkError>((conn, send, recv, welcomed))
    };
    let result = tokio::time::timeout_at(deadline, handshake).await;
    let (conn, send, recv, Welcomed { cloud, epoch, hwm }) = match result {
        Ok(r) => r?,
        Err(_) => {
            let e = dialer.handle_timeout(origin.elapsed());
            return Err(e.map_or_else(|| LinkError::Stream("connect timed out".into()), LinkError::from));
        }
    };
    let state = store.peer_hello(CLOUD_PEER, &epoch, Vec::new()).await?;
    let start = state.sent_hwm.max(hwm);
    tracing::info!(%cloud, %addr, resume_after = start.0, "uplink connected");
    if let Ok(mut s) = status.lock() {
        s.connected = true;
        s.last_contact = Some(now_ms());
        s.last_error = None;
    }
    store.peer_acked(CLOUD_PEER, start, Vec::new(), now_ms()).await;
    let peer = Peer { name: CLOUD_PEER.to_owned(), rooms: None, start };
    let opts = super::LinkOptions { flow: settings.flow.clone(), blobs };
    Ok(super::run(conn, send, recv, store.clone(), peer, opts, shutdown.child_token()).await)
}
