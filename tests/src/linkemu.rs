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
//!
//! [`TcpForward`] is the same network for TCP (the uplink's path when UDP is dropped):
//! the same rate, delay, jitter and queue per direction, but no loss (see there).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpSocket, UdpSocket};
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
        if self.queued(now) > self.p.queue {
            return None;
        }
        self.occupy(n, now);
        // A lost packet still used the link.
        if self.p.loss > 0.0 && (self.rng.below(1_000_000) as f64) < self.p.loss * 1_000_000.0 {
            return None;
        }
        Some(self.arrival())
    }

    /// Sending time already queued ahead of a packet offered `now`.
    fn queued(&self, now: Instant) -> Duration {
        self.link_free_at.saturating_duration_since(now)
    }

    /// Puts `n` bytes on the link after what is queued.
    fn occupy(&mut self, n: usize, now: Instant) {
        let tx = (n as u64 * 8)
            .saturating_mul(1_000_000_000)
            .checked_div(self.p.rate_bps)
            .map_or(Duration::ZERO, Duration::from_nanos);
        self.link_free_at = self.link_free_at.max(now) + tx;
    }

    /// When what was last put on the link arrives: `delay` plus jitter after it left,
    /// never before what went ahead of it.
    fn arrival(&mut self) -> Instant {
        let jitter_ns = self.p.jitter.as_nanos() as u64;
        let jitter = Duration::from_nanos(if jitter_ns == 0 { 0 } else { self.rng.below(jitter_ns + 1) });
        let arrival = (self.link_free_at + self.p.delay + jitter).max(self.last_arrival);
        self.last_arrival = arrival;
        arrival
    }
}

/// The TCP side of an emulated link: a forwarder on the emulator's own port number (a
/// hub's TCP path goes to the same `HOST:PORT` as its QUIC), to the cloud's TCP path.
/// Cutting the emulator's UDP leaves this open: a network that drops UDP only.
///
/// Each direction is shaped like [`LinkEmu`]'s, with the same [`Profile`]: bytes leave at
/// `rate` (one FIFO serialisation queue per direction, in chunks of at most [`SEGMENT`]
/// bytes), each chunk arrives `delay ± jitter` after it left, never before the chunk ahead
/// of it. The modem's buffer is `queue`: while more than that much sending time waits,
/// the forwarder stops reading from the sender, and TCP's flow control pushes back to it
/// (its receive buffer is kept small, [`RECV_BUFFER`], so the kernel does not add a
/// second, larger buffer of its own).
///
/// What it cannot emulate: loss. A byte stream has no packets to lose; a real link's
/// losses would show on TCP as retransmission delays (and a smaller congestion window),
/// not as missing data. The forwarder also ends TCP on both sides, so each side's TCP
/// sees a loopback peer: no slow start or loss recovery over the emulated delay. TCP
/// through it is the best case TCP can do on such a link; QUIC carried inside it still
/// sees the whole delay, end to end.
pub struct TcpForward {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
    /// TCP payload that crossed towards `target`: bytes, and chunks as `packets`
    /// (nothing is ever `dropped`).
    pub up: Arc<Counters>,
    /// TCP payload that crossed back from `target`.
    pub down: Arc<Counters>,
}

/// Largest chunk read and put on the emulated link at once: one Ethernet-sized TCP
/// segment, so a chunk's serialisation stays short (15 ms at 768 kbit/s) as a packet's.
pub const SEGMENT: usize = 1460;
/// Kernel receive buffer of the forwarder's sockets (Linux doubles it). Enough for the
/// loopback hop, small next to any `queue`, so data waits in the emulated modem buffer
/// or at the sender, not in the forwarder's kernel.
pub const RECV_BUFFER: u32 = 16 * 1024;
/// Chunks on their way (queued or in flight) per direction at most; far above what
/// `queue` and `delay` allow at the presets' rates, so only a stalled receiver reaches it.
const IN_FLIGHT: usize = 8192;

