//! A userspace link emulator: a UDP proxy with per-direction rate, delay, jitter, loss
//! and an on/off switch, for tests and benchmarks of the uplink (this kernel has no
//! netem).
//!
//! The relay talks to the proxy's address; the proxy forwards to the cloud. Each
//! direction is a FIFO serialisation queue: a packet departs when the link has finished
//! sending the previous ones (`len × 8 / rate`), arrives `delay ± jitter` later (never
//! before the packet ahead of it), is dropped with probability `loss`, and is dropped
//! when the queue already holds more than `queue` worth of sending time (a modem's
//! buffer). While the link is cut every packet is dropped. Byte counters give the UDP
//! payload that crossed, for bytes-per-message measurements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::corpus::Rng;

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Bits per second; 0 means unlimited.
    pub rate_bps: u64,
    /// One-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `0..=jitter`.
    pub jitter: Duration,
    /// Probability of losing a packet.
    pub loss: f64,
    /// Most sending time the queue may hold before it drops (tail drop).
    pub queue: Duration,
}

impl Profile {
    pub const fn new(rate_bps: u64, rtt_ms: u64, loss: f64) -> Self {
        Self {
            rate_bps,
            delay: Duration::from_millis(rtt_ms / 2),
            jitter: Duration::from_millis(rtt_ms / 20),
            loss,
            queue: Duration::from_secs(2),
        }
    }
}

/// Named link conditions (uplink, downlink).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub up: Profile,
    pub down: Profile,
}

impl Preset {
    /// 3G: 768 kbit/s up, 300 ms RTT, 0.5 % loss.
    pub const THREE_G: Preset =
        Preset { up: Profile::new(768_000, 300, 0.005), down: Profile::new(1_536_000, 300, 0.005) };
    /// EDGE: 200 kbit/s, 840 ms RTT, 1 % loss.
    pub const EDGE: Preset = Preset { up: Profile::new(200_000, 840, 0.01), down: Profile::new(200_000, 840, 0.01) };
    /// 2G (GPRS): 32 kbit/s, 1.3 s RTT, 1 % loss.
    pub const TWO_G: Preset = Preset { up: Profile::new(32_000, 1300, 0.01), down: Profile::new(32_000, 1300, 0.01) };
    /// No shaping at all (a baseline through the same proxy).
    pub const CLEAR: Preset = Preset { up: Profile::new(0, 0, 0.0), down: Profile::new(0, 0, 0.0) };

    pub fn by_name(name: &str) -> Option<Preset> {
        match name {
            "3g" => Some(Self::THREE_G),
            "edge" => Some(Self::EDGE),
            "2g" => Some(Self::TWO_G),
            "clear" => Some(Self::CLEAR),
            _ => None,
        }
    }
}

