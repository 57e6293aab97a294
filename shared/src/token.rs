//! Device tokens: issued by the cloud, verified offline by hubs.
//!
//! The format is a standard JWT signed with Ed25519 (`alg: EdDSA`) through the
//! `jsonwebtoken` crate, so any JWT tool can inspect one. The claims name the user, their
//! role, the rooms they belong to and the expiry. Verification needs only the cloud's
//! 32-byte public key, which every hub receives in its enrollment bundle, so a hub with no
//! uplink can still authenticate its village. The caller passes `now`: this crate never
//! reads a clock (jsonwebtoken's own expiry check is switched off and done here).
//!
//! A token may also be a renewal (see [`crate::renewal`]): signed by the cloud again, or
//! by a hub under the cloud's delegation. Such a token names its lineage (`lin`) and, when
//! a hub signed it, carries the delegation (`dlg`) and the cloud-signed ancestor it renews
//! (`org`), so that a verifier holding only the cloud's public key checks the whole chain.

pub mod renewal;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{RoomId, UserId};

/// What a token holder may do. Checked by servers on every action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Doctor,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Doctor => "doctor",
            Self::Supervisor => "supervisor",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "worker" => Ok(Self::Worker),
            "doctor" => Ok(Self::Doctor),
            "supervisor" => Ok(Self::Supervisor),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?}; use worker, doctor, supervisor or admin")),
        }
    }
}

/// The claims carried by a device token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: UserId,
    pub role: Role,
    pub rooms: Vec<RoomId>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// The issuing cloud's id; a hub accepts only its own cloud's tokens.
    pub iss: String,
    /// Unique token id, for revocation.
    pub jti: String,
    /// On a renewed token: the cloud-issued token its line started from (revoking that one
    /// revokes every renewal of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lin: Option<Lineage>,
    /// On a token a hub renewed: the cloud's delegation to the hub's key (a compact JWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlg: Option<String>,
    /// On a token a hub renewed: the cloud-signed token it renews (possibly expired), which
    /// bounds what the hub may sign: same user, role and rooms, no longer a lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

/// Where a renewed token's line started: the cloud-issued token's id and issue time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub jti: String,
    pub iat: u64,
}

impl Claims {
    /// Claims of a token the cloud issues (not a renewal).
    pub fn new(sub: UserId, role: Role, rooms: Vec<RoomId>, iat: u64, exp: u64, iss: String, jti: String) -> Self {
        Self { sub, role, rooms, exp, iat, iss, jti, lin: None, dlg: None, org: None }
    }

    pub fn may_use_room(&self, room: &RoomId) -> bool {
        self.rooms.iter().any(|r| r == room)
    }

    /// The id of the cloud-issued token this line started from (this token's own if it is
    /// not a renewal): what a per-token revocation names.
    pub fn origin_jti(&self) -> &str {
        self.lin.as_ref().map_or(&self.jti, |l| &l.jti)
    }

    /// When the line started: what a user revocation's `issued_before` is compared with,
    /// so a renewal made after a user was revoked does not escape the revocation.
    pub fn origin_iat(&self) -> u64 {
        self.lin.as_ref().map_or(self.iat, |l| l.iat)
    }

    /// `exp - iat`, seconds.
    pub fn lifetime(&self) -> u64 {
        self.exp.saturating_sub(self.iat)
    }

    /// The moment half the token's life has gone (seconds): from then on it is renewed.
    pub fn half_life(&self) -> u64 {
        self.iat.saturating_add(self.lifetime() / 2)
    }

