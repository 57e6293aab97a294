//! The cloud's settings: one serde tree with documented defaults, kept in `DIR/cloud.toml`.
//!
//! Layers, later winning: the defaults of [`CloudConfig::default`] → `DIR/cloud.toml` →
//! `OUTPOST_CLOUD_...` environment variables (`__` separates levels:
//! `OUTPOST_CLOUD_STORAGE__QUOTA_BYTES=2147483648`) → the flags of `outpost-cloud run`.
//! Every `OUTPOST_CLOUD_` variable is read as configuration, so a misspelt one is an error.
//! [`CloudConfig::load_with`] reports every problem at once, before anything binds; `run`
//! exits with code 64 on any of them. The loading is the engine's ([`Layers`]), as are the
//! sections the engine runs ([`LimitsConfig`], [`MediaConfig`], [`SecurityConfig`]) and
//! their checks, so hub and cloud take the same keys in the same words.
//!
//! `cloud.toml` also holds `cloud_id` at its top level: the cloud's identity, written by
//! `init` and read by [`crate::identity`]; here it is only accepted. This module does not
//! know the identity: `server::engine_config` joins the two into what the engine runs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_engine::config::{
    CLOUD_ENV_PREFIX, ConfigError, LIST_KEYS, Layers, LimitsConfig, MediaConfig, SecurityConfig, TestingConfig,
    tls_pair_problem,
};
use outpost_engine::lan_tls::{LanTls, LanTlsError};
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// The sections of `cloud.toml` (`webhooks` is a list of tables: `[[webhooks]]`).
const SECTIONS: [&str; 9] =
    ["server", "storage", "limits", "media", "security", "policy", "webhooks", "acme", "testing"];

/// The top-level key that is the cloud's identity, not a setting.
const CLOUD_ID: &str = "cloud_id";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// Device connections and messages on the doctors' listener, as on a hub.
    pub limits: LimitsConfig,
    /// Photos, voice notes and documents, as on a hub, but kept forever by default.
    pub media: MediaConfig,
    pub security: SecurityConfig,
    /// Role rules for the doctors' listener and the HTTP API (docs/security.md).
    pub policy: outpost_shared::Policy,
    /// Endpoints of hospital systems that get every message (of their rooms) POSTed to
    /// them (docs/integration.md). None by default. Only in `cloud.toml`: a list of
    /// tables has no form as environment variables.
    pub webhooks: Vec<WebhookConfig>,
    /// LAN certificates for the hubs from an ACME CA (docs/operations.md, "HTTPS on the
    /// LAN"). Off by default.
    pub acme: crate::acme::AcmeConfig,
    /// Hooks for scenario tests; never set on a deployed cloud.
    pub testing: TestingConfig,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            // The hospital is the end of the line: what it drops, no one else holds.
            media: MediaConfig { retention_days: 0, ..MediaConfig::default() },
            security: SecurityConfig::default(),
            policy: outpost_shared::Policy::default(),
            webhooks: Vec::new(),
            acme: crate::acme::AcmeConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

/// A webhook secret: kept out of `Debug` output (and so out of logs).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The shortest secret accepted, in bytes: HMAC-SHA256 with a shorter key is open to a
/// brute-force search of the key from one signed request.
pub const MIN_SECRET_BYTES: usize = 16;

/// One `[[webhooks]]` entry: where to POST events, how to sign them, and how patiently.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Names the endpoint in the database (its delivery position), in logs, metrics and
    /// the `X-Outpost-Webhook` header: 1 to 64 of `a-z 0-9 - _`, unique. Renaming an
    /// endpoint starts it again from the beginning of the log.
    pub name: String,
    /// `http://` or `https://` URL events are POSTed to.
    pub url: String,
    /// The HMAC-SHA256 key requests are signed with (at least [`MIN_SECRET_BYTES`]).
    /// Set this or `secret_file`, not both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A file holding the secret (surrounding whitespace is ignored), relative to the
    /// cloud directory: keeps the secret out of `cloud.toml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Only messages of these rooms; not set: every room's messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<outpost_shared::RoomId>>,
    /// For `https://`: trust only the CA certificates in this PEM file (a hospital's own
    /// CA), relative to the cloud directory; not set: the system's trusted roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for the TCP connection, ms.
    pub connect_timeout_ms: u64,
    /// Longest one attempt may take, connecting and the whole response included, ms.
    pub request_timeout_ms: u64,
    /// Wait after the first failed attempt, ms; it doubles with each failure in a row.
    pub initial_backoff_ms: u64,
    /// The longest wait between attempts, ms.
    pub max_backoff_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            secret: None,
            secret_file: None,
            rooms: None,
            ca_file: None,
            // A system on the hospital's network answers a connection at once; 5 s
            // allows for a slow resolver without leaving a dead address long unnoticed.
            connect_timeout_ms: 5_000,
            // Receivers should answer before processing; 15 s allows for a slow one.
            request_timeout_ms: 15_000,
            initial_backoff_ms: 1_000,
            // An endpoint down for hours is tried every 5 minutes, and is back in use
            // at most that long after it returns.
            max_backoff_ms: 300_000,
        }
    }
}

