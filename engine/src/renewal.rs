//! This server's part in token renewal (the rules are `outpost_shared::renewal`'s).
//!
//! One [`Renewal`] per server, shared by its sessions and its link:
//!
//! - on the cloud it holds the cloud's token key: sessions on the doctors' listener are
//!   renewed with it, and every version-2 hub that sends its renewal key gets a delegation
//!   to it (`security.delegation_days`);
//! - on a hub it holds the hub's renewal key (`DIR/identity/renewal.key`, made at first
//!   start, 0600) and the latest delegation the cloud gave that key (kept in the store, so
//!   a hub cut off after a restart still renews). With no delegation, or an expired one, it
//!   renews nothing and sessions work as before.
//!
//! What it does not do: decide when a session asks (the session's half-life timer) or
//! check revocation (the caller asks the store first: revocation wins).

use std::path::Path;
use std::sync::Mutex;

use outpost_shared::renewal::{self, Delegation, Renewed, Renewer};
use outpost_shared::{Claims, TokenSigner, TokenVerifier};
use tokio::sync::watch;

/// What a server renews with; empty until set up.
#[derive(Debug)]
pub struct Renewal {
    verifier: TokenVerifier,
    state: Mutex<State>,
    /// The current delegation's expiry (0: none); the hub's link waits on it.
    delegation_exp: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    renewer: Option<Renewer>,
    /// A hub's renewal key and relay id (to check delegations against).
    hub: Option<(TokenSigner, String)>,
    /// The cloud's key and how long its delegations last, seconds.
    cloud: Option<(TokenSigner, u64)>,
}

/// Why a delegation from the cloud was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("this server has no renewal key")]
    NoKey,
    #[error(transparent)]
    Token(#[from] outpost_shared::TokenError),
    #[error("the delegation is for {what}, not for this hub")]
    NotOurs { what: String },
}

impl Renewal {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier, state: Mutex::default(), delegation_exp: watch::Sender::new(0) }
    }

    /// The cloud: renew with `signer`; delegate to hubs for `delegation_secs`.
    pub fn set_cloud(&self, signer: TokenSigner, delegation_secs: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.renewer = Some(Renewer::Cloud(signer.clone()));
            s.cloud = Some((signer, delegation_secs));
        }
    }

    /// A hub: its renewal key (seed) and relay id. Renews nothing until a delegation is
    /// installed.
    pub fn set_hub_key(&self, seed: &[u8; 32], relay: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.hub = Some((TokenSigner::from_seed(seed, self.verifier.issuer()), relay.to_owned()));
        }
    }

    /// The hub's renewal public key, if this is a hub with one.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.state.lock().ok()?.hub.as_ref().map(|(k, _)| k.public_key())
    }

    /// Checks a delegation from the cloud (its key, this hub's relay id and renewal key,
    /// not expired at `now`) and renews with it from now on.
    pub fn install(&self, dlg: &str, now: u64) -> Result<Delegation, DelegationError> {
        let claims = renewal::verify_delegation(&self.verifier, dlg, now)?;
        let mut s = self.state.lock().map_err(|_| DelegationError::NoKey)?;
        let Some((key, relay)) = s.hub.clone() else { return Err(DelegationError::NoKey) };
        if claims.relay != *relay {
            return Err(DelegationError::NotOurs { what: format!("relay {}", claims.relay) });
        }
        if claims.public_key()? != key.public_key() {
            return Err(DelegationError::NotOurs { what: "another renewal key".into() });
        }
        s.renewer = Some(Renewer::Hub { key, delegation: dlg.to_owned(), claims: claims.clone() });
        self.delegation_exp.send_replace(claims.exp);
        Ok(claims)
    }

    /// The current delegation (a hub's), if any.
    pub fn delegation(&self) -> Option<Delegation> {
        match &self.state.lock().ok()?.renewer {
            Some(Renewer::Hub { claims, .. }) => Some(claims.clone()),
            _ => None,
        }
    }

    /// Changes when a new delegation is installed (its expiry).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.delegation_exp.subscribe()
    }

    /// Whether this server may ever renew (a cloud, or a hub with a renewal key): sessions
    /// elsewhere set no renewal timer.
    pub fn enabled(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.renewer.is_some() || s.hub.is_some())
    }

    /// Renews `claims` (verified, not revoked: the caller checked) if it passed half its
    /// life at `now`. `None`: nothing to renew with, or nothing to gain.
    pub fn renew(&self, token: &str, claims: &Claims, now: u64) -> Option<Renewed> {
        if now < claims.half_life() {
            return None;
        }
        let renewer = self.state.lock().ok()?.renewer.clone()?;
        match renewer.renew(token, claims, now, uuid::Uuid::new_v4().to_string()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, user = %claims.sub, "token renewal refused by its own rules");
                None
            }
        }
    }

    /// Cloud side: a delegation to `relay`'s renewal key. `None` on a server that is not a
    /// cloud.
    /// Returns the delegation, its id and its expiry.
    pub fn delegate(&self, relay: &str, key: &[u8; 32], now: u64) -> Option<(String, String, u64)> {
        let (signer, secs) = self.state.lock().ok()?.cloud.clone()?;
        let jti = uuid::Uuid::new_v4().to_string();
        match renewal::delegate(&signer, relay, key, now, secs, jti.clone()) {
            Ok(d) => Some((d, jti, now.saturating_add(secs))),
            Err(e) => {
                tracing::error!(error = %e, %relay, "cannot sign a delegation");
                None
            }
        }
    }
}

/// The hub's renewal key seed from `path`, made (random, 0600) if there is none.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a 32-byte key", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
            crate::private::write(path, &seed)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}
