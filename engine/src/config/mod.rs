//! The hub's configuration: one serde tree with documented defaults.
//!
//! Layers, later winning: embedded defaults → `DIR/relay.toml` → `OUTPOST_...` environment
//! variables (`__` separates levels: `OUTPOST_LIMITS__MAX_BODY_BYTES=1024`) → command-line
//! flags. Every `OUTPOST_` variable is read as configuration, so a misspelt one is an
//! error, not a silent no-op; the exception is `OUTPOST_CLOUD_...`, the cloud's own
//! variables, which the hub leaves alone. [`RelayConfig::load`] reports every problem it
//! finds at once (per section for parse errors, all of them for value checks) before
//! anything binds; the binary exits with code 64 on any of them.
//!
//! [`Layers`] is the loading itself, shared with the cloud (`cloud.toml`, `OUTPOST_CLOUD_`),
//! and the sections both run ([`StorageConfig`], [`LimitsConfig`], [`MediaConfig`],
//! [`SecurityConfig`]) check their own values, so the two programs report the same
//! problems in the same words.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod layers;

pub use layers::{ConfigError, Layered, Layers};
pub use outpost_storage::RetentionBasis;

use crate::lan_tls::{LanTls, LanTlsError};

/// The configuration file inside the relay's directory.
pub const CONFIG_FILE: &str = "relay.toml";

/// The hub's environment prefix: `OUTPOST_SECTION__KEY`.
const ENV_PREFIX: &str = "OUTPOST";

/// The cloud's environment prefix (`OUTPOST_CLOUD_SECTION__KEY`). It starts like the hub's,
/// so the hub skips these variables: a machine or a test environment running both must not
/// stop the hub with an "unknown section `cloud_...`".
pub const CLOUD_ENV_PREFIX: &str = "OUTPOST_CLOUD";

/// Configuration keys that hold lists (comma-separated when set in the environment).
pub const LIST_KEYS: [&str; 10] = [
    "uplink.cloud",
    "media.accepted_types",
    "policy.encrypted_rooms",
    "policy.send_roles",
    "policy.emergency_roles",
    "policy.emergency_rooms",
    "policy.history_roles",
    "policy.participate_roles",
    "policy.audit_roles",
    "policy.record_doctor_fields",
];

/// The sections of the configuration.
const SECTIONS: [&str; 10] =
    ["server", "storage", "limits", "identity", "uplink", "policy", "security", "media", "lan_https", "testing"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub identity: IdentityConfig,
    pub uplink: UplinkConfig,
    /// Role rules (who may send, raise emergencies, read history, read the audit log);
    /// see `outpost_shared::policy` and docs/security.md.
    pub policy: outpost_shared::Policy,
    pub security: SecurityConfig,
    /// Photos, voice notes and documents (docs/protocol.md, Media).
    pub media: MediaConfig,
    /// HTTPS for phones under the hub's own name, with a certificate the cloud obtains
    /// (docs/operations.md, "HTTPS on the LAN").
    pub lan_https: LanHttpsConfig,
    /// Hooks for scenario tests; never set on a deployed server.
    pub testing: TestingConfig,
}

/// HTTPS on the village network under the hub's own name (`<relay id>.<domain>`), with a
/// certificate from a CA phones already trust, obtained for the hub by its cloud. Used
/// when the cloud has an `[acme]` section and `server.tls_cert` is not set (an operator's
/// own certificate wins).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanHttpsConfig {
    /// On by default. `false`: the hub asks for no certificate and serves plain HTTP only.
    pub enabled: bool,
    /// Address of the HTTPS listener (`--https` overrides it). Plain HTTP on
    /// `server.listen` redirects pages here while the certificate is valid.
    pub listen: String,
    /// The network interface phones reach the hub on: the name resolves to its address
    /// (the dnsmasq line in `lan/dnsmasq.conf`).
    pub interface: String,
    /// Ask for a new certificate this many days before the current one expires (public
    /// CAs issue for 90 days or less; 30 leaves weeks of retries for a flaky uplink).
    pub renew_before_days: u64,
    /// Seconds to wait for the cloud's answer, or after a refusal, before asking again.
    pub retry_secs: u64,
}

