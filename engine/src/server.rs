//! The hub's HTTP server and its lifecycle: `run(config, listeners, shutdown)`.
//!
//! Shutdown order (SIGTERM/SIGINT cancel the token): stop accepting connections → close
//! sessions with 1001 and wait for them (bounded by `server.shutdown_grace_secs`) → commit
//! what is queued and stop the store's writer.

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use outpost_shared::TokenVerifier;
use outpost_shared::bundle::decode_public_key;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RelayConfig;
use crate::hub::{ConnTracker, Hub};
use crate::lan_tls::{LanListener, LanTls};
use crate::link::uplink::UplinkSettings;
use crate::router::Router;
use crate::supervisor::Supervisor;
use crate::ws::{AppState, configure, refused};
use outpost_store_sqlite::{OpenError, Store, StoreOptions};

/// Sockets the hub serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub ws: TcpListener,
    /// The LAN HTTPS listener; `None`: the hub binds `lan_https.listen` itself when it
    /// serves HTTPS under its own name.
    pub https: Option<TcpListener>,
}

/// A listener that is bound only once it is wanted (the hub's HTTPS listener, once the
/// cloud named the hub); `None`: never.
pub type BindLater = std::pin::Pin<Box<dyn std::future::Future<Output = Option<TcpListener>> + Send>>;

/// Called once the store is open and the listener is about to be served: what tells
/// systemd (`READY=1`), scripts and tests that the server can take requests. A line
/// printed before the store opened would let a caller connect to a process that then
/// fails to open its database and exits.
pub type OnReady = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("{0}")]
    Locked(String),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("the server's {task} stopped ({how}); the server stopped with it and should be restarted")]
    TaskEnded { task: &'static str, how: String },
}

/// The device-serving core shared by the hub and the cloud: store, router, sessions.
pub struct Core<S: Storage> {
    pub hub: Arc<Hub<S>>,
    pub store: S,
    /// Owns the sessions (closed with a grace period at shutdown).
    tracker: TaskTracker,
    sessions_stop: CancellationToken,
    /// Owns every other task the server runs (see [`Supervisor`]).
    tasks: Supervisor,
    grace: Duration,
    tls: Option<LanTls>,
    /// A second listener, always TLS (the hub's LAN HTTPS), bound when its future
    /// yields it (never, if it yields `None`).
    /// (In a mutex only to keep `Core` `Sync`: it is taken once, by `serve`.)
    also: Option<std::sync::Mutex<(BindLater, LanTls, axum::Router)>>,
}

impl<S: Storage> std::fmt::Debug for Core<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("epoch", &self.store.epoch()).finish_non_exhaustive()
    }
}

/// The SQLite store's settings from the configuration.
fn sqlite_options(config: &RelayConfig) -> StoreOptions {
    StoreOptions {
        quota_bytes: config.storage.quota_bytes,
        emergency_reserve_bytes: config.storage.emergency_reserve_bytes,
        max_batch: config.storage.max_batch,
        max_receipts_per_ack: config.limits.max_receipts_per_ack,
        readers: config.storage.readers,
    }
}

/// Opens the hub's SQLite store on its own, for a one-shot command run while no server
/// does (the caller holds the data directory's lock, `crate::mule::control::DataLock`).
pub fn open_store(config: &RelayConfig, db: &Path) -> Result<Store, OpenError> {
    Store::open(db, sqlite_options(config), Arc::new(Router::new()))
}

impl Core<Store> {
    /// Opens the SQLite database at `db` (the embedded default of both applications) and
    /// builds the server on it, with its media files beside it.
    pub fn open(config: RelayConfig, db: &Path) -> Result<Self, RunError> {
        let router = Arc::new(Router::new());
        let store = Store::open(db, sqlite_options(&config), router.clone())?;
        tracing::info!(db = %db.display(), epoch = %store.epoch(), head = store.head().0, "store open");
        Self::new(config, store, router, db)
    }

