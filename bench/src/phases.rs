//! One repetition of every measurement, each against a fresh relay, with the CPU use of
//! the relay, its store thread, this generator and the whole machine sampled over exactly
//! the measurement window (that is what tells which resource ran out).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{Instant, sleep, sleep_until};

use crate::baseline::{self, GroupResult};
use crate::hub::World;
use crate::load::{self, Drive, Observed, Window};
use crate::procfs::{MachineTimes, ProcTimes};
use crate::stats::Latency;

/// How long each part of a measurement lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub drain: Duration,
    pub baseline_per_group: Duration,
    pub fsync_count: usize,
    /// Quiet time with idle sockets before reading the relay's memory.
    pub idle_settle: Duration,
}

/// CPU use over a window; percentages of one core (200 % = both cores of a 2-core box),
/// except the machine figures, which are shares of all cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub relay_pct: f64,
    pub store_thread_pct: f64,
    pub relay_runq_pct: f64,
    pub generator_pct: f64,
    pub machine_busy_pct: f64,
    pub machine_iowait_pct: f64,
    /// CPU used by everything else on the machine (other users' work on a shared box).
    pub others_pct: f64,
}

struct CpuSample {
    relay: ProcTimes,
    me: ProcTimes,
    machine: MachineTimes,
    at: Instant,
}

impl CpuSample {
    fn take(pid: u32) -> Self {
        Self {
            relay: ProcTimes::read(&pid.to_string()),
            me: ProcTimes::read("self"),
            machine: MachineTimes::read(),
            at: Instant::now(),
        }
    }

    fn since(&self, a: &Self) -> CpuUse {
        let ns = (self.at - a.at).as_nanos().max(1) as f64;
        let pct = |v: u64| v as f64 * 100.0 / ns;
        let total = self.machine.total.saturating_sub(a.machine.total).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = self.machine.busy.saturating_sub(a.machine.busy) as f64 * 100.0 / total;
        let relay_pct = pct(self.relay.cpu_since(&a.relay, None));
        let generator_pct = pct(self.me.cpu_since(&a.me, None));
        CpuUse {
            others_pct: (busy * cores - relay_pct - generator_pct).max(0.0),
            relay_pct,
            // The writer thread is named in store-sqlite/src/lib.rs.
            store_thread_pct: pct(self.relay.cpu_since(&a.relay, Some("outpost-store"))),
            relay_runq_pct: pct(self.relay.runq_since(&a.relay)),
            generator_pct,
            machine_busy_pct: busy,
            machine_iowait_pct: self.machine.iowait.saturating_sub(a.machine.iowait) as f64 * 100.0 / total,
        }
    }
}

/// What one load phase produced.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub acked_per_sec: f64,
    pub sent_per_sec: f64,
    pub ack: Latency,
    pub ack_emergency: Latency,
    pub delivery: Latency,
    pub delivery_emergency: Latency,
    pub send_lag: Latency,
    pub emergency_sent: u64,
    pub deliveries: u64,
    pub deliveries_expected: u64,
    pub unanswered: u64,
    pub errors: Vec<(String, u64)>,
    pub cpu: CpuUse,
    /// Messages acknowledged in the measured window.
    pub acked: u64,
    /// Bytes the relay wrote to storage in the measured window (`/proc/PID/io`).
    pub write_bytes: u64,
}

impl PhaseResult {
    /// Zeros, for a phase that was not run.
    pub fn empty() -> Self {
        Self {
            acked_per_sec: 0.0,
            sent_per_sec: 0.0,
            ack: Latency::default(),
            ack_emergency: Latency::default(),
            delivery: Latency::default(),
            delivery_emergency: Latency::default(),
            send_lag: Latency::default(),
            emergency_sent: 0,
            deliveries: 0,
            deliveries_expected: 0,
            unanswered: 0,
            errors: Vec::new(),
            cpu: CpuUse::default(),
            acked: 0,
            write_bytes: 0,
        }
    }

    fn of(o: &Observed, w: &Window, cpu: CpuUse, write_bytes: u64) -> Self {
        let secs = w.secs();
        Self {
            acked_per_sec: o.acked_in_window as f64 / secs,
            sent_per_sec: o.sent_in_window as f64 / secs,
            ack: Latency::of(&o.ack),
            ack_emergency: Latency::of(&o.ack_emergency),
            delivery: Latency::of(&o.delivery),
            delivery_emergency: Latency::of(&o.delivery_emergency),
            send_lag: Latency::of(&o.send_lag),
            emergency_sent: o.emergency_sent_in_window,
            deliveries: o.deliveries(),
            deliveries_expected: o.deliveries_expected,
            unanswered: o.unanswered,
            errors: o.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            cpu,
            acked: o.acked_in_window,
            write_bytes,
        }
    }
}

/// Relay memory with idle sockets: before any connects, with half, and with all of them.
#[derive(Debug, Clone, Copy)]
pub struct MemResult {
    pub sockets: usize,
    pub before_kib: u64,
    pub half_kib: u64,
    pub after_kib: u64,
}

impl MemResult {
    /// (RSS with all sockets − RSS before any) per 1,000 sockets: what the goal asks for,
    /// including one-time costs the first connections trigger (thread and reader pools).
    pub fn mib_per_1k(&self) -> f64 {
        let delta = self.after_kib.saturating_sub(self.before_kib) as f64;
        delta / 1024.0 * 1000.0 / self.sockets.max(1) as f64
    }