/// Traffic that crossed (or was dropped), per direction.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running emulator. Dropping it stops it.
pub struct LinkEmu {
    addr: SocketAddr,
    up_on: Arc<AtomicBool>,
    pub up: Arc<Counters>,
    pub down: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LinkEmu {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LinkEmu {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr, preset: Preset) -> anyhow::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let on = Arc::new(AtomicBool::new(true));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (up, down) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let mut tasks = Vec::new();

        // Up: relay → front → back → cloud.
        let (up_tx, up_rx) = mpsc::channel::<(Instant, Vec<u8>)>(65_536);
        {
            let (front, on, client, counters) = (front.clone(), on.clone(), client.clone(), up.clone());
            tasks.push(tokio::spawn(async move {
                let mut shaper = Shaper::new(preset.up, 0x5eed_0001);
                let mut buf = vec![0u8; 65_536];
                loop {
                    // ICMP errors (a peer not listening yet) surface as recv errors on
                    // UDP sockets; a real link just loses those packets.
                    let Ok((n, from)) = front.recv_from(&mut buf).await else { continue };
                    *client.lock().await = Some(from);
                    if let Some(at) = shaper.admit(n, on.load(Ordering::Relaxed)) {
                        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        counters.packets.fetch_add(1, Ordering::Relaxed);
                        let _ = up_tx.try_send((at, buf[..n].to_vec()));
                    } else {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(deliver(up_rx, Sink::Connected(back.clone()))));

        // Down: cloud → back → front → relay (its latest address).
        let (down_tx, down_rx) = mpsc::channel::<(Instant, Vec<u8>)>(65_536);
        {
            let (back, on, counters) = (back.clone(), on.clone(), down.clone());
            tasks.push(tokio::spawn(async move {
                let mut shaper = Shaper::new(preset.down, 0x5eed_0002);
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok(n) = back.recv(&mut buf).await else { continue };
                    if let Some(at) = shaper.admit(n, on.load(Ordering::Relaxed)) {
                        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        counters.packets.fetch_add(1, Ordering::Relaxed);
                        let _ = down_tx.try_send((at, buf[..n].to_vec()));
                    } else {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(deliver(down_rx, Sink::ToClient(front, client))));
        Ok(Self { addr, up_on: on, up, down, tasks })
    }

    /// Where the relay should send (its `--cloud`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link: every packet in both directions is lost until [`LinkEmu::restore`].
    pub fn cut(&self) {
        self.up_on.store(false, Ordering::Relaxed);
    }

    pub fn restore(&self) {
        self.up_on.store(true, Ordering::Relaxed);
    }
}

enum Sink {
    Connected(Arc<UdpSocket>),
    ToClient(Arc<UdpSocket>, Arc<Mutex<Option<SocketAddr>>>),
}

async fn deliver(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, sink: Sink) {
    while let Some((at, pkt)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        match &sink {
            Sink::Connected(s) => {
                let _ = s.send(&pkt).await;
            }
            Sink::ToClient(s, client) => {
                let to = *client.lock().await;
                if let Some(to) = to {
                    let _ = s.send_to(&pkt, to).await;
                }
            }
        }
    }
}

/// Decides each packet's fate and arrival time.
struct Shaper {
    p: Profile,
    rng: Rng,
    link_free_at: Instant,
    last_arrival: Instant,
}

impl Shaper {
    fn new(p: Profile, seed: u64) -> Self {
        let now = Instant::now();
        Self { p, rng: Rng::new(seed), link_free_at: now, last_arrival: now }
    }

    /// Arrival time of an `n`-byte packet, or None if it is lost.
    fn admit(&mut self, n: usize, on: bool) -> Option<Instant> {
        if !on {
            return None;
        }
        let now = Instant::now();
        let start = self.link_free_at.max(now);
        if start.duration_since(now) > self.p.queue {
            return None;
        }
        let tx = (n as u64 * 8)
            .saturating_mul(1_000_000_000)
            .checked_div(self.p.rate_bps)
            .map_or(Duration::ZERO, Duration::from_nanos);
        self.link_free_at = start + tx;
        // A lost packet still used the link.
        if self.p.loss > 0.0 && (self.rng.below(1_000_000) as f64) < self.p.loss * 1_000_000.0 {
            return None;
        }
        let jitter_ns = self.p.jitter.as_nanos() as u64;
        let jitter = Duration::from_nanos(if jitter_ns == 0 { 0 } else { self.rng.below(jitter_ns + 1) });
        let arrival = (self.link_free_at + self.p.delay + jitter).max(self.last_arrival);
        self.last_arrival = arrival;
        Some(arrival)
    }
}

/// The TCP side of an emulated link: a forwarder on the emulator's own port number (a
/// hub's TCP path goes to the same `HOST:PORT` as its QUIC), to the cloud's TCP path.
/// Cutting the emulator's UDP leaves this open: a network that drops UDP only.
pub struct TcpForward {
    task: tokio::task::JoinHandle<()>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
}

impl TcpForward {
    /// Forwards TCP connections to `listen` (normally `LinkEmu::addr()`) to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with_rate(listen, target, 0).await
    }

    /// As [`TcpForward::start`], each direction paced to `rate_bps` (0: unlimited).
    pub async fn start_with_rate(listen: SocketAddr, target: SocketAddr, rate_bps: u64) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = paced(ri, wo, rate_bps) => {}
                        _ = paced(ro, wi, rate_bps) => {}
                    }
                });
            }
        });
        Ok(Self { task, connections })
    }
}

/// Copies `from` to `to`, at most `rate_bps` on average (0: as fast as they go).
async fn paced(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rate_bps: u64,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        sent += n as u64;
        if rate_bps > 0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 * 8.0 / rate_bps as f64)).await;
        }
    }
}

impl Drop for TcpForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shapes_rate_and_delay_and_can_be_cut() -> anyhow::Result<()> {
        let server = UdpSocket::bind("127.0.0.1:0").await?;
        // 80 kbit/s = 10 kB/s, 200 ms RTT, no loss.
        let preset = Preset { up: Profile::new(80_000, 200, 0.0), down: Profile::new(80_000, 200, 0.0) };
        let emu = LinkEmu::start(server.local_addr()?, preset).await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        client.connect(emu.addr()).await?;
        let started = Instant::now();
        for _ in 0..10 {
            client.send(&[7u8; 1000]).await?;
        }
        let mut buf = [0u8; 2000];
        let mut got = 0;
        let mut from = None;
        while got < 10 {
            let (n, f) = server.recv_from(&mut buf).await?;
            assert_eq!(n, 1000);
            from = Some(f);
            got += 1;
        }
        // 10 kB at 10 kB/s plus 100 ms one-way: the emulator must have held them ~1.1 s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1000), "took only {took:?}");
        assert_eq!(emu.up.bytes.load(Ordering::Relaxed), 10_000);
        // Replies find their way back to the client.
        server.send_to(b"pong", from.unwrap_or(emu.addr())).await?;
        let n = client.recv(&mut buf).await?;
        assert_eq!(&buf[..n], b"pong");
        emu.cut();
        client.send(&[1u8; 10]).await?;
        assert!(tokio::time::timeout(Duration::from_millis(500), server.recv_from(&mut buf)).await.is_err());
        assert_eq!(emu.up.dropped.load(Ordering::Relaxed), 1);
        Ok(())
    }
}