/// Whether `name` is usable as a webhook's name.
fn is_hook_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl WebhookConfig {
    /// What is wrong with the values of entry `i` (files are checked by [`Self::secret_bytes`]).
    pub fn problems(&self, i: usize) -> Vec<String> {
        let at = if self.name.is_empty() { format!("webhooks[{i}]") } else { format!("webhooks[{i}] ({})", self.name) };
        let mut p = Vec::new();
        if !is_hook_name(&self.name) {
            p.push(format!("{at}: name = {:?} must be 1 to 64 of a-z, 0-9, - and _", self.name));
        }
        match self.url.parse::<axum::http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty()) => {}
            _ => p.push(format!("{at}: url = {:?} is not an http:// or https:// URL with a host", self.url)),
        }
        match (&self.secret, &self.secret_file) {
            (None, None) => p.push(format!("{at}: set secret (or secret_file): every request is signed with it")),
            (Some(_), Some(_)) => p.push(format!("{at}: set secret or secret_file, not both")),
            (Some(s), None) if s.0.len() < MIN_SECRET_BYTES => {
                p.push(format!("{at}: secret must be at least {MIN_SECRET_BYTES} bytes long"));
            }
            _ => {}
        }
        if self.rooms.as_ref().is_some_and(Vec::is_empty) {
            p.push(format!("{at}: rooms = [] would deliver nothing; leave rooms out for every room"));
        }
        for (key, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("initial_backoff_ms", self.initial_backoff_ms),
        ] {
            if v == 0 {
                p.push(format!("{at}: {key} must be greater than 0"));
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            p.push(format!("{at}: max_backoff_ms must not be less than initial_backoff_ms"));
        }
        p
    }

    /// The secret, from `secret` or from `secret_file` (relative to `dir`).
    pub fn secret_bytes(&self, dir: &Path) -> Result<Vec<u8>, String> {
        let name = &self.name;
        match (&self.secret, &self.secret_file) {
            (Some(s), _) => Ok(s.0.as_bytes().to_vec()),
            (None, Some(file)) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("webhooks ({name}): secret_file = {}: cannot read it: {e}", path.display()))?;
                let secret = text.trim();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "webhooks ({name}): the secret in {} must be at least {MIN_SECRET_BYTES} bytes long",
                        path.display()
                    ));
                }
                Ok(secret.as_bytes().to_vec())
            }
            (None, None) => Err(format!("webhooks ({name}): no secret")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The WebSocket and HTTP listener for doctors' browsers and hospital systems
    /// (`/ws`, `/api/...`), `HOST:PORT`. Not set by default: set it here or give `--ws`,
    /// which overrides it.
    pub listen: String,
    /// The QUIC endpoint relays connect to (UDP), `IP:PORT`. Not set by default: set it
    /// here or give `--quic`, which overrides it.
    pub quic_listen: String,
    /// The relays' TCP path, for hubs whose network drops UDP (TLS on TCP carrying the
    /// same link), `IP:PORT`. Empty (the default): `quic_listen`'s address, on TCP; `off`:
    /// none. `--tcp` overrides it.
    pub tcp_listen: String,
    /// Serve `listen` over TLS (HTTPS, `wss://`) with this certificate (PEM chain, the
    /// server's certificate first); relative paths are inside the cloud directory. Set
    /// both `tls_cert` and `tls_key`, or neither. `--tls-cert`/`--tls-key` override both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long a graceful shutdown waits for sessions to close, seconds. Kept well under
    /// systemd's `TimeoutStopSec` so the store is always flushed before a hard kill.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            quic_listen: String::new(),
            tcp_listen: String::new(),
            tls_cert: None,
            tls_key: None,
            shutdown_grace_secs: 10,
        }
    }
}

