//! `outpost-bench`: the hub's benchmark harness.
//!
//! It starts real `outpost-relay` processes through the end-to-end harness, drives them
//! with many WebSocket devices from this process, measures durable ingest, ack and
//! delivery latency at a steady rate, and memory per idle socket, and measures in the same
//! run what the disk underneath can do (raw SQLite group commit, fsync latency), so every
//! result comes with the baseline it should be read against. The report is Markdown on
//! stdout (and in `--write FILE`); progress goes to stderr.
//!
//! Build and run (the harness finds `outpost-relay` and `outpost-cloud` next to this
//! binary):
//!
//! ```text
//! cargo build --profile bench-fast --bins -p outpost-relay -p outpost-cloud -p outpost-bench
//! target/bench-fast/outpost-bench --quick
//! ```
//!
//! `--phases uplink` runs the hub → cloud link benchmarks instead (module `uplink`): real
//! relay and cloud processes through the userspace link emulator.
//!
//! `--phases peers` runs the hub's ingest phase next to Mosquitto and NATS JetStream on
//! the same machine (module `peers`).
//!
//! `--phases media` sends a 5 MB photo from hub to cloud over the `--presets` links
//! (module `media`).
//!
//! `--phases rebuild` rebuilds a hub on a new SD card from the cloud over the `--presets`
//! links, with and without the newest-first pass (module `rebuild`).
//!
//! `--phases wear` measures the bytes the hub, Mosquitto and JetStream write to storage
//! per stored message, at 10 and 1,000 messages/s of `--body-bytes` (module `wear`).
//!
//! `--phases stick` carries a hub's backlog of `--drain-messages` to the cloud on a USB
//! stick and the answer back, with hub and cloud running (module `stick`).
//!
//! `--phases all` runs every one of them and opens the report with one table of every goal
//! measured (module `goals`): the full run BENCHMARKS.md records.
//!
//! This is a measuring tool, not a test: nothing here asserts on timings.

mod baseline;
mod cloud;
mod goals;
mod hub;
mod load;
mod media;
mod peers;
mod phases;
mod procfs;
mod rebuild;
mod report;
mod stats;
mod stick;
mod uplink;
mod wear;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::hub::{Topology, World};
use crate::load::Drive;
use crate::phases::Timing;