    /// The second half's growth per 1,000 sockets: the marginal cost of one more socket
    /// once pools are warm.
    pub fn marginal_mib_per_1k(&self) -> f64 {
        let half = self.sockets - self.sockets / 2;
        let delta = self.after_kib.saturating_sub(self.half_kib) as f64;
        delta / 1024.0 * 1000.0 / half.max(1) as f64
    }
}

/// Everything one repetition measured.
#[derive(Debug, Clone)]
pub struct Rep {
    pub fsync: Option<Latency>,
    pub groups: Vec<GroupResult>,
    pub ingest: Option<PhaseResult>,
    pub steady: Option<PhaseResult>,
    pub memory: Option<MemResult>,
    /// The same two load phases with the comparison topology, if asked for.
    pub compare: Option<(PhaseResult, PhaseResult)>,
}

impl Rep {
    pub fn best_group(&self) -> Option<GroupResult> {
        self.groups.iter().copied().max_by(|a, b| a.rows_per_sec.total_cmp(&b.rows_per_sec))
    }
}

/// Starts a fresh relay, connects every device, runs `drive`, stops the relay.
pub async fn load_phase(world: &mut World, drive: Drive, t: &Timing, label: &str) -> anyhow::Result<PhaseResult> {
    let topo = world.topology;
    let relay = world.fresh_relay().await?;
    let pid = relay.pid()?;
    let conns = load::connect_all(&relay.relay.ws_url(), &world.tokens, 0..topo.clients, |i| topo.room_of(i))
        .await
        .with_context(|| format!("{label}: connecting devices"))?;
    let w = Window::new(t.warmup, t.measure, t.drain);
    let sampler = tokio::spawn(async move {
        sleep_until(w.from).await;
        let (a, written) = (CpuSample::take(pid), crate::procfs::write_bytes(pid));
        sleep_until(w.to).await;
        (CpuSample::take(pid).since(&a), crate::procfs::write_bytes(pid).saturating_sub(written))
    });
    let observed = load::run(conns, drive, w, |i| topo.recipients_of(i)).await?;
    let (cpu, written) = sampler.await.unwrap_or_default();
    relay.stop().await?;
    let r = PhaseResult::of(&observed, &w, cpu, written);
    eprintln!(
        "  {label}: acked {:.0}/s, ack p50 {:.2} ms p99 {:.2} ms, delivery p99 {:.2} ms, emergency delivery p99 {:.2} ms; relay CPU {:.0} %, store thread {:.0} %, generator {:.0} %, others {:.0} %, machine busy {:.0} %",
        r.acked_per_sec,
        r.ack.p50_ms,
        r.ack.p99_ms,
        r.delivery.p99_ms,
        r.delivery_emergency.p99_ms,
        r.cpu.relay_pct,
        r.cpu.store_thread_pct,
        r.cpu.generator_pct,
        r.cpu.others_pct,
        r.cpu.machine_busy_pct,
    );
    if !r.errors.is_empty() || r.unanswered > 0 {
        eprintln!("    errors {:?}, unanswered {}", r.errors, r.unanswered);
    }
    Ok(r)
}

/// RSS before any device connects, with half and with all `sockets` signed-in idle devices.
pub async fn memory_phase(world: &mut World, sockets: usize, t: &Timing) -> anyhow::Result<MemResult> {
    let topo = world.topology;
    let relay = world.fresh_relay().await?;
    let pid = relay.pid()?;
    let url = relay.relay.ws_url();
    sleep(Duration::from_millis(500)).await;
    let before_kib = crate::procfs::rss_kib(pid)?;
    let mut conns = load::connect_all(&url, &world.tokens, 0..sockets / 2, |i| topo.room_of(i)).await?;
    sleep(t.idle_settle).await;
    let half_kib = crate::procfs::rss_kib(pid)?;
    conns.extend(load::connect_all(&url, &world.tokens, sockets / 2..sockets, |i| topo.room_of(i)).await?);
    sleep(t.idle_settle).await;
    let after_kib = crate::procfs::rss_kib(pid)?;
    load::close_all(conns).await;
    relay.stop().await?;
    let m = MemResult { sockets, before_kib, half_kib, after_kib };
    eprintln!(
        "  memory: {before_kib} KiB → {half_kib} KiB ({} sockets) → {after_kib} KiB ({sockets}): {:.2} MiB per 1,000 overall, {:.2} marginal",
        sockets / 2,
        m.mib_per_1k(),
        m.marginal_mib_per_1k()
    );
    Ok(m)
}

/// The disk baselines, each on its own blocking thread like the hub's writer.
pub async fn baselines(dir: &Path, groups: &[usize], t: &Timing) -> anyhow::Result<(Latency, Vec<GroupResult>)> {
    let d = dir.to_path_buf();
    let n = t.fsync_count;
    let fsync = tokio::task::spawn_blocking(move || baseline::fsync_latency(&d, n)).await??;
    eprintln!("  fsync 4 KiB: p50 {:.3} ms, p99 {:.3} ms", fsync.p50_ms, fsync.p99_ms);
    let mut out = Vec::new();
    for &g in groups {
        let d = dir.to_path_buf();
        let dur = t.baseline_per_group;
        let r = tokio::task::spawn_blocking(move || baseline::sqlite_group_commit(&d, g, dur)).await??;
        eprintln!("  raw SQLite, {g} rows/commit: {:.0} rows/s ({} commits)", r.rows_per_sec, r.commits);
        out.push(r);
    }
    Ok((fsync, out))
}
