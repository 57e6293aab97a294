//! The sealed file a USB stick carries between a hub and its cloud: readable only by its
//! recipient, and provably written by its sender, unchanged.
//!
//! Layout (all lengths big-endian `u32`):
//!
//! ```text
//! MAGIC | len | header (JSON, in clear) | { len | section (AES-256-GCM) }* | len | signature
//! ```
//!
//! The file key comes from an ECDH (P-256) between a one-time key of the sender's (its
//! public half in the header) and the recipient's long-term key: the cloud's relay CA key
//! for a file to the cloud, the hub's certificate key for a file from it. Each section has
//! its own nonce (its index) and names its index and the section count as associated
//! data, so sections cannot be reordered, dropped or added. The signature (ECDSA P-256,
//! SHA-256) by the sender's long-term key covers every byte before it, and is checked
//! before anything is decrypted.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How every stick file starts.
pub const MAGIC: &[u8; 8] = b"OPMULE1\n";
/// Largest header read (it holds a certificate and a few names).
const MAX_HEADER: usize = 64 << 10;
/// Largest signature read (a DER ECDSA P-256 signature is at most 72 bytes).
const MAX_SIGNATURE: usize = 256;

/// Which way a file travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Written by a hub (`outpost-relay export`), read by its cloud.
    ToCloud,
    /// Written by the cloud (its receipt and replies), read by the hub.
    FromCloud,
}

/// The part of a file anyone may read: who it is from and for. Authenticated by the
/// signature like the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub v: u8,
    pub direction: Direction,
    pub cloud_id: String,
    pub relay_id: String,
    /// On a file to the cloud, the hub's certificate (PEM): the cloud checks it was issued
    /// under its relay CA for `relay_id`, and the signature with its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_cert: Option<String>,
    /// When it was written (ms since the Unix epoch).
    pub created_at: u64,
    /// The sender's one-time public key (SEC1, base64); set by [`seal`].
    #[serde(default)]
    pub ephemeral: String,
    /// How many sections follow; set by [`seal`].
    #[serde(default)]
    pub sections: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("this is not an Outpost stick file (it does not start with the Outpost file mark)")]
    NotMule,
    #[error("the file is cut short or damaged ({0}); write it again")]
    Damaged(&'static str),
    #[error("the file's header is not valid: {0}")]
    Header(String),
    #[error(
        "the file's signature does not match: it was changed after it was written, or was not written by the \
         server it names; do not use it"
    )]
    BadSignature,
    #[error("the file cannot be decrypted with this server's key: it was made for another server")]
    Decrypt,
    #[error("a key is not valid: {0}")]
    Key(String),
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

/// Seals `sections` for `recipient`, signed by `sender`.
pub fn seal(
    mut header: Header,
    sections: &[Vec<u8>],
    sender: &SecretKey,
    recipient: &PublicKey,
) -> Result<Vec<u8>, SealError> {
    let one_time = random_secret()?;
    header.ephemeral =
        base64::engine::general_purpose::STANDARD.encode(one_time.public_key().to_encoded_point(false).as_bytes());
    header.sections = u32::try_from(sections.len()).map_err(|_| SealError::Header("too many sections".into()))?;
    let head = serde_json::to_vec(&header).map_err(|e| SealError::Header(e.to_string()))?;
    let cipher = cipher(&one_time, recipient, &head);
    let total: usize = sections.iter().map(|s| s.len() + 20).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + head.len() + total + 80);
    out.extend_from_slice(MAGIC);
    push_chunk(&mut out, &head)?;
    for (i, s) in sections.iter().enumerate() {
        let sealed = cipher
            .encrypt(&nonce(i), Payload { msg: s, aad: &aad(i, header.sections) })
            .map_err(|_| SealError::Key("encryption failed".into()))?;
        push_chunk(&mut out, &sealed)?;
    }
    let signature: Signature = SigningKey::from(sender).sign(&out);
    push_chunk(&mut out, signature.to_der().as_bytes())?;
    Ok(out)
}

/// The header of `bytes`, unauthenticated: who the file claims to be from and for, so the
/// reader knows which keys to [`open`] it with.
pub fn peek(bytes: &[u8]) -> Result<Header, SealError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len(), "the file mark")? != MAGIC {
        return Err(SealError::NotMule);
    }
    let head = r.chunk(MAX_HEADER, "the header")?;
    let header: Header = serde_json::from_slice(head).map_err(|e| SealError::Header(e.to_string()))?;
    if header.v != 1 {
        return Err(SealError::Header(format!("version {} is not known here; update this server", header.v)));
    }
    Ok(header)
}

/// Checks the signature of `bytes` with `sender`, then decrypts it with `recipient`:
/// the header and the sections.
pub fn open(bytes: &[u8], recipient: &SecretKey, sender: &PublicKey) -> Result<(Header, Vec<Vec<u8>>), SealError> {
    let header = peek(bytes)?;
    let mut r = Reader { bytes, at: MAGIC.len() };
    let head = r.chunk(MAX_HEADER, "the header")?.to_vec();
    let mut sealed = Vec::with_capacity(header.sections as usize);
    for _ in 0..header.sections {
        sealed.push(r.chunk(usize::MAX, "a section")?);
    }
    let signed_len = r.at;
    let signature = r.chunk(MAX_SIGNATURE, "the signature")?;
    if r.at != bytes.len() {
        return Err(SealError::Damaged("bytes after the signature"));
    }
    let signature = Signature::from_der(signature).map_err(|_| SealError::BadSignature)?;
    VerifyingKey::from(sender).verify(&bytes[..signed_len], &signature).map_err(|_| SealError::BadSignature)?;
    let one_time = base64::engine::general_purpose::STANDARD
        .decode(&header.ephemeral)
        .ok()
        .and_then(|b| PublicKey::from_sec1_bytes(&b).ok())
        .ok_or_else(|| SealError::Header("the one-time key is not a P-256 point".into()))?;
    let cipher = cipher_for_recipient(recipient, &one_time, &head);
    let mut sections = Vec::with_capacity(sealed.len());
    for (i, s) in sealed.into_iter().enumerate() {
        let plain = cipher
            .decrypt(&nonce(i), Payload { msg: s, aad: &aad(i, header.sections) })
            .map_err(|_| SealError::Decrypt)?;
        sections.push(plain);
    }
    Ok((header, sections))
}

