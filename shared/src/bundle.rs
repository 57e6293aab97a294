//! The enrollment bundle: everything a hub needs to join its cloud, in one file.
//!
//! `outpost-cloud enroll-relay` writes it; `outpost-relay init --bundle` reads it. It can
//! travel on a USB stick, so it is plain JSON with a version field. It holds the relay's
//! private key: treat the file like a password and delete it after provisioning.

use serde::{Deserialize, Serialize};

use crate::ids::RelayId;

/// Current bundle format version.
pub const BUNDLE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version ([`BUNDLE_VERSION`]).
    pub v: u32,
    /// The cloud that issued the bundle (the `iss` of its tokens).
    pub cloud_id: String,
    pub relay_id: RelayId,
    /// Where the relay reaches the cloud's QUIC endpoint (`HOST:PORT`).
    pub cloud_addr: String,
    /// The name the cloud's server certificate is issued for (checked by the relay).
    pub cloud_server_name: String,
    /// The cloud's Ed25519 token-verification key, standard base64 of 32 bytes.
    pub token_public_key: String,
    /// The cloud's relay CA (PEM): the relay pins it when it connects.
    pub ca_cert_pem: String,
    /// This relay's client certificate (PEM), issued by that CA.
    pub relay_cert_pem: String,
    /// This relay's private key (PKCS#8 PEM).
    pub relay_key_pem: String,
}

/// Decodes a base64 Ed25519 public key as found in bundles and config files.
pub fn decode_public_key(b64: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| format!("not base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("an Ed25519 public key is 32 bytes, got {}", bytes.len()))
}

/// Encodes a 32-byte key as standard base64.
pub fn encode_key(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_errors() {
        let k = [9u8; 32];
        assert_eq!(decode_public_key(&encode_key(&k)), Ok(k));
        assert!(decode_public_key("!!").is_err());
        assert!(decode_public_key(&encode_key(&[1; 32])[..10]).is_err());
    }
}
