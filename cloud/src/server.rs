//! `outpost-cloud run`: the hospital server.
//!
//! It embeds the same device-serving core as a hub (protocol v1 on `/ws` for doctors'
//! browsers, store, live router), adds the QUIC endpoint relays connect to, the HTTP API
//! for hospital systems and a delivery task per webhook, with the settings of
//! [`crate::config`]. Storage is SQLite in `DIR/data/cloud.db` (one node), or PostgreSQL
//! when `storage.database` names one: then this process is one of several stateless
//! nodes on that database (docs/scaling.md).

use std::net::SocketAddr;

use outpost_engine::RelayConfig;
use outpost_engine::config::{IdentityConfig, RetentionBasis, UplinkConfig};
use outpost_engine::lan_tls::LanTls;
use outpost_engine::link::tls;
use outpost_engine::server::{Core, RunError};
use outpost_shared::bundle::encode_key;
use outpost_shared::uplink::flow::FlowConfig;
use outpost_storage::Storage;
use outpost_store_postgres::{PgOptions, PgStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CloudConfig;
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
    #[error(transparent)]
    Postgres(#[from] outpost_store_postgres::OpenError),
    #[error("{0}")]
    Webhook(String),
    #[error("[acme]: {0}")]
    Acme(String),
}

/// What the engine runs with on the cloud: the settings of `cloud.toml` (defaults, file,
/// environment, flags), verifying the cloud's own tokens, its database in
/// `DIR/data/cloud.db`, no uplink (relays dial in), and media retention counted from
/// receipt (nothing upstream will confirm a blob).
pub fn engine_config(config: &CloudConfig, id: &CloudIdentity) -> RelayConfig {
    let s = &config.server;
    RelayConfig {
        server: outpost_engine::config::ServerConfig {
            listen: s.listen.clone(),
            shutdown_grace_secs: s.shutdown_grace_secs,
            conformance_echo: false,
            tls_cert: s.tls_cert.as_ref().map(|p| id.layout.dir.join(p)),
            tls_key: s.tls_key.as_ref().map(|p| id.layout.dir.join(p)),
            // The cloud's runtime is tokio's default (one thread per core); unused here.
            worker_threads: 0,
        },
        storage: config.storage.engine(id.layout.database()),
        limits: config.limits.clone(),
        identity: IdentityConfig {
            relay_id: id.cloud_id.clone(),
            cloud_id: id.cloud_id.clone(),
            token_public_key: encode_key(&id.signer.public_key()),
        },
        uplink: UplinkConfig::default(),
        policy: config.policy.clone(),
        security: config.security.clone(),
        media: outpost_engine::config::MediaConfig {
            retention_basis: RetentionBasis::Received,
            ..config.media.clone()
        },
        // The cloud has no village network: its hubs' names are its `[acme]` business.
        lan_https: outpost_engine::config::LanHttpsConfig { enabled: false, ..Default::default() },
        testing: config.testing.clone(),
    }
}

/// Binds the QUIC endpoint (so the caller can print its address before serving).
pub fn bind_quic(id: &CloudIdentity, addr: SocketAddr) -> Result<quinn::Endpoint, CloudRunError> {
    let cfg = relay_server_config(id)?;
    let quic_err = |source| CloudRunError::Quic { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(quic_err)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| quic_err(std::io::Error::other("no async runtime for the QUIC endpoint")))?;
    quinn::Endpoint::new(endpoint_config(id), Some(cfg), socket, runtime).map_err(quic_err)
}

fn read_identity_file(p: std::path::PathBuf) -> Result<String, IdentityError> {
    std::fs::read_to_string(&p).map_err(|source| IdentityError::Io { path: p.clone(), source })
}

fn relay_server_config(id: &CloudIdentity) -> Result<quinn::ServerConfig, CloudRunError> {
    let (cert, key) = (read_identity_file(id.layout.server_cert())?, read_identity_file(id.layout.server_key())?);
    Ok(tls::server_config(&id.ca_cert_pem, &cert, &key)?)
}

/// Stateless resets and connection ids that still validate after a restart, or the new
/// process drops the relays' packets silently instead of answering with the reset. The
/// same for the UDP and the TCP path.
fn endpoint_config(id: &CloudIdentity) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &id.stateless_reset_secret());
    let mut endpoint_cfg = quinn::EndpointConfig::new(std::sync::Arc::new(reset_key));
    let secret = id.stateless_reset_secret();
    let cid_key =
        u64::from_le_bytes([secret[0], secret[1], secret[2], secret[3], secret[4], secret[5], secret[6], secret[7]]);
    endpoint_cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    endpoint_cfg
}

