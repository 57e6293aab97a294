//! What an NGO engineer checks at a glance: `/status` (HTML), `/status.json`, and
//! Prometheus metrics at `/metrics`.
//!
//! Gauges (connections, backlog, disk use, uplink state) are computed when asked for, from
//! the router and the store, so nothing has to keep them in step; counters and histograms
//! (messages stored, commit latency and size, link batches) are recorded where the work
//! happens through the `metrics` facade.

use outpost_storage::Storage;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::link::uplink::CLOUD_PEER;
use crate::ws::AppState;
use outpost_storage::{Backlog, RetentionStats};

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder (once; later calls do nothing).
pub(crate) fn install_metrics() {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("outpost_commit_seconds".into()),
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_bytes".into()),
                    &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0],
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("outpost_commit_commands".into()),
                    &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0],
                )
            });
        match builder.and_then(PrometheusBuilder::install_recorder) {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics are not available");
                None
            }
        }
    });
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub version: &'static str,
    pub relay_id: String,
    pub uptime_secs: u64,
    pub epoch: String,
    pub head: u64,
    pub uplink: UplinkView,
    /// What waits for the cloud (hubs with an uplink only).
    pub backlog: Option<Backlog>,
    pub storage: StorageView,
    /// What retention removed (stores with retention only).
    pub retention: Option<RetentionView>,
    pub devices: DevicesView,
    /// HTTPS under the hub's own name (hubs that serve it only).
    pub lan_https: Option<LanHttpsView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LanHttpsView {
    #[serde(flatten)]
    pub cert: crate::lan_cert::LanStatus,
    /// Where phones are sent (while the certificate is valid).
    pub url: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RetentionView {
    /// `storage.retain_days` (0: forever).
    pub retain_days: u32,
    #[serde(flatten)]
    pub stats: RetentionStats,
}

#[derive(Debug, Serialize)]
pub(crate) struct UplinkView {
    pub configured: bool,
    /// The cloud address in use: connected to (`connected`), or else being dialled.
    pub cloud: String,
    /// Every configured address, in the order the hub tries them.
    pub clouds: Vec<String>,
    pub connected: bool,
    /// `quic`, or `tcp` (UDP blocked: the link over TLS on TCP).
    pub transport: &'static str,
    /// Last time a connection to the cloud was established (ms since the Unix epoch).
    pub last_contact: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StorageView {
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub emergency_reserve_bytes: u64,
    /// Past this only emergencies are accepted.
    pub bulk_limit_bytes: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct DevicesView {
    pub connected: usize,
}

async fn collect<S: Storage>(hub: &Hub<S>) -> Status {
    let cfg = &hub.config;
    let uplink = hub.uplink.lock().map(|u| u.clone()).unwrap_or_default();
    let configured = !cfg.uplink.cloud.is_empty();
    let backlog = if configured {
        match hub.store.backlog(CLOUD_PEER).await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the backlog");
                None
            }
        }
    } else {
        None
    };
    Status {
        version: env!("CARGO_PKG_VERSION"),
        relay_id: cfg.identity.relay_id.clone(),
        uptime_secs: hub.uptime().as_secs(),
        epoch: hub.store.epoch().0.clone(),
        head: hub.store.head().0,
        uplink: UplinkView {
            configured,
            // Before the first attempt: the address it will dial first.
            cloud: uplink.address.or_else(|| cfg.uplink.cloud.first().cloned()).unwrap_or_default(),
            clouds: cfg.uplink.cloud.clone(),
            connected: uplink.connected,
            transport: if uplink.transport.is_empty() { "quic" } else { uplink.transport },
            last_contact: uplink.last_contact,
            last_error: uplink.last_error,
        },
        backlog,
        storage: StorageView {
            used_bytes: hub.store.used_bytes(),
            quota_bytes: cfg.storage.quota_bytes,
            emergency_reserve_bytes: cfg.storage.emergency_reserve_bytes,
            bulk_limit_bytes: cfg.storage.quota_bytes.saturating_sub(cfg.storage.emergency_reserve_bytes),
        },
        retention: hub
            .store
            .retention()
            .await
            .map(|stats| RetentionView { retain_days: cfg.storage.retain_days, stats }),
        devices: DevicesView { connected: hub.router.session_count() },
        lan_https: hub.lan.get().map(|l| {
            let now = crate::clock::now_secs();
            LanHttpsView { cert: l.cert.status(now), url: l.origin(now) }
        }),
    }
}

pub(crate) async fn json<S: Storage>(State((hub, _)): State<AppState<S>>) -> Json<Status> {
    Json(collect(&hub).await)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let secs = now_ms().saturating_sub(t) / 1000;
            match secs {
                0..=59 => format!("{secs} s ago"),
                60..=3599 => format!("{} min ago", secs / 60),
                3600..=86_399 => format!("{} h {} min ago", secs / 3600, secs % 3600 / 60),
                _ => format!("{} days ago", secs / 86_400),
            }
        }
    }
}

