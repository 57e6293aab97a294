//! The hub's shared state: configuration, store, router, token verifier, connection
//! accounting. One `Arc<Hub>` is handed to every session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use outpost_shared::{TokenVerifier, UserId};
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::link::uplink::UplinkStatus;
use crate::ratelimit::TokenBucket;
use crate::router::Router;
use crate::store::Store;

/// Wall-clock milliseconds since the Unix epoch (message `at`, token expiry).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub struct Hub {
    pub config: RelayConfig,
    pub store: Store,
    pub router: Arc<Router>,
    pub verifier: TokenVerifier,
    pub shutdown: CancellationToken,
    pub conns: ConnTracker,
    /// The uplink's state (stays default on the cloud and on a hub with no cloud).
    pub uplink: Arc<Mutex<UplinkStatus>>,
    presence: Mutex<HashMap<UserId, TokenBucket>>,
    started: tokio::time::Instant,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(
        config: RelayConfig,
        store: Store,
        router: Arc<Router>,
        verifier: TokenVerifier,
        shutdown: CancellationToken,
    ) -> Self {
        let conns = ConnTracker::new(config.limits.max_devices, config.limits.max_connections_per_ip);
        Self {
            config,
            store,
            router,
            verifier,
            shutdown,
            conns,
            uplink: Arc::default(),
            presence: Mutex::new(HashMap::new()),
            started: tokio::time::Instant::now(),
        }
    }

    /// How long this process has been serving.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Presence updates are throttled per user (all their devices together).
    pub fn presence_allowed(&self, user: &UserId) -> bool {
        let now = self.started.elapsed();
        let rate = self.config.limits.presence_per_sec;
        let Ok(mut map) = self.presence.lock() else {
            return false;
        };
        map.entry(user.clone()).or_insert_with(|| TokenBucket::new(rate, rate, now)).try_take(now)
    }

    /// Forgets throttling state of users with no session (keeps the map bounded).
    pub fn forget_presence(&self, user: &UserId) {
        if let Ok(mut map) = self.presence.lock() {
            map.remove(user);
        }
    }
}

/// Why a connection was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HubFull,
    TooManyFromAddress,
}

/// Counts connections, in total and per source address.
#[derive(Debug)]
pub struct ConnTracker {
    max_total: usize,
    max_per_ip: usize,
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    tracker: Arc<Hub>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Ok(mut g) = self.tracker.conns.inner.lock() {
            g.0 = g.0.saturating_sub(1);
            if let Some(n) = g.1.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    g.1.remove(&self.ip);
                }
            }
        }
    }
}

impl ConnTracker {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { max_total, max_per_ip, inner: Mutex::new((0, HashMap::new())) }
    }

    pub fn count(&self) -> usize {
        self.inner.lock().map(|g| g.0).unwrap_or(0)
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub fn acquire(hub: &Arc<Hub>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let t = &hub.conns;
        let Ok(mut g) = t.inner.lock() else {
            return Err(Refusal::HubFull);
        };
        if g.0 >= t.max_total {
            return Err(Refusal::HubFull);
        }
        let n = g.1.entry(ip).or_insert(0);
        if *n >= t.max_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        g.0 += 1;
        Ok(ConnSlot { tracker: hub.clone(), ip })
    }
}
