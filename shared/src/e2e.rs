//! End-to-end encrypted rooms: bodies the hub and the cloud carry but cannot read.
//!
//! A room listed in `policy.encrypted_rooms` accepts only message bodies of this shape:
//!
//! ```json
//! {"e2e":{"v":1,"alg":"A256GCM","kid":"ward-7-2026","iv":"<12 bytes, base64url>","ct":"<ciphertext+tag, base64url>"}}
//! ```
//!
//! The plaintext is the body the sender would otherwise have sent (any JSON value),
//! encrypted with AES-256-GCM under the room key named by `kid`. The additional
//! authenticated data binds the ciphertext to its room and message id
//! (`outpost-e2e-v1|ROOM|ID`), so a server cannot replay it into another room or under
//! another id without the receiver noticing. Servers check only the shape
//! ([`check_envelope`]); keys never reach them (see docs/security.md for key handling).
//! The same construction is implemented in the web client with WebCrypto.
//!
//! Nothing here reads a clock or a random source: the caller passes the IV (12 random
//! bytes, never reused with the same key).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::frames::Body;
use crate::ids::{MessageId, RoomId};

/// The only algorithm of version 1.
pub const ALG: &str = "A256GCM";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest key id.
pub const MAX_KID: usize = 64;

/// The encrypted body's inner object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u8,
    pub alg: String,
    /// Which room key (rooms may rotate keys; old messages keep their `kid`).
    pub kid: String,
    pub iv: String,
    pub ct: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    e2e: Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    #[error("the body of a message in an end-to-end encrypted room must be {{\"e2e\":{{v,alg,kid,iv,ct}}}}: {0}")]
    Shape(String),
    #[error("the message cannot be decrypted with this key (wrong key, or altered in transit)")]
    Open,
}

fn aad(room: &RoomId, id: MessageId) -> Vec<u8> {
    format!("outpost-e2e-v1|{room}|{id}").into_bytes()
}

/// What a server checks: the body is an envelope of version 1 with a well-formed IV and a
/// ciphertext at least as long as the tag. It does not (cannot) check the key.
pub fn check_envelope(body: &Body) -> Result<Envelope, E2eError> {
    let w: Wrapped = serde_json::from_str(body.as_str()).map_err(|e| E2eError::Shape(e.to_string()))?;
    let e = w.e2e;
    if e.v != 1 || e.alg != ALG {
        return Err(E2eError::Shape(format!("version {} / alg {:?}; only v 1 with {ALG}", e.v, e.alg)));
    }
    if e.kid.is_empty() || e.kid.len() > MAX_KID {
        return Err(E2eError::Shape(format!("kid must be 1 to {MAX_KID} characters")));
    }
    let iv = B64.decode(&e.iv).map_err(|_| E2eError::Shape("iv is not base64url".into()))?;
    if iv.len() != IV_LEN {
        return Err(E2eError::Shape(format!("iv must be {IV_LEN} bytes")));
    }
    let ct = B64.decode(&e.ct).map_err(|_| E2eError::Shape("ct is not base64url".into()))?;
    if ct.len() < TAG_LEN {
        return Err(E2eError::Shape("ct is shorter than the authentication tag".into()));
    }
    Ok(e)
}

/// Encrypts `plaintext` (a JSON body) for message `id` in `room`.
pub fn seal(
    key: &[u8; 32],
    kid: &str,
    iv: [u8; IV_LEN],
    room: &RoomId,
    id: MessageId,
    plaintext: &Body,
) -> Result<Body, E2eError> {
    let cipher = Aes256Gcm::new(key.into());
    let aad = aad(room, id);
    let ct = cipher
        .encrypt(&Nonce::from(iv), Payload { msg: plaintext.as_str().as_bytes(), aad: &aad })
        .map_err(|_| E2eError::Open)?;
    let e = Envelope { v: 1, alg: ALG.into(), kid: kid.into(), iv: B64.encode(iv), ct: B64.encode(ct) };
    Body::from_value(&Wrapped { e2e: e }).map_err(|e| E2eError::Shape(e.to_string()))
}

/// Decrypts a body sealed by [`seal`] (or the web client) for message `id` in `room`.
pub fn open(key: &[u8; 32], room: &RoomId, id: MessageId, body: &Body) -> Result<Body, E2eError> {
    let e = check_envelope(body)?;
    let iv: [u8; IV_LEN] = B64.decode(&e.iv).ok().and_then(|v| v.try_into().ok()).ok_or(E2eError::Open)?;
    let ct = B64.decode(&e.ct).map_err(|_| E2eError::Open)?;
    let cipher = Aes256Gcm::new(key.into());
    let aad = aad(room, id);
    let pt = cipher.decrypt(&Nonce::from(iv), Payload { msg: &ct, aad: &aad }).map_err(|_| E2eError::Open)?;
    let text = String::from_utf8(pt).map_err(|_| E2eError::Open)?;
    Body::from_json(&text).map_err(|_| E2eError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn body(s: &str) -> Body {
        Body::from_json(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sealed_bodies_open_only_with_the_key_room_and_id() {
        let key = [7u8; 32];
        let id = MessageId(uuid::Uuid::from_u128(1));
        let plain = body(r#"{"text":"HIV test positive"}"#);
        let sealed = seal(&key, "k1", [1; 12], &room("ward"), id, &plain).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.as_str().contains("HIV"));
        assert!(check_envelope(&sealed).is_ok());
        assert_eq!(open(&key, &room("ward"), id, &sealed).map(|b| b.as_str().to_owned()), Ok(plain.as_str().into()));
        assert_eq!(open(&[8; 32], &room("ward"), id, &sealed).err(), Some(E2eError::Open));
        assert_eq!(open(&key, &room("other"), id, &sealed).err(), Some(E2eError::Open));
        let other_id = MessageId(uuid::Uuid::from_u128(2));
        assert_eq!(open(&key, &room("ward"), other_id, &sealed).err(), Some(E2eError::Open));
    }

    #[test]
    fn servers_refuse_plaintext_and_malformed_envelopes() {
        for bad in [
            r#"{"text":"plain"}"#,
            r#""just a string""#,
            r#"{"e2e":{"v":1,"alg":"A256GCM","kid":"k","iv":"AAAA","ct":"AAAAAAAAAAAAAAAAAAAAAA"}}"#,
            r#"{"e2e":{"v":2,"alg":"A256GCM","kid":"k","iv":"AAAAAAAAAAAAAAAA","ct":"AAAAAAAAAAAAAAAAAAAAAA"}}"#,
            r#"{"e2e":{"v":1,"alg":"A256GCM","kid":"k","iv":"AAAAAAAAAAAAAAAA","ct":"AAAA"}}"#,
            r#"{"e2e":{"v":1,"alg":"A256GCM","kid":"k","iv":"AAAAAAAAAAAAAAAA","ct":"AAAAAAAAAAAAAAAAAAAAAA"},"text":"x"}"#,
        ] {
            assert!(check_envelope(&body(bad)).is_err(), "{bad}");
        }
    }
}