/// Benchmarks an Outpost hub: durable ingest, latency at a steady rate, memory per idle
/// socket, against same-run raw SQLite and fsync baselines.
#[derive(Debug, Clone, Parser)]
#[command(name = "outpost-bench", version)]
pub struct Args {
    /// A smoke run: one repetition of a few seconds per metric.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every measurement (default 5, or 1 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// WebSocket devices driving the load.
    #[arg(long, default_value_t = 500)]
    pub clients: usize,
    /// Devices per room. Every device sends into its own room, so each message is
    /// delivered live to the room's other members: room size − 1 deliveries per message.
    #[arg(long, default_value_t = 2)]
    pub room_size: usize,
    /// Every device alone in its room: no live fan-out at all (same as --room-size 1).
    #[arg(long)]
    pub no_fanout: bool,
    /// Also run the ingest and steady phases with this room size, for comparison.
    #[arg(long)]
    pub compare_room_size: Option<usize>,
    /// Sends awaiting `stored` per device in the ingest phase.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Total messages/s of the steady (open-loop) phase.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Of those, emergencies per second (their latency is reported separately).
    #[arg(long, default_value_t = 20.0)]
    pub emergency_rate: f64,
    /// Idle sockets for the memory measurement. The goal is RSS per 1,000 idle sockets,
    /// so by default a thousand connect: the one-time costs the first ones trigger
    /// (reader connections, thread pools) are then spread as the metric reads.
    #[arg(long, default_value_t = 1000)]
    pub idle_sockets: usize,
    /// Seconds measured per load phase (default 10, or 3 with --quick).
    #[arg(long)]
    pub measure_secs: Option<f64>,
    /// Seconds of load before measuring starts (default 3, or 1 with --quick).
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Rows per commit for the raw SQLite baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,64,512,4096")]
    pub groups: Vec<usize>,
    /// Which measurements to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "baseline,ingest,steady,memory")]
    pub phases: Vec<Phase>,
    /// Where relays and baseline databases live (default: a new temp dir). Put it on the
    /// disk you want measured.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Uplink: backlog size of each drain (default 100,000, or 5,000 with --quick).
    #[arg(long)]
    pub drain_messages: Option<usize>,
    /// Uplink: link presets to drain over (3g, edge, 2g, clear).
    #[arg(long, value_delimiter = ',', default_value = "3g,edge")]
    pub presets: Vec<String>,
    /// Uplink: transports each drain runs over: quic, and tcp (every UDP datagram
    /// dropped, so the hub takes its TCP path through a forwarder shaped like the preset).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "quic,tcp")]
    pub transports: Vec<uplink::world::Transport>,
    /// Uplink: drains per preset and transport (default 3, or 1 with --quick).
    #[arg(long)]
    pub drain_reps: Option<usize>,
    /// Uplink: emergencies sent during each drain (default 30, or 5 with --quick).
    #[arg(long)]
    pub emergencies: Option<usize>,
    /// Uplink: milliseconds between those emergencies.
    #[arg(long, default_value_t = 1000)]
    pub emergency_interval_ms: u64,
    /// Uplink: village messages per bytes-per-message run (default 1,000, or 200 with --quick).
    #[arg(long)]
    pub mix_messages: Option<usize>,
    /// Uplink: repetitions of the bytes-per-message runs (default 3, or 1 with --quick; 0 skips them).
    #[arg(long)]
    pub mix_reps: Option<usize>,
    /// Pin every server the benchmark starts (relays, Mosquitto, nats-server) to these CPUs
    /// (`taskset -c` syntax, e.g. `1`). With the bench itself started under `taskset -c 0`
    /// the generator and the servers each have a core of their own: the fair race, and the
    /// hub on one core as a Pi's slow cores stand in for.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// Wear: the size of each message body, bytes of JSON (the other phases keep their
    /// ~100-byte chat lines).
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Uplink: messages per second of the live bytes-per-message run, in total.
    #[arg(long, default_value_t = 40.0)]
    pub trickle_rate: f64,
    /// Uplink: one doctor's post (acked and read by every phone) per this many messages.
    #[arg(long, default_value_t = 100)]
    pub posts_every: usize,
    /// Uplink: after each drain, replay its batch sizes and window on bare QUIC with and
    /// without quinn's fair stream scheduling (a diagnosis of where drain time goes).
    #[arg(long)]
    pub link_model: bool,
    /// Uplink: the drain's 500 idle phones sign in to the backlog's room with no cursor
    /// and never read: 500 stalled full replays instead of 500 idle phones.
    #[arg(long)]
    pub idle_replay: bool,
    /// Uplink: keep each scenario's cloud and relay directories (logs, databases) for
    /// inspection instead of deleting them.
    #[arg(long)]
    pub keep: bool,
    /// glibc malloc arenas of every relay started (`MALLOC_ARENA_MAX`): 2 as the systemd
    /// unit runs the hub; 0 leaves glibc's default (eight per core), to measure what the
    /// setting changes.
    #[arg(long, default_value_t = 2)]
    pub malloc_arena_max: usize,
    /// Cloud: simulated hubs sending batches at once.
    #[arg(long, default_value_t = 1000)]
    pub cloud_hubs: usize,
    /// Cloud: entries (messages and receipts) per hub batch.
    #[arg(long, default_value_t = 50)]
    pub cloud_batch: usize,
    /// Cloud: batches per hub and repetition (default 4, or 1 with --quick).
    #[arg(long)]
    pub cloud_batches: Option<usize>,
    /// Messages of history the `rebuild` phase puts at the cloud (default 20,000; 2,000
    /// with `--quick`).
    #[arg(long)]
    pub rebuild_messages: Option<usize>,
    /// Also write the report to FILE.
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
}