/// The cloud's database: `DIR/data/cloud.db` (its identity's layout, SQLite, the embedded
/// default), or the PostgreSQL database named by `database`, shared by every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `postgres://USER@HOST:PORT/DB`: run on PostgreSQL, as one of several nodes
    /// (docs/scaling.md). Unset: SQLite in `DIR/data/cloud.db`.
    pub database: Option<String>,
    /// Most bytes the database and the media files together may use. Past
    /// `quota_bytes - emergency_reserve_bytes` only emergency messages are accepted
    /// (`storage_full` for the rest).
    pub quota_bytes: u64,
    /// Space kept back for emergencies when the quota is nearly reached.
    pub emergency_reserve_bytes: u64,
    /// Most commands committed in one transaction (group commit).
    pub max_batch: usize,
    /// Database reads that run at once for devices, and as many again for relays' links.
    pub readers: usize,
    /// On PostgreSQL, where media bytes are rows too: most bytes of a blob or an
    /// unfinished upload in one row. A chunk on its way in holds up to this much in
    /// memory per upload, and a range read fetches whole rows' worth at most; the default
    /// is the web client's upload chunk. Unused on SQLite (media are files).
    pub blob_chunk_bytes: usize,
    /// On PostgreSQL: connections that commit hubs' batches at once, beside the writer
    /// (0: hubs' batches go through the writer, one transaction at a time).
    pub import_writers: usize,
    /// On PostgreSQL: most entries of hubs' batches in one of those transactions.
    pub import_group_entries: usize,
    /// Days messages are kept; 0 (the default) keeps everything forever. The cloud is
    /// the long-term record: past this, a message goes only once every hub serving its
    /// room holds it, never in a room under legal hold (`outpost-cloud hold`), on SQLite
    /// and on PostgreSQL alike.
    pub retain_days: u32,
}

/// Most `storage.import_writers`: each is a PostgreSQL connection holding a transaction,
/// and past the server's cores more only wait for each other.
const MAX_IMPORT_WRITERS: usize = 64;

/// Smallest `storage.blob_chunk_bytes`: below this a row's own overhead and the number
/// of rows per photo (index entries, round trips) outweigh what it saves in memory.
const MIN_BLOB_CHUNK_BYTES: usize = 16 << 10;
/// Largest `storage.blob_chunk_bytes`: a node holds one such piece per upload in flight,
/// and PostgreSQL moves a row in one message.
const MAX_BLOB_CHUNK_BYTES: usize = 16 << 20;

impl Default for StorageConfig {
    fn default() -> Self {
        let hub = outpost_engine::config::StorageConfig::default();
        Self {
            database: None,
            quota_bytes: hub.quota_bytes,
            emergency_reserve_bytes: hub.emergency_reserve_bytes,
            max_batch: hub.max_batch,
            readers: hub.readers,
            blob_chunk_bytes: outpost_store_postgres::DEFAULT_BLOB_CHUNK_BYTES,
            import_writers: outpost_store_postgres::DEFAULT_IMPORT_WRITERS,
            import_group_entries: outpost_store_postgres::DEFAULT_IMPORT_GROUP_ENTRIES,
            retain_days: 0,
        }
    }
}

impl StorageConfig {
    /// The engine's storage settings with the database at `path`.
    pub fn engine(&self, path: PathBuf) -> outpost_engine::config::StorageConfig {
        outpost_engine::config::StorageConfig {
            path,
            quota_bytes: self.quota_bytes,
            emergency_reserve_bytes: self.emergency_reserve_bytes,
            max_batch: self.max_batch,
            readers: self.readers,
            retain_days: self.retain_days,
            // The cloud is the record of last resort: never pruned for space.
            prune_above_percent: 0,
            ..outpost_engine::config::StorageConfig::default()
        }
    }

    /// What is wrong with the PostgreSQL settings (`database`, `blob_chunk_bytes`, the
    /// importers).
    pub fn database_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(url) = &self.database
            && let Err(e) = outpost_store_postgres::parse_url(url)
        {
            p.push(format!("storage.database: {e}"));
        }
        if self.import_writers > MAX_IMPORT_WRITERS {
            p.push(format!("storage.import_writers = {} must be at most {MAX_IMPORT_WRITERS}", self.import_writers));
        }
        if self.import_group_entries == 0 {
            p.push("storage.import_group_entries must be greater than 0".into());
        }
        if !(MIN_BLOB_CHUNK_BYTES..=MAX_BLOB_CHUNK_BYTES).contains(&self.blob_chunk_bytes) {
            p.push(format!(
                "storage.blob_chunk_bytes = {} must be between {MIN_BLOB_CHUNK_BYTES} and {MAX_BLOB_CHUNK_BYTES}",
                self.blob_chunk_bytes
            ));
        }
        p
    }
}

