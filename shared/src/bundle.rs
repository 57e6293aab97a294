//! The enrollment bundle: everything a hub needs to join its cloud, in one file.
//!
//! `outpost-cloud enroll-relay` writes it; `outpost-relay init --bundle` reads it. It can
//! travel on a USB stick, so it is plain JSON with a version field. It holds the relay's
//! private key: treat the file like a password and delete it after provisioning.
//!
//! Versions. 1 has one cloud address (`cloud_addr`). 2 adds `cloud_addrs`, every address
//! of a cloud that runs as several nodes, in the order a hub tries them; `cloud_addr` is
//! still written, as the first of them. Readers decode with `deny_unknown_fields`, and
//! hubs released before version 2 do too: they refuse a bundle with `cloud_addrs`
//! whatever its version says ("unknown field `cloud_addrs`"). So a bundle with one
//! address is written as version 1, field for field as before, and every hub reads it; a
//! bundle with several is version 2 and needs a hub that knows it. Bumping the version
//! for the second kind changes nothing for old hubs (they stop at the field first) but
//! keeps the number honest: it names the oldest reader that can use the file.

use serde::{Deserialize, Serialize};

use crate::ids::RelayId;

/// Current bundle format version: the newest this code reads, and what a bundle with
/// several cloud addresses is written as.
pub const BUNDLE_VERSION: u32 = 2;

/// The version a bundle with one cloud address is written as: the format every hub reads.
pub const BUNDLE_VERSION_ONE_ADDRESS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version ([`BUNDLE_VERSION`]).
    pub v: u32,
    /// The cloud that issued the bundle (the `iss` of its tokens).
    pub cloud_id: String,
    pub relay_id: RelayId,
    /// Where the relay reaches the cloud's QUIC endpoint (`HOST:PORT`); with several
    /// addresses, the first of `cloud_addrs` (what a hub that knows only this field uses).
    pub cloud_addr: String,
    /// Every address of the cloud's QUIC endpoint, in the order the hub tries them
    /// (version 2; empty, and not written, in a version-1 bundle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud_addrs: Vec<String>,
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

impl Bundle {
    /// Sets the cloud's addresses, in the order the hub tries them, and the version that
    /// carries them: one address is a version-1 bundle, as every hub reads it; several are
    /// version 2. Call [`check_addresses`] on the list first; an empty list leaves
    /// `cloud_addr` empty.
    pub fn set_cloud_addrs(&mut self, addrs: &[String]) {
        self.cloud_addr = addrs.first().cloned().unwrap_or_default();
        if addrs.len() > 1 {
            self.v = BUNDLE_VERSION;
            self.cloud_addrs = addrs.to_vec();
        } else {
            self.v = BUNDLE_VERSION_ONE_ADDRESS;
            self.cloud_addrs = Vec::new();
        }
    }

    /// The addresses the hub dials, in order, after checking that the version is one
    /// this code reads and that the address fields agree with it and with each other.
    pub fn addresses(&self) -> Result<Vec<String>, String> {
        let addrs = match self.v {
            BUNDLE_VERSION_ONE_ADDRESS if self.cloud_addrs.is_empty() => vec![self.cloud_addr.clone()],
            BUNDLE_VERSION_ONE_ADDRESS => {
                return Err("a version-1 bundle has one address, `cloud_addr`, and no `cloud_addrs`".into());
            }
            BUNDLE_VERSION if self.cloud_addrs.first() == Some(&self.cloud_addr) => self.cloud_addrs.clone(),
            BUNDLE_VERSION => {
                return Err(format!(
                    "cloud_addr {:?} must be the first of cloud_addrs {:?}",
                    self.cloud_addr, self.cloud_addrs
                ));
            }
            v => {
                return Err(format!(
                    "bundle version {v} is not supported (this hub reads versions {BUNDLE_VERSION_ONE_ADDRESS} to {BUNDLE_VERSION}): upgrade the hub"
                ));
            }
        };
        check_addresses(&addrs)?;
        Ok(addrs)
    }
}

/// Whether `addr` has the form `HOST:PORT`: something, a colon, a port that fits 16 bits.
/// The host is checked only when it is resolved (dialled or bound).
pub fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