impl Default for LanHttpsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:8443".into(),
            interface: "wlan0".into(),
            renew_before_days: 30,
            retry_secs: 3600,
        }
    }
}

impl LanHttpsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("lan_https.listen = {:?} is not an address like 0.0.0.0:8443", self.listen));
        }
        if self.interface.is_empty() || self.interface.contains([',', '\n', ' ']) {
            p.push(format!("lan_https.interface = {:?} is not a network interface name like wlan0", self.interface));
        }
        if self.retry_secs == 0 {
            p.push("lan_https.retry_secs must be at least 1".into());
        }
        p
    }
}

/// Hooks that let scenario tests move through time without waiting for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Seconds added to the wall clock this server reads for data decisions (token expiry,
    /// retention ages, renewal times; `crate::clock::now_ms`). 0 by default. A test
    /// restarts a server with, say, 31 days here instead of waiting 31 days. Timers and
    /// the stores' own receive stamps are not moved.
    pub clock_offset_secs: i64,
}

impl TestingConfig {
    /// Applies the setting to this process's clock.
    pub fn apply(&self) {
        crate::clock::set_offset_secs(self.clock_offset_secs);
        if self.clock_offset_secs != 0 {
            // Before logging is set up: straight to stderr (the journal).
            eprintln!(
                "warning: testing.clock_offset_secs = {}: this server's wall clock is moved; never do this in production",
                self.clock_offset_secs
            );
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest blob accepted, bytes (from a device or over the uplink).
    pub max_blob_bytes: u64,
    /// Largest upload chunk (one HTTP PATCH body), bytes. Bodies are streamed into
    /// storage as they arrive (a file, or database rows), so this bounds a request's
    /// length, not memory.
    pub max_chunk_bytes: u64,
    /// Bytes one user's uploads may hold on this server (complete and unfinished).
    pub quota_per_user_bytes: u64,
    /// Unfinished uploads one user may have at once.
    pub max_pending_uploads: u32,
    /// Types accepted, recognised by content (a subset of the types docs/protocol.md lists).
    pub accepted_types: Vec<String>,
    /// Longer side of an image preview, pixels.
    pub preview_max_side: u32,
    /// JPEG quality of previews (1-100).
    pub preview_quality: u8,
    /// Images with more pixels than this get no preview (decoding them would take the
    /// Pi's memory); they still travel.
    pub max_preview_source_pixels: u64,
    /// Size of one chunk on the uplink's bulk lane, bytes. Smaller chunks let an
    /// emergency overtake sooner on a slow link; larger ones cost fewer round trips.
    pub link_chunk_bytes: u32,
    /// Chunks of one blob in flight on the uplink before the receiver confirms.
    pub link_window: u32,
    /// Days a blob's bytes stay on this server, counted as `retention_basis` says (on a
    /// hub: after the peer, the cloud, confirmed it; unconfirmed blobs are never removed);
    /// 0 keeps blobs forever.
    pub retention_days: u32,
    /// Hours an unfinished upload is kept without progress before it is removed.
    pub partial_ttl_hours: u32,
    /// What `retention_days` counts from. Not a setting: the application picks it (the
    /// hub keeps the default, the cloud counts from receipt), so no file can make a hub
    /// drop a photo the cloud does not hold yet.
    #[serde(skip)]
    pub retention_basis: RetentionBasis,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_blob_bytes: 16 << 20,
            max_chunk_bytes: 16 << 20,
            quota_per_user_bytes: 256 << 20,
            max_pending_uploads: 8,
            accepted_types: outpost_shared::media::KNOWN_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            preview_max_side: 256,
            preview_quality: 60,
            max_preview_source_pixels: 50_000_000,
            link_chunk_bytes: 64 << 10,
            link_window: 4,
            retention_days: 30,
            partial_ttl_hours: 72,
            retention_basis: RetentionBasis::PeerConfirmed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// How often the revocation list is re-read from the database, milliseconds: a token
    /// revoked by the cloud (or by `revoke` on this server) is refused, and its sessions
    /// closed, within this time of the entry being committed.
    pub revocation_poll_ms: u64,
    /// Refused sign-ins recorded in the audit log per second at most; a flood of bad
    /// tokens must not fill the disk. The rest are counted and the count recorded with the
    /// next one that is.
    pub audit_refusals_per_sec: u32,
    /// Cloud only (a hub ignores it): days a delegation to a hub's renewal key lasts, the
    /// longest a cut-off hub can keep renewing its devices' tokens — and what a stolen
    /// hub key is good for. Renewed on every connection, so a hub that reaches the cloud
    /// now and then never runs out. 180: a village may be cut off for a season.
    pub delegation_days: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self { revocation_poll_ms: 1000, audit_refusals_per_sec: 10, delegation_days: 180 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the LAN listener for devices (`--ws` overrides it).
    pub listen: String,
    /// How long a graceful shutdown waits for sessions to close, seconds. Kept well under
    /// systemd's `TimeoutStopSec` so the store is always flushed before a hard kill.
    pub shutdown_grace_secs: u64,
    /// Test only: serve `/echo`, a WebSocket echo behind the same upgrade settings and
    /// connection limits as `/ws`, for the WebSocket conformance suite
    /// (`tests/conformance/run.sh`). It needs no token, so never turn it on in the field.
    /// Left out of the `relay.toml` that `init` writes so operators are not invited to.
    #[serde(skip_serializing_if = "is_false")]
    pub conformance_echo: bool,
    /// The hub's TLS certificate (PEM: the hub's certificate, then any intermediates) for
    /// serving phones over HTTPS/`wss://`; relative paths are inside the relay directory.
    /// Set both `tls_cert` and `tls_key`, or neither (plain HTTP). See docs/operations.md,
    /// "HTTPS on the village network".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM). Readable by the hub's user only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Threads that run the device sessions, the HTTP API and the uplink; `0` picks one
    /// per CPU core less one, at least one. The store's writer is a thread of its own that
    /// every ack waits for and that is busy for most of a core under load; leaving it a
    /// core keeps the session threads from taking turns with it (see
    /// [`ServerConfig::effective_worker_threads`]).
    pub worker_threads: usize,
}

/// Beyond this many session threads, they only take turns on the cores.
const MAX_WORKER_THREADS: usize = 256;

impl ServerConfig {
    /// The number of session threads `worker_threads` asks for on a machine with `cores`
    /// CPU cores.
    pub fn effective_worker_threads(&self, cores: usize) -> usize {
        match self.worker_threads {
            0 => cores.saturating_sub(1).max(1),
            n => n,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            shutdown_grace_secs: 10,
            conformance_echo: false,
            tls_cert: None,
            tls_key: None,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database; relative paths are inside the relay directory. Point it at an
    /// external USB disk to spare the SD card.
    pub path: PathBuf,
    /// Most bytes the database may use. Past `quota_bytes - emergency_reserve_bytes` only
    /// emergency messages are accepted (`storage_full` for the rest).
    pub quota_bytes: u64,
    /// Space kept back for emergencies when the quota is nearly reached.
    pub emergency_reserve_bytes: u64,
    /// Most commands committed in one transaction (group commit). Bigger batches mean
    /// fewer fsyncs under load; the queue in front of the writer holds as many, so an
    /// emergency never waits behind more than the transaction in progress.
    pub max_batch: usize,
    /// Database reads that run at once for devices (replays, history), and as many again
    /// for peer links. Each holds a reader connection with its page cache (up to 2 MiB);
    /// more wait their turn in order. A village reconnecting at once costs this many
    /// connections, not one per phone.
    pub readers: usize,
    /// Days a message stays on this server once another keeps it (on a hub: the cloud
    /// confirmed it; emergencies also delivered). 0 keeps everything forever. 90: a
    /// season of a village's traffic stays on the hub for phones that were away, while
    /// at the busiest hub measured (about 40,000 messages a day) that is about 2 GiB, a
    /// quarter of the default quota. Older history is fetched from the cloud.
    pub retain_days: u32,
    /// Storage in use, in percent of what ordinary sends may use (`quota_bytes -
    /// emergency_reserve_bytes`), past which confirmed messages go oldest first, whatever
    /// their age, so sends are not refused while anything confirmed is left. 0: never.
    pub prune_above_percent: u32,
    /// How often retention looks for messages past `retain_days`.
    pub prune_interval_secs: u64,
    /// Most messages removed in one transaction: the single writer is never held long
    /// (a thousand rows take a few tens of milliseconds on a Pi's SD card).
    pub prune_batch: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/relay.db"),
            quota_bytes: 8 << 30,
            emergency_reserve_bytes: 64 << 20,
            max_batch: 4096,
            readers: 4,
            retain_days: 90,
            prune_above_percent: 90,
            prune_interval_secs: 600,
            prune_batch: 1000,
        }
    }
}

impl StorageConfig {
    /// Storage in use past which confirmed messages go for the quota, if ever.
    pub fn prune_high_water_bytes(&self) -> Option<u64> {
        let bulk = self.quota_bytes.saturating_sub(self.emergency_reserve_bytes);
        (self.prune_above_percent > 0)
            .then(|| u64::try_from(u128::from(bulk) * u128::from(self.prune_above_percent) / 100).unwrap_or(bulk))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest text frame a device may send (`too_large` beyond it). Media goes in chunks.
    pub max_frame_bytes: usize,
    /// Largest message body, in bytes of JSON.
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a message body. Real bodies nest a few
    /// levels; clients parse frames with limits of their own (serde_json: 128 levels for a
    /// whole frame, and a `history` frame wraps a body four levels deep), so a deeper body
    /// would be stored once and then break every client that receives it.
    pub max_body_depth: usize,
    /// Most concurrent device connections on this hub (HTTP 503 beyond it).
    pub max_devices: usize,
    /// Most concurrent connections from one source address (HTTP 429 beyond it).
    pub max_connections_per_ip: usize,
    /// Live entries queued per session and lane before the session falls back to reading
    /// the log (so a slow phone costs the hub disk reads, never memory).
    pub outbound_queue: usize,
    /// Bytes of frames one replay page holds (a page is read from the log, then written to
    /// the device; a device that stops reading mid-replay keeps one page in memory).
    pub replay_page_bytes: usize,
    /// Sends a device may have awaiting their commit at once; past it the hub stops reading
    /// that socket until commits catch up (back-pressure, not an error).
    pub max_inflight_per_device: usize,
    /// WebSocket read buffer per connection. Small, so thousands of idle phones stay cheap.
    pub read_buffer_bytes: usize,
    /// Sustained messages per second per device before `rate_limited`.
    pub rate_per_sec: u32,
    /// Burst allowance on top of the sustained rate.
    pub rate_burst: u32,
    /// Seconds a new connection has to send `hello` (close 4008 after).
    pub hello_timeout_secs: u64,
    /// Seconds a new connection has to complete the TLS handshake when `server.tls_cert`
    /// is set (dropped after). Generous for a 2G-grade Wi-Fi corner, short enough that
    /// idle sockets cannot pile up.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds between server pings.
    pub ping_interval_secs: u64,
    /// Seconds of silence after which a peer is considered dead and dropped.
    pub idle_timeout_secs: u64,
    /// Presence updates per second per user that are passed on (others are dropped).
    pub presence_per_sec: u32,
    /// Most `delivered`/`read` receipts one `ack` or `read` frame can generate; a device
    /// resyncing years of history must not flood senders with receipts.
    pub max_receipts_per_ack: usize,
    /// Messages per room sent newest first, before the rest, to a peer rebuilding its
    /// database (a hub on a new SD card, a cloud restored empty): a phone opening a room
    /// sees its latest conversation at once instead of after the whole history. 0: the
    /// history goes oldest first only.
    pub rebuild_recent_per_room: usize,
    /// What a new device (`hello` with no cursor) is sent of each of its rooms: the latest
    /// this many messages, then live traffic; older ones come with `history` when asked
    /// (docs/protocol.md, "What a new device gets"). 0: every message the room ever had.
    /// A phone signing in to a room of a year's traffic gets a screenful, not the year.
    pub signin_recent_per_room: u32,
    /// How far back a new device's window reaches for what its user has not read yet
    /// (after their read mark in the room, from any device), in messages per room.
    pub signin_unread_per_room: u32,
    /// Days of bookings a room's doctors' queues are derived from (docs/workflows.md):
    /// an entry booked longer ago and still open no longer shows. A month covers any
    /// appointment a health post books; it bounds every read of the queue.
    pub queue_days: u32,
    /// Most queue messages (bookings and updates) one read of a room's queues folds; a
    /// room past it in `queue_days` gets `too_large` instead of a queue missing entries.
    pub queue_max_events: u32,
    /// Most record edits of one room a read of a patient's record folds (every patient's
    /// in the room: edits are found by room, then by patient). A room past it gets
    /// `too_large` instead of a record missing versions.
    pub record_max_events: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 256 << 10,
            max_body_bytes: 64 << 10,
            max_body_depth: 64,
            max_devices: 1000,
            max_connections_per_ip: 1000,
            outbound_queue: 1024,
            replay_page_bytes: 64 << 10,
            max_inflight_per_device: 1024,
            read_buffer_bytes: 1024,
            rate_per_sec: 1000,
            rate_burst: 2000,
            hello_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
            presence_per_sec: 2,
            max_receipts_per_ack: 1000,
            rebuild_recent_per_room: 200,
            signin_recent_per_room: 200,
            signin_unread_per_room: 1000,
            queue_days: 30,
            queue_max_events: 50_000,
            record_max_events: 100_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// This hub's id, from its enrollment bundle.
    pub relay_id: String,
    /// The cloud whose tokens this hub accepts (`iss`).
    pub cloud_id: String,
    /// The cloud's Ed25519 token key, base64.
    pub token_public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// The cloud's QUIC addresses (`HOST:PORT`), in the order the hub tries them; the
    /// first is the one it returns to. One address may be given as a plain string (as
    /// every `relay.toml` written before several addresses existed has it), several as a
    /// list; empty means no uplink. `--cloud` (repeatable) replaces the list.
    #[serde(deserialize_with = "one_or_many")]
    pub cloud: Vec<String>,
    /// First delay before reconnecting, milliseconds; it doubles per failed attempt.
    /// With several addresses, per round: every address gets one attempt before the
    /// hub waits.
    pub retry_initial_ms: u64,
    /// Longest delay between attempts, seconds. Short enough that a satellite window or
    /// a shared connection of a few minutes is not missed.
    pub retry_max_secs: u64,
    /// How long a small batch of normal traffic waits for more before it goes up,
    /// milliseconds. Longer saves uplink bytes (fewer, fuller batches); emergencies never
    /// wait.
    pub linger_ms: u64,
    /// While connected to any address but the first, how often the hub tries the first
    /// again, seconds; it moves back once the first completes the handshake. Each try at
    /// a first address that is still down costs about 6 KB of QUIC handshake packets, so
    /// this is minutes, not seconds.
    pub primary_retry_secs: u64,
    /// How long the hub goes without hearing from the cloud before it counts the
    /// connection dead, seconds; keep-alives go out every third of it. Not set: 30 s with
    /// one address, 6 s with several ([`UplinkConfig::idle_timeout`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// When QUIC cannot reach an address (UDP dropped on the way), carry the same link
    /// over TLS on TCP to the same `HOST:PORT` (docs/uplink.md, "When UDP is blocked").
    /// The hub keeps trying QUIC every `primary_retry_secs` and moves back when it works.
    pub tcp_fallback: bool,
    /// An HTTP proxy for the TCP path, `http://[user:password@]host:port` (`CONNECT`).
    /// Not set: the `HTTPS_PROXY` (or `https_proxy`) environment variable, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// The idle timeout with one cloud address: a 2G stall of a few seconds must not cost a
/// reconnect, and a cloud that restarts on its address is noticed at once anyway (it
/// answers the old connection with a stateless reset).
pub const IDLE_TIMEOUT_ONE_ADDRESS_SECS: u64 = crate::link::tls::IDLE_TIMEOUT.as_secs();

/// The idle timeout with several addresses: a node that died answers nothing, so this is
/// how long the hub takes to notice; with the handshake to the next node (well under a
/// second on 3G, about 4 s on 2G) it has to fit the 10 s in which a hub is back on a live
/// node. QUIC stretches it to three probe timeouts on a slow path by itself, so a 2G link
/// is not dropped for its round trips.
pub const IDLE_TIMEOUT_SEVERAL_ADDRESSES_SECS: u64 = 6;

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            cloud: Vec::new(),
            retry_initial_ms: 1000,
            retry_max_secs: 30,
            linger_ms: 500,
            primary_retry_secs: 300,
            idle_timeout_secs: None,
            tcp_fallback: true,
            proxy: None,
        }
    }
}

impl UplinkConfig {
    /// The idle timeout in force: `idle_timeout_secs`, or the default for the number of
    /// addresses.
    pub fn idle_timeout(&self) -> std::time::Duration {
        let default =
            if self.cloud.len() > 1 { IDLE_TIMEOUT_SEVERAL_ADDRESSES_SECS } else { IDLE_TIMEOUT_ONE_ADDRESS_SECS };
        std::time::Duration::from_secs(self.idle_timeout_secs.unwrap_or(default))
    }

    /// Applies `--cloud` flags: given at all, they replace the list (an empty one, as in
    /// `--cloud ""`, turns the uplink off, as an empty `uplink.cloud` does).
    pub fn override_clouds(&mut self, flags: Vec<String>) {
        if !flags.is_empty() {
            self.cloud = flags.into_iter().filter(|a| !a.is_empty()).collect();
        }
    }

    /// What is wrong with the values.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = zeros(&[
            ("uplink.retry_initial_ms", self.retry_initial_ms),
            ("uplink.retry_max_secs", self.retry_max_secs),
            ("uplink.primary_retry_secs", self.primary_retry_secs),
            ("uplink.idle_timeout_secs", self.idle_timeout_secs.unwrap_or(1)),
        ])
        .collect();
        for (i, a) in self.cloud.iter().enumerate() {
            if !outpost_shared::bundle::is_host_port(a) {
                p.push(format!("uplink.cloud = {a:?} must be HOST:PORT"));
            } else if self.cloud[..i].contains(a) {
                p.push(format!("uplink.cloud lists {a:?} twice"));
            }
        }
        if let Some(Err(e)) = self.proxy.as_deref().map(crate::link::tunnel::Proxy::parse) {
            p.push(format!("uplink.proxy = {e}"));
        }
        p
    }

    /// The proxy for the TCP path: `proxy`, else `HTTPS_PROXY`/`https_proxy` (a bad
    /// environment value is reported and ignored: it is not the hub's own setting).
    pub fn effective_proxy(&self) -> Option<crate::link::tunnel::Proxy> {
        use crate::link::tunnel::Proxy;
        if let Some(p) = &self.proxy {
            return Proxy::parse(p).ok();
        }
        let env = std::env::var("HTTPS_PROXY").or_else(|_| std::env::var("https_proxy")).ok()?;
        match Proxy::parse(&env) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS_PROXY is not used");
                None
            }
        }
    }
}

