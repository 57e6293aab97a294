//! The pieces every uplink scenario sets up the same way: a cloud identity, a relay whose
//! uplink goes through the link emulator (over QUIC, or over TCP with UDP dropped), the
//! village's people and tokens, the relay's log (where the link says when it connected
//! and what each batch weighed), and CPU use of both processes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use outpost_shared::uplink::batch::{Entry, WireMessage};
use outpost_tests::corpus::Corpus;
use outpost_tests::linkemu::{Counters, LinkEmu, Preset, TcpForward};
use outpost_tests::{Cloud, Relay, RelayDir};
use tokio::time::Instant;

use crate::procfs::{MachineTimes, ProcTimes};

/// Environment of every relay in the uplink scenarios, and why (plus the allocator
/// setting, [`crate::hub::relay_env`]).
pub const RELAY_ENV: &[(&str, &str)] = &[
    // Building a 100,000-message backlog from a few phones in seconds is far above a
    // phone's default rate limit, which exists for runaway phones, not benchmarks.
    ("OUTPOST_LIMITS__RATE_PER_SEC", "1000000"),
    ("OUTPOST_LIMITS__RATE_BURST", "1000000"),
    // While the cloud is down the hub retries within 2 s instead of up to 30 s, so the
    // time from the cloud starting to the link being up is mostly the handshake, not
    // where the hub happened to be in its backoff (the tests use the same setting).
    ("OUTPOST_UPLINK__RETRY_MAX_SECS", "2"),
    // `batch sent` lines (size, window) are what the report's batch statistics and the
    // same-run baseline's byte count come from.
    ("RUST_LOG", "info,outpost_engine::link=debug"),
];

/// The user id of the doctor on the cloud (phones treat `dr-*` senders as the doctor).
pub const DOCTOR: &str = "dr-neema";

/// How the uplink crosses the emulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// QUIC on UDP through the link emulator (the link's normal path).
    Quic,
    /// The link's TCP path: the emulator drops every UDP datagram, so after its QUIC
    /// attempt times out the hub carries the same QUIC link over TLS on TCP, through a
    /// forwarder shaped with the same preset (`TcpForward`, no loss).
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

/// A cloud identity and a relay provisioned for it, whose uplink goes through `emu`
/// (and, on the TCP path, through `tcp` on the emulator's port number).
pub struct Site {
    pub root: PathBuf,
    pub cloud: Cloud,
    pub quic: String,
    pub emu: LinkEmu,
    /// The shaped TCP forwarder, on the TCP path only (UDP is then cut).
    pub tcp: Option<TcpForward>,
    pub relay_dir: RelayDir,
    pub relay: Relay,
}

impl Site {
    /// The cloud's QUIC port is chosen now but the cloud is not started.
    pub async fn create(root: &Path, preset: Preset) -> anyhow::Result<Self> {
        Self::create_on(root, preset, Transport::Quic).await
    }

    /// As [`Site::create`], the uplink on `transport`. On TCP the forwarder goes to the
    /// cloud's QUIC port number, where the cloud opens its TCP path by default.
    pub async fn create_on(root: &Path, preset: Preset, transport: Transport) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)?;
        let cloud = Cloud::init(&root.join("cloud")).context("outpost-cloud init")?;
        let quic = outpost_tests::free_udp_addr()?;
        let emu = LinkEmu::start(quic.parse()?, preset).await?;
        let tcp = match transport {
            Transport::Quic => None,
            Transport::Tcp => {
                emu.cut();
                let fwd = TcpForward::start_shaped(emu.addr(), quic.parse()?, preset)
                    .await
                    .context("the TCP forwarder on the emulator's port")?;
                Some(fwd)
            }
        };
        let relay_dir = cloud.provision_relay_at("village-1", &root.join("relay"), &quic)?;
        let relay = relay_dir
            .start_via(&emu.addr().to_string(), &crate::hub::relay_env(RELAY_ENV))
            .await
            .context("starting outpost-relay")?;
        Ok(Self { root: root.to_path_buf(), cloud, quic, emu, tcp, relay_dir, relay })
    }

    /// The counters of the path the uplink takes: UDP through the emulator, or TCP
    /// payload through the forwarder.
    pub fn counters(&self) -> (Arc<Counters>, Arc<Counters>) {
        match &self.tcp {
            Some(f) => (f.up.clone(), f.down.clone()),
            None => (self.emu.up.clone(), self.emu.down.clone()),
        }
    }

    /// [`Site::counters`] now.
    pub fn bytes(&self) -> Bytes {
        let (up, down) = self.counters();
        Bytes::of(&up, &down)
    }

    pub fn relay_log(&self) -> PathBuf {
        self.relay_dir.dir.join("relay.log")
    }

    /// Stops the relay gracefully (a failure to stop is only reported).
    pub async fn stop_relay(&mut self) {
        match self.relay.terminate().await {
            Ok(Some(0)) => {}
            other => eprintln!("warning: relay stop: {other:?}"),
        }
    }
}

