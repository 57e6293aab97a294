//! `--phases peers`: the hub's durable ingest next to two brokers on the same machine,
//! Mosquitto 2.0 (MQTT QoS 1, persistence on) and nats-server 2.9 (JetStream, file
//! storage), with the same client count, window and message size, in the same run.
//!
//! It owns the brokers' private instances (config in a temp dir, free 127.0.0.1 ports,
//! killed when their phase ends) and the MQTT and NATS load generators. It does not own
//! the Outpost side: that is the ordinary ingest phase ([`crate::phases::load_phase`]),
//! called here unchanged so the three rows are measured the same way. Missing brokers are
//! installed from Debian's packages (`apt-get`, root) before anything is measured.
//!
//! The generators mirror the Outpost ingest phase: one task per client connection, each
//! keeping `window` publishes awaiting their acknowledgement (PUBACK; JetStream PubAck),
//! latency per message from publish to acknowledgement for messages sent in the measured
//! window, acknowledgements per second counted over that window. Each client also
//! receives its room-mates' messages, like the hub's rooms: rooms of 2 (one delivery per
//! message), and the closed loop once more with rooms of 10 (nine deliveries per message;
//! one subscription per room-mate on MQTT and NATS). What an acknowledgement *means* differs between the
//! three (fsync or not) and the report says so next to each number.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::Args;
use crate::hub::{Topology, World};
use crate::load::{self, Drive, Window};
use crate::phases::{self, PhaseResult, Timing};
use crate::procfs::{MachineTimes, ProcTimes};
use crate::stats::{Latency, new_hist, record};

mod report;
pub use report::markdown;

/// Connections being set up at once (as in the hub's phases).
const CONNECT_PARALLEL: usize = 32;

/// How long a freshly started broker may take to accept TCP connections.
const BROKER_START: Duration = Duration::from_secs(15);

/// How a client drives its connection: like the hub's ingest (closed loop) or steady
/// (open loop) phase.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `window` publishes awaiting acknowledgement, the next sent as one is acked.
    Closed { window: usize },
    /// One publish every `every`, on a schedule; latency counts from the scheduled time.
    Open { every: Duration },
}

/// Which server a row of the comparison measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Mosquitto,
    JetStream,
}

/// What one broker run observed.
#[derive(Debug, Clone, Default)]
pub struct PeerResult {
    pub acked_per_sec: f64,
    pub ack: Latency,
    pub delivery: Latency,
    pub deliveries: u64,
    pub deliveries_expected: u64,
    pub unanswered: u64,
    pub errors: Vec<String>,
    /// Broker process CPU over the measured window, % of one core.
    pub broker_cpu_pct: f64,
    pub generator_cpu_pct: f64,
    pub machine_busy_pct: f64,
    /// Messages acknowledged in the measured window.
    pub acked: u64,
    /// Bytes the broker wrote to storage in the measured window (`/proc/PID/io`).
    pub write_bytes: u64,
}

/// One repetition: Outpost's ingest phase and each peer.
#[derive(Debug, Clone)]
pub struct PeersRep {
    pub outpost: PhaseResult,
    pub mosquitto: PeerResult,
    pub jetstream: PeerResult,
    /// The same three at a fixed total rate (`--rate`), below saturation.
    pub steady: (PhaseResult, PeerResult, PeerResult),
    /// The closed loop again with rooms of [`ROOMS_OF`].
    pub rooms: (PhaseResult, PeerResult, PeerResult),
}

/// The larger rooms of the comparison: nine deliveries per message.
pub const ROOMS_OF: usize = 10;

/// Per-client observations, merged at the end.
struct Obs {
    ack: Histogram<u64>,
    delivery: Histogram<u64>,
    acked_in_window: u64,
    sent_in_window: u64,
    deliveries: u64,
    unanswered: u64,
    errors: Vec<String>,
}