/// A Unix time as a UTC date and time (the status page is read by people).
fn date(secs: Option<u64>) -> String {
    let Some(secs) = secs else { return "—".into() };
    let days = secs / 86_400;
    let (y, m, d) = civil(i64::try_from(days).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs % 86_400 / 3600, secs % 3600 / 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn mib(b: u64) -> String {
    if b < 1_048_576 { format!("{:.1} KiB", b as f64 / 1024.0) } else { format!("{:.1} MiB", b as f64 / 1_048_576.0) }
}

pub(crate) async fn page<S: Storage>(State((hub, _)): State<AppState<S>>) -> Html<String> {
    let s = collect(&hub).await;
    // With several addresses, which one of them (the hub returns to the first by itself).
    let of = match s.uplink.clouds.iter().position(|a| *a == s.uplink.cloud) {
        Some(i) if s.uplink.clouds.len() > 1 => {
            format!(" (address {} of {}: {})", i + 1, s.uplink.clouds.len(), esc(&s.uplink.clouds.join(", ")))
        }
        _ => String::new(),
    };
    let uplink = if !s.uplink.configured {
        "no cloud configured".to_owned()
    } else if s.uplink.connected {
        let over = if s.uplink.transport == "tcp" { " over TCP (UDP does not pass; QUIC is tried again)" } else { "" };
        format!("<b class=ok>connected</b> to {}{of}{over}", esc(&s.uplink.cloud))
    } else {
        format!(
            "<b class=bad>not connected</b> to {}{of}{}",
            esc(&s.uplink.cloud),
            s.uplink.last_error.as_deref().map(|e| format!(" — {}", esc(e))).unwrap_or_default()
        )
    };
    let backlog = match &s.backlog {
        None => "<tr><th>Waiting for the cloud</th><td>—</td></tr>".to_owned(),
        Some(b) => format!(
            "<tr><th>Waiting for the cloud</th><td>{} messages ({}), {} receipts, {} photos/voice notes/documents ({})</td></tr>\
             <tr><th>Oldest waiting</th><td>{}</td></tr>\
             <tr><th>Oldest waiting emergency</th><td>{}</td></tr>",
            b.messages,
            mib(b.bytes),
            b.receipts,
            b.files,
            mib(b.file_bytes),
            ago(b.oldest_at),
            b.oldest_emergency_at.map_or_else(|| "none".to_owned(), |t| format!("<b class=bad>{}</b>", ago(Some(t))))
        ),
    };
    let retention = match &s.retention {
        None => String::new(),
        Some(r) => format!(
            "<tr><th>Retention</th><td>{}; removed {} by age, {} to stay under the quota (last {})</td></tr>\
             <tr><th>Oldest message held</th><td>{}</td></tr>",
            if r.retain_days == 0 {
                "keeps messages forever".to_owned()
            } else {
                format!("confirmed messages kept {} days", r.retain_days)
            },
            r.stats.pruned_by_age,
            r.stats.pruned_by_quota,
            ago(r.stats.last_prune_at),
            r.stats.oldest_held_at.map_or_else(|| "none".to_owned(), |t| ago(Some(t))),
        ),
    };
    let lan = match &s.lan_https {
        None => String::new(),
        Some(l) => {
            let insecure = "phones use plain HTTP: no offline use, no encrypted rooms";
            let state = match (l.cert.state, &l.url) {
                ("valid", Some(url)) => format!(
                    "<b class=ok>valid</b> for {name} until {until}; phones are sent to <a href='{url}/'>{url}/</a>",
                    name = esc(l.cert.name.as_deref().unwrap_or_default()),
                    until = date(l.cert.not_after),
                    url = esc(url),
                ),
                ("expired", _) => format!("<b class=bad>expired</b> on {}; {insecure}", date(l.cert.not_after)),
                _ if l.cert.name.is_none() => format!("<b class=bad>no name from the cloud yet</b>; {insecure}"),
                _ => format!("<b class=bad>no certificate yet</b>; {insecure}"),
            };
            format!(
                "<tr><th>LAN HTTPS</th><td>{state}{error}</td></tr><tr><th>Last certificate renewal</th><td>{renewed}</td></tr>",
                error =
                    l.cert.last_error.as_deref().map(|e| format!(" — last request: {}", esc(e))).unwrap_or_default(),
                renewed = ago(l.cert.last_renewal.map(|t| t * 1000)),
            )
        }
    };
    let used_pct = s.storage.used_bytes as f64 * 100.0 / s.storage.quota_bytes.max(1) as f64;
    let disk_class = if s.storage.used_bytes >= s.storage.bulk_limit_bytes { "bad" } else { "ok" };
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <meta http-equiv=refresh content=10><title>Outpost hub status</title>\
         <style>body{{font:16px system-ui,sans-serif;margin:1rem;max-width:40rem}}th{{text-align:left;padding-right:1rem}}\
         td,th{{padding:.3rem 0;vertical-align:top}}.ok{{color:#17663a}}.bad{{color:#b00020}}</style></head><body>\
         <h1>Outpost hub {relay}</h1><table>\
         <tr><th>Uplink</th><td>{uplink}</td></tr>\
         <tr><th>Last contact with the cloud</th><td>{contact}</td></tr>\
         {lan}\
         {backlog}\
         <tr><th>Disk</th><td class={disk_class}>{used} of {quota} ({used_pct:.1} %); only emergencies past {limit}</td></tr>\
         {retention}\
         <tr><th>Connected devices</th><td>{devices}</td></tr>\
         <tr><th>Version</th><td>{version}</td></tr>\
         <tr><th>Up for</th><td>{uptime}</td></tr>\
         <tr><th>Database</th><td>epoch {epoch}, head {head}</td></tr>\
         </table><p><a href=/status.json>status.json</a> · <a href=/metrics>metrics</a></p></body></html>",
        relay = esc(&s.relay_id),
        contact = ago(s.uplink.last_contact),
        used = mib(s.storage.used_bytes),
        quota = mib(s.storage.quota_bytes),
        limit = mib(s.storage.bulk_limit_bytes),
        devices = s.devices.connected,
        version = s.version,
        uptime = ago(Some(now_ms().saturating_sub(s.uptime_secs * 1000))).trim_end_matches(" ago"),
        epoch = esc(&s.epoch),
        head = s.head,
    ))
}

pub(crate) async fn metrics<S: Storage>(State((hub, _)): State<AppState<S>>) -> Response {
    let Some(Some(handle)) = METRICS.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not available\n").into_response();
    };
    let s = collect(&hub).await;
    metrics::gauge!("outpost_connections").set(s.devices.connected as f64);
    if let Some(l) = &s.lan_https {
        // Alert on this: expiry minus now below a few days means renewal keeps failing.
        metrics::gauge!("outpost_lan_cert_not_after_seconds").set(l.cert.not_after.unwrap_or(0) as f64);
    }
    metrics::gauge!("outpost_storage_used_bytes").set(s.storage.used_bytes as f64);
    metrics::gauge!("outpost_storage_quota_bytes").set(s.storage.quota_bytes as f64);
    metrics::gauge!("outpost_log_head").set(s.head as f64);
    if s.uplink.configured {
        metrics::gauge!("outpost_uplink_connected").set(if s.uplink.connected { 1.0 } else { 0.0 });
        let tcp = s.uplink.connected && s.uplink.transport == "tcp";
        metrics::gauge!("outpost_uplink_tcp").set(if tcp { 1.0 } else { 0.0 });
        // One series per configured address: 1 for the one connected to.
        for address in &s.uplink.clouds {
            let on = s.uplink.connected && *address == s.uplink.cloud;
            metrics::gauge!("outpost_uplink_cloud", "address" => address.clone()).set(if on { 1.0 } else { 0.0 });
        }
    }
    if let Some(r) = &s.retention {
        // The counters `outpost_retention_pruned_total{reason}` are kept by the store.
        let oldest = r.stats.oldest_held_at.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0);
        metrics::gauge!("outpost_retention_oldest_held_age_seconds").set(oldest);
        let last = r.stats.last_prune_at.map_or(0.0, |t| t as f64 / 1000.0);
        metrics::gauge!("outpost_retention_last_prune_timestamp_seconds").set(last);
    }
    if let Some(b) = &s.backlog {
        metrics::gauge!("outpost_backlog_messages").set(b.messages as f64);
        metrics::gauge!("outpost_backlog_bytes").set(b.bytes as f64);
        metrics::gauge!("outpost_backlog_receipts").set(b.receipts as f64);
        metrics::gauge!("outpost_backlog_files").set(b.files as f64);
        metrics::gauge!("outpost_backlog_file_bytes").set(b.file_bytes as f64);
        let age = b.oldest_at.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0);
        metrics::gauge!("outpost_backlog_oldest_age_seconds").set(age);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