    /// Runs message retention for as long as the server serves: `confirm_peer` is the
    /// peer whose acknowledgement confirms a message (a hub's cloud), `None` on a cloud.
    pub fn retain(&mut self, confirm_peer: Option<String>) {
        let cfg = self.hub.config.storage.clone();
        let policy = crate::retention::policy(&cfg, confirm_peer, self.hub.config.testing.clock_offset_secs);
        let task = crate::retention::run(self.store.clone(), cfg, policy, self.stop_token());
        self.spawn("retention", task);
    }
}

impl<S: Storage> Core<S> {
    /// Builds the server on an open `store`, which must publish what it commits to
    /// `router`. Media bytes go where the store keeps them ([`MediaStore::blob_bytes`]):
    /// a store that keeps files puts them in `media/` beside `place` (its database file);
    /// one that keeps them in its database ignores `place`. Tokens are verified with
    /// `config.identity` (the cloud's key and id).
    ///
    /// [`MediaStore::blob_bytes`]: outpost_storage::MediaStore::blob_bytes
    pub fn new(config: RelayConfig, store: S, router: Arc<Router>, place: &Path) -> Result<Self, RunError> {
        let key = decode_public_key(&config.identity.token_public_key).map_err(RunError::Config)?;
        let verifier = TokenVerifier::new(&key, config.identity.cloud_id.clone());
        crate::status::install_metrics();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let sessions_stop = CancellationToken::new();
        let poll = Duration::from_millis(config.security.revocation_poll_ms);
        let mut tasks = Supervisor::default();
        tasks.spawn("revocation watch", store.clone().watch_revocations(poll, tasks.stop_token()));
        tasks.spawn("revocation fan-out", forward_revocations(store.revocations(), router.clone(), tasks.stop_token()));
        let blobs = crate::media::Blobs::open(store.clone(), place, config.media.clone(), &config.storage)
            .map_err(|e| RunError::Config(format!("cannot open the media store beside {}: {e}", place.display())))?;
        tasks.spawn("media sweep", blobs.clone().sweep_every(Duration::from_secs(3600), tasks.stop_token()));
        let mut hub = Hub::new(config, store.clone(), router, verifier, sessions_stop.clone());
        hub.blobs = Some(blobs);
        let hub = Arc::new(hub);
        Ok(Self { hub, store, tracker: TaskTracker::new(), sessions_stop, tasks, grace, tls: None, also: None })
    }

    /// Runs `task` for as long as the server serves (the hub's uplink, the cloud's relay
    /// endpoint). It must stop when `stop_token()` is cancelled and not before: an early
    /// end shuts the server down (see [`Supervisor`]).
    pub fn spawn(&mut self, name: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(name, task);
    }

    /// What tasks given to [`Core::spawn`] stop on.
    pub fn stop_token(&self) -> CancellationToken {
        self.tasks.stop_token()
    }

    /// `/ws` (protocol v1) and `/healthz`; merge further routes into it. With the
    /// test-only `server.conformance_echo` switch, also `/echo` (see [`crate::echo`]).
    pub fn routes(&self) -> axum::Router {
        let mut router = axum::Router::new();
        if self.hub.config.server.conformance_echo {
            tracing::warn!(
                "server.conformance_echo is on: /echo echoes WebSocket messages without a token; for tests only"
            );
            router = router.route("/echo", get(crate::echo::upgrade));
        }
        router
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/status", get(crate::status::page))
            .route("/status.json", get(crate::status::json))
            .route("/metrics", get(crate::status::metrics))
            .fallback(get(crate::web::asset))
            .with_state((self.hub.clone(), self.tracker.clone()))
            .merge(
                axum::Router::new()
                    .route("/api/audit", get(crate::api::audit))
                    .route("/api/rooms/{room}/queues", get(crate::api::queues))
                    .route("/api/rooms/{room}/records/{patient}", get(crate::api::record))
                    .with_state(self.hub.clone()),
            )
            .merge(crate::media::http::routes(self.hub.clone()))
    }

