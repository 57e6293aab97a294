//! Webhooks: every message of the configured rooms POSTed to a hospital system's
//! endpoint, signed, at least once, in cursor order (docs/integration.md).
//!
//! One task per endpoint ([`deliver`]), given to the server's supervisor. It reads the
//! log after the endpoint's position a page at a time, sends one event per request and
//! moves the position on each 2xx; a failure is retried, with exponential backoff, until
//! the endpoint takes it, and nothing after it is sent meanwhile. So a dead endpoint costs
//! its own task, one page of events and a timer: other endpoints and the rest of the cloud
//! never wait for it. The position is kept in the database ([`HookStore`]), written at
//! most every [`SAVE_EVERY`] while delivering and exactly when caught up, so a restart
//! repeats at most that much, never skips.
//!
//! Several cloud servers may share the database: each runs these tasks, and a lease in
//! the database lets one server at a time deliver to an endpoint. The holder renews it
//! every third of its length and never starts an attempt that could outlast it; a server
//! that dies leaves it to expire and another takes over from the stored position.
//!
//! What this module does not do: decide who may read a room (an endpoint is configured by
//! the operator, and gets every message of its rooms), or deliver receipts.

pub mod client;
pub mod sign;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use outpost_engine::clock::now_ms;
use outpost_shared::frames::Positioned;
use outpost_shared::uplink::backoff::Backoff;
use outpost_shared::{Cursor, RoomId};
use outpost_storage::{HookStore, LogStore};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::WebhookConfig;
use client::{Client, Outcome};

/// Events read from the store at a time: what one endpoint holds in memory at most
/// (bodies are at most 64 KiB, so a few MiB at worst).
pub const PAGE: u32 = 100;
/// While delivering, the position is written at most this often; a crash then repeats
/// at most this long's deliveries (the receiver drops them by their idempotency key).
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The shortest lease: a server that dies holds its endpoints for at most this long
/// (plus a third, the other servers' retry) before another takes over. Longer when an
/// attempt may take longer: see [`Endpoint::lease`].
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// An idle endpoint looks at the log this often even without a commit signalled, for a
/// backend whose other servers' commits this process is not told of.
pub const IDLE_POLL: Duration = Duration::from_secs(5);
/// Wait before asking the store again after it failed.
pub const STORE_RETRY: Duration = Duration::from_secs(1);

/// The header carrying the endpoint's name.
pub const WEBHOOK_HEADER: &str = "x-outpost-webhook";
/// The header carrying the event's cursor.
pub const CURSOR_HEADER: &str = "x-outpost-cursor";
/// The idempotency key: the message id, the same on every retry and every server.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// One endpoint, ready to deliver to: its settings checked, its secret read.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    uri: Uri,
    secret: Vec<u8>,
    /// `None`: every room.
    rooms: Option<Arc<[RoomId]>>,
    ca_file: Option<std::path::PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// [`LEASE_TTL`] (shorter in tests).
    lease_min: Duration,
}

impl Endpoint {
    /// The endpoint of a checked `[[webhooks]]` entry; files are relative to `dir`.
    pub fn from_config(cfg: &WebhookConfig, dir: &Path) -> Result<Self, String> {
        let uri = cfg.url.parse::<Uri>().map_err(|e| format!("webhooks ({}): url: {e}", cfg.name))?;
        Ok(Self {
            name: cfg.name.clone(),
            uri,
            secret: cfg.secret_bytes(dir)?,
            rooms: cfg.rooms.as_ref().map(|r| Arc::from(r.clone())),
            ca_file: cfg.ca_file.as_ref().map(|p| dir.join(p)),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            initial_backoff: Duration::from_millis(cfg.initial_backoff_ms),
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
            lease_min: LEASE_TTL,
        })
    }

    /// The lease's length: [`LEASE_TTL`], or three attempts if longer, so the holder that
    /// renews every third of it never has an attempt running when it expires.
    fn lease(&self) -> Duration {
        self.lease_min.max(self.request_timeout.saturating_mul(3))
    }