/// `HOST:PORT` with a valid port (the host is resolved when binding, as `--ws` always was).
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl CloudConfig {
    /// The cloud's layers: `dir/cloud.toml`, then every `OUTPOST_CLOUD_` variable.
    fn layers(dir: &Path) -> Layers<'static> {
        Layers {
            file: Layout::new(dir).config(),
            env_prefix: CLOUD_ENV_PREFIX,
            env_skip: &[],
            list_keys: &LIST_KEYS,
            sections: &SECTIONS,
            top_keys: &[CLOUD_ID],
        }
    }

    /// Loads defaults → `dir/cloud.toml` → `OUTPOST_CLOUD_` environment, applies
    /// `overrides` (the flags), then checks every value and the TLS files.
    pub fn load_with(dir: &Path, overrides: impl FnOnce(&mut CloudConfig)) -> Result<Self, ConfigError> {
        Self::load_from(dir, std::env::vars_os(), overrides)
    }

    /// The PostgreSQL database named by `cloud.toml` and the environment
    /// (`storage.database`), for the one-shot commands, which need nothing else of the
    /// configuration (a server's listen addresses may well be given as flags only).
    pub fn database(dir: &Path) -> Result<Option<String>, ConfigError> {
        Ok(Self::storage(dir)?.database)
    }

    /// The `[storage]` settings of `cloud.toml` and the environment alone, checked (for
    /// the one-shot commands, as [`CloudConfig::database`]).
    pub fn storage(dir: &Path) -> Result<StorageConfig, ConfigError> {
        let mut layered = Self::layers(dir).read(Some(&CloudConfig::default()), std::env::vars_os())?;
        let storage: StorageConfig = layered.section("storage");
        let mut problems = std::mem::take(&mut layered.problems);
        problems.extend(storage.database_problems());
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(storage)
    }

    /// [`CloudConfig::load_with`] with the environment given.
    pub fn load_from(
        dir: &Path,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        overrides: impl FnOnce(&mut CloudConfig),
    ) -> Result<Self, ConfigError> {
        // The cloud's own defaults are the bottom layer: a file that sets one `[media]`
        // key keeps the cloud's `retention_days = 0`, not the hub's default.
        let mut layered = Self::layers(dir).read(Some(&CloudConfig::default()), env)?;
        let mut cfg = CloudConfig {
            server: layered.section("server"),
            storage: layered.section("storage"),
            limits: layered.section("limits"),
            media: layered.section("media"),
            security: layered.section("security"),
            policy: layered.section("policy"),
            webhooks: layered.section("webhooks"),
            acme: layered.section("acme"),
            testing: layered.section("testing"),
        };
        let mut problems = std::mem::take(&mut layered.problems);
        if layered.from_env(CLOUD_ID) {
            problems.push(format!(
                "{CLOUD_ENV_PREFIX}_CLOUD_ID: cloud_id names this cloud in every token and certificate; \
                 it is written by `outpost-cloud init` into cloud.toml and cannot be set from the environment"
            ));
        }
        overrides(&mut cfg);
        problems.extend(cfg.problems());
        // The files are read now too, so a bad certificate stops the cloud before it binds.
        if let Err(e) = cfg.tls(dir) {
            problems.push(e.to_string());
        }
        for hook in &cfg.webhooks {
            if hook.secret.is_none()
                && hook.secret_file.is_some()
                && let Err(e) = hook.secret_bytes(dir)
            {
                problems.push(e);
            }
            if let Some(ca) = &hook.ca_file
                && let Err(e) = crate::webhooks::client::load_ca(&dir.join(ca))
            {
                problems.push(format!("webhooks ({}): {e}", hook.name));
            }
        }
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError { problems }) }
    }

    /// Checks values (not syntax) and lists every problem.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let s = &self.server;
        if s.listen.is_empty() {
            p.push("server.listen is not set: give `--ws ADDR` or set `listen` in [server] of cloud.toml".into());
        } else if !is_host_port(&s.listen) {
            p.push(format!("server.listen = {:?} is not an address like 0.0.0.0:8443", s.listen));
        }
        if s.quic_listen.is_empty() {
            p.push(
                "server.quic_listen is not set: give `--quic ADDR` or set `quic_listen` in [server] of cloud.toml"
                    .into(),
            );
        } else if s.quic_listen.parse::<SocketAddr>().is_err() {
            p.push(format!("server.quic_listen = {:?} is not an address like 0.0.0.0:4433", s.quic_listen));
        }
        if !matches!(s.tcp_listen.as_str(), "" | "off") && s.tcp_listen.parse::<SocketAddr>().is_err() {
            p.push(format!("server.tcp_listen = {:?} is not an address like 0.0.0.0:4433 (or \"off\")", s.tcp_listen));
        }
        p.extend(tls_pair_problem(s.tls_cert.is_some(), s.tls_key.is_some()));
        p.extend(self.storage.engine(PathBuf::new()).problems());
        p.extend(self.storage.database_problems());
        p.extend(self.limits.problems());
        p.extend(self.security.problems());
        p.extend(self.media.problems());
        p.extend(self.acme.problems());
        for (i, hook) in self.webhooks.iter().enumerate() {
            p.extend(hook.problems(i));
            if self.webhooks[..i].iter().any(|h| h.name == hook.name) {
                p.push(format!("webhooks[{i}]: name {:?} is used twice; each endpoint needs its own", hook.name));
            }
        }
        p
    }

    /// The QUIC address, once [`CloudConfig::problems`] found none.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.server.quic_listen.parse().ok()
    }

    /// The relays' TCP path address: `tcp_listen`, `quic_listen`'s when empty, none when
    /// `off`.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self.server.tcp_listen.as_str() {
            "off" => None,
            "" => self.quic_addr(),
            a => a.parse().ok(),
        }
    }

    /// The listener's TLS from `server.tls_cert`/`tls_key` (relative to `dir`), or `None`
    /// when they are not both set.
    pub fn tls(&self, dir: &Path) -> Result<Option<LanTls>, LanTlsError> {
        let (Some(cert), Some(key)) = (&self.server.tls_cert, &self.server.tls_key) else { return Ok(None) };
        let timeout = Duration::from_secs(self.limits.tls_handshake_timeout_secs);
        LanTls::load(&dir.join(cert), &dir.join(key), timeout).map(Some)
    }
}