/// The measurements, each selectable on its own (handy while investigating one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Raw SQLite group commit and fsync latency.
    Baseline,
    /// Closed-loop durable ingest.
    Ingest,
    /// Open-loop steady rate: ack, delivery and emergency latency.
    Steady,
    /// Relay RSS with idle sockets.
    Memory,
    /// Hub → cloud over an emulated link: bytes per message, drain time, emergencies.
    /// Only with `--phases uplink` (not in the default set: it takes ~15 minutes).
    Uplink,
    /// Outpost's durable ingest next to Mosquitto (QoS 1, persistence) and nats-server
    /// (JetStream, file storage) on this machine, same clients and window (module `peers`;
    /// installs the two from Debian's packages if missing). Not in the default set.
    Peers,
    /// A 5 MB photo hub → cloud over the `--presets` links: time to preview and to the
    /// full photo, bytes on the link (module `media`). Not in the default set.
    Media,
    /// A hub on a new SD card rebuilt from the cloud over the `--presets` links: time until
    /// a phone holds every room's newest message, and the whole history, with the
    /// newest-first pass and without (module `rebuild`). Only when named (not in `all`).
    Rebuild,
    /// The cloud's ingest on PostgreSQL (one node, two nodes) against SQLite and raw
    /// batched INSERTs, and delivery to a doctor on another node at `--rate` (module
    /// `cloud`; starts a private PostgreSQL cluster). Only when named (not in `all`).
    Cloud,
    /// SD-card wear: bytes the hub, Mosquitto and JetStream write to storage per stored
    /// message at 10 and 1,000 messages/s with `--body-bytes` messages (module `wear`).
    /// Only when named (not in `all`).
    Wear,
    /// A USB stick as the uplink: a hub's backlog of `--drain-messages` carried to the cloud
    /// and the answer back (module `stick`). Not in the default set.
    Stick,
    /// Every phase above, in the order hub, uplink, media, peers, and a first table with
    /// every goal measured (about 50 minutes; `--quick` for a smoke run of all of them).
    All,
}

impl Args {
    fn runs(&self, p: Phase) -> bool {
        self.phases.contains(&p) || self.phases.contains(&Phase::All)
    }

    /// Whether any of the hub's own measurements (everything but the uplink) was asked for.
    fn runs_hub(&self) -> bool {
        [Phase::Baseline, Phase::Ingest, Phase::Steady, Phase::Memory].into_iter().any(|p| self.runs(p))
    }

    fn timing(&self) -> Timing {
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if self.quick { quick } else { full }))
        };
        Timing {
            warmup: secs(self.warmup_secs, 3.0, 1.0),
            measure: secs(self.measure_secs, 10.0, 3.0),
            drain: secs(None, 2.0, 1.0),
            baseline_per_group: secs(None, 3.0, 1.0),
            fsync_count: if self.quick { 200 } else { 1000 },
            idle_settle: secs(None, 3.0, 1.0),
        }
    }

    pub fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 1 } else { 5 }).max(1)
    }

    pub fn room_size(&self) -> usize {
        if self.no_fanout { 1 } else { self.room_size.max(1) }
    }
}