/// Traffic counters of both directions at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes {
    pub up: u64,
    pub down: u64,
    pub up_packets: u64,
    pub up_dropped: u64,
}

impl Bytes {
    pub fn read(emu: &LinkEmu) -> Self {
        Self::of(&emu.up, &emu.down)
    }

    pub fn of(up: &Counters, down: &Counters) -> Self {
        Self {
            up: up.bytes.load(Ordering::Relaxed),
            down: down.bytes.load(Ordering::Relaxed),
            up_packets: up.packets.load(Ordering::Relaxed),
            up_dropped: up.dropped.load(Ordering::Relaxed),
        }
    }

    pub fn since(&self, a: &Self) -> Self {
        Self {
            up: self.up - a.up,
            down: self.down - a.down,
            up_packets: self.up_packets - a.up_packets,
            up_dropped: self.up_dropped - a.up_dropped,
        }
    }
}

/// The village: corpus messages as the phones will send them.
pub struct Village {
    /// Corpus messages in order (receipts of the corpus are left out: receipts that go
    /// up are made for real by phones acking and reading the doctor's posts).
    pub messages: Vec<WireMessage>,
    /// Every user, with the device the corpus gives them.
    pub people: Vec<(String, String)>,
    pub rooms: Vec<String>,
}

impl Village {
    pub fn generate(seed: u64, n: usize) -> Self {
        let mut c = Corpus::new(seed);
        let mut messages = Vec::with_capacity(n);
        let mut people = BTreeSet::new();
        let mut rooms = BTreeSet::new();
        while messages.len() < n {
            if let Entry::Message(m) = c.next_entry() {
                people.insert((m.from.to_string(), m.device.to_string()));
                rooms.insert(m.room.to_string());
                messages.push(m);
            }
        }
        Self { messages, people: people.into_iter().collect(), rooms: rooms.into_iter().collect() }
    }

    pub fn emergencies(&self) -> usize {
        self.messages.iter().filter(|m| m.priority == outpost_shared::Priority::Emergency).count()
    }

    /// Worker tokens for every person (all rooms: a small hub where everyone is in every
    /// room) and a doctor's token for the same rooms.
    pub fn tokens(&self, cloud: &Cloud) -> anyhow::Result<(Vec<String>, String)> {
        let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        let mut tokens = Vec::new();
        for (user, _) in &self.people {
            tokens.push(cloud.token(user, "worker", &rooms, "3h")?);
        }
        let doctor = cloud.token(DOCTOR, "doctor", &rooms, "3h")?;
        Ok((tokens, doctor))
    }
}

/// Reads a relay's log as it grows.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    /// Starts at the current end of the file: only later lines are seen.
    pub fn from_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Self { path: path.to_path_buf(), offset }
    }

    /// Lines appended since the last call (a partial last line is kept for next time).
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.path) else { return Vec::new() };
        let start = (self.offset as usize).min(bytes.len());
        let fresh = &bytes[start..];
        let complete = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.offset += complete as u64;
        String::from_utf8_lossy(&fresh[..complete]).lines().map(str::to_owned).collect()
    }
}