impl TcpForward {
    /// Forwards TCP connections to `listen` (normally `LinkEmu::addr()`) to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with_rate(listen, target, 0).await
    }

    /// As [`TcpForward::start`], each direction paced to `rate_bps` (0: unlimited), with
    /// no delay and no queue beyond the chunk being sent.
    pub async fn start_with_rate(listen: SocketAddr, target: SocketAddr, rate_bps: u64) -> anyhow::Result<Self> {
        let p = Profile { rate_bps, delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0, queue: Duration::ZERO };
        Self::start_shaped(listen, target, Preset { up: p, down: p }).await
    }

    /// As [`TcpForward::start`], each direction shaped like [`LinkEmu`]'s with the same
    /// preset, except for loss (see the type's documentation). `listen` may have port 0;
    /// [`TcpForward::addr`] says where it listens.
    pub async fn start_shaped(listen: SocketAddr, target: SocketAddr, preset: Preset) -> anyhow::Result<Self> {
        let socket = if listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Set before listening: accepted sockets inherit it, and the window they
        // advertise from their first segment follows it.
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let (up, down) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let (count, up_c, down_c) = (connections.clone(), up.clone(), down.clone());
        let task = tokio::spawn(async move {
            // Owned here, so stopping the forwarder ends its connections too.
            let mut conns = tokio::task::JoinSet::new();
            let mut seed = 0x7c90_0000u64;
            loop {
                let inbound = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => return,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                count.fetch_add(1, Ordering::Relaxed);
                seed += 2;
                let (up_c, down_c) = (up_c.clone(), down_c.clone());
                conns.spawn(async move {
                    let Ok(outbound) = connect_small(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    // Each direction passes its end on once all before it arrived; the
                    // connection is done when both have.
                    tokio::join!(
                        shaped(ri, wo, Shaper::new(preset.up, seed), up_c),
                        shaped(ro, wi, Shaper::new(preset.down, seed + 1), down_c),
                    );
                });
            }
        });
        Ok(Self { addr, task, connections, up, down })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A connection to `target` with the forwarder's small receive buffer.
async fn connect_small(target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    socket.connect(target).await
}

/// One direction of a forwarded connection: reads `from` while the emulated queue has
/// room, delivers each chunk to `to` at its arrival time, and passes on the end of the
/// stream once everything before it has arrived.
async fn shaped(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut shaper: Shaper,
    counters: Arc<Counters>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; SEGMENT];
        loop {
            // The modem's buffer is full: stop reading until it drains to `queue`.
            let now = Instant::now();
            let over = shaper.queued(now).saturating_sub(shaper.p.queue);
            if !over.is_zero() {
                tokio::time::sleep_until(now + over).await;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            shaper.occupy(n, Instant::now());
            counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            counters.packets.fetch_add(1, Ordering::Relaxed);
            if tx.send((shaper.arrival(), buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
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

    #[tokio::test]
    async fn tcp_is_shaped_in_rate_and_delay_and_counted() -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        // 80 kbit/s = 10 kB/s, 200 ms RTT, a queue of 0.5 s: the sender is held back.
        let mut p = Profile::new(80_000, 200, 0.0);
        p.queue = Duration::from_millis(500);
        let fwd =
            TcpForward::start_shaped("127.0.0.1:0".parse()?, server.local_addr()?, Preset { up: p, down: p }).await?;
        let started = Instant::now();
        let mut client = tokio::net::TcpStream::connect(fwd.addr()).await?;
        let (mut peer, _) = server.accept().await?;
        let sender = tokio::spawn(async move {
            client.write_all(&[7u8; 10_000]).await?;
            client.shutdown().await?;
            let mut back = Vec::new();
            client.read_to_end(&mut back).await?;
            anyhow::Ok(back)
        });
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await?;
        // 10 kB at 10 kB/s plus 100 ms one-way.
        let took = started.elapsed();
        assert_eq!(got.len(), 10_000);
        assert!(took >= Duration::from_millis(1000), "took only {took:?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert_eq!(fwd.up.bytes.load(Ordering::Relaxed), 10_000);
        peer.write_all(b"pong").await?;
        drop(peer);
        assert_eq!(sender.await??, b"pong");
        assert_eq!(fwd.down.bytes.load(Ordering::Relaxed), 4);
        Ok(())
    }
}