/// Milliseconds since the Unix epoch (wall clock, as stored in the hub's rows).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hub::set_malloc_arena_max(args.malloc_arena_max);
    hub::set_server_cpus(args.server_cpus.as_deref());
    if args.clients == 0 || args.rate <= 0.0 || args.window == 0 || args.groups.is_empty() {
        bail!("--clients, --rate, --window and --groups must be positive");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let tmp = root.path().to_path_buf();
    let machine = procfs::MachineInfo::collect(&tmp);
    let started = tokio::time::Instant::now();
    let mut sections = Vec::new();
    if args.runs_hub() {
        sections.push(hub_phases(&args, &command, &tmp, machine.clone()).await?);
    }
    if args.runs(Phase::Uplink) {
        let run = uplink::run(&args, &tmp).await?;
        sections.push(uplink::report::markdown(&args, &command, &machine, &run));
    }
    if args.runs(Phase::Media) {
        let runs = media::run(&args, &tmp).await?;
        sections.push(goals::Section { text: media::markdown(&args, &command, &machine, &runs), rows: Vec::new() });
    }
    // Only when named: `all` keeps to the hub's and the link's goals (and its time).
    if args.phases.contains(&Phase::Rebuild) {
        let runs = rebuild::run(&args, &tmp).await?;
        sections.push(goals::Section { text: rebuild::markdown(&args, &command, &machine, &runs), rows: Vec::new() });
    }
    if args.phases.contains(&Phase::Cloud) {
        let run = cloud::run(&args, &tmp).await?;
        sections.push(cloud::markdown(&args, &command, &machine, &run));
    }
    if args.phases.contains(&Phase::Wear) {
        let run = wear::run(&args, &tmp).await?;
        sections.push(wear::markdown(&args, &command, &machine, &run));
    }
    if args.phases.contains(&Phase::Stick) {
        let (reps, elapsed) = stick::run(&args, &tmp).await?;
        sections.push(stick::markdown(&command, &machine, &reps, elapsed));
    }
    if args.runs(Phase::Peers) {
        let (reps, versions, elapsed) = peers::run(&args, &tmp).await?;
        sections.push(peers::markdown(&args, &command, &machine, &versions, &reps, elapsed));
    }
    let mut text = String::new();
    if sections.len() > 1 {
        text.push_str(&goals::summary(&sections));
        text.push_str(&format!(
            "Command `{command}`, commit `{}`, whole run {:.0} min.\n\n",
            machine.commit,
            started.elapsed().as_secs_f64() / 60.0
        ));
    }
    for s in &sections {
        text.push_str(&s.text);
    }
    print!("{text}");
    if let Some(path) = &args.write {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if args.keep {
        eprintln!("kept {}", root.keep().display());
    }
    Ok(())
}

/// The hub's own measurements: baselines, ingest, steady rate, memory.
async fn hub_phases(
    args: &Args,
    command: &str,
    tmp: &std::path::Path,
    machine: procfs::MachineInfo,
) -> anyhow::Result<goals::Section> {
    let args = args.clone();
    let command = command.to_owned();
    let timing = args.timing();
    load::base();

    let topology = Topology { clients: args.clients, room_size: args.room_size() };
    let tokens_needed = args.clients.max(args.idle_sockets);
    eprintln!("issuing {tokens_needed} device tokens…");
    let mut world = World::create(&tmp.join("main"), topology, tokens_needed)
        .context("setting up the cloud identity and tokens")?;
    let mut compare = match args.compare_room_size {
        Some(k) => {
            let topo = Topology { clients: args.clients, room_size: k.max(1) };
            eprintln!("issuing {} tokens for the room-size-{k} comparison…", args.clients);
            Some(World::create(&tmp.join("compare"), topo, args.clients)?)
        }
        None => None,
    };

    let ingest = Drive::Closed { window: args.window };
    let steady = Drive::Open { rate: args.rate, emergency_rate: args.emergency_rate };
    let started = tokio::time::Instant::now();
    let mut reps = Vec::new();
    for r in 0..args.reps() {
        eprintln!("repetition {} of {}", r + 1, args.reps());
        let (fsync, groups) = if args.runs(Phase::Baseline) {
            let (f, g) = phases::baselines(tmp, &args.groups, &timing).await?;
            (Some(f), g)
        } else {
            (None, Vec::new())
        };
        let ingest_r = if args.runs(Phase::Ingest) {
            Some(phases::load_phase(&mut world, ingest, &timing, "ingest").await?)
        } else {
            None
        };
        let steady_r = if args.runs(Phase::Steady) {
            Some(phases::load_phase(&mut world, steady, &timing, "steady").await?)
        } else {
            None
        };
        let memory = if args.runs(Phase::Memory) {
            Some(phases::memory_phase(&mut world, args.idle_sockets, &timing).await?)
        } else {
            None
        };
        let compare_r = match compare.as_mut() {
            Some(w) => Some((
                phases::load_phase(w, ingest, &timing, "ingest (comparison rooms)").await?,
                phases::load_phase(w, steady, &timing, "steady (comparison rooms)").await?,
            )),
            None => None,
        };
        reps.push(phases::Rep { fsync, groups, ingest: ingest_r, steady: steady_r, memory, compare: compare_r });
    }
    let report = report::Report { args: &args, command, machine, timing, topology, reps, elapsed: started.elapsed() };
    Ok(report.markdown())
}
