//! The same-run baseline for a drain on the TCP path: the same number of bytes on one
//! plain TCP connection (no TLS, no tunnel, no QUIC inside) through a fresh TCP forwarder
//! shaped with the same preset (`outpost_tests::linkemu::TcpForward`).
//!
//! What is left is the emulated link itself: its rate, its delay once, and whatever the
//! forwarder's pushing back costs. As the forwarder ends TCP on both sides, this TCP
//! never runs slow start or loss recovery over the emulated delay, so the baseline is
//! close to the line rate: the ceiling for the uplink on that link, as the bare QUIC
//! transfer is for QUIC.
//!
//! Timed from the connection being open to the receiver reading the end of the stream;
//! the connection's own handshake is on loopback to the forwarder, outside the link.

use std::sync::atomic::Ordering;

use anyhow::Context as _;
use outpost_tests::linkemu::{Preset, TcpForward};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::quic_base::{CHUNK, Transfer, send_filler};

/// Sends `bytes` bytes on one TCP connection through a fresh forwarder with `preset`,
/// and times it.
pub async fn transfer(preset: Preset, bytes: u64) -> anyhow::Result<Transfer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fwd = TcpForward::start_shaped("127.0.0.1:0".parse()?, listener.local_addr()?, preset).await?;
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.context("no connection")?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        anyhow::Ok((got, Instant::now()))
    });

    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(fwd.addr()).await.context("baseline connect")?;
    let established = Instant::now();
    send_filler(&mut s, bytes).await?;
    s.shutdown().await?;
    let (got, done) = receiver.await.context("the baseline receiver panicked")??;
    drop(s);
    anyhow::ensure!(got == bytes, "baseline received {got} of {bytes} bytes");
    Ok(Transfer {
        bytes,
        handshake: established - started,
        transfer: done.saturating_duration_since(established),
        up_link_bytes: fwd.up.bytes.load(Ordering::Relaxed),
        down_link_bytes: fwd.down.bytes.load(Ordering::Relaxed),
        up_dropped_packets: 0,
    })
}
