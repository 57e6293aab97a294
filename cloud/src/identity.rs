//! The cloud's identity: creating it once (`init`) and loading it for every command.
//!
//! The token-signing key is a raw Ed25519 seed; the relay CA is an ECDSA P-256 CA made
//! with rcgen. The CA's parameters are rebuilt from the cloud id when signing (rather than
//! parsing the stored certificate), so issued certificates name exactly the subject the
//! stored CA certificate has and no X.509 parser is needed.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use outpost_shared::bundle::encode_key;
use outpost_shared::{Claims, TokenSigner};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde::Deserialize;

use crate::layout::{Layout, SERVER_NAME};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path} already exists: this directory already holds a cloud; use another --dir")]
    AlreadyInitialised { path: PathBuf },
    #[error("{path} is missing: run `outpost-cloud init --dir DIR` first")]
    NotInitialised { path: PathBuf },
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

/// The identity's part of `cloud.toml`. The settings beside it are [`crate::config`]'s:
/// the commands that issue tokens and enroll relays need only this, so a bad setting never
/// keeps an operator from them.
#[derive(Debug, Clone, Deserialize)]
pub struct CloudFile {
    /// Names this cloud in tokens (`iss`) and certificates.
    pub cloud_id: String,
}

/// Everything `token` and `enroll-relay` need.
pub struct CloudIdentity {
    pub layout: Layout,
    pub cloud_id: String,
    pub signer: TokenSigner,
    ca_key: KeyPair,
    pub ca_cert_pem: String,
}

impl std::fmt::Debug for CloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudIdentity").field("cloud_id", &self.cloud_id).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

/// Writes a file readable only by its owner (keys).
fn write_secret(path: &Path, contents: &str) -> Result<(), IdentityError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn write_public(path: &Path, contents: &str) -> Result<(), IdentityError> {
    fs::write(path, contents).map_err(io(path))
}

fn read(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IdentityError::NotInitialised { path: path.to_path_buf() },
        _ => IdentityError::Io { path: path.to_path_buf(), source: e },
    })
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

fn ca_params(cloud_id: &str) -> Result<CertificateParams, IdentityError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, format!("Outpost relay CA {cloud_id}"));
    p.distinguished_name.push(DnType::OrganizationName, "Outpost");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