/// What is wrong with a list of cloud addresses: none at all, one that is not
/// `HOST:PORT`, one listed twice.
pub fn check_addresses(addrs: &[String]) -> Result<(), String> {
    if addrs.is_empty() {
        return Err("no cloud address".into());
    }
    for (i, a) in addrs.iter().enumerate() {
        if !is_host_port(a) {
            return Err(format!("cloud address {a:?} must be HOST:PORT"));
        }
        if addrs[..i].contains(a) {
            return Err(format!("cloud address {a:?} is listed twice"));
        }
    }
    Ok(())
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

    /// The bundle as hubs released before version 2 decode it (the struct of that
    /// release, field for field).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "the fields are there to be decoded; the tests read two")]
    struct BundleV1 {
        v: u32,
        cloud_id: String,
        relay_id: RelayId,
        cloud_addr: String,
        cloud_server_name: String,
        token_public_key: String,
        ca_cert_pem: String,
        relay_cert_pem: String,
        relay_key_pem: String,
    }

    fn bundle(addrs: &[&str]) -> Bundle {
        let mut b = Bundle {
            v: 0,
            cloud_id: "cloud-1".into(),
            relay_id: "village-7".parse().unwrap_or_else(|e| panic!("{e}")),
            cloud_addr: String::new(),
            cloud_addrs: Vec::new(),
            cloud_server_name: "outpost-cloud".into(),
            token_public_key: encode_key(&[7; 32]),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n".into(),
            relay_cert_pem: "-----BEGIN CERTIFICATE-----\nrelay\n-----END CERTIFICATE-----\n".into(),
            relay_key_pem: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n".into(),
        };
        b.set_cloud_addrs(&addrs.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        b
    }

    fn decode(json: &str) -> Bundle {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn a_bundle_with_several_addresses_round_trips_in_order() {
        let b = bundle(&["node-a.example.org:4433", "node-b.example.org:4433", "10.0.0.3:4433"]);
        let json = serde_json::to_string_pretty(&b).unwrap_or_default();
        let back = decode(&json);
        assert_eq!(back, b);
        assert_eq!(back.v, BUNDLE_VERSION);
        assert_eq!(back.cloud_addr, "node-a.example.org:4433", "the first address, for hubs that read only it");
        assert_eq!(
            back.addresses(),
            Ok(vec!["node-a.example.org:4433".into(), "node-b.example.org:4433".into(), "10.0.0.3:4433".into()])
        );
        // Hubs released before version 2 refuse it (and say which field), rather than
        // quietly dialling one node of several.
        let old = serde_json::from_str::<BundleV1>(&json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(old.contains("unknown field `cloud_addrs`"), "{old}");
    }

    #[test]
    fn a_one_address_bundle_is_written_and_read_as_version_1() {
        let b = bundle(&["cloud.example.org:4433"]);
        let json = serde_json::to_string(&b).unwrap_or_default();
        assert!(!json.contains("cloud_addrs"), "{json}");
        let old = serde_json::from_str::<BundleV1>(&json).unwrap_or_else(|e| panic!("an old hub reads it: {e}"));
        assert_eq!((old.v, old.cloud_addr.as_str()), (1, "cloud.example.org:4433"));
        assert_eq!(decode(&json).addresses(), Ok(vec!["cloud.example.org:4433".into()]));
    }

    #[test]
    fn a_bundle_written_before_version_2_still_loads() {
        // What `enroll-relay` wrote before several addresses existed.
        let json = r#"{
  "v": 1,
  "cloud_id": "cloud-d32fdc1a",
  "relay_id": "village-7",
  "cloud_addr": "cloud.example.org:4433",
  "cloud_server_name": "outpost-cloud",
  "token_public_key": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
  "ca_cert_pem": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
  "relay_cert_pem": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
  "relay_key_pem": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"
}"#;
        let b = decode(json);
        assert!(b.cloud_addrs.is_empty());
        assert_eq!(b.addresses(), Ok(vec!["cloud.example.org:4433".into()]));
    }

    #[test]
    fn address_fields_that_disagree_are_refused() {
        let mut b = bundle(&["a:1", "b:2"]);
        b.cloud_addr = "b:2".into();
        assert!(b.addresses().is_err_and(|e| e.contains("must be the first of cloud_addrs")));
        let mut b = bundle(&["a:1", "b:2"]);
        b.v = BUNDLE_VERSION_ONE_ADDRESS;
        assert!(b.addresses().is_err_and(|e| e.contains("no `cloud_addrs`")));
        let mut b = bundle(&["a:1"]);
        b.v = BUNDLE_VERSION + 1;
        assert!(b.addresses().is_err_and(|e| e.contains("upgrade the hub")));
        assert!(bundle(&["a:1", "a:1"]).addresses().is_err_and(|e| e.contains("listed twice")));
        assert!(bundle(&["a:1", "b"]).addresses().is_err_and(|e| e.contains("\"b\" must be HOST:PORT")));
        assert!(bundle(&["a:99999"]).addresses().is_err());
    }

    #[test]
    fn key_round_trip_and_errors() {
        let k = [9u8; 32];
        assert_eq!(decode_public_key(&encode_key(&k)), Ok(k));
        assert!(decode_public_key("!!").is_err());
        assert!(decode_public_key(&encode_key(&[1; 32])[..10]).is_err());
    }
}