/// The public key of a PEM certificate (a hub's, or the relay CA's).
pub fn cert_key(pem: &str) -> Result<PublicKey, SealError> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| SealError::Key(format!("not a PEM certificate: {e}")))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| SealError::Key(format!("not a certificate: {e}")))?;
    PublicKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
        .map_err(|_| SealError::Key("the certificate's key is not a P-256 key".into()))
}

/// A PEM private key (PKCS#8, as rcgen writes them).
pub fn secret_key(pem: &str) -> Result<SecretKey, SealError> {
    use p256::pkcs8::DecodePrivateKey as _;
    SecretKey::from_pkcs8_pem(pem).map_err(|e| SealError::Key(format!("not a P-256 private key: {e}")))
}

fn random_secret() -> Result<SecretKey, SealError> {
    loop {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
        // All but a vanishing share of 32-byte strings are valid scalars.
        if let Ok(k) = SecretKey::from_slice(&b) {
            return Ok(k);
        }
    }
}

/// The file key: SHA-256 over the shared secret and the header (ANSI X9.63 style), so a
/// header changed in transit also yields another key.
fn key(shared: &[u8], head: &[u8]) -> Aes256Gcm {
    let mut h = Sha256::new();
    h.update(b"outpost mule v1");
    h.update(shared);
    h.update(1u32.to_be_bytes());
    h.update(head);
    let k: [u8; 32] = h.finalize().into();
    Aes256Gcm::new(&k.into())
}

fn cipher(one_time: &SecretKey, recipient: &PublicKey, head: &[u8]) -> Aes256Gcm {
    let shared = p256::ecdh::diffie_hellman(one_time.to_nonzero_scalar(), recipient.as_affine());
    key(shared.raw_secret_bytes(), head)
}

fn cipher_for_recipient(recipient: &SecretKey, one_time: &PublicKey, head: &[u8]) -> Aes256Gcm {
    let shared = p256::ecdh::diffie_hellman(recipient.to_nonzero_scalar(), one_time.as_affine());
    key(shared.raw_secret_bytes(), head)
}

fn nonce(i: usize) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(i as u64).to_be_bytes());
    n.into()
}

fn aad(i: usize, count: u32) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..8].copy_from_slice(&(i as u64).to_be_bytes());
    a[8..].copy_from_slice(&count.to_be_bytes());
    a
}

fn push_chunk(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), SealError> {
    let len = u32::try_from(bytes.len()).map_err(|_| SealError::Header("a section of 4 GiB or more".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SealError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(SealError::Damaged(what))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn chunk(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], SealError> {
        let len = self.take(4, what)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > max {
            return Err(SealError::Damaged(what));
        }
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            v: 1,
            direction: Direction::ToCloud,
            cloud_id: "cloud-1".into(),
            relay_id: "village-7".into(),
            relay_cert: None,
            created_at: 1,
            ephemeral: String::new(),
            sections: 0,
        }
    }

    fn keys() -> Result<(SecretKey, SecretKey), SealError> {
        Ok((random_secret()?, random_secret()?))
    }

    #[test]
    fn what_is_sealed_opens_for_its_recipient_only() -> Result<(), SealError> {
        let (hub, cloud) = keys()?;
        let sections = vec![b"manifest".to_vec(), vec![7u8; 10_000], Vec::new()];
        let file = seal(header(), &sections, &hub, &cloud.public_key())?;
        let (h, opened) = open(&file, &cloud, &hub.public_key())?;
        assert_eq!((h.relay_id.as_str(), h.sections), ("village-7", 3));
        assert_eq!(opened, sections);
        let stranger = random_secret()?;
        assert!(matches!(open(&file, &stranger, &hub.public_key()), Err(SealError::Decrypt)));
        assert!(matches!(open(&file, &cloud, &stranger.public_key()), Err(SealError::BadSignature)));
        Ok(())
    }

    #[test]
    fn any_changed_or_missing_byte_is_refused() -> Result<(), SealError> {
        let (hub, cloud) = keys()?;
        let file = seal(header(), &[b"manifest".to_vec(), vec![1u8; 300]], &hub, &cloud.public_key())?;
        for at in [MAGIC.len() + 10, file.len() / 2, file.len() - 100, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(open(&bad, &cloud, &hub.public_key()).is_err(), "a flipped bit at {at} was accepted");
        }
        for len in [0, 5, MAGIC.len() + 3, file.len() / 2, file.len() - 1] {
            assert!(open(&file[..len], &cloud, &hub.public_key()).is_err(), "a file cut at {len} was accepted");
        }
        assert!(matches!(peek(b"PK\x03\x04 a zip file"), Err(SealError::NotMule)));
        Ok(())
    }
}