/// Reads `uplink.cloud`: a string (one address; empty is none) or a list of strings
/// (empty entries skipped, so `OUTPOST_UPLINK__CLOUD=` still means no uplink).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address \"HOST:PORT\" or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(if v.is_empty() { Vec::new() } else { vec![v.to_owned()] })
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(a) = seq.next_element::<String>()? {
                if !a.is_empty() {
                    out.push(a);
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor)
}

/// The problem with a TLS certificate given without its key or the other way round.
pub fn tls_pair_problem(cert: bool, key: bool) -> Option<String> {
    match (cert, key) {
        (true, false) => Some(
            "server.tls_cert is set but server.tls_key is not: set both (the certificate and its key) or neither"
                .into(),
        ),
        (false, true) => Some(
            "server.tls_key is set but server.tls_cert is not: set both (the certificate and its key) or neither"
                .into(),
        ),
        _ => None,
    }
}

/// `name must be greater than 0` for each value that is 0.
fn zeros(values: &[(&str, u64)]) -> impl Iterator<Item = String> {
    values.iter().filter(|(_, v)| *v == 0).map(|(name, _)| format!("{name} must be greater than 0"))
}

impl StorageConfig {
    /// What is wrong with the values (the path is checked when the database opens).
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = zeros(&[
            ("storage.max_batch", self.max_batch as u64),
            ("storage.readers", self.readers as u64),
            ("storage.quota_bytes", self.quota_bytes),
            ("storage.prune_interval_secs", self.prune_interval_secs),
            ("storage.prune_batch", self.prune_batch as u64),
        ])
        .collect();
        if self.prune_above_percent > 100 {
            p.push(format!("storage.prune_above_percent = {} must be at most 100", self.prune_above_percent));
        }
        if self.emergency_reserve_bytes >= self.quota_bytes {
            p.push("storage.emergency_reserve_bytes must be smaller than storage.quota_bytes".into());
        }
        p
    }
}