    /// The headers of `body` for event `event`, signed at `timestamp` (Unix seconds).
    fn headers(
        &self,
        event: &Positioned,
        body: &[u8],
        timestamp: u64,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let value = |v: String| HeaderValue::try_from(v).map_err(|e| format!("bad header value: {e}"));
        Ok(vec![
            (HeaderName::from_static(WEBHOOK_HEADER), value(self.name.clone())?),
            (HeaderName::from_static(CURSOR_HEADER), value(event.cursor.0.to_string())?),
            (HeaderName::from_static(IDEMPOTENCY_HEADER), value(event.msg.id.to_string())?),
            (HeaderName::from_static(sign::TIMESTAMP_HEADER), value(timestamp.to_string())?),
            (HeaderName::from_static(sign::SIGNATURE_HEADER), value(sign::signature(&self.secret, timestamp, body))?),
        ])
    }
}

/// A name for this process as a lease holder: the host, the process and a random part
/// (two processes on one host, or one restarted with the same pid, are told apart).
pub fn holder_id() -> Arc<str> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "cloud".to_owned() } else { host };
    let random = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(format!("{host}/{}/{}", std::process::id(), &random[..8]))
}

/// Why delivery under one lease ended.
#[derive(Debug)]
enum Exit {
    /// The server is stopping.
    Stop,
    /// Another server holds the lease now (or it could not be renewed).
    LeaseLost,
}

/// The state of one endpoint's delivery.
struct Run<S> {
    store: S,
    hook: Endpoint,
    holder: Arc<str>,
    client: Client,
    stop: CancellationToken,
    /// When the lease was last granted to us.
    renewed: Instant,
    /// Delivered up to here.
    position: Cursor,
    /// Stored up to here, and when.
    saved: Cursor,
    saved_at: Instant,
}

/// Delivers to `hook` until `stop`, whenever this process holds its lease. Never ends
/// before `stop` (a supervised task).
pub async fn deliver<S: LogStore + HookStore>(store: S, hook: Endpoint, holder: Arc<str>, stop: CancellationToken) {
    let span = tracing::info_span!("webhook", name = %hook.name);
    async move {
        let client =
            match Client::new(hook.uri.clone(), hook.ca_file.as_deref(), hook.connect_timeout, hook.request_timeout) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up this webhook's client; nothing is delivered to it");
                    stop.cancelled().await;
                    return;
                }
            };
        let now = Instant::now();
        let mut run = Run {
            store,
            hook,
            holder,
            client,
            stop,
            renewed: now,
            position: Cursor(0),
            saved: Cursor(0),
            saved_at: now,
        };
        let mut head = run.store.subscribe_head();
        loop {
            if !run.lease().await {
                // Another server delivers; ask again a third of a lease later.
                tokio::select! {
                    biased;
                    () = run.stop.cancelled() => break,
                    () = tokio::time::sleep(run.hook.lease() / 3) => continue,
                }
            }
            tracing::info!(holder = %run.holder, "delivering");
            match run.held(&mut head).await {
                Err(Exit::Stop) => break,
                Err(Exit::LeaseLost) => tracing::warn!("another server took over this webhook"),
                Ok(never) => match never {},
            }
        }
        // A clean stop: keep what was delivered and let another server take over now.
        if let Err(e) = run.save(true).await {
            tracing::debug!(?e, "position not saved at stop");
        }
        if let Err(e) = run.store.hook_release(&run.hook.name, &run.holder).await {
            tracing::warn!(error = %e, "cannot release the lease; another server takes over when it expires");
        }
    }
    .instrument(span)
    .await;
}

impl<S: LogStore + HookStore> Run<S> {
    /// Takes or renews the lease; whether we hold it.
    async fn lease(&mut self) -> bool {
        let asked = Instant::now();
        let ttl = u64::try_from(self.hook.lease().as_millis()).unwrap_or(u64::MAX);
        match self.store.hook_lease(&self.hook.name, &self.holder, now_ms(), ttl).await {
            Ok(true) => {
                // From when we asked: the lease runs from the `now_ms` we sent.
                self.renewed = asked;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take or renew the lease");
                false
            }
        }
    }

    /// When the lease is next renewed: a third of the way through it.
    fn renew_due(&self) -> Instant {
        self.renewed + self.hook.lease() / 3
    }

    /// Renews the lease if it is due.
    async fn keep_lease(&mut self) -> Result<(), Exit> {
        if Instant::now() >= self.renew_due() && !self.lease().await {
            return Err(Exit::LeaseLost);
        }
        Ok(())
    }

