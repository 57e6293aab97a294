//! The hub's shared state: configuration, store, router, token verifier, connection
//! accounting. One `Arc<Hub<S>>` is handed to every session.

use outpost_storage::Storage;
use std::collections::HashMap;

use crate::clock::now_ms;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use outpost_shared::{Action, Body, Claims, Denied, ErrorCode, RoomId, TokenError, TokenVerifier, UserId};
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::link::uplink::UplinkStatus;
use crate::ratelimit::TokenBucket;
use crate::router::Router;
use outpost_storage::AuditEvent;

/// What a device or API caller with a revoked token is told (the reason stays in the
/// audit log).
pub const REVOKED: &str = "this token was revoked; ask your supervisor for a new one";

pub struct Hub<S: Storage> {
    pub config: RelayConfig,
    pub store: S,
    pub router: Arc<Router>,
    pub verifier: TokenVerifier,
    pub shutdown: CancellationToken,
    pub conns: Arc<ConnTracker>,
    /// The uplink's state (stays default on the cloud and on a hub with no cloud).
    pub uplink: Arc<Mutex<UplinkStatus>>,
    /// Media blobs (None only where a caller builds a hub without a blob store).
    pub blobs: Option<crate::media::Blobs<S>>,
    /// What this server renews tokens with (nothing until set up; see [`crate::renewal`]).
    pub renewal: Arc<crate::renewal::Renewal>,
    /// History the hub asks of its cloud (unused on the cloud itself).
    pub cloud_history: Arc<crate::link::history::CloudHistory>,
    /// The hub's LAN HTTPS (set once at start when it serves under its own name).
    pub lan: std::sync::OnceLock<crate::lan_cert::LanHttps>,
    presence: Mutex<HashMap<UserId, TokenBucket>>,
    /// The HTTP API's send rate limit, one bucket per user (an API caller has no
    /// connection to hang a bucket on).
    api_sends: Mutex<HashMap<UserId, TokenBucket>>,
    /// Throttles audit rows for refusals; counts the ones not recorded.
    refusals: Mutex<(TokenBucket, u64)>,
    started: tokio::time::Instant,
}

impl<S: Storage> std::fmt::Debug for Hub<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("epoch", &self.store.epoch()).finish_non_exhaustive()
    }
}

impl<S: Storage> Hub<S> {
    pub fn new(
        config: RelayConfig,
        store: S,
        router: Arc<Router>,
        verifier: TokenVerifier,
        shutdown: CancellationToken,
    ) -> Self {
        let conns = Arc::new(ConnTracker::new(config.limits.max_devices, config.limits.max_connections_per_ip));
        let per_sec = config.security.audit_refusals_per_sec;
        let refusals = Mutex::new((TokenBucket::new(per_sec, per_sec, std::time::Duration::ZERO), 0));
        let renewal = Arc::new(crate::renewal::Renewal::new(verifier.clone()));
        Self {
            renewal,
            refusals,
            config,
            store,
            router,
            verifier,
            shutdown,
            conns,
            uplink: Arc::default(),
            blobs: None,
            cloud_history: Arc::default(),
            lan: std::sync::OnceLock::new(),
            presence: Mutex::new(HashMap::new()),
            api_sends: Mutex::new(HashMap::new()),
            started: tokio::time::Instant::now(),
        }
    }

    /// How long this process has been serving.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Presence updates are throttled per user (all their devices together).
    pub fn presence_allowed(&self, user: &UserId) -> bool {
        let rate = self.config.limits.presence_per_sec;
        self.take_token(&self.presence, user, rate, rate)
    }

    /// Whether `user` may post one more message over the HTTP API: the same
    /// `limits.rate_per_sec` and `limits.rate_burst` a device connection gets, shared by
    /// all of the user's API calls.
    pub fn api_send_allowed(&self, user: &UserId) -> bool {
        let limits = &self.config.limits;
        self.take_token(&self.api_sends, user, limits.rate_per_sec, limits.rate_burst)
    }

    fn take_token(&self, buckets: &Mutex<HashMap<UserId, TokenBucket>>, user: &UserId, rate: u32, burst: u32) -> bool {
        let now = self.started.elapsed();
        let Ok(mut map) = buckets.lock() else {
            return false;
        };
        map.entry(user.clone()).or_insert_with(|| TokenBucket::new(rate, burst, now)).try_take(now)
    }

    /// Membership and role rules for a room action. A room nobody has named on this
    /// server is `unknown_room` (so a typo is told apart from a refusal).
    pub fn authorize(&self, claims: &Claims, action: Action<'_>) -> Result<(), (ErrorCode, String)> {
        match self.config.policy.check(claims, action) {
            Ok(()) => Ok(()),
            Err(Denied::NotMember(room)) if !self.store.room_known(&room) => {
                Err((ErrorCode::UnknownRoom, format!("no room named {room} on this server")))
            }
            Err(denied) => Err((ErrorCode::Forbidden, denied.to_string())),
        }
    }

    /// What a body must be, whoever sends it (device or HTTP API): nested no deeper than
    /// `limits.max_body_depth` (a body nested thousands deep is small but breaks the
    /// parsers of every device it is fanned out to), and in an end-to-end encrypted room
    /// an encrypted envelope (the server never sees the plaintext, so it accepts none).
    pub fn check_body(&self, room: &RoomId, body: &Body) -> Result<(), (ErrorCode, String)> {
        let max_depth = self.config.limits.max_body_depth;
        if body.depth() > max_depth {
            return Err((ErrorCode::TooLarge, format!("the body nests more than {max_depth} levels deep; flatten it")));
        }
        if !self.config.policy.is_encrypted(room) {
            return Ok(());
        }
        outpost_shared::e2e::check_envelope(body)
            .map(drop)
            .map_err(|e| (ErrorCode::BadFrame, format!("room {room} is end-to-end encrypted; {e}")))
    }