impl LimitsConfig {
    /// What is wrong with the values.
    pub fn problems(&self) -> Vec<String> {
        let l = self;
        let mut p: Vec<String> = zeros(&[
            ("limits.max_frame_bytes", l.max_frame_bytes as u64),
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.max_body_depth", l.max_body_depth as u64),
            ("limits.max_devices", l.max_devices as u64),
            ("limits.max_connections_per_ip", l.max_connections_per_ip as u64),
            ("limits.outbound_queue", l.outbound_queue as u64),
            ("limits.replay_page_bytes", l.replay_page_bytes as u64),
            ("limits.max_inflight_per_device", l.max_inflight_per_device as u64),
            ("limits.rate_per_sec", u64::from(l.rate_per_sec)),
            ("limits.hello_timeout_secs", l.hello_timeout_secs),
            ("limits.tls_handshake_timeout_secs", l.tls_handshake_timeout_secs),
            ("limits.ping_interval_secs", l.ping_interval_secs),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.presence_per_sec", u64::from(l.presence_per_sec)),
            ("limits.max_receipts_per_ack", l.max_receipts_per_ack as u64),
            ("limits.queue_days", u64::from(l.queue_days)),
            ("limits.queue_max_events", u64::from(l.queue_max_events)),
            ("limits.record_max_events", u64::from(l.record_max_events)),
        ])
        .collect();
        if l.max_body_bytes > l.max_frame_bytes {
            p.push(format!(
                "limits.max_body_bytes ({}) must not exceed limits.max_frame_bytes ({})",
                l.max_body_bytes, l.max_frame_bytes
            ));
        }
        if l.read_buffer_bytes < 256 {
            p.push("limits.read_buffer_bytes must be at least 256".into());
        }
        if l.idle_timeout_secs <= l.ping_interval_secs {
            p.push("limits.idle_timeout_secs must be longer than limits.ping_interval_secs".into());
        }
        p
    }
}