/// The hubs' LAN certificate issuer, when `[acme]` is set.
fn acme_issuer(
    config: &CloudConfig,
    id: &CloudIdentity,
) -> Result<Option<std::sync::Arc<dyn outpost_engine::link::certs::CertIssuer>>, CloudRunError> {
    if !config.acme.enabled() {
        return Ok(None);
    }
    tracing::info!(directory = %config.acme.directory, domain = %config.acme.domain, "LAN certificates for hubs from ACME");
    let account = id.layout.keys().join("acme-account.json");
    let issuer = crate::acme::AcmeIssuer::new(&config.acme, &id.layout.dir, account).map_err(CloudRunError::Acme)?;
    Ok(Some(issuer))
}

/// Where relays connect: the QUIC endpoint, and the TCP path's listener (UDP blocked).
#[derive(Debug)]
pub struct RelayListeners {
    pub quic: quinn::Endpoint,
    pub tcp: Option<TcpListener>,
}

/// The TCP path: a QUIC endpoint on a tunnel socket fed by `listener`'s connections.
fn tcp_path(
    id: &CloudIdentity,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(quinn::Endpoint, impl std::future::Future<Output = ()> + Send + 'static), CloudRunError> {
    let addr =
        listener.local_addr().map_err(|source| CloudRunError::Quic { addr: ([0, 0, 0, 0], 0).into(), source })?;
    let (cert, key) = (read_identity_file(id.layout.server_cert())?, read_identity_file(id.layout.server_key())?);
    let tls = tls::tcp_server_config(&id.ca_cert_pem, &cert, &key)?;
    let socket = outpost_engine::link::tunnel::TunnelSocket::new(addr);
    let endpoint =
        outpost_engine::link::tunnel::endpoint(endpoint_config(id), Some(relay_server_config(id)?), socket.clone())
            .map_err(|source| CloudRunError::Quic { addr, source })?;
    Ok((endpoint, crate::tcp::serve(listener, tls, socket, stop)))
}

/// Runs the cloud until `shutdown`; with `tls`, doctors' browsers and hospital systems
/// connect over HTTPS and `wss://`.
pub async fn run(
    id: &CloudIdentity,
    config: &CloudConfig,
    ws: TcpListener,
    tls: Option<LanTls>,
    quic: RelayListeners,
    shutdown: CancellationToken,
    on_ready: outpost_engine::server::OnReady,
) -> Result<(), CloudRunError> {
    let engine = engine_config(config, id);
    let db = engine.storage.path.clone();
    match &config.storage.database {
        None => {
            // One process per SQLite database (see `outpost_engine::mule::control`).
            let data = id.layout.data();
            let _lock = outpost_engine::mule::control::DataLock::take(&data).map_err(RunError::Locked)?;
            let mut core = Core::open(engine, &db)?;
            core.retain(None);
            // USB sticks imported while the cloud runs (`outpost-cloud import|export`). A
            // PostgreSQL cloud needs none: the commands write to its database beside it.
            let handler = outpost_engine::mule::cloud_handler(
                core.store.clone(),
                core.hub.blobs.clone(),
                std::sync::Arc::new(id.mule_keys()?),
                id.layout.relays(),
            );
            let task = outpost_engine::mule::control::serve(data, handler, core.stop_token());
            core.spawn("control socket", task);
            serve(core, id, config, ws, tls, quic, shutdown, on_ready).await
        }
        Some(url) => {
            let router = std::sync::Arc::new(outpost_engine::router::Router::new());
            let store = PgStore::open(url, postgres_options(config), router.clone()).await?;
            let storage = engine.storage.clone();
            // Media bytes are in the database too (PgStore's `BlobBytes`): nothing of the
            // node's own goes in `DIR/data`, so nodes may run on copies of DIR.
            let mut core = Core::new(engine, store.clone(), router, &db)?;
            if storage.retain_days > 0 {
                let stop = core.stop_token();
                core.spawn("retention", pg_retention(store, storage, stop));
            }
            serve(core, id, config, ws, tls, quic, shutdown, on_ready).await
        }
    }
}

/// Retention on a PostgreSQL cloud: every `storage.prune_interval_secs` (and at start),
/// batches of messages past `storage.retain_days` that every hub of their room holds go
/// (`outpost_store_postgres::retention`), until none is left or `stop`. Each node runs it;
/// the batches re-check their conditions, so nodes pruning at once only share the work.
async fn pg_retention(store: PgStore, cfg: outpost_engine::config::StorageConfig, stop: CancellationToken) {
    const DAY_MS: u64 = 86_400_000;
    let every = std::time::Duration::from_secs(cfg.prune_interval_secs.max(1));
    let batch = i64::try_from(cfg.prune_batch.max(1)).unwrap_or(i64::MAX);
    tracing::info!(retain_days = cfg.retain_days, "retention on");
    loop {
        let cutoff = outpost_engine::clock::now_ms().saturating_sub(u64::from(cfg.retain_days) * DAY_MS);
        let mut removed = 0usize;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match store.prune_aged(cutoff, batch).await {
                Ok(n) => {
                    removed += n;
                    metrics::counter!("outpost_retention_pruned_total", "reason" => "age").increment(n as u64);
                    if (n as i64) < batch {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; will retry at the next one");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, retain_days = cfg.retain_days, "retention removed messages every hub holds");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The PostgreSQL store's settings from `cloud.toml`.
pub fn postgres_options(config: &CloudConfig) -> PgOptions {
    PgOptions {
        quota_bytes: config.storage.quota_bytes,
        emergency_reserve_bytes: config.storage.emergency_reserve_bytes,
        max_batch: config.storage.max_batch,
        max_receipts_per_ack: config.limits.max_receipts_per_ack,
        readers: config.storage.readers,
        blob_chunk_bytes: config.storage.blob_chunk_bytes,
        import_writers: config.storage.import_writers,
        import_group_entries: config.storage.import_group_entries,
        ..PgOptions::default()
    }
}

/// Serves `core` (on either backend) with the relays' endpoint, the HTTP API and the
/// webhooks.
// The listeners and settings `run` was given, passed on as they are.
#[allow(clippy::too_many_arguments)]
async fn serve<S: Storage>(
    mut core: Core<S>,
    id: &CloudIdentity,
    config: &CloudConfig,
    ws: TcpListener,
    tls: Option<LanTls>,
    relays: RelayListeners,
    shutdown: CancellationToken,
    on_ready: outpost_engine::server::OnReady,
) -> Result<(), CloudRunError> {
    if let Some(tls) = tls {
        core = core.with_tls(tls);
    }
    // The cloud renews its doctors' tokens with its own key and delegates renewal to hubs.
    let delegation_secs = config.security.delegation_days.saturating_mul(86_400);
    core.hub.renewal.set_cloud(id.signer.clone(), delegation_secs);
    let links = crate::relays::Links {
        store: core.store.clone(),
        blobs: core.hub.blobs.clone(),
        renewal: core.hub.renewal.clone(),
        flow: FlowConfig { rebuild_recent_per_room: config.limits.rebuild_recent_per_room, ..FlowConfig::default() },
        cloud_id: id.cloud_id.clone(),
        issuer: acme_issuer(config, id)?,
    };
    let mut endpoints = vec![relays.quic];
    if let Some(listener) = relays.tcp {
        let (endpoint, accept) = tcp_path(id, listener, core.stop_token())?;
        core.spawn("relays' TCP path", accept);
        endpoints.push(endpoint);
    }
    let relays = crate::relays::accept(endpoints, links, core.stop_token());
    core.spawn("relay endpoint", relays);
    if !config.webhooks.is_empty() {
        let holder = crate::webhooks::holder_id();
        for cfg in &config.webhooks {
            let hook = crate::webhooks::Endpoint::from_config(cfg, &id.layout.dir).map_err(CloudRunError::Webhook)?;
            tracing::info!(name = %hook.name, url = %cfg.url, %holder, "webhook configured");
            let task = crate::webhooks::deliver(core.store.clone(), hook, holder.clone(), core.stop_token());
            core.spawn("webhook", task);
        }
    }
    let app = core.routes().merge(crate::api::routes(core.hub.clone()));
    let result = core.serve(ws, app, shutdown, on_ready).await;
    tracing::info!("cloud stopped");
    Ok(result?)
}
