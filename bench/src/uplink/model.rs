//! A model of the link's flow control on bare QUIC, to tell what the drain loses to the
//! way batches are windowed from what it loses to everything else (database, encoding).
//!
//! Like the link (`engine/src/link/mod.rs`): every batch on its own unidirectional stream
//! of equal priority, at most `window` bytes of batches unacknowledged, the receiver acks
//! each batch on a control stream once it has read all of it, in the order the streams
//! were opened. Unlike it: no database, no compression, fixed-size batches, a fixed
//! window. Run with quinn's fair (round-robin) scheduling of same-priority streams, which
//! the link uses (quinn's default), and without it (streams sent in the order written).
//! Transport settings otherwise as `engine/src/link/tls.rs` `transport()` (kept in step
//! by hand: quinn's `TransportConfig` cannot be copied).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::linkemu::{LinkEmu, Preset};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What one model run took.
#[derive(Debug, Clone, Copy)]
pub struct ModelRun {
    pub batches: usize,
    pub batch_bytes: u64,
    pub window: u64,
    /// Handshake done → the receiver has read the last batch.
    pub secs: f64,
}

fn transport(fairness: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_uni_streams(256u32.into());
    t.send_fairness(fairness);
    Arc::new(t)
}

fn configs(fairness: bool) -> anyhow::Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["bench.invalid".to_owned()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut stls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    stls.alpn_protocols = vec![b"outpost-model".to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(stls).context("server QUIC crypto")?,
    ));
    server.transport_config(transport(fairness));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut ctls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    ctls.alpn_protocols = vec![b"outpost-model".to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(ctls).context("client QUIC crypto")?,
    ));
    client.transport_config(transport(fairness));
    Ok((server, client))
}

/// The receiver: reads every batch stream, acks them in the order they were opened,
/// reports when the last one was read.
async fn receive(server: quinn::Endpoint, batches: usize, done: oneshot::Sender<Instant>) -> anyhow::Result<()> {
    let conn = server.accept().await.context("no connection")?.await?;
    let (mut ctl, _) = conn.accept_bi().await?;
    let (order_tx, mut order_rx) = mpsc::channel::<oneshot::Receiver<()>>(256);
    let acker = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(rx) = order_rx.recv().await {
            if rx.await.is_err() {
                break;
            }
            n += 1;
            if ctl.write_all(&n.to_be_bytes()).await.is_err() {
                break;
            }
            if n as usize == batches {
                let _ = done.send(Instant::now());
                break;
            }
        }
        let _ = ctl.finish();
        // Keep the stream alive until the connection closes.
        std::future::pending::<()>().await;
    });
    for _ in 0..batches {
        let mut s = conn.accept_uni().await?;
        let (tx, rx) = oneshot::channel();
        order_tx.send(rx).await.ok().context("acker gone")?;
        tokio::spawn(async move {
            if s.read_to_end(usize::MAX).await.is_ok() {
                let _ = tx.send(());
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.closed()).await;
    acker.abort();
    Ok(())
}

pub async fn run(
    preset: Preset,
    batches: usize,
    batch_bytes: u64,
    window: u64,
    fairness: bool,
) -> anyhow::Result<ModelRun> {
    let (scfg, ccfg) = configs(fairness)?;
    let server = quinn::Endpoint::server(scfg, "127.0.0.1:0".parse()?)?;
    let emu = LinkEmu::start(server.local_addr()?, preset).await?;
    let (done_tx, done_rx) = oneshot::channel();
    let receiver = tokio::spawn(receive(server.clone(), batches, done_tx));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(ccfg);
    let conn = client.connect(emu.addr(), "bench.invalid")?.await.context("model handshake")?;
    let established = Instant::now();
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await?;
    // The peer learns of a stream only once it carries data.
    ctl_send.write_all(b"h").await?;
    let (ack_tx, mut acks) = mpsc::channel::<u64>(1024);
    tokio::spawn(async move {
        let mut b = [0u8; 8];
        while ctl_recv.read_exact(&mut b).await.is_ok() {
            if ack_tx.send(u64::from_be_bytes(b)).await.is_err() {
                break;
            }
        }
    });
    let data: Arc<[u8]> = vec![0x5au8; batch_bytes as usize].into();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < batches {
        while sent < batches && (sent - acked) as u64 * batch_bytes < window {
            let mut s = conn.open_uni().await?;
            let d = data.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&d).await;
                let _ = s.finish();
            });
            sent += 1;
        }
        match acks.recv().await {
            Some(_) => acked += 1,
            None => anyhow::bail!("the model's control stream closed after {acked} acks"),
        }
    }
    let done = tokio::time::timeout(Duration::from_secs(10), done_rx).await??;
    conn.close(0u32.into(), b"done");
    receiver.abort();
    drop(emu);
    Ok(ModelRun { batches, batch_bytes, window, secs: done.saturating_duration_since(established).as_secs_f64() })
}