impl SecurityConfig {
    /// What is wrong with the values.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = zeros(&[
            ("security.revocation_poll_ms", self.revocation_poll_ms),
            ("security.delegation_days", self.delegation_days),
        ])
        .collect();
        // Beyond ten years is a mistake, not a policy (and keeps the seconds in range).
        if self.delegation_days > 3650 {
            p.push(format!("security.delegation_days is {}; at most 3650", self.delegation_days));
        }
        p
    }
}

impl MediaConfig {
    /// What is wrong with the values.
    pub fn problems(&self) -> Vec<String> {
        let m = self;
        let mut p: Vec<String> = zeros(&[
            ("media.max_blob_bytes", m.max_blob_bytes),
            ("media.max_chunk_bytes", m.max_chunk_bytes),
            ("media.quota_per_user_bytes", m.quota_per_user_bytes),
            ("media.max_pending_uploads", u64::from(m.max_pending_uploads)),
            ("media.preview_max_side", u64::from(m.preview_max_side)),
            ("media.link_chunk_bytes", u64::from(m.link_chunk_bytes)),
            ("media.link_window", u64::from(m.link_window)),
            ("media.partial_ttl_hours", u64::from(m.partial_ttl_hours)),
        ])
        .collect();
        for t in &m.accepted_types {
            if !outpost_shared::media::KNOWN_TYPES.contains(&t.as_str()) {
                p.push(format!(
                    "media.accepted_types: {t:?} is not a type this server recognises; choose from {}",
                    outpost_shared::media::KNOWN_TYPES.join(", ")
                ));
            }
        }
        if !(1..=100).contains(&m.preview_quality) {
            p.push("media.preview_quality must be between 1 and 100".into());
        }
        if m.link_chunk_bytes > 1 << 20 {
            p.push("media.link_chunk_bytes must be at most 1048576 (1 MiB)".into());
        }
        p
    }
}