    /// Serves devices over TLS (HTTPS and `wss://`) instead of plain TCP.
    pub fn with_tls(mut self, tls: LanTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Also serves `app` over `tls` on the listener `listener` yields once it is wanted,
    /// with the same lifecycle.
    pub fn also_serve(mut self, listener: BindLater, tls: LanTls, app: axum::Router) -> Self {
        self.also = Some(std::sync::Mutex::new((listener, tls, app)));
        self
    }

    /// Serves `app` on `listener` (over TLS after [`Core::with_tls`]) until `shutdown`,
    /// or until a task of the server ends before its time. Then, in order: stop
    /// accepting, close sessions (bounded by the grace period), stop the server's tasks
    /// (the uplink or the relays' endpoint: nothing more is imported), flush the store.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        app: axum::Router,
        shutdown: CancellationToken,
        on_ready: OnReady,
    ) -> Result<(), RunError> {
        // Frames are small and latency matters (an ack is one short frame): without
        // TCP_NODELAY a `stored` waits for the phone's delayed ACK (Nagle), tens of ms.
        // `tap_io` also gives handlers `ConnectInfo<SocketAddr>` (axum implements it for
        // any tapped listener whose address is a `SocketAddr`).
        let main = serve_on(listener, self.tls.clone(), app, &shutdown);
        let also = self.also.take().map(|m| m.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        let stop = shutdown.clone();
        let serve = async move {
            let (main, also) = tokio::join!(main, async move {
                let Some((listener, tls, app)) = also else { return Ok(()) };
                let listener = tokio::select! {
                    l = listener => l,
                    () = stop.cancelled() => None,
                };
                match listener {
                    Some(l) => serve_on(l, Some(tls), app, &stop).await,
                    None => Ok(()),
                }
            });
            main.and(also)
        };
        if let Some(watchdog) = crate::systemd::watchdog(self.store.clone(), self.tasks.stop_token()) {
            self.tasks.spawn("watchdog", watchdog);
        }
        crate::systemd::ready();
        on_ready();
        let mut serve = std::pin::pin!(serve);
        let (result, ended) = tokio::select! {
            biased;
            r = &mut serve => (r, None),
            (task, how) = self.tasks.first_exit() => {
                tracing::error!(task, how, "a server task ended before shutdown; stopping");
                shutdown.cancel();
                (serve.await, Some(RunError::TaskEnded { task, how }))
            }
        };
        crate::systemd::stopping();
        tracing::info!("stopped accepting; closing sessions");
        self.sessions_stop.cancel();
        self.hub.router.close_all();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait()).await.is_err() {
            tracing::warn!("sessions did not close within the grace period");
        }
        self.tasks.shutdown().await;
        self.store.shutdown().await;
        result.map_err(RunError::Serve)?;
        ended.map_or(Ok(()), Err)
    }
}

/// Serves `app` on `listener` (TLS with `tls`) until `shutdown`.
fn serve_on(
    listener: TcpListener,
    tls: Option<LanTls>,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    // Frames are small and latency matters (an ack is one short frame): without
    // TCP_NODELAY a `stored` waits for the phone's delayed ACK (Nagle), tens of ms.
    // `tap_io` also gives handlers `ConnectInfo<SocketAddr>` (axum implements it for
    // any tapped listener whose address is a `SocketAddr`).
    let listener = LanListener::new(listener, tls).tap_io(|stream| {
        if let Err(e) = stream.tcp().set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future()
}

/// Each new revocation list reaches every session through its mailbox: one task for the
/// hub rather than a watch future held by every idle phone.
async fn forward_revocations(
    mut list: tokio::sync::watch::Receiver<Arc<outpost_shared::RevocationList>>,
    router: Arc<Router>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = list.changed() => match changed {
                Ok(()) => router.recheck_all(),
                Err(_) => return,
            },
        }
    }
}

