//! TLS on the device listener, when the operator provides a certificate.
//!
//! Owns the operator's PEM certificate chain and key (read and checked at start-up, with
//! errors that name the file and say what to do), the rustls server configuration (the
//! `ring` provider, like the uplink, so the hub still cross-builds with plain gcc), and
//! [`LanListener`]: the one accept path for plain and TLS connections alike, which
//! `axum::serve` drives, so graceful shutdown is the same either way. TLS handshakes run
//! concurrently (a phone on a weak signal must not hold up the others), each under
//! `limits.tls_handshake_timeout_secs`, at most [`MAX_PENDING_HANDSHAKES`] at once. Not
//! here: the uplink's mutual TLS ([`crate::link::tls`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use rustls::server::ResolvesServerCert;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Most TLS handshakes in progress at once. Past it the hub stops accepting (the kernel's
/// backlog holds new connections) until one finishes or times out: a handshake costs a
/// task and a rustls state of a few kilobytes, and a village has far fewer phones.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// What is wrong with the operator's certificate or key; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LanTlsError {
    #[error("{field} = {path}: cannot read it ({source}); check the path and that the hub's user may read it")]
    Read { field: &'static str, path: PathBuf, source: io::Error },
    #[error("{field} = {path}: {reason}")]
    Pem { field: &'static str, path: PathBuf, reason: String },
    #[error(
        "server.tls_key = {key} does not belong to the certificate in server.tls_cert = {cert} ({reason}); \
         give the key the certificate was issued for"
    )]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

/// The TLS side of the device listener: the acceptor and its handshake timeout.
#[derive(Clone)]
pub struct LanTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for LanTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanTls").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

impl LanTls {
    /// Reads and checks `cert` (PEM chain, the hub's certificate first) and `key` (PEM
    /// private key). TLS 1.2 and 1.3: older Android phones still speak only 1.2.
    pub fn load(cert: &Path, key: &Path, handshake_timeout: Duration) -> Result<Self, LanTlsError> {
        let chain = read_chain(cert)?;
        let private = read_key(key)?;
        let mismatch = |e: rustls::Error| LanTlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        };
        let config = builder().map_err(mismatch)?.with_single_cert(chain, private).map_err(mismatch)?;
        Ok(Self::from_config(config, handshake_timeout))
    }

    /// TLS whose certificate `resolver` picks at each handshake (the hub's LAN
    /// certificate, renewed while the hub runs: [`crate::lan_cert`]).
    pub fn with_resolver(
        resolver: Arc<dyn ResolvesServerCert>,
        handshake_timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        Ok(Self::from_config(builder()?.with_cert_resolver(resolver), handshake_timeout))
    }

    fn from_config(mut config: rustls::ServerConfig, handshake_timeout: Duration) -> Self {
        // Only HTTP/1.1 is served; WebSocket upgrades need it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { acceptor: TlsAcceptor::from(Arc::new(config)), handshake_timeout }
    }
}

/// TLS 1.2 and 1.3 with the `ring` provider, no client certificates.
fn builder() -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth())
}

fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>, LanTlsError> {
    std::fs::read(path).map_err(|source| LanTlsError::Read { field, path: path.to_path_buf(), source })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LanTlsError> {
    let field = "server.tls_cert";
    let pem_err = |reason: String| LanTlsError::Pem { field, path: path.to_path_buf(), reason };
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&read_file(field, path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(format!("not valid PEM ({e})")))?;
    if chain.is_empty() {
        return Err(pem_err(
            "no certificate in it: expected a PEM `BEGIN CERTIFICATE` block (the hub's certificate, then any \
             intermediates); is this the key file?"
                .into(),
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, LanTlsError> {
    let field = "server.tls_key";
    PrivateKeyDer::from_pem_slice(&read_file(field, path)?).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => "no private key in it: expected a PEM `BEGIN PRIVATE KEY` (or RSA/EC \
                                         PRIVATE KEY) block; is this the certificate file?"
                .to_owned(),
            other => format!("not a valid PEM private key ({other})"),
        };
        LanTlsError::Pem { field, path: path.to_path_buf(), reason }
    })
}

/// A device connection: plain TCP, or TLS over TCP when a certificate is configured.
#[derive(Debug)]
pub enum LanStream {
    Plain(TcpStream),
    // Boxed: a rustls connection is a few kilobytes, a TcpStream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl LanStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for LanStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LanStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The device listener: yields plain connections, or (with [`LanTls`]) connections
/// whose TLS handshake has completed. Dropping it (axum does when it stops accepting)
/// aborts the handshakes still in progress.
pub struct LanListener {
    tcp: TcpListener,
    tls: Option<LanTls>,
    handshakes: JoinSet<Option<(LanStream, SocketAddr)>>,
}

impl std::fmt::Debug for LanListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanListener")
            .field("tcp", &self.tcp)
            .field("tls", &self.tls)
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl LanListener {
    pub fn new(tcp: TcpListener, tls: Option<LanTls>) -> Self {
        Self { tcp, tls, handshakes: JoinSet::new() }
    }
}

async fn handshake(tls: LanTls, tcp: TcpStream, peer: SocketAddr) -> Option<(LanStream, SocketAddr)> {
    match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some((LanStream::Tls(Box::new(stream)), peer)),
        // A phone that does not trust the certificate, or a plain-HTTP request: routine.
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, timeout_secs = tls.handshake_timeout.as_secs(), "TLS handshake timed out");
            None
        }
    }
}

impl Listener for LanListener {
    type Io = LanStream;
    type Addr = SocketAddr;

    // Cancel-safe, as axum needs (it drops this future when shutdown begins): both
    // branches are, and a finished handshake stays in the set until taken.
    async fn accept(&mut self) -> (LanStream, SocketAddr) {
        let Some(tls) = &self.tls else {
            let (tcp, peer) = Listener::accept(&mut self.tcp).await;
            return (LanStream::Plain(tcp), peer);
        };
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                biased;
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                // axum's accept: it retries on per-connection errors and backs off on
                // resource exhaustion (EMFILE).
                (tcp, peer) = Listener::accept(&mut self.tcp), if room => {
                    self.handshakes.spawn(handshake(tls.clone(), tcp, peer));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