impl RelayConfig {
    /// The hub's layers: `dir/relay.toml`, `OUTPOST_` variables but the cloud's.
    fn layers(dir: &Path) -> Layers<'static> {
        Layers {
            file: dir.join(CONFIG_FILE),
            env_prefix: ENV_PREFIX,
            env_skip: &[CLOUD_ENV_PREFIX],
            list_keys: &LIST_KEYS,
            sections: &SECTIONS,
            top_keys: &[],
        }
    }

    /// Loads defaults → `dir/relay.toml` (if present) → `OUTPOST_` environment.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with(dir, |_| {})
    }

    /// Like [`RelayConfig::load`], with command-line overrides applied before the values
    /// are checked (so a flag can correct a bad value from the file or environment).
    pub fn load_with(dir: &Path, overrides: impl FnOnce(&mut RelayConfig)) -> Result<Self, ConfigError> {
        Self::load_from(dir, std::env::vars_os(), overrides)
    }

    /// [`RelayConfig::load_with`] with the environment given (tests).
    fn load_from(
        dir: &Path,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        overrides: impl FnOnce(&mut RelayConfig),
    ) -> Result<Self, ConfigError> {
        let mut layered = Self::layers(dir).read(None::<&Self>, env)?;
        let mut cfg = RelayConfig {
            server: layered.section("server"),
            storage: layered.section("storage"),
            limits: layered.section("limits"),
            identity: layered.section("identity"),
            uplink: layered.section("uplink"),
            policy: layered.section("policy"),
            security: layered.section("security"),
            media: layered.section("media"),
            lan_https: layered.section("lan_https"),
            testing: layered.section("testing"),
        };
        overrides(&mut cfg);
        let mut problems = layered.problems;
        problems.extend(cfg.problems());
        // The files are read now too, so a bad certificate stops the hub before it binds.
        if let Err(e) = cfg.lan_tls(dir) {
            problems.push(e.to_string());
        }
        if problems.is_empty() { Ok(cfg) } else { Err(ConfigError { problems }) }
    }

    /// Checks values (not syntax) and lists every problem.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("server.listen = {:?} is not an address like 0.0.0.0:8080", self.server.listen));
        }
        p.extend(tls_pair_problem(self.server.tls_cert.is_some(), self.server.tls_key.is_some()));
        p.extend(self.limits.problems());
        p.extend(self.storage.problems());
        p.extend(self.uplink.problems());
        p.extend(self.security.problems());
        p.extend(self.media.problems());
        p.extend(self.lan_https.problems());
        if self.server.worker_threads > MAX_WORKER_THREADS {
            p.push(format!(
                "server.worker_threads = {} is more than {MAX_WORKER_THREADS}; use 0 (one per core, less one) or the number of cores",
                self.server.worker_threads
            ));
        }
        if self.identity.cloud_id.is_empty() || self.identity.token_public_key.is_empty() {
            p.push("identity is not set: run `outpost-relay init --dir DIR --bundle FILE` first".into());
        } else if let Err(e) = outpost_shared::bundle::decode_public_key(&self.identity.token_public_key) {
            p.push(format!("identity.token_public_key: {e}"));
        }
        p
    }

    /// The hub's TLS from `server.tls_cert`/`server.tls_key` (relative to `dir`), or
    /// `None` when they are not both set.
    pub fn lan_tls(&self, dir: &Path) -> Result<Option<LanTls>, LanTlsError> {
        let Some((cert, key)) = self.tls_files(dir) else { return Ok(None) };
        let timeout = std::time::Duration::from_secs(self.limits.tls_handshake_timeout_secs);
        LanTls::load(&cert, &key, timeout).map(Some)
    }

    /// The TLS certificate and key paths, resolved against the relay directory, when both
    /// are set.
    pub fn tls_files(&self, dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (self.server.tls_cert.as_ref()?, self.server.tls_key.as_ref()?);
        Some((dir.join(cert), dir.join(key)))
    }

    /// The database path, resolved against the relay directory.
    pub fn db_path(&self, dir: &Path) -> PathBuf {
        if self.storage.path.is_absolute() { self.storage.path.clone() } else { dir.join(&self.storage.path) }
    }
}

#[cfg(test)]
mod tests;