/// The moment the relay's log says `uplink connected` after `tail`'s position, with the
/// link's byte counters at that moment and the transport the line names.
pub fn watch_connect(
    mut tail: LogTail,
    up: Arc<Counters>,
    down: Arc<Counters>,
) -> tokio::task::JoinHandle<(Instant, Bytes, String)> {
    tokio::spawn(async move {
        loop {
            if let Some(l) = tail.new_lines().iter().find(|l| l.contains("uplink connected")) {
                let transport = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("transport="))
                    .map(|v| v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned())
                    .unwrap_or_default();
                return (Instant::now(), Bytes::of(&up, &down), transport);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The `batch sent` lines of a stretch of the relay's log.
#[derive(Debug, Clone, Default)]
pub struct Batches {
    pub normal: u64,
    pub emergency: u64,
    pub normal_bytes: u64,
    pub emergency_bytes: u64,
    pub entries: u64,
    /// The window (bytes of normal batches allowed in flight) as each batch left.
    pub windows: Vec<u64>,
    pub connects: usize,
}

impl Batches {
    pub fn parse(lines: &[String]) -> Self {
        let mut b = Self::default();
        for l in lines {
            if l.contains("uplink connected") {
                b.connects += 1;
            }
            if !l.contains("batch sent") {
                continue;
            }
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .map(|v| v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned())
            };
            let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let bytes = num("bytes");
            let (first, last) = (num("first"), num("last"));
            b.entries += last.saturating_sub(first) + 1;
            if field("lane").as_deref() == Some("Emergency") {
                b.emergency += 1;
                b.emergency_bytes += bytes;
            } else {
                b.normal += 1;
                b.normal_bytes += bytes;
                b.windows.push(num("window"));
            }
        }
        b
    }

    pub fn bytes(&self) -> u64 {
        self.normal_bytes + self.emergency_bytes
    }

    /// Entries per batch of the stretch: (first..=last) ranges, so an upper bound when
    /// emergencies were skipped in normal batches.
    pub fn window_range(&self) -> (u64, u64, u64) {
        let mut w = self.windows.clone();
        w.sort_unstable();
        match (w.first(), w.last()) {
            (Some(a), Some(z)) => (*a, w[w.len() / 2], *z),
            _ => (0, 0, 0),
        }
    }
}

/// CPU time of the relay, the cloud, this process and the machine over a stretch.
pub struct CpuMark {
    relay: ProcTimes,
    cloud: ProcTimes,
    me: ProcTimes,
    machine: MachineTimes,
    at: Instant,
}

/// Percentages of one core over a stretch; machine busy as a share of all cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShare {
    pub relay: f64,
    pub cloud: f64,
    pub bench: f64,
    pub others: f64,
    pub machine_busy: f64,
}

impl CpuMark {
    pub fn take(relay: Option<u32>, cloud: Option<u32>) -> Self {
        let read = |p: Option<u32>| p.map(|p| ProcTimes::read(&p.to_string())).unwrap_or_default();
        Self {
            relay: read(relay),
            cloud: read(cloud),
            me: ProcTimes::read("self"),
            machine: MachineTimes::read(),
            at: Instant::now(),
        }
    }

    /// Use between `a` and now; processes are the ones `a` was taken of.
    pub fn since(a: &Self, relay: Option<u32>, cloud: Option<u32>) -> CpuShare {
        let b = Self::take(relay, cloud);
        let ns = (b.at - a.at).as_nanos().max(1) as f64;
        let pct = |v: u64| v as f64 * 100.0 / ns;
        let total = b.machine.total.saturating_sub(a.machine.total).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = b.machine.busy.saturating_sub(a.machine.busy) as f64 * 100.0 / total;
        let relay = pct(b.relay.cpu_since(&a.relay, None));
        // A cloud that started after `a` has no earlier sample: all its time counts.
        let cloud = pct(b.cloud.cpu_since(&a.cloud, None));
        let bench = pct(b.me.cpu_since(&a.me, None));
        CpuShare { relay, cloud, bench, others: (busy * cores - relay - cloud - bench).max(0.0), machine_busy: busy }
    }
}