impl Obs {
    fn new() -> Self {
        Self {
            ack: new_hist(),
            delivery: new_hist(),
            acked_in_window: 0,
            sent_in_window: 0,
            deliveries: 0,
            unanswered: 0,
            errors: Vec::new(),
        }
    }

    fn merge(&mut self, o: Self) {
        let _ = self.ack.add(&o.ack);
        let _ = self.delivery.add(&o.delivery);
        self.acked_in_window += o.acked_in_window;
        self.sent_in_window += o.sent_in_window;
        self.deliveries += o.deliveries;
        self.unanswered += o.unanswered;
        self.errors.extend(o.errors);
    }

    fn on_ack(&mut self, w: &Window, at: Instant) {
        let now = Instant::now();
        if measured(w, at) {
            record(&mut self.ack, (now - at).as_micros() as u64);
        }
        if measured(w, now) {
            self.acked_in_window += 1;
        }
    }

    fn on_delivery(&mut self, w: &Window, payload: &[u8]) {
        if let Some(at) = sent_at(payload)
            && measured(w, at)
        {
            self.deliveries += 1;
            record(&mut self.delivery, (Instant::now() - at).as_micros() as u64);
        }
    }
}

fn measured(w: &Window, t: Instant) -> bool {
    t >= w.from && t < w.to
}