/// Runs the hub until `shutdown` is cancelled. `dir` is the relay directory.
pub async fn run(
    config: RelayConfig,
    dir: PathBuf,
    listeners: Listeners,
    shutdown: CancellationToken,
    on_ready: OnReady,
) -> Result<(), RunError> {
    let uplink = if config.uplink.cloud.is_empty() {
        tracing::info!("no cloud configured; serving the village only");
        None
    } else {
        let mut settings =
            UplinkSettings::from_dir(&dir, &config.identity.relay_id, &config.uplink).map_err(RunError::Config)?;
        settings.flow.rebuild_recent_per_room = config.limits.rebuild_recent_per_room;
        Some(settings)
    };
    let tls = config.lan_tls(&dir).map_err(|e| RunError::Config(e.to_string()))?;
    let db = config.db_path(&dir);
    let data = db.parent().map_or_else(|| dir.clone(), Path::to_path_buf);
    // One process per database: a second hub, or a stick command working on a stopped
    // hub, would otherwise write beside this one.
    let _lock = crate::mule::control::DataLock::take(&data).map_err(RunError::Locked)?;
    let mut core = Core::open(config.clone(), &db)?;
    let uplink = match uplink {
        Some(settings) => Some(setup_renewal(&core, &dir, settings).await?),
        None => None,
    };
    core.retain(Some(crate::link::uplink::CLOUD_PEER.to_owned()));
    let lan = match (&tls, &uplink) {
        // An operator's own certificate wins; without a cloud nobody could issue one.
        (None, Some(_)) if config.lan_https.enabled => Some(lan_https(&config, &dir, listeners.https).await?),
        _ => None,
    };
    if let Some(tls) = tls {
        tracing::info!("serving devices over TLS");
        core = core.with_tls(tls);
    }
    let (lan, lan_listener) = match lan {
        Some((lan, bind, tls)) => (Some(lan), Some((bind, tls))),
        None => (None, None),
    };
    let mut uplink = uplink;
    if let (Some(settings), Some(lan)) = (uplink.as_mut(), &lan) {
        settings.lan = Some(lan.cert.clone());
        let _ = core.hub.lan.set(lan.clone());
    }
    if uplink.is_some() {
        // Stick export and import while the hub serves (`outpost-relay export|import`).
        match crate::mule::hub_keys(&dir, &config) {
            Ok(keys) => {
                let handler = crate::mule::hub_handler(core.store.clone(), core.hub.blobs.clone(), Arc::new(keys));
                let task = crate::mule::control::serve(data.clone(), handler, core.stop_token());
                core.spawn("control socket", task);
            }
            Err(e) => tracing::warn!(error = %e, "no stick export or import while the hub runs"),
        }
    }
    if let Some(settings) = uplink {
        let task = crate::link::uplink::run(
            core.store.clone(),
            core.hub.blobs.clone(),
            settings,
            core.hub.uplink.clone(),
            core.hub.cloud_history.clone(),
            core.stop_token(),
        );
        core.spawn("uplink", task);
    }
    let mut app = core.routes();
    if let (Some(lan), Some((listener, tls))) = (lan, lan_listener) {
        // Phones that open the plain address are sent to the name while its certificate
        // is valid; the HTTPS side serves the same routes.
        core = core.also_serve(listener, tls, app.clone());
        app = app.layer(axum::middleware::from_fn_with_state(lan, crate::lan_cert::redirect));
    }
    let result = core.serve(listeners.ws, app, shutdown, on_ready).await;
    tracing::info!("hub stopped");
    result
}

