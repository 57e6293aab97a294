//! Token renewal and hub delegation: tokens that renew without reaching the hospital.
//!
//! Who may sign what:
//!
//! - the cloud's token key signs device tokens (issued or renewed) and **delegations**;
//! - a hub's renewal key signs **renewals** only, and only while it holds a delegation.
//!
//! A delegation is a compact JWS (header `typ: "outpost-dlg"`) signed by the cloud's key
//! naming the relay, the hub's Ed25519 renewal public key, an issue time and an expiry.
//! A token a hub renews carries that delegation (`dlg`) and the cloud-signed ancestor it
//! renews (`org`): any verifier holding the cloud's public key checks, in
//! [`verify_delegated`], delegation by the cloud's key → token by the delegated key →
//! token `exp` ≤ delegation `exp` → same user, role and rooms as the ancestor, no longer a
//! lifetime, and the ancestor's lineage. So a hub — or a thief holding its key — can only
//! renew tokens the cloud signed and it has seen, never widen one, never make a user, and
//! only until its delegation expires.
//!
//! A renewal keeps `sub`, `role`, `rooms` and the lifetime (`exp - iat`) of the token it
//! renews, gets a fresh `jti` and `iat = now`, and names its line's origin (`lin`: the
//! cloud-issued token's `jti` and `iat`). Revocations compare against the origin too (see
//! [`crate::revocation`]), so revocation always wins: a renewal never escapes its
//! ancestor's revocation. This module is pure: the caller passes `now` and the new `jti`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Claims, Issued, Lineage, TokenError, TokenSigner, TokenVerifier, decode_with, header_typ};

/// The JWS header `typ` of a delegation (a device token has none): keeps the two kinds of
/// statement the cloud's key signs apart.
pub const DELEGATION_TYP: &str = "outpost-dlg";

/// What a delegation says (the JWS payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The issuing cloud's id.
    pub iss: String,
    /// The relay the cloud gave it to (recorded, and shown in audit logs).
    pub relay: String,
    /// The hub's Ed25519 renewal public key, base64url without padding.
    pub key: String,
    /// Issue time and expiry, seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
    /// Unique id: revoking it (`revoke --jti`) revokes every token signed under it.
    pub jti: String,
}

impl Issued for Delegation {
    fn iss(&self) -> &str {
        &self.iss
    }
}

impl Delegation {
    /// The delegated public key's bytes.
    pub fn public_key(&self) -> Result<[u8; 32], TokenError> {
        let bad = || TokenError::BadDelegation { reason: "the delegated key is not an Ed25519 public key".into() };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&self.key).map_err(|_| bad())?;
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad())
    }

    /// The moment half the delegation's life has gone: a hub asks for a new one then.
    pub fn half_life(&self) -> u64 {
        self.iat.saturating_add(self.exp.saturating_sub(self.iat) / 2)
    }
}

fn bad(reason: impl Into<String>) -> TokenError {
    TokenError::BadDelegation { reason: reason.into() }
}

/// Cloud side: a delegation to `relay`'s renewal key `key`, valid `secs` from `now`.
pub fn delegate(
    cloud: &TokenSigner,
    relay: &str,
    key: &[u8; 32],
    now: u64,
    secs: u64,
    jti: String,
) -> Result<String, TokenError> {
    let d = Delegation {
        iss: cloud.issuer().to_owned(),
        relay: relay.to_owned(),
        key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        iat: now,
        exp: now.saturating_add(secs),
        jti,
    };
    cloud.sign_as(Some(DELEGATION_TYP), &d)
}

/// Checks a delegation: signed by the cloud's key, of its issuer, not expired at `now`.
pub fn verify_delegation(cloud: &TokenVerifier, dlg: &str, now: u64) -> Result<Delegation, TokenError> {
    if header_typ(dlg)?.as_deref() != Some(DELEGATION_TYP) {
        return Err(bad("the delegation is not one"));
    }
    let d: Delegation = decode_with(dlg, cloud.key(), cloud.validation()).map_err(|e| match e {
        TokenError::BadSignature => bad("the delegation is not signed by this cloud's key"),
        other => other,
    })?;
    let d = cloud.check_issuer(d)?;
    if d.exp <= now {
        return Err(bad(format!("the delegation expired at {}", d.exp)));
    }
    Ok(d)
}