impl CloudIdentity {
    /// Creates a new cloud in `dir` (keys, CA, server certificate, config, data folder).
    /// Refuses to touch a directory that already holds one.
    pub fn init(dir: &Path) -> Result<Self, IdentityError> {
        let layout = Layout::new(dir);
        if layout.config().exists() {
            return Err(IdentityError::AlreadyInitialised { path: layout.config() });
        }
        for d in [layout.dir.clone(), layout.keys(), layout.data()] {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let suffix: [u8; 4] = random_bytes()?;
        let cloud_id = format!("cloud-{}", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>());

        let seed: [u8; 32] = random_bytes()?;
        let signer = TokenSigner::from_seed(&seed, cloud_id.clone());
        write_secret(&layout.token_key(), &base64::engine::general_purpose::STANDARD.encode(seed))?;
        write_public(&layout.token_pub(), &encode_key(&signer.public_key()))?;

        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params(&cloud_id)?.self_signed(&ca_key)?;
        write_secret(&layout.ca_key(), &ca_key.serialize_pem())?;
        write_public(&layout.ca_cert(), &ca_cert.pem())?;

        let server_key = KeyPair::generate()?;
        let mut sp = CertificateParams::new(vec![SERVER_NAME.to_owned(), "localhost".to_owned()])?;
        sp.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        let issuer = Issuer::new(ca_params(&cloud_id)?, &ca_key);
        let server_cert = sp.signed_by(&server_key, &issuer)?;
        write_secret(&layout.server_key(), &server_key.serialize_pem())?;
        write_public(&layout.server_cert(), &server_cert.pem())?;

        write_public(&layout.config(), &crate::config::new_file(&cloud_id))?;

        Ok(Self { layout, cloud_id, signer, ca_key, ca_cert_pem: ca_cert.pem() })
    }

    /// Loads the identity `init` created.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let layout = Layout::new(dir);
        let cfg_path = layout.config();
        let file: CloudFile = toml::from_str(&read(&cfg_path)?)
            .map_err(|e| IdentityError::Invalid { path: cfg_path.clone(), reason: e.to_string() })?;
        let key_path = layout.token_key();
        let seed = base64::engine::general_purpose::STANDARD
            .decode(read(&key_path)?.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| IdentityError::Invalid {
                path: key_path.clone(),
                reason: "expected base64 of 32 bytes".into(),
            })?;
        let ca_key_path = layout.ca_key();
        let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)
            .map_err(|e| IdentityError::Invalid { path: ca_key_path, reason: e.to_string() })?;
        let ca_cert_pem = read(&layout.ca_cert())?;
        Ok(Self {
            signer: TokenSigner::from_seed(&seed, file.cloud_id.clone()),
            cloud_id: file.cloud_id,
            layout,
            ca_key,
            ca_cert_pem,
        })
    }

    /// A secret for QUIC stateless resets that survives restarts: a restarted cloud can
    /// then tell relays at once that their old connection is gone, instead of leaving them
    /// to wait for the idle timeout. Derived from the CA key, so nothing new to keep.
    pub fn stateless_reset_secret(&self) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.ca_key.serialize_der());
        let tag = ring::hmac::sign(&key, b"outpost quic stateless reset v1");
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    /// An issuer for certificates under the relay CA.
    /// The keys of USB stick files: the relay CA's (hubs encrypt to it; answers are
    /// signed with it).
    pub fn mule_keys(&self) -> Result<outpost_engine::mule::CloudKeys, IdentityError> {
        let key = outpost_engine::mule::seal::secret_key(&self.ca_key.serialize_pem())
            .map_err(|e| IdentityError::Invalid { path: self.layout.ca_key(), reason: e.to_string() })?;
        Ok(outpost_engine::mule::CloudKeys {
            cloud_id: self.cloud_id.clone(),
            ca_pem: self.ca_cert_pem.clone(),
            ca_key: key,
        })
    }

    pub(crate) fn ca_issuer(&self) -> Result<Issuer<'_, &KeyPair>, IdentityError> {
        Ok(Issuer::new(ca_params(&self.cloud_id)?, &self.ca_key))
    }

    /// Issues a device token; `now` and `ttl` in seconds.
    /// Verifies tokens as this cloud's hubs do.
    pub fn verifier(&self) -> outpost_shared::TokenVerifier {
        outpost_shared::TokenVerifier::new(&self.signer.public_key(), self.cloud_id.clone())
    }

    pub fn issue_token(
        &self,
        user: outpost_shared::UserId,
        role: outpost_shared::Role,
        rooms: Vec<outpost_shared::RoomId>,
        now: u64,
        ttl: u64,
    ) -> Result<String, IdentityError> {
        let jti: [u8; 12] = random_bytes()?;
        let claims = Claims {
            sub: user,
            role,
            rooms,
            exp: now.saturating_add(ttl),
            iat: now,
            iss: self.cloud_id.clone(),
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            lin: None,
            dlg: None,
            org: None,
        };
        self.signer
            .sign(&claims)
            .map_err(|e| IdentityError::Invalid { path: self.layout.token_key(), reason: e.to_string() })
    }
}

/// Parses a duration like `30d`, `12h`, `15m`, `90s` or a bare number of seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'h')) => (&s[..i], 3_600),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 's')) => (&s[..i], 1),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration; use e.g. 30d, 12h, 15m or 90s"))?;
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(|| format!("{s:?} must be a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("30d"), Ok(30 * 86_400));
        assert_eq!(parse_ttl("2h"), Ok(7_200));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn init_then_load_signs_verifiable_tokens() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let made = CloudIdentity::init(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(CloudIdentity::init(dir.path()), Err(IdentityError::AlreadyInitialised { .. })));
        let loaded = CloudIdentity::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(made.signer.public_key(), loaded.signer.public_key());
        let user = outpost_shared::UserId::new("u").unwrap_or_else(|e| panic!("{e}"));
        let tok = loaded.issue_token(user, outpost_shared::Role::Doctor, vec![], 1_000, 60).unwrap_or_default();
        let v = outpost_shared::TokenVerifier::new(&made.signer.public_key(), made.cloud_id.clone());
        assert_eq!(v.verify(&tok, 1_010).map(|c| c.role), Ok(outpost_shared::Role::Doctor));
        assert!(v.verify(&tok, 1_060).is_err());
    }
}