    /// Waits until `until`, keeping the lease.
    async fn pause(&mut self, until: Instant) -> Result<(), Exit> {
        loop {
            self.keep_lease().await?;
            if Instant::now() >= until {
                return Ok(());
            }
            let wake = until.min(self.renew_due());
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return Err(Exit::Stop),
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Stores the position if it moved and `force` or [`SAVE_EVERY`] has passed.
    async fn save(&mut self, force: bool) -> Result<(), Exit> {
        if self.position <= self.saved || (!force && self.saved_at.elapsed() < SAVE_EVERY) {
            return Ok(());
        }
        match self.store.hook_advance(&self.hook.name, &self.holder, self.position).await {
            Ok(true) => {
                self.saved = self.position;
                self.saved_at = Instant::now();
                Ok(())
            }
            Ok(false) => Err(Exit::LeaseLost),
            Err(e) => {
                // Kept in memory; written with the next save.
                tracing::warn!(error = %e, "cannot store the webhook's position");
                Ok(())
            }
        }
    }

    /// Delivers from the stored position for as long as the lease is held.
    async fn held(&mut self, head: &mut tokio::sync::watch::Receiver<u64>) -> Result<Infallible, Exit> {
        self.position = loop {
            match self.store.hook_position(&self.hook.name).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook's position");
                    self.pause(Instant::now() + STORE_RETRY).await?;
                }
            }
        };
        self.saved = self.position;
        metrics::gauge!("outpost_webhook_position", "webhook" => self.hook.name.clone()).set(self.position.0 as f64);
        let mut head_open = true;
        loop {
            self.keep_lease().await?;
            let page = match self.store.events(self.hook.rooms.clone(), self.position, PAGE).await {
                Ok((page, _)) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the log");
                    self.pause(Instant::now() + STORE_RETRY).await?;
                    continue;
                }
            };
            if page.is_empty() {
                // Caught up: the stored position is exact while nothing happens.
                self.save(true).await?;
                let wake = (Instant::now() + IDLE_POLL).min(self.renew_due());
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return Err(Exit::Stop),
                    changed = head.changed(), if head_open => head_open = changed.is_ok(),
                    () = sleep_until(wake) => {}
                }
                continue;
            }
            for event in page {
                self.send(&event).await?;
                self.save(false).await?;
            }
        }
    }

    /// Sends one event until the endpoint takes it (a 2xx).
    async fn send(&mut self, event: &Positioned) -> Result<(), Exit> {
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                // Cannot happen for a stored message; skipping it would break "every event".
                tracing::error!(cursor = event.cursor.0, error = %e, "cannot encode an event; the webhook is stuck");
                self.stop.cancelled().await;
                return Err(Exit::Stop);
            }
        };
        let labels = [("webhook", self.hook.name.clone())];
        let mut backoff = Backoff::with(self.hook.initial_backoff, self.hook.max_backoff);
        let mut failures = 0u32;
        loop {
            self.keep_lease().await?;
            let outcome = match self.hook.headers(event, &body, now_ms() / 1000) {
                Ok(headers) => tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return Err(Exit::Stop),
                    outcome = self.client.post(&headers, body.clone()) => outcome,
                },
                Err(e) => Outcome::Failed(e),
            };
            if let Outcome::Delivered(status) = outcome {
                tracing::debug!(cursor = event.cursor.0, id = %event.msg.id, %status, "delivered");
                self.position = event.cursor;
                metrics::counter!("outpost_webhook_deliveries_total", &labels).increment(1);
                metrics::gauge!("outpost_webhook_position", &labels).set(event.cursor.0 as f64);
                metrics::gauge!("outpost_webhook_failing", &labels).set(0.0);
                if failures > 0 {
                    tracing::info!(
                        cursor = event.cursor.0,
                        attempts = failures + 1,
                        "the endpoint took the event again"
                    );
                }
                return Ok(());
            }
            failures += 1;
            let delay = backoff.next_delay(getrandom::u64().unwrap_or(0));
            tracing::warn!(
                cursor = event.cursor.0,
                id = %event.msg.id,
                attempt = failures,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                outcome = %outcome,
                "webhook delivery failed"
            );
            metrics::counter!("outpost_webhook_failures_total", &labels).increment(1);
            metrics::gauge!("outpost_webhook_failing", &labels).set(1.0);
            // What went before is delivered: keep it while this one waits.
            self.save(true).await?;
            self.pause(Instant::now() + delay).await?;
        }
    }
}

#[cfg(test)]
mod tests;