/// The rules a renewal must keep against the token it renews: the same user, role and
/// rooms, no longer a lifetime, the same line, not issued earlier.
pub fn check_renewal(old: &Claims, new: &Claims) -> Result<(), TokenError> {
    if new.sub != old.sub || new.role != old.role {
        return Err(bad("a renewal names another user or role"));
    }
    if new.rooms != old.rooms {
        return Err(bad("a renewal names other rooms than the token it renews"));
    }
    if new.lifetime() > old.lifetime() {
        return Err(bad("a renewal lives longer than the token it renews"));
    }
    if new.iat < old.iat || new.iss != old.iss {
        return Err(bad("a renewal predates the token it renews, or comes from another cloud"));
    }
    let origin = Lineage { jti: old.origin_jti().to_owned(), iat: old.origin_iat() };
    if new.lin.as_ref() != Some(&origin) {
        return Err(bad("a renewal names another line than the token it renews"));
    }
    Ok(())
}

/// Verifies a token that claims the delegation `dlg` (see the module docs); the caller
/// checks the token's own expiry.
pub(crate) fn verify_delegated(cloud: &TokenVerifier, token: &str, dlg: &str, now: u64) -> Result<Claims, TokenError> {
    let d = verify_delegation(cloud, dlg, now)?;
    let key = jsonwebtoken::DecodingKey::from_ed_der(&d.public_key()?);
    if header_typ(token)?.as_deref() == Some(DELEGATION_TYP) {
        return Err(bad("a delegation is not a device token"));
    }
    let c: Claims = decode_with(token, &key, cloud.validation())?;
    let c = cloud.check_issuer(c)?;
    if c.dlg.as_deref() != Some(dlg) {
        return Err(bad("the token names another delegation"));
    }
    // No rule on `iat` against the delegation's: a hub's clock behind the cloud's would
    // make every renewal look older than the delegation; `exp` and the ancestor bound it.
    if c.exp > d.exp {
        return Err(bad("the token outlives the delegation it was signed under"));
    }
    let org = c.org.as_deref().ok_or_else(|| bad("a hub's renewal without its cloud-signed ancestor"))?;
    // The ancestor's own expiry does not matter (renewals go on while the village is cut
    // off); its signature, issuer and claims do.
    let ancestor = cloud.signed_by_cloud(org)?;
    if ancestor.org.is_some() {
        return Err(bad("the ancestor is itself a hub's renewal"));
    }
    check_renewal(&ancestor, &c)?;
    Ok(c)
}

/// A renewed token and its expiry (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub token: String,
    pub claims: Claims,
}

/// What signs renewals on one server.
#[derive(Clone)]
pub enum Renewer {
    /// The cloud, with its own token key.
    Cloud(TokenSigner),
    /// A hub: its renewal key, and the delegation the cloud gave that key.
    Hub { key: TokenSigner, delegation: String, claims: Delegation },
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cloud(_) => f.write_str("Renewer::Cloud"),
            Self::Hub { claims, .. } => f.debug_struct("Renewer::Hub").field("delegation", claims).finish(),
        }
    }
}