/// A JSON payload like the hub's message bodies (~100 bytes, or `--body-bytes`) carrying its send time (ns since [`load::base`]).
fn payload(i: usize, at: Instant) -> String {
    let t = at.saturating_duration_since(load::base()).as_nanos() as u64;
    format!(r#"{{"t":{t},"c":{i},"text":"{}"}}"#, load::body_text())
}

fn sent_at(payload: &[u8]) -> Option<Instant> {
    let s = std::str::from_utf8(payload).ok()?;
    let rest = s.strip_prefix(r#"{"t":"#)?;
    let end = rest.find(',')?;
    let ns: u64 = rest[..end].parse().ok()?;
    Some(load::base() + Duration::from_nanos(ns))
}

/// The clients of one run and the rooms they make: clients `0..room_size` are the first
/// room, and so on, as in the hub's phases (the last room may be smaller).
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub clients: usize,
    pub room_size: usize,
}

impl Group {
    pub fn pairs(clients: usize) -> Self {
        Self { clients, room_size: 2 }
    }

    /// The other members of client `i`'s room, whose messages it receives.
    fn mates(self, i: usize) -> impl Iterator<Item = usize> {
        let size = self.room_size.max(1);
        let first = i / size * size;
        (first..(first + size).min(self.clients)).filter(move |p| *p != i)
    }
}

/// Every repetition: Outpost ingest, Mosquitto, JetStream, in that order.
pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<(Vec<PeersRep>, Versions, Duration)> {
    ensure_installed().await?;
    let versions = Versions::read().await;
    eprintln!("peers: {} / {}", versions.mosquitto, versions.nats);
    let timing = args.timing();
    load::base();
    let topology = Topology { clients: args.clients, room_size: 2 };
    eprintln!("issuing {} device tokens…", args.clients);
    let mut world =
        World::create(&tmp.join("peers-outpost"), topology, args.clients).context("setting up the cloud identity")?;
    let rooms_topology = Topology { clients: args.clients, room_size: ROOMS_OF };
    let mut rooms_world = World::create(&tmp.join("peers-outpost-rooms"), rooms_topology, args.clients)
        .context("setting up the cloud identity")?;
    let started = Instant::now();
    let mut reps = Vec::new();
    for r in 0..args.reps() {
        eprintln!("repetition {} of {}", r + 1, args.reps());
        let outpost =
            phases::load_phase(&mut world, Drive::Closed { window: args.window }, &timing, "outpost ingest").await?;
        let dir = tmp.join(format!("peers-{r}"));
        let closed = Load::Closed { window: args.window };
        let pairs = Group::pairs(args.clients);
        let mosquitto = run_peer(Peer::Mosquitto, &dir.join("closed"), pairs, closed, &timing).await?;
        let jetstream = run_peer(Peer::JetStream, &dir.join("closed"), pairs, closed, &timing).await?;
        let steady_drive = Drive::Open { rate: args.rate, emergency_rate: 0.0 };
        let outpost_steady = phases::load_phase(&mut world, steady_drive, &timing, "outpost steady").await?;
        // Every client at rate ÷ clients, so the total is `--rate` as in the hub's phase.
        let open = Load::Open { every: Duration::from_secs_f64(args.clients as f64 / args.rate) };
        let mosquitto_steady = run_peer(Peer::Mosquitto, &dir.join("open"), pairs, open, &timing).await?;
        let jetstream_steady = run_peer(Peer::JetStream, &dir.join("open"), pairs, open, &timing).await?;
        let label = format!("outpost ingest, rooms of {ROOMS_OF}");
        let outpost_rooms =
            phases::load_phase(&mut rooms_world, Drive::Closed { window: args.window }, &timing, &label).await?;
        let rooms = Group { clients: args.clients, room_size: ROOMS_OF };
        let mosquitto_rooms = run_peer(Peer::Mosquitto, &dir.join("rooms"), rooms, closed, &timing).await?;
        let jetstream_rooms = run_peer(Peer::JetStream, &dir.join("rooms"), rooms, closed, &timing).await?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        reps.push(PeersRep {
            outpost,
            mosquitto,
            jetstream,
            steady: (outpost_steady, mosquitto_steady, jetstream_steady),
            rooms: (outpost_rooms, mosquitto_rooms, jetstream_rooms),
        });
    }
    Ok((reps, versions, started.elapsed()))
}

/// Installs Debian's `mosquitto` and `nats-server` if either is missing (root needed).
pub async fn ensure_installed() -> anyhow::Result<()> {
    if find_bin("mosquitto").is_some() && find_bin("nats-server").is_some() {
        return Ok(());
    }
    eprintln!("peers: installing mosquitto and nats-server from Debian's packages…");
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(["-o", "DPkg::Lock::Timeout=600"]).args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let ok = apt(&["install", "-y", "-q", "mosquitto", "nats-server"]).status().await.is_ok_and(|s| s.success());
    if !ok {
        // A fresh machine's package lists may be empty or stale.
        apt(&["update", "-q"]).status().await.context("apt-get update")?;
        let s = apt(&["install", "-y", "-q", "mosquitto", "nats-server"]).status().await.context("apt-get install")?;
        if !s.success() {
            bail!("apt-get install mosquitto nats-server failed ({s}); run bench/peers-setup.sh as root");
        }
    }
    if find_bin("mosquitto").is_none() || find_bin("nats-server").is_none() {
        bail!("mosquitto or nats-server still not found after apt-get install");
    }
    Ok(())
}

/// `mosquitto` lives in /usr/sbin, which is not on every user's PATH.
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The brokers' versions as they print them.
#[derive(Debug, Clone)]
pub struct Versions {
    pub mosquitto: String,
    pub nats: String,
}

impl Versions {
    async fn read() -> Self {
        let out = |bin: &str, arg: &str| {
            let bin = find_bin(bin);
            let arg = arg.to_owned();
            async move {
                let Some(bin) = bin else { return "not found".to_owned() };
                match Command::new(bin).arg(arg).output().await {
                    Ok(o) => {
                        let text =
                            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                        text.lines().find(|l| l.contains("version") || l.contains('v')).unwrap_or("").trim().to_owned()
                    }
                    Err(e) => format!("unknown ({e})"),
                }
            }
        };
        Self { mosquitto: out("mosquitto", "-h").await, nats: out("nats-server", "--version").await }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A broker process that is killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Broker {
    async fn start(peer: Peer, dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let (bin, conf, args): (&str, String, Vec<String>) = match peer {
            Peer::Mosquitto => {
                let data = dir.join("mosquitto-data");
                std::fs::create_dir_all(&data)?;
                // Persistence is an in-memory database written out as a whole snapshot
                // every `autosave_interval` seconds (and at shutdown), not a log written
                // per message: a PUBACK says the broker has the message in memory. One
                // second is the most frequent snapshot it offers. Inflight and queue
                // limits are lifted so they never throttle the measured flow; Nagle is off
                // as it is in the hub.
                let conf = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nautosave_on_changes false\nmax_inflight_messages 0\nmax_queued_messages 1000000\nmax_connections -1\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                    data.display()
                );
                ("mosquitto", conf, vec!["-c".into()])
            }
            Peer::JetStream => {
                let data = dir.join("jetstream-data");
                std::fs::create_dir_all(&data)?;
                // nats-server 2.9 has no `sync_interval` (it rejects the field; it came
                // in 2.10), so only the default can be measured: the PubAck is sent once
                // the message is in the stream's block (written to the file, i.e. the page
                // cache), and block files are fsynced by a background timer (2 minutes in
                // the sources; not configurable in 2.9), not per message.
                let conf = format!(
                    "listen: \"127.0.0.1:{port}\"\nmax_connections: 10000\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: 10GB\n  max_memory_store: 256MB\n}}\n",
                    data.display()
                );
                ("nats-server", conf, vec!["-c".into()])
            }
        };
        let name = match peer {
            Peer::Mosquitto => "mosquitto",
            Peer::JetStream => "nats",
        };
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf)?;
        let log = dir.join(format!("{name}.log"));
        let logf = std::fs::File::create(&log)?;
        let bin = find_bin(bin).with_context(|| format!("{bin} not found"))?;
        let (program, pin) = crate::hub::server_command(&bin);
        let child = Command::new(program)
            .args(pin)
            .args(args)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut b = Self { child, port, log };
        let deadline = Instant::now() + BROKER_START;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(code)) = b.child.try_wait() {
                bail!("{name} exited at start ({code}): {}", std::fs::read_to_string(&b.log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on port {port} within {BROKER_START:?}");
            }
            sleep(Duration::from_millis(50)).await;
        }
        b.port = port;
        Ok(b)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// CPU of the broker, this process and the machine over the measured window, and the
/// bytes the broker wrote to storage in it.
async fn sample_cpu(pid: u32, w: Window) -> (f64, f64, f64, u64) {
    sleep_until(w.from).await;
    let (b0, me0, m0, t0) =
        (ProcTimes::read(&pid.to_string()), ProcTimes::read("self"), MachineTimes::read(), Instant::now());
    let written = crate::procfs::write_bytes(pid);
    sleep_until(w.to).await;
    let (b1, me1, m1, t1) =
        (ProcTimes::read(&pid.to_string()), ProcTimes::read("self"), MachineTimes::read(), Instant::now());
    let written = crate::procfs::write_bytes(pid).saturating_sub(written);
    let ns = (t1 - t0).as_nanos().max(1) as f64;
    let total = m1.total.saturating_sub(m0.total).max(1) as f64;
    (
        b1.cpu_since(&b0, None) as f64 * 100.0 / ns,
        me1.cpu_since(&me0, None) as f64 * 100.0 / ns,
        m1.busy.saturating_sub(m0.busy) as f64 * 100.0 / total,
        written,
    )
}

/// Starts `peer` fresh in `dir`, connects `clients`, runs `load`, stops it.
pub async fn run_peer(peer: Peer, dir: &Path, group: Group, load: Load, t: &Timing) -> anyhow::Result<PeerResult> {
    let dir = dir.join(format!("{peer:?}").to_lowercase());
    std::fs::create_dir_all(&dir)?;
    let broker = Broker::start(peer, &dir).await?;
    let result = measure(peer, &broker, group, load, t).await;
    let log_tail = std::fs::read_to_string(&broker.log).unwrap_or_default();
    broker.stop().await;
    let r = result.with_context(|| format!("{peer:?} run; broker log:\n{}", tail(&log_tail, 20)))?;
    eprintln!(
        "  {peer:?} ({load:?}): acked {:.0}/s, ack p50 {:.2} ms p99 {:.2} ms, delivery p99 {:.2} ms ({} / {}); broker CPU {:.0} %, generator {:.0} %, machine busy {:.0} %",
        r.acked_per_sec,
        r.ack.p50_ms,
        r.ack.p99_ms,
        r.delivery.p99_ms,
        r.deliveries,
        r.deliveries_expected,
        r.broker_cpu_pct,
        r.generator_cpu_pct,
        r.machine_busy_pct
    );
    if !r.errors.is_empty() || r.unanswered > 0 {
        eprintln!("    errors {:?}, unanswered {}", r.errors.iter().take(5).collect::<Vec<_>>(), r.unanswered);
    }
    Ok(r)
}

/// Connects the clients to a running broker and runs one measurement.
async fn measure(peer: Peer, broker: &Broker, group: Group, load: Load, t: &Timing) -> anyhow::Result<PeerResult> {
    let clients = group.clients;
    let tasks = match peer {
        Peer::Mosquitto => {
            let conns = mqtt::connect_all(broker.port, group).await?;
            let w = Window::new(t.warmup, t.measure, t.drain);
            let tasks = conns
                .into_iter()
                .map(|c| {
                    let pacer = Pacer::new(load, &w, c.idx, clients);
                    tokio::spawn(mqtt::drive(c, pacer, w))
                })
                .collect();
            (tasks, w)
        }
        Peer::JetStream => {
            let conns = nats::connect_all(broker.port, group).await?;
            let w = Window::new(t.warmup, t.measure, t.drain);
            let tasks = conns
                .into_iter()
                .map(|c| {
                    let pacer = Pacer::new(load, &w, c.idx, clients);
                    tokio::spawn(nats::drive(c, pacer, w))
                })
                .collect();
            (tasks, w)
        }
    };
    let (tasks, w) = tasks;
    let cpu = tokio::spawn(sample_cpu(broker.pid(), w));
    finish(tasks, cpu, w, group).await
}

async fn finish(
    tasks: Vec<tokio::task::JoinHandle<Obs>>,
    cpu: tokio::task::JoinHandle<(f64, f64, f64, u64)>,
    w: Window,
    group: Group,
) -> anyhow::Result<PeerResult> {
    let clients = group.clients;
    let mut all = Obs::new();
    let mut sent_by = vec![0u64; clients];
    for (i, task) in tasks.into_iter().enumerate() {
        let o = task.await.context("a client task panicked")?;
        sent_by[i] = o.sent_in_window;
        all.merge(o);
    }
    let expected = (0..clients).map(|i| sent_by[i] * group.mates(i).count() as u64).sum();
    let (broker_cpu_pct, generator_cpu_pct, machine_busy_pct, write_bytes) = cpu.await.unwrap_or_default();
    Ok(PeerResult {
        acked_per_sec: all.acked_in_window as f64 / w.secs(),
        ack: Latency::of(&all.ack),
        delivery: Latency::of(&all.delivery),
        deliveries: all.deliveries,
        deliveries_expected: expected,
        unanswered: all.unanswered,
        errors: all.errors,
        broker_cpu_pct,
        generator_cpu_pct,
        machine_busy_pct,
        acked: all.acked_in_window,
        write_bytes,
    })
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// When a client sends: as soon as its window has room (closed loop) or on its schedule,
/// phased evenly across clients (open loop).
struct Pacer {
    load: Load,
    next: Instant,
}

impl Pacer {
    fn new(load: Load, w: &Window, idx: usize, clients: usize) -> Self {
        let next = match load {
            Load::Closed { .. } => w.start,
            Load::Open { every } => w.start + every.mul_f64(idx as f64 / clients.max(1) as f64),
        };
        Self { load, next }
    }

    /// The send time of the next message due at `now`, if any.
    fn due(&mut self, outstanding: usize, now: Instant, w: &Window) -> Option<Instant> {
        if now >= w.to {
            return None;
        }
        match self.load {
            Load::Closed { window } => (outstanding < window).then(Instant::now),
            Load::Open { every } => {
                let at = self.next;
                (at <= now && at < w.to).then(|| {
                    self.next += every;
                    at
                })
            }
        }
    }

    /// When to stop waiting for an event to send again.
    fn wake(&self, edge: Instant) -> Instant {
        match self.load {
            Load::Closed { .. } => edge,
            Load::Open { .. } => edge.min(self.next),
        }
    }
}

/// The time after which a client stops waiting for an event: the window's next edge.
fn next_edge(w: &Window, now: Instant) -> Instant {
    if now < w.to {
        w.to
    } else if now < w.linger {
        w.linger
    } else {
        w.hard_end
    }
}

/// MQTT 3.1.1 clients (rumqttc), one event loop per connection.
mod mqtt {
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};

    use super::*;

    pub struct Conn {
        pub idx: usize,
        client: AsyncClient,
        events: EventLoop,
    }

    pub async fn connect_all(port: u16, group: Group) -> anyhow::Result<Vec<Conn>> {
        futures_util::stream::iter(0..group.clients)
            .map(|i| connect_one(port, i, group))
            .buffered(CONNECT_PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Publishes one client may have queued or awaiting PUBACK: far above the closed
    /// loop's window, and enough for an open-loop client to ride out a stall of seconds.
    const OUTSTANDING: usize = 1024;

    async fn connect_one(port: u16, idx: usize, group: Group) -> anyhow::Result<Conn> {
        let mut o = MqttOptions::new(format!("bench{idx}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(60)).set_clean_session(true);
        // rumqttc's own inflight cap must never be what binds.
        o.set_inflight(OUTSTANDING as u16);
        o.set_request_channel_capacity(OUTSTANDING);
        let (client, mut events) = AsyncClient::new(o, OUTSTANDING);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        // One subscription per room-mate: each publishes on its own topic.
        let mut unacked = 0;
        for p in group.mates(idx) {
            client.try_subscribe(format!("d/{p}"), QoS::AtLeastOnce)?;
            unacked += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connected = false;
        while !(connected && unacked == 0) {
            match timeout_at(deadline, events.poll()).await {
                Err(_) => bail!("mqtt client {idx}: no CONNACK/SUBACK within 30 s"),
                Ok(Err(e)) => bail!("mqtt client {idx}: {e}"),
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connected = true,
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => unacked -= 1,
                Ok(Ok(_)) => {}
            }
        }
        Ok(Conn { idx, client, events })
    }

    /// Publishes at QoS 1 as `pacer` says until the window closes, then drains; PUBACKs
    /// are matched to send times through the packet ids the event loop assigns in request
    /// order.
    pub async fn drive(mut c: Conn, mut pacer: Pacer, w: Window) -> Obs {
        let mut obs = Obs::new();
        let topic = format!("d/{}", c.idx);
        let mut queued: VecDeque<Instant> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Instant> = HashMap::new();
        sleep_until(w.start).await;
        loop {
            let now = Instant::now();
            if now < w.to {
                while let Some(at) = pacer.due(queued.len() + by_pkid.len(), now, &w) {
                    if let Err(e) = c.client.try_publish(&topic, QoS::AtLeastOnce, false, payload(c.idx, at)) {
                        obs.errors.push(e.to_string());
                        return obs;
                    }
                    queued.push_back(at);
                    if measured(&w, at) {
                        obs.sent_in_window += 1;
                    }
                }
            } else if (now >= w.linger && queued.is_empty() && by_pkid.is_empty()) || now >= w.hard_end {
                break;
            }
            match timeout_at(pacer.wake(next_edge(&w, now)), c.events.poll()).await {
                Err(_) => {}
                Ok(Err(e)) => {
                    obs.errors.push(e.to_string());
                    break;
                }
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(at) = queued.pop_front() {
                        by_pkid.insert(pkid, at);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    if let Some(at) = by_pkid.remove(&a.pkid) {
                        obs.on_ack(&w, at);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => obs.on_delivery(&w, &p.payload),
                Ok(Ok(_)) => {}
            }
        }
        obs.unanswered = queued.iter().chain(by_pkid.values()).filter(|at| measured(&w, **at)).count() as u64;
        let _ = c.client.try_disconnect();
        obs
    }
}

/// NATS clients (async-nats), JetStream publish with the PubAck awaited.
mod nats {
    use async_nats::jetstream::{self, stream};

    use super::*;

    pub struct Conn {
        pub idx: usize,
        js: jetstream::Context,
        sub: futures_util::stream::SelectAll<async_nats::Subscriber>,
        _client: async_nats::Client,
    }

    pub async fn connect_all(port: u16, group: Group) -> anyhow::Result<Vec<Conn>> {
        let url = format!("nats://127.0.0.1:{port}");
        let admin = async_nats::connect(&url).await.context("nats connect")?;
        let js = jetstream::new(admin.clone());
        js.create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["d.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream")?;
        futures_util::stream::iter(0..group.clients)
            .map(|i| {
                let url = url.clone();
                async move {
                    let client = async_nats::ConnectOptions::new()
                        .client_capacity(4096)
                        .connect(&url)
                        .await
                        .with_context(|| format!("nats client {i}"))?;
                    // One subscription per room-mate, read as one stream.
                    let mut sub = futures_util::stream::SelectAll::new();
                    for p in group.mates(i) {
                        sub.push(client.subscribe(format!("d.{p}")).await?);
                    }
                    client.flush().await?;
                    let mut js = jetstream::new(client.clone());
                    js.set_timeout(Duration::from_secs(30));
                    anyhow::Ok(Conn { idx: i, js, sub, _client: client })
                }
            })
            .buffered(CONNECT_PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// JetStream publishes as `pacer` says, each PubAck awaited, until the window closes;
    /// then drains. Deliveries come through plain subscriptions on the room-mates' subjects
    /// (at most once, not a JetStream consumer).
    pub async fn drive(mut c: Conn, mut pacer: Pacer, w: Window) -> Obs {
        let mut obs = Obs::new();
        let subject = format!("d.{}", c.idx);
        let mut inflight = FuturesUnordered::new();
        sleep_until(w.start).await;
        loop {
            let now = Instant::now();
            if now < w.to {
                while let Some(at) = pacer.due(inflight.len(), now, &w) {
                    match c.js.publish(subject.clone(), payload(c.idx, at).into()).await {
                        Ok(ack) => inflight.push(async move { (at, ack.await) }),
                        Err(e) => {
                            obs.errors.push(e.to_string());
                            return obs;
                        }
                    }
                    if measured(&w, at) {
                        obs.sent_in_window += 1;
                    }
                }
            } else if (now >= w.linger && inflight.is_empty()) || now >= w.hard_end {
                break;
            }
            let edge = pacer.wake(next_edge(&w, now));
            tokio::select! {
                biased;
                Some((at, res)) = inflight.next(), if !inflight.is_empty() => match res {
                    Ok(_) => obs.on_ack(&w, at),
                    Err(e) => obs.errors.push(e.to_string()),
                },
                Some(m) = c.sub.next(), if !c.sub.is_empty() => {
                    obs.on_delivery(&w, &m.payload);
                }
                () = sleep_until(edge) => {}
            }
        }
        // Whatever is still pending after the hard end went unanswered; the futures are
        // dropped with the connection.
        obs.unanswered = inflight.len() as u64;
        obs
    }
}