/// The hub's LAN HTTPS: its name and certificate (`DIR/lan`), and its listener, bound
/// once the hub has a name (a hub whose cloud issues no certificates binds no HTTPS port).
async fn lan_https(
    config: &RelayConfig,
    dir: &Path,
    bound: Option<TcpListener>,
) -> Result<(crate::lan_cert::LanHttps, BindLater, LanTls), RunError> {
    let cfg = &config.lan_https;
    let cert = crate::lan_cert::LanCert::open(crate::lan_cert::LanCertSettings {
        dir: crate::lan_cert::dir(dir),
        interface: cfg.interface.clone(),
        renew_before_secs: cfg.renew_before_days.saturating_mul(86_400),
        retry_secs: cfg.retry_secs,
    });
    let configured =
        cfg.listen.parse::<SocketAddr>().map_err(|e| RunError::Config(format!("lan_https.listen: {e}")))?;
    let port = match &bound {
        Some(l) => l.local_addr().map_err(RunError::Serve)?.port(),
        None => configured.port(),
    };
    let lan = crate::lan_cert::LanHttps { cert: cert.clone(), port: Arc::new(port.into()) };
    let timeout = Duration::from_secs(config.limits.tls_handshake_timeout_secs);
    let tls = LanTls::with_resolver(cert.resolver(), timeout).map_err(|e| RunError::Config(e.to_string()))?;
    let port_of = lan.port.clone();
    let listener: BindLater = Box::pin(async move {
        let mut named = cert.subscribe();
        while !cert.has_name() {
            named.changed().await.ok()?;
        }
        let listener = match bound {
            Some(l) => l,
            None => match TcpListener::bind(configured).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(address = %configured, error = %e, "cannot listen for HTTPS (lan_https.listen); phones stay on plain HTTP");
                    cert.refused("listen_failed", &format!("cannot listen on {configured}: {e}"));
                    return None;
                }
            },
        };
        let addr = listener.local_addr().ok()?;
        port_of.store(addr.port(), std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%addr, "serving devices over HTTPS under the hub's LAN name");
        Some(listener)
    });
    Ok((lan, listener, tls))
}

/// A hub with a cloud renews its devices' tokens with its own key under the cloud's
/// delegation: the key is made at first start (`DIR/identity/renewal.key`, 0600), the
/// last delegation comes from the store (one that expired is simply not used), and the
/// uplink asks for fresh ones.
async fn setup_renewal<S: Storage>(
    core: &Core<S>,
    dir: &Path,
    mut settings: UplinkSettings,
) -> Result<UplinkSettings, RunError> {
    let path = dir.join("identity").join("renewal.key");
    let seed = crate::renewal::load_or_create_key(&path)
        .map_err(|e| RunError::Config(format!("cannot read or make the renewal key {}: {e}", path.display())))?;
    let renewal = core.hub.renewal.clone();
    renewal.set_hub_key(&seed, &core.hub.config.identity.relay_id);
    match core.store.delegation().await {
        Ok(Some(dlg)) => match renewal.install(&dlg, crate::clock::now_secs()) {
            Ok(d) => tracing::info!(jti = %d.jti, exp = d.exp, "token renewal delegated by the cloud"),
            Err(e) => {
                tracing::info!(error = %e, "the kept delegation is not usable; no token renewal until the cloud sends one")
            }
        },
        Ok(None) => tracing::info!("no delegation from the cloud yet; no token renewal until it sends one"),
        Err(e) => tracing::warn!(error = %e, "cannot read the kept delegation"),
    }
    settings.renewal = Some(renewal);
    Ok(settings)
}

async fn ws_upgrade<S: Storage>(
    State((hub, tracker)): State<AppState<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match ConnTracker::acquire(&hub, peer.ip()) {
        Ok(s) => s,
        Err(r) => return refused(r),
    };
    configure(upgrade, &hub.config.limits).on_upgrade(move |socket| {
        let session = crate::session::serve(hub, socket, peer);
        // What one connected phone costs in future state (BENCHMARKS.md, memory).
        tracing::trace!(bytes = std::mem::size_of_val(&session), "session future");
        // A combinator, not `async move { session.await; .. }`: an async block would hold
        // the captured future and the awaited one, each reserved in full.
        tracker.track_future(futures_util::FutureExt::map(session, move |()| drop(slot)))
    })
}