    /// A body that names a blob (`{"media": {"sha256": …}}`): the blob must be complete
    /// on this server and the sender must have uploaded it or be able to read a room it
    /// was sent in. The body gets the blob's true size and type and, for an image, its
    /// preview. Other bodies are returned as they are.
    pub async fn attach_media(&self, claims: &Claims, body: Body) -> Result<Body, (ErrorCode, String)> {
        let blob = match outpost_shared::media::body_ref(&body) {
            Ok(None) => return Ok(body),
            Ok(Some(b)) => b,
            Err(e) => return Err((ErrorCode::BadFrame, e.to_string())),
        };
        let internal = |e: crate::media::MediaError| (ErrorCode::Internal, e.to_string());
        let Some(blobs) = &self.blobs else {
            return Err((ErrorCode::BadFrame, "this server does not take media".into()));
        };
        let missing = || {
            (
                ErrorCode::BadFrame,
                format!("blob {blob} is not on this server: upload the file first (POST /api/media), then send again"),
            )
        };
        let info = blobs.info(blob).await.map_err(internal)?.filter(|i| !i.evicted).ok_or_else(missing)?;
        let (policy, c) = (self.config.policy.clone(), claims.clone());
        let may = blobs
            .may_use(&claims.sub, blob, move |r| policy.check(&c, Action::History { room: r }).is_ok())
            .await
            .map_err(internal)?;
        if !may {
            // Same answer as a blob that is not here: a hash alone reveals nothing.
            return Err(missing());
        }
        let preview = match info.preview {
            Some((w, h)) => blobs.preview(blob).await.map_err(internal)?.map(|jpeg| (jpeg, w, h)),
            None => None,
        };
        let facts = outpost_shared::media::MediaFacts { size: info.size, mime: info.mime, preview };
        let out =
            outpost_shared::media::complete_body(&body, &facts).map_err(|e| (ErrorCode::BadFrame, e.to_string()))?;
        let max = self.config.limits.max_body_bytes;
        if out.len() > max {
            return Err((
                ErrorCode::TooLarge,
                format!("with its preview the body is {} bytes; the limit is {max}; shorten the text", out.len()),
            ));
        }
        Ok(out)
    }

    /// Checks a token as every entry point does: signature, issuer, expiry, then the
    /// revocation list. A refusal is audited as `refusal` (a `login_refused` event naming
    /// where the token came from) with the reason appended and, when the token was
    /// genuine, its holder.
    pub async fn verify_token(&self, token: &str, mut refusal: AuditEvent) -> Result<Claims, (ErrorCode, String)> {
        let (code, reason) = match self.verifier.verify(token, now_ms() / 1000) {
            Ok(c) if !self.store.is_revoked(&c) => return Ok(c),
            Ok(c) => {
                refusal = refusal.by(&c);
                (ErrorCode::Unauthenticated, REVOKED.to_owned())
            }
            Err(e @ TokenError::Expired { .. }) => (ErrorCode::TokenExpired, e.to_string()),
            Err(e) => (ErrorCode::Unauthenticated, e.to_string()),
        };
        refusal.detail.push_str(&reason);
        self.audit_refusal(refusal).await;
        Err((code, reason))
    }

    /// A renewal of `claims` (the verified claims of `token`, held by `device`): only once
    /// it passed half its life, never when the revocation list names it or its line
    /// (revocation wins), and only if this server has something to renew with. Audited.
    pub async fn renew_token(
        &self,
        token: &str,
        claims: &Claims,
        device: &str,
    ) -> Option<outpost_shared::renewal::Renewed> {
        if self.store.is_revoked(claims) {
            return None;
        }
        let r = self.renewal.renew(token, claims, now_ms() / 1000)?;
        // A renewal under a revoked delegation or relay would be refused at once.
        if self.store.is_revoked(&r.claims) {
            return None;
        }
        let by = match r.claims.delegation() {
            Some(d) => format!("relay {} under delegation {}", d.relay, d.jti),
            None => "the cloud".to_owned(),
        };
        let detail = format!(
            "token {} renewed from {} (line {}) by {by}, expires {}",
            r.claims.jti,
            claims.jti,
            r.claims.origin_jti(),
            r.claims.exp
        );
        self.store
            .audit(AuditEvent::new(outpost_storage::AuditKind::TokenIssued, detail).by(claims).device(device))
            .await;
        Some(r)
    }

    /// Records a refusal in the audit log, at most `security.audit_refusals_per_sec`; the
    /// ones dropped meanwhile are counted in the next recorded one's detail.
    pub async fn audit_refusal(&self, mut event: AuditEvent) {
        let suppressed = {
            let Ok(mut g) = self.refusals.lock() else { return };
            if !g.0.try_take(self.started.elapsed()) {
                g.1 += 1;
                return;
            }
            std::mem::take(&mut g.1)
        };
        if suppressed > 0 {
            event.detail.push_str(&format!(" ({suppressed} earlier refusals not recorded: over the audit rate)"));
        }
        self.store.audit(event).await;
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
    tracker: Arc<ConnTracker>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Ok(mut g) = self.tracker.inner.lock() {
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
    pub fn acquire<S: Storage>(hub: &Arc<Hub<S>>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
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
        Ok(ConnSlot { tracker: hub.conns.clone(), ip })
    }
}