    /// The delegation this token was signed under, as read from it (the verifier has
    /// checked it when these claims came out of [`TokenVerifier::verify`]).
    pub fn delegation(&self) -> Option<renewal::Delegation> {
        self.dlg.as_deref().and_then(|d| jsonwebtoken::dangerous::insecure_decode_claims(d).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a valid Outpost token: {reason}")]
    Malformed { reason: String },
    #[error("the token's signature does not verify with this cloud's key")]
    BadSignature,
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("the token was issued by {issuer:?}, not by this hub's cloud")]
    WrongIssuer { issuer: String },
    #[error("the signing key is invalid: {reason}")]
    BadKey { reason: String },
    #[error("the token's renewal does not hold: {reason}")]
    BadDelegation { reason: String },
}

/// PKCS#8 v1 prefix for a bare Ed25519 seed (RFC 8410): the DER header jsonwebtoken wants
/// in front of the 32 secret bytes.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Issues tokens (the cloud holds one).
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    public: [u8; 32],
    issuer: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer from a 32-byte Ed25519 secret seed.
    pub fn from_seed(seed: &[u8; 32], issuer: impl Into<String>) -> Self {
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(seed);
        let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes();
        Self { key: EncodingKey::from_ed_der(&der), public, issuer: issuer.into() }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` (whose `iss` should be this signer's issuer).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.sign_as(None, claims)
    }

    /// Signs any claims with header `typ` (`None`: a plain JWT).
    pub(crate) fn sign_as<T: Serialize>(&self, typ: Option<&str>, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        if let Some(t) = typ {
            header.typ = Some(t.to_owned());
        }
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| TokenError::BadKey { reason: e.to_string() })
    }
}

/// Verifies tokens offline (every hub and the cloud hold one).
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    issuer: String,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(public_key: &[u8; 32], issuer: impl Into<String>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked below against the caller's clock, not jsonwebtoken's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self { key: DecodingKey::from_ed_der(public_key), issuer: issuer.into(), validation }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies signature, issuer and expiry; `now` is seconds since the Unix epoch. A
    /// renewal signed by a hub is verified through its delegation (see
    /// [`crate::renewal`]): delegation signed by this cloud's key, token signed by the
    /// delegated key, no longer-lived than the delegation, and no wider than its
    /// cloud-signed ancestor.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        // Which key to check with depends on whether the token claims a delegation; the
        // answer is only a choice of path: each path verifies every signature it relies on.
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| TokenError::Malformed { reason: e.to_string() })?;
        let claims = match peek.dlg {
            None => {
                let c = self.signed_by_cloud(token)?;
                if c.org.is_some() {
                    return Err(TokenError::BadDelegation { reason: "an ancestor without a delegation".into() });
                }
                c
            }
            Some(dlg) => renewal::verify_delegated(self, token, &dlg, now)?,
        };
        if claims.exp <= now {
            return Err(TokenError::Expired { exp: claims.exp, now });
        }
        Ok(claims)
    }

    /// A token signed by the cloud's own key, of this issuer, whatever its expiry.
    pub(crate) fn signed_by_cloud(&self, token: &str) -> Result<Claims, TokenError> {
        let c: Claims = decode_with(token, &self.key, &self.validation)?;
        if c.dlg.is_some() {
            return Err(TokenError::BadDelegation { reason: "a delegation on a cloud-signed token".into() });
        }
        self.check_issuer(c)
    }

    pub(crate) fn check_issuer<T: Issued>(&self, c: T) -> Result<T, TokenError> {
        if c.iss() != self.issuer {
            return Err(TokenError::WrongIssuer { issuer: c.iss().to_owned() });
        }
        Ok(c)
    }

    pub(crate) fn key(&self) -> &DecodingKey {
        &self.key
    }

    pub(crate) fn validation(&self) -> &Validation {
        &self.validation
    }
}

/// Claims that name their issuer.
pub(crate) trait Issued {
    fn iss(&self) -> &str;
}

impl Issued for Claims {
    fn iss(&self) -> &str {
        &self.iss
    }
}

/// The one claim read before verification: whether a delegation is claimed.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    dlg: Option<String>,
}

/// Decodes and checks the signature of `token` with `key`; only EdDSA is accepted.
pub(crate) fn decode_with<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<T, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<T>(token, key, validation).map(|d| d.claims).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => TokenError::Malformed { reason: e.to_string() },
    })
}

/// The header `typ` of `token`, unverified.
pub(crate) fn header_typ(token: &str) -> Result<Option<String>, TokenError> {
    jsonwebtoken::decode_header(token).map(|h| h.typ).map_err(|e| TokenError::Malformed { reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims::new(
            UserId::new("amina").unwrap_or_else(|e| panic!("{e}")),
            Role::Worker,
            vec![RoomId::new("clinic").unwrap_or_else(|e| panic!("{e}"))],
            100,
            exp,
            "cloud-1".into(),
            "t1".into(),
        )
    }

    fn signer(seed: u8) -> TokenSigner {
        TokenSigner::from_seed(&[seed; 32], "cloud-1")
    }

    #[test]
    fn issued_token_verifies_offline() {
        let s = signer(7);
        let tok = s.sign(&claims(1_000)).unwrap_or_default();
        let v = TokenVerifier::new(&s.public_key(), "cloud-1");
        assert_eq!(v.verify(&tok, 999), Ok(claims(1_000)));
    }

    #[test]
    fn expired_token_is_refused() {
        let s = signer(7);
        let tok = s.sign(&claims(1_000)).unwrap_or_default();
        let v = TokenVerifier::new(&s.public_key(), "cloud-1");
        assert_eq!(v.verify(&tok, 1_000), Err(TokenError::Expired { exp: 1_000, now: 1_000 }));
    }

    #[test]
    fn token_from_another_key_is_refused() {
        let tok = signer(1).sign(&claims(1_000)).unwrap_or_default();
        let v = TokenVerifier::new(&signer(2).public_key(), "cloud-1");
        assert_eq!(v.verify(&tok, 10), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let s = signer(3);
        let tok = s.sign(&claims(1_000)).unwrap_or_default();
        let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
        let mut other = claims(1_000);
        other.role = Role::Admin;
        let forged = s.sign(&other).unwrap_or_default();
        parts[1] = forged.split('.').nth(1).unwrap_or_default().to_owned();
        let v = TokenVerifier::new(&s.public_key(), "cloud-1");
        assert_eq!(v.verify(&parts.join("."), 10), Err(TokenError::BadSignature));
    }

    #[test]
    fn only_eddsa_is_accepted_not_none_nor_hmac_with_the_public_key() {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let s = signer(5);
        let v = TokenVerifier::new(&s.public_key(), "cloud-1");
        let mut admin = claims(1_000);
        admin.role = Role::Admin;
        let body = b64(&serde_json::to_vec(&admin).unwrap_or_default());
        // Positive control: the same claims signed as the cloud signs verify.
        assert!(v.verify(&s.sign(&admin).unwrap_or_default(), 10).is_ok());
        // `alg: none`, with and without an (empty) signature part.
        let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
        for forged in [format!("{none}.{body}."), format!("{none}.{body}")] {
            assert!(v.verify(&forged, 10).is_err(), "alg none accepted: {forged}");
        }
        // HS256 keyed with the public key every hub holds (the classic confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("JWT".into());
        let hmac = jsonwebtoken::encode(&h, &admin, &EncodingKey::from_secret(&s.public_key())).unwrap_or_default();
        assert!(!hmac.is_empty());
        assert!(v.verify(&hmac, 10).is_err(), "an HMAC token keyed with the public key was accepted");
    }

    #[test]
    fn garbage_and_foreign_issuer_are_refused() {
        let s = signer(4);
        let v = TokenVerifier::new(&s.public_key(), "cloud-1");
        assert!(matches!(v.verify("not a token", 10), Err(TokenError::Malformed { .. })));
        let other = TokenSigner::from_seed(&[4; 32], "cloud-2");
        let mut c = claims(1_000);
        c.iss = "cloud-2".into();
        let tok = other.sign(&c).unwrap_or_default();
        assert_eq!(v.verify(&tok, 10), Err(TokenError::WrongIssuer { issuer: "cloud-2".into() }));
    }
}