impl Renewer {
    /// Renews `old` (the verified claims of `token`) at `now` with id `jti`. `None` when
    /// there is nothing to gain: a hub whose delegation expires before the token would.
    /// The caller has checked revocation and that `old` passed half its life.
    pub fn renew(&self, token: &str, old: &Claims, now: u64, jti: String) -> Result<Option<Renewed>, TokenError> {
        let mut new = Claims {
            sub: old.sub.clone(),
            role: old.role,
            rooms: old.rooms.clone(),
            exp: now.saturating_add(old.lifetime()),
            iat: now,
            iss: old.iss.clone(),
            jti,
            lin: Some(Lineage { jti: old.origin_jti().to_owned(), iat: old.origin_iat() }),
            dlg: None,
            org: None,
        };
        let signer = match self {
            Self::Cloud(signer) => signer,
            Self::Hub { key, delegation, claims } => {
                new.exp = new.exp.min(claims.exp);
                if new.exp <= old.exp || claims.exp <= now {
                    return Ok(None);
                }
                new.dlg = Some(delegation.clone());
                // The ancestor a verifier compares with: the cloud-signed token itself,
                // or the one a hub's renewal already carries.
                new.org = Some(old.org.clone().unwrap_or_else(|| token.to_owned()));
                key
            }
        };
        check_renewal(old, &new)?;
        Ok(Some(Renewed { token: signer.sign(&new)?, claims: new }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RoomId, UserId};
    use crate::token::Role;

    const CLOUD: &str = "cloud-1";

    fn room(r: &str) -> RoomId {
        RoomId::new(r).unwrap_or_else(|e| panic!("{e}"))
    }

    fn original(iat: u64, exp: u64) -> Claims {
        Claims::new(
            UserId::new("amina").unwrap_or_else(|e| panic!("{e}")),
            Role::Worker,
            vec![room("clinic")],
            iat,
            exp,
            CLOUD.into(),
            "orig".into(),
        )
    }

    struct World {
        cloud: TokenSigner,
        verifier: TokenVerifier,
        hub_key: TokenSigner,
    }

    fn world() -> World {
        let cloud = TokenSigner::from_seed(&[1; 32], CLOUD);
        let verifier = TokenVerifier::new(&cloud.public_key(), CLOUD);
        World { cloud, verifier, hub_key: TokenSigner::from_seed(&[9; 32], CLOUD) }
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A hub renewer holding a delegation issued at `iat` for `secs`.
    fn hub(w: &World, iat: u64, secs: u64) -> Renewer {
        let dlg = ok(delegate(&w.cloud, "village-1", &w.hub_key.public_key(), iat, secs, "d1".into()));
        let claims = ok(verify_delegation(&w.verifier, &dlg, iat));
        Renewer::Hub { key: w.hub_key.clone(), delegation: dlg, claims }
    }

    fn renew(r: &Renewer, token: &str, old: &Claims, now: u64) -> Renewed {
        ok(r.renew(token, old, now, format!("r{now}"))).unwrap_or_else(|| panic!("no renewal"))
    }

    #[test]
    fn a_hubs_renewal_verifies_with_the_cloud_key_alone_and_keeps_who_and_where() {
        let w = world();
        let old = original(1_000, 1_060);
        let token = ok(w.cloud.sign(&old));
        let r = renew(&hub(&w, 900, 10_000), &token, &old, 1_040);
        let got = ok(w.verifier.verify(&r.token, 1_061));
        assert_eq!((&got.sub, got.role, &got.rooms), (&old.sub, old.role, &old.rooms));
        assert_eq!((got.iat, got.exp), (1_040, 1_100));
        assert_eq!(got.lin, Some(Lineage { jti: "orig".into(), iat: 1_000 }));
        assert_eq!(got.delegation().map(|d| d.relay), Some("village-1".into()));
        // Renewed again on the hub: still verifies, still names the first ancestor.
        let again = renew(&hub(&w, 900, 10_000), &r.token, &r.claims, 1_080);
        let got = ok(w.verifier.verify(&again.token, 1_110));
        assert_eq!((got.origin_jti(), got.exp), ("orig", 1_140));
        assert_eq!(got.org.as_deref(), Some(token.as_str()));
    }

    #[test]
    fn the_cloud_renews_with_its_own_key_and_a_lineage() {
        let w = world();
        let old = original(1_000, 1_060);
        let r = renew(&Renewer::Cloud(w.cloud.clone()), &ok(w.cloud.sign(&old)), &old, 1_050);
        let got = ok(w.verifier.verify(&r.token, 1_061));
        assert_eq!((got.exp, got.origin_jti(), got.dlg.as_deref()), (1_110, "orig", None));
    }

    /// A hub key signing a token wider than its ancestor (here: one more room) is refused.
    #[test]
    fn wider_rooms_are_refused() {
        let w = world();
        let old = original(1_000, 1_060);
        let token = ok(w.cloud.sign(&old));
        let Renewer::Hub { delegation, .. } = hub(&w, 900, 10_000) else { panic!("a hub renewer") };
        let mut wide = renew(&hub(&w, 900, 10_000), &token, &old, 1_040).claims;
        wide.rooms.push(room("maternity"));
        assert!(matches!(check_renewal(&old, &wide), Err(TokenError::BadDelegation { .. })));
        wide.dlg = Some(delegation);
        let forged = ok(w.hub_key.sign(&wide));
        assert!(matches!(w.verifier.verify(&forged, 1_041), Err(TokenError::BadDelegation { .. })));
        // Nor another role, nor a longer life.
        let mut admin = renew(&hub(&w, 900, 10_000), &token, &old, 1_040).claims;
        admin.role = Role::Admin;
        assert!(w.verifier.verify(&ok(w.hub_key.sign(&admin)), 1_041).is_err());
        let mut long = renew(&hub(&w, 900, 10_000), &token, &old, 1_040).claims;
        long.exp += 1;
        assert!(w.verifier.verify(&ok(w.hub_key.sign(&long)), 1_041).is_err());
    }

    #[test]
    fn an_expired_delegation_is_refused_and_renews_nothing() {
        let w = world();
        let old = original(1_000, 1_060);
        let token = ok(w.cloud.sign(&old));
        let r = renew(&hub(&w, 900, 200), &token, &old, 1_040);
        assert_eq!(r.claims.exp, 1_100);
        assert!(w.verifier.verify(&r.token, 1_099).is_ok());
        // The token's exp is the delegation's: past it, both are refused.
        assert!(w.verifier.verify(&r.token, 1_100).is_err());
        let dlg = ok(delegate(&w.cloud, "v", &w.hub_key.public_key(), 900, 100, "d".into()));
        assert!(matches!(verify_delegation(&w.verifier, &dlg, 1_000), Err(TokenError::BadDelegation { .. })));
        // A delegation that ends before the token would gains nothing: no renewal.
        assert_eq!(ok(hub(&w, 900, 150).renew(&token, &old, 1_040, "x".into())), None);
    }

    #[test]
    fn a_renewal_beyond_its_delegation_is_refused() {
        let w = world();
        let old = original(1_000, 1_060);
        let token = ok(w.cloud.sign(&old));
        let mut beyond = renew(&hub(&w, 900, 180), &token, &old, 1_040).claims;
        assert_eq!(beyond.exp, 1_080);
        beyond.exp = 1_081;
        beyond.iat = 1_041;
        let forged = ok(w.hub_key.sign(&beyond));
        assert!(matches!(w.verifier.verify(&forged, 1_050), Err(TokenError::BadDelegation { .. })));
    }

    #[test]
    fn wrong_issuer_tampered_delegation_and_undelegated_keys_are_refused() {
        let w = world();
        let old = original(1_000, 1_060);
        let token = ok(w.cloud.sign(&old));
        let r = renew(&hub(&w, 900, 10_000), &token, &old, 1_040);
        // Another cloud (another key, another id) delegating the same hub key.
        let other = TokenSigner::from_seed(&[2; 32], "cloud-2");
        let foreign = ok(delegate(&other, "v", &w.hub_key.public_key(), 900, 10_000, "d".into()));
        assert!(verify_delegation(&w.verifier, &foreign, 1_000).is_err());
        let same_key_other_id = TokenSigner::from_seed(&[1; 32], "cloud-2");
        let renamed = ok(delegate(&same_key_other_id, "v", &w.hub_key.public_key(), 900, 10_000, "d".into()));
        assert!(matches!(verify_delegation(&w.verifier, &renamed, 1_000), Err(TokenError::WrongIssuer { .. })));
        // A delegation naming another key (the thief's) in place of the cloud-signed one.
        let mut c = r.claims.clone();
        let thief = TokenSigner::from_seed(&[7; 32], CLOUD);
        let mut d = ok(verify_delegation(&w.verifier, c.dlg.as_deref().unwrap_or_default(), 1_000));
        d.key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thief.public_key());
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ok(serde_json::to_vec(&d)));
        let mut parts: Vec<String> = c.dlg.as_deref().unwrap_or_default().split('.').map(str::to_owned).collect();
        parts[1] = payload;
        c.dlg = Some(parts.join("."));
        assert!(matches!(w.verifier.verify(&ok(thief.sign(&c)), 1_041), Err(TokenError::BadDelegation { .. })));
        // A key without any delegation signing a token that names none.
        let mut plain = r.claims.clone();
        plain.dlg = None;
        plain.org = None;
        assert_eq!(w.verifier.verify(&ok(thief.sign(&plain)), 1_041), Err(TokenError::BadSignature));
        // A delegation is not a device token, nor a device token a delegation.
        let dlg = r.claims.dlg.clone().unwrap_or_default();
        assert!(w.verifier.verify(&dlg, 1_000).is_err());
        assert!(verify_delegation(&w.verifier, &token, 1_000).is_err());
    }
}
