//! `outpost-cloud run`: the hospital server.
//!
//! It embeds the same device-serving core as a hub (protocol v1 on `/ws` for doctors'
//! browsers, SQLite store, live router), adds the QUIC endpoint relays connect to and
//! the HTTP API for hospital systems. Storage is the relay crate's SQLite store; the
//! cloud reaches it only through `Store`'s methods, the seam where a PostgreSQL backend
//! will go when one machine is not enough.

use std::net::SocketAddr;
use std::path::Path;

use outpost_engine::RelayConfig;
use outpost_engine::lan_tls::LanTls;
use outpost_engine::link::tls;
use outpost_engine::server::{Core, RunError};
use outpost_shared::bundle::encode_key;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::identity::{CloudIdentity, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum CloudRunError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot set up TLS for the relay endpoint: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot open the QUIC endpoint on {addr}: {source}")]
    Quic { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The TLS of the WebSocket/HTTP listener from `--tls-cert`/`--tls-key`, with the hub's
/// handshake timeout.
pub fn load_tls(cert: &Path, key: &Path) -> Result<LanTls, outpost_engine::lan_tls::LanTlsError> {
    let timeout = std::time::Duration::from_secs(RelayConfig::default().limits.tls_handshake_timeout_secs);
    LanTls::load(cert, key, timeout)
}

/// The cloud's device-serving settings: the hub defaults, verifying its own tokens, its
/// database in `DIR/data/cloud.db`.
pub fn hub_config(id: &CloudIdentity) -> RelayConfig {
    let mut c = RelayConfig::default();
    c.identity.cloud_id = id.cloud_id.clone();
    c.identity.relay_id = id.cloud_id.clone();
    c.identity.token_public_key = encode_key(&id.signer.public_key());
    c.storage.path = id.layout.data().join("cloud.db");
    c.policy = id.policy.clone();
    // The hospital keeps every blob: retention applies to hubs, which the cloud confirms.
    c.media.retention_days = 0;
    c
}

/// Binds the QUIC endpoint (so the caller can print its address before serving).
pub fn bind_quic(dir: &Path, addr: SocketAddr) -> Result<quinn::Endpoint, CloudRunError> {
    let id = CloudIdentity::load(dir)?;
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).map_err(|source| IdentityError::Io { path: p.clone(), source })
    };
    let cfg = tls::server_config(&id.ca_cert_pem, &read(id.layout.server_cert())?, &read(id.layout.server_key())?)?;
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &id.stateless_reset_secret());
    let mut endpoint_cfg = quinn::EndpointConfig::new(std::sync::Arc::new(reset_key));
    // Connection ids must also validate after a restart, or the new process drops the
    // relays' packets silently instead of answering with the reset.
    let secret = id.stateless_reset_secret();
    let cid_key =
        u64::from_le_bytes([secret[0], secret[1], secret[2], secret[3], secret[4], secret[5], secret[6], secret[7]]);
    endpoint_cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let quic_err = |source| CloudRunError::Quic { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(quic_err)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| quic_err(std::io::Error::other("no async runtime for the QUIC endpoint")))?;
    quinn::Endpoint::new(endpoint_cfg, Some(cfg), socket, runtime).map_err(quic_err)
}

/// Runs the cloud until `shutdown`; with `tls`, doctors' browsers and hospital systems
/// connect over HTTPS and `wss://`.
pub async fn run(
    dir: &Path,
    ws: TcpListener,
    tls: Option<LanTls>,
    quic: quinn::Endpoint,
    shutdown: CancellationToken,
    on_ready: outpost_engine::server::OnReady,
) -> Result<(), CloudRunError> {
    let id = CloudIdentity::load(dir)?;
    let config = hub_config(&id);
    let db = config.storage.path.clone();
    let mut core = Core::open(config, &db)?;
    if let Some(tls) = tls {
        core = core.with_tls(tls);
    }
    let relays =
        crate::relays::accept(quic, core.store.clone(), core.hub.blobs.clone(), id.cloud_id.clone(), core.stop_token());
    core.spawn("relay endpoint", relays);
    let app = core.routes().merge(crate::api::routes(core.hub.clone()));
    let result = core.serve(ws, app, shutdown, on_ready).await;
    tracing::info!("cloud stopped");
    Ok(result?)
}