/// The `cloud.toml` that `init` writes: the cloud id and `[policy]` at its defaults, as
/// `init` always wrote them (operators and scripts edit `[policy]` in place), then every
/// other setting commented out at its default, so an operator sees what there is to change.
pub fn new_file(cloud_id: &str) -> String {
    #[derive(Serialize)]
    struct Written<'a> {
        cloud_id: &'a str,
        policy: outpost_shared::Policy,
    }
    let written = Written { cloud_id, policy: outpost_shared::Policy::default() };
    let mut out = String::from(
        "# Outpost cloud, created by `outpost-cloud init`. Settings: docs/configuration.md,\n\
         # \"The cloud\". Variables OUTPOST_CLOUD_<SECTION>__<KEY> override this file, and the\n\
         # flags of `outpost-cloud run` (--ws, --quic, --tls-cert, --tls-key) override both.\n\
         # `cloud_id` names this cloud in its tokens and certificates: never change it.\n",
    );
    out.push_str(&toml::to_string(&written).unwrap_or_default());
    out.push_str("\n# Other settings at their defaults. Uncomment a line, and its [section], to change it.\n");
    #[derive(Serialize)]
    struct Rest {
        server: ServerConfig,
        storage: StorageConfig,
        limits: LimitsConfig,
        media: MediaConfig,
        security: SecurityConfig,
    }
    let d = CloudConfig::default();
    let rest = Rest { server: d.server, storage: d.storage, limits: d.limits, media: d.media, security: d.security };
    for line in toml::to_string(&rest).unwrap_or_default().lines() {
        if line.is_empty() {
            out.push('\n');
            continue;
        }
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
        if line == "[server]" {
            out.push_str(
                "# (listen: the WebSocket/HTTP address, e.g. \"0.0.0.0:8443\"; quic_listen: the relays' QUIC\n",
            );
            out.push_str("# address, e.g. \"0.0.0.0:4433\"; both unset by default, for --ws and --quic to give.)\n");
        }
    }
    out.push_str(
        "\n# Webhooks (none by default): every message of `rooms` (leave it out for every room)\n\
         # POSTed to a hospital system, signed with the secret; see docs/integration.md.\n\
         # Repeat the table for each endpoint.\n\
         # [[webhooks]]\n\
         # name = \"his\"\n\
         # url = \"https://his.example.org/outpost/events\"\n\
         # secret_file = \"keys/his.webhook-secret\"\n\
         # rooms = [\"ward-3\"]\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    fn dir_with(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("cloud.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    fn listeners(c: &mut CloudConfig) {
        c.server.listen = "127.0.0.1:0".into();
        c.server.quic_listen = "127.0.0.1:0".into();
    }

    fn problems(dir: &Path, vars: &[(&str, &str)]) -> String {
        CloudConfig::load_from(dir, env(vars), listeners).err().map(|e| e.problems.join("\n")).unwrap_or_default()
    }

    #[test]
    fn defaults_are_todays_cloud() {
        let c = CloudConfig::default();
        assert_eq!(c.storage.quota_bytes, 8 << 30, "8 GiB, media included");
        assert_eq!(c.storage.emergency_reserve_bytes, 64 << 20);
        assert_eq!(c.media.retention_days, 0, "the hospital keeps every file");
        assert_eq!(c.limits.rate_per_sec, LimitsConfig::default().rate_per_sec);
        assert!(c.server.listen.is_empty() && c.server.quic_listen.is_empty());
    }

    #[test]
    fn a_file_written_by_an_earlier_init_still_loads() {
        // Exactly what `init` wrote before the cloud had settings.
        let old = "# Outpost cloud, created by `outpost-cloud init`.\ncloud_id = \"cloud-0a1b2c3d\"\n\n[policy]\n\
                   send_roles = [\"worker\", \"doctor\", \"supervisor\"]\nemergency_roles = [\"worker\", \"doctor\", \"supervisor\"]\n\
                   emergency_rooms = []\nhistory_roles = [\"worker\", \"doctor\", \"supervisor\"]\n\
                   participate_roles = [\"worker\", \"doctor\", \"supervisor\"]\naudit_roles = [\"admin\"]\nencrypted_rooms = []\n";
        let dir = dir_with(old);
        let c = CloudConfig::load_from(dir.path(), env(&[]), listeners).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.policy, outpost_shared::Policy::default());
        assert_eq!(c.storage.quota_bytes, 8 << 30);
        // And with no [policy] at all.
        let dir = dir_with("cloud_id = \"cloud-0a1b2c3d\"\n");
        assert!(CloudConfig::load_from(dir.path(), env(&[]), listeners).is_ok());
    }

    #[test]
    fn the_file_init_writes_loads_as_the_defaults() {
        let text = new_file("cloud-0a1b2c3d");
        assert!(text.contains("cloud_id = \"cloud-0a1b2c3d\"\n"), "{text}");
        assert!(text.contains("\n[policy]\n") && text.contains("\nencrypted_rooms = []\n"), "as before: {text}");
        assert!(text.contains("# quota_bytes = 8589934592"), "{text}");
        let dir = dir_with(&text);
        let c = CloudConfig::load_from(dir.path(), env(&[]), listeners).unwrap_or_else(|e| panic!("{e}"));
        let d = CloudConfig::default();
        assert_eq!((c.storage.quota_bytes, c.media.retention_days), (d.storage.quota_bytes, d.media.retention_days));
        // Uncommenting a whole section works as the comment says.
        let dir = dir_with(&text.replace("# [storage]\n", "[storage]\n").replace("# quota_bytes =", "quota_bytes ="));
        let c = CloudConfig::load_from(dir.path(), env(&[]), listeners).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.storage.quota_bytes, 8 << 30);
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        let dir = dir_with(
            "cloud_id = \"c\"\n[server]\nlisten = \"0.0.0.0:8443\"\nquic_listen = \"0.0.0.0:4433\"\n\
             [storage]\nquota_bytes = 2147483648\nemergency_reserve_bytes = 1000000\n\
             [media]\nmax_blob_bytes = 1000000\n[limits]\nrate_per_sec = 5\n",
        );
        let vars = [
            ("OUTPOST_CLOUD_STORAGE__EMERGENCY_RESERVE_BYTES", "2000000"),
            ("OUTPOST_CLOUD_MEDIA__RETENTION_DAYS", "90"),
            ("OUTPOST_CLOUD_POLICY__EMERGENCY_ROLES", "doctor,supervisor"),
            // The hub's variables are not the cloud's business.
            ("OUTPOST_LIMITS__MAX_DEVICES", "0"),
        ];
        let c = CloudConfig::load_from(dir.path(), env(&vars), |c| c.server.quic_listen = "127.0.0.1:0".into())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.storage.quota_bytes, 2 << 30, "from the file");
        assert_eq!(c.storage.emergency_reserve_bytes, 2_000_000, "the environment over the file");
        assert_eq!(c.media.max_blob_bytes, 1_000_000, "from the file");
        assert_eq!(c.media.retention_days, 90, "from the environment");
        assert_eq!(c.media.preview_quality, MediaConfig::default().preview_quality, "a default");
        assert_eq!(c.limits.rate_per_sec, 5);
        assert_eq!(c.limits.max_devices, LimitsConfig::default().max_devices);
        assert_eq!(c.policy.emergency_roles, [outpost_shared::Role::Doctor, outpost_shared::Role::Supervisor]);
        assert_eq!(c.server.listen, "0.0.0.0:8443", "from the file");
        assert_eq!(c.server.quic_listen, "127.0.0.1:0", "the flag over the file");
    }

    #[test]
    fn one_media_key_in_the_file_keeps_the_clouds_retention() {
        let dir = dir_with("cloud_id = \"c\"\n[media]\nmax_blob_bytes = 1000000\n");
        let c = CloudConfig::load_from(dir.path(), env(&[]), listeners).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.media.retention_days, 0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = dir_with(
            "cloud_id = \"c\"\n[storage]\nquota_bytes = 1000\nemergency_reserve_bytes = 2000\nreaders = 0\n\
             blob_chunk_bytes = 100\nimport_writers = 65\nimport_group_entries = 0\n[limits]\nmax_devices = 0\nidle_timeout_secs = 5\nping_interval_secs = 10\n\
             [media]\npreview_quality = 0\nretention_dayz = 3\n[bogus]\nx = 1\n",
        );
        let all = problems(dir.path(), &[("OUTPOST_CLOUD_SECURITY__REVOCATION_POLL_MS", "0")]);
        for needle in [
            "storage.emergency_reserve_bytes must be smaller than storage.quota_bytes",
            "storage.readers must be greater than 0",
            "storage.blob_chunk_bytes = 100 must be between 16384 and 16777216",
            "storage.import_writers = 65 must be at most 64",
            "storage.import_group_entries must be greater than 0",
            "limits.max_devices must be greater than 0",
            "limits.idle_timeout_secs must be longer than limits.ping_interval_secs",
            "retention_dayz",
            "unknown section `bogus`",
            "security.revocation_poll_ms must be greater than 0",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn a_misspelt_or_identity_variable_is_an_error() {
        let dir = dir_with("cloud_id = \"c\"\n");
        let all = problems(
            dir.path(),
            &[
                ("OUTPOST_CLOUD_STORAGE__QUOTA_BYTESS", "5"),
                ("OUTPOST_CLOUD_STORAG__QUOTA_BYTES", "5"),
                ("OUTPOST_CLOUD_CLOUD_ID", "cloud-other"),
            ],
        );
        for needle in ["quota_bytess", "unknown section `storag`", "cannot be set from the environment"] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn listeners_come_from_the_file_or_the_flags() {
        let dir = dir_with("cloud_id = \"c\"\n");
        let all = CloudConfig::load_from(dir.path(), env(&[]), |_| {})
            .err()
            .map(|e| e.problems.join("\n"))
            .unwrap_or_default();
        assert!(all.contains("server.listen is not set: give `--ws ADDR`"), "{all}");
        assert!(all.contains("server.quic_listen is not set: give `--quic ADDR`"), "{all}");

        let dir =
            dir_with("cloud_id = \"c\"\n[server]\nlisten = \"localhost:8443\"\nquic_listen = \"localhost:4433\"\n");
        let all = CloudConfig::load_from(dir.path(), env(&[]), |_| {})
            .err()
            .map(|e| e.problems.join("\n"))
            .unwrap_or_default();
        assert!(!all.contains("server.listen"), "a host name is fine for the TCP listener: {all}");
        assert!(all.contains("server.quic_listen = \"localhost:4433\" is not an address"), "{all}");
    }

    #[test]
    fn a_certificate_needs_its_key_and_readable_files() {
        let dir = dir_with("cloud_id = \"c\"\n[server]\ntls_cert = \"tls/cloud.crt\"\n");
        assert!(problems(dir.path(), &[]).contains("but server.tls_key is not"));
        let dir = dir_with("cloud_id = \"c\"\n[server]\ntls_cert = \"tls/cloud.crt\"\ntls_key = \"tls/cloud.key\"\n");
        let cert = dir.path().join("tls/cloud.crt");
        let all = problems(dir.path(), &[]);
        assert!(all.contains(&format!("server.tls_cert = {}: cannot read it", cert.display())), "{all}");
    }

    #[test]
    fn webhooks_come_from_the_file_with_their_defaults() {
        let dir = dir_with(
            "cloud_id = \"c\"\n\
             [[webhooks]]\nname = \"his\"\nurl = \"https://his.example.org/outpost\"\nsecret = \"0123456789abcdef-his\"\n\
             rooms = [\"ward-3\", \"alerts\"]\n\
             [[webhooks]]\nname = \"lab\"\nurl = \"http://10.0.0.7:8080/events\"\nsecret_file = \"lab.secret\"\n\
             initial_backoff_ms = 250\n",
        );
        std::fs::write(dir.path().join("lab.secret"), "  lab-secret-0123456789\n").unwrap_or_else(|e| panic!("{e}"));
        let c = CloudConfig::load_from(dir.path(), env(&[]), listeners).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.webhooks.len(), 2);
        let (his, lab) = (&c.webhooks[0], &c.webhooks[1]);
        assert_eq!((his.name.as_str(), his.url.as_str()), ("his", "https://his.example.org/outpost"));
        let rooms: Vec<&str> = his.rooms.iter().flatten().map(outpost_shared::RoomId::as_str).collect();
        assert_eq!(rooms, ["ward-3", "alerts"]);
        assert_eq!(lab.rooms, None, "no rooms: every room");
        assert_eq!(lab.initial_backoff_ms, 250);
        let d = WebhookConfig::default();
        assert_eq!((lab.max_backoff_ms, lab.request_timeout_ms), (d.max_backoff_ms, d.request_timeout_ms));
        assert_eq!(lab.secret_bytes(dir.path()).ok(), Some(b"lab-secret-0123456789".to_vec()), "trimmed");
        assert!(!format!("{his:?}").contains("0123456789abcdef-his"), "the secret stays out of Debug output");
        assert!(CloudConfig::default().webhooks.is_empty(), "none by default");
    }

    #[test]
    fn every_webhook_problem_is_reported_at_once() {
        let dir = dir_with(
            "cloud_id = \"c\"\n\
             [[webhooks]]\nname = \"His System\"\nurl = \"ftp://his\"\n\
             [[webhooks]]\nname = \"lab\"\nurl = \"http://lab\"\nsecret = \"short\"\nrooms = []\n\
             connect_timeout_ms = 0\ninitial_backoff_ms = 5000\nmax_backoff_ms = 1000\n\
             [[webhooks]]\nname = \"lab\"\nurl = \"http://lab2\"\nsecret = \"0123456789abcdef\"\nsecret_file = \"x\"\n\
             [[webhooks]]\nname = \"pharmacy\"\nurl = \"https://pharmacy\"\nsecret_file = \"missing.secret\"\n\
             ca_file = \"missing.pem\"\n",
        );
        let all = problems(dir.path(), &[]);
        for needle in [
            "webhooks[0] (His System): name = \"His System\" must be 1 to 64 of a-z, 0-9, - and _",
            "url = \"ftp://his\" is not an http:// or https:// URL with a host",
            "webhooks[0] (His System): set secret (or secret_file)",
            "webhooks[1] (lab): secret must be at least 16 bytes long",
            "rooms = [] would deliver nothing",
            "webhooks[1] (lab): connect_timeout_ms must be greater than 0",
            "max_backoff_ms must not be less than initial_backoff_ms",
            "webhooks[2] (lab): set secret or secret_file, not both",
            "webhooks[2]: name \"lab\" is used twice",
            "webhooks (pharmacy): secret_file = ",
            "missing.pem: cannot read it",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let dir = dir_with("cloud_id = \"c\"\n[[webhooks]]\nname = \"his\"\nurl = \"http://his\"\nsecrets = \"x\"\n");
        assert!(problems(dir.path(), &[]).contains("unknown field `secrets`"));
        let dir = dir_with("cloud_id = \"c\"\n");
        let all = problems(dir.path(), &[("OUTPOST_CLOUD_WEBHOOKS", "http://his")]);
        assert!(all.contains("[webhooks]"), "webhooks are not set from the environment: {all}");
    }
}
