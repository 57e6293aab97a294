//! TLS for the link: mutual authentication under the cloud's relay CA.
//!
//! Both ends trust only that CA (the hub pins it from its enrollment bundle; the cloud
//! issued it). The cloud's certificate names [`SERVER_NAME`]; a hub's certificate names
//! its relay id, which the cloud checks against the id the hub claims in its `Hello`.
//! rustls with the `ring` provider: it cross-compiles for the Pi with plain gcc. TLS 1.3
//! only, as QUIC requires.

use std::sync::Arc;
use std::time::Duration;

use outpost_shared::uplink::ALPN;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The name in the cloud's server certificate.
pub const SERVER_NAME: &str = "outpost-cloud";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} is not valid PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("QUIC crypto setup failed: {0}")]
    Quic(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, reason: "no certificate found".into() });
    }
    Ok(certs)
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem { what, reason: e.to_string() })
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "the CA certificate")? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The idle timeout each end offers unless told otherwise. The smaller of the two ends'
/// is in force, so a hub may ask for less (it does with several cloud addresses, see
/// `uplink.idle_timeout_secs`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Transport settings for slow, lossy, intermittent uplinks: keep-alives well inside
/// NAT timeouts of mobile networks, and a generous idle timeout so a 2G stall of a few
/// seconds does not drop the connection.
pub fn transport() -> Arc<quinn::TransportConfig> {
    transport_with_idle(IDLE_TIMEOUT)
}

/// [`transport`] with another idle timeout: how long without a packet from the peer before
/// the connection is dead. Keep-alives go out every third of it, so two can be lost before
/// a live peer is given up (30 s: every 10 s, well inside mobile NAT timeouts).
pub fn transport_with_idle(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(idle / 3));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    // One stream per batch: allow enough concurrent ones for a full window.
    t.max_concurrent_uni_streams(256u32.into());
    // Streams of one priority are sent in the order they were written, not round-robin:
    // the receiver imports normal batches in order, so interleaving them only delays
    // every batch to the end of the window (and with it every ack the window waits for).
    // Priorities still put emergencies first.
    t.send_fairness(false);
    Arc::new(t)
}

/// The hub's side: its client certificate, and trust in the cloud's CA only.
pub fn client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls_client(ca_pem, cert_pem, key_pem, ALPN)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The hub's side of the TCP path's outer TLS ([`super::tunnel`]): the same identities.
pub fn tcp_client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    Ok(Arc::new(rustls_client(ca_pem, cert_pem, key_pem, super::tunnel::TCP_ALPN)?))
}

fn rustls_client(ca_pem: &str, cert_pem: &str, key_pem: &str, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem, "the relay certificate")?, key(key_pem, "the relay key")?)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The cloud's side: its server certificate, and client certificates required under the
/// relay CA.
pub fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<quinn::ServerConfig, TlsError> {
    let tls = rustls_server(ca_pem, cert_pem, key_pem, ALPN)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The cloud's side of the TCP path's outer TLS: the same identities as QUIC.
pub fn tcp_server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(Arc::new(rustls_server(ca_pem, cert_pem, key_pem, super::tunnel::TCP_ALPN)?))
}

fn rustls_server(ca_pem: &str, cert_pem: &str, key_pem: &str, alpn: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_pem, "the server certificate")?, key(key_pem, "the server key")?)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// Whether the peer's (already verified) certificate was issued for `name`.
pub fn peer_is(conn: &quinn::Connection, name: &str) -> bool {
    let Some(identity) = conn.peer_identity() else { return false };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return false };
    let Some(leaf) = chain.first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Whether `cert_pem` is a hub certificate this cloud issued (under its relay CA
/// `ca_pem`) for `relay_id`: the check the link's TLS makes, for a hub that is not on the
/// line (its USB stick's file, `crate::mule`).
pub fn verify_relay_cert(ca_pem: &str, cert_pem: &str, relay_id: &str) -> Result<(), TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let chain = certs(cert_pem, "the hub's certificate")?;
    let (leaf, rest) =
        chain.split_first().ok_or(TlsError::Pem { what: "the hub's certificate", reason: "empty".into() })?;
    verifier.verify_client_cert(leaf, rest, rustls_pki_types::UnixTime::now())?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::Verifier(e.to_string()))?;
    let name = ServerName::try_from(relay_id).map_err(|e| TlsError::Verifier(e.to_string()))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| TlsError::Verifier(format!("the certificate is not for relay {relay_id}")))
}
