//! The same-run baseline for a drain: a bare quinn transfer of the same number of bytes
//! on one QUIC stream through the same emulated link.
//!
//! Client and server live in this process with a throwaway self-signed certificate
//! (rcgen), TLS 1.3 with rustls' `ring` provider as the link uses, and the link's own
//! transport settings (`outpost_engine::link::tls::transport`: keep-alive, idle timeout,
//! stream limits; quinn's default congestion controller). No batching, no compression,
//! no acknowledgements of our own, no database: what is left is what the link emulator
//! and QUIC's congestion control allow, which is the ceiling for the uplink.
//!
//! Timed from the end of the client's handshake to the server reading the stream's end,
//! so the handshake (mutual TLS on the uplink, server-only here) is outside both.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::linkemu::{LinkEmu, Preset};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;

const ALPN: &[u8] = b"outpost-bench";
/// Read buffer of the server side.
pub(super) const CHUNK: usize = 64 * 1024;

/// Writes `bytes` of filler to `w`, a chunk at a time (the baselines' payload).
pub(super) async fn send_filler<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: u64) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// What one baseline transfer took.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub handshake: Duration,
    /// Handshake done → the server has read everything.
    pub transfer: Duration,
    /// Payload that crossed the emulated link up and down: UDP datagrams for QUIC, the
    /// TCP stream's bytes on the TCP path.
    pub up_link_bytes: u64,
    pub down_link_bytes: u64,
    pub up_dropped_packets: u64,
}

impl Transfer {
    pub fn goodput_kbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.transfer.as_secs_f64().max(1e-9) / 1000.0
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn configs() -> anyhow::Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let ck = rcgen::generate_simple_self_signed(vec!["bench.invalid".to_owned()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).context("server QUIC crypto")?,
    ));
    server.transport_config(outpost_engine::link::tls::transport());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).context("client QUIC crypto")?,
    ));
    client.transport_config(outpost_engine::link::tls::transport());
    Ok((server, client))
}

/// Sends `bytes` bytes on one unidirectional stream through a fresh emulator with
/// `preset`, and times it.
pub async fn transfer(preset: Preset, bytes: u64) -> anyhow::Result<Transfer> {
    let (server_cfg, client_cfg) = configs()?;
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
    let emu = LinkEmu::start(server.local_addr()?, preset).await?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let receiver = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.context("no connection")?.await?;
            let mut s = conn.accept_uni().await?;
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            while let Some(n) = s.read(&mut buf).await? {
                got += n as u64;
            }
            let _ = done_tx.send((got, Instant::now()));
            // Keep the connection until the client closes it.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            anyhow::Ok(())
        }
    });

    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_cfg);
    let started = Instant::now();
    let conn = client.connect(emu.addr(), "bench.invalid")?.await.context("baseline handshake")?;
    let established = Instant::now();
    let mut s = conn.open_uni().await?;
    send_filler(&mut s, bytes).await?;
    s.finish()?;
    let (got, done) = done_rx.await.context("the baseline receiver failed")?;
    conn.close(0u32.into(), b"done");
    let _ = receiver.await;
    anyhow::ensure!(got == bytes, "baseline received {got} of {bytes} bytes");
    Ok(Transfer {
        bytes,
        handshake: established - started,
        transfer: done.saturating_duration_since(established),
        up_link_bytes: emu.up.bytes.load(Ordering::Relaxed),
        down_link_bytes: emu.down.bytes.load(Ordering::Relaxed),
        up_dropped_packets: emu.up.dropped.load(Ordering::Relaxed),
    })
}
