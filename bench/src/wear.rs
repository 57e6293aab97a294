//! `--phases wear`: SD-card wear, as bytes written to storage per stored message.
//!
//! A Pi's SD card wears out with writes, and the hub writes for every message it stores.
//! This phase runs the hub and the two brokers of the peers phase at the same fixed rates
//! with ~1 KiB messages (`--body-bytes`): a village's load (10 messages/s) and a busy one
//! (1,000/s). For each it reads the server process's `write_bytes` (`/proc/PID/io`: bytes
//! it caused to be written to storage, counted when the page is dirtied, so the WAL, its
//! checkpoints into the database file, a broker's snapshots and block files are all in
//! it, and a page dirtied twice before writeback once) over the measured window, divided
//! by the messages acknowledged in it, against the message's own bytes. The window is
//! long enough at the village rate to hold several WAL checkpoints (SQLite checkpoints
//! every 1,000 pages of WAL), so their cost is in the figure rather than left for later.
//!
//! What each server's acknowledgement means differs, and the table says so: the hub's
//! `stored` is after an fsync, so each commit writes at least the pages it changed; the
//! brokers acknowledge what is in memory or the page cache.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::Args;
use crate::goals::{Row, Section, table};
use crate::hub::{Topology, World};
use crate::load::{self, Drive};
use crate::peers::{self, Group, Load, Peer, PeerResult};
use crate::phases::{self, PhaseResult, Timing};
use crate::procfs::MachineInfo;
use crate::stats::{Summary, group};

/// The loads: (messages per second, client connections, measured seconds).
const LOADS: [(f64, usize, f64); 2] = [(10.0, 10, 90.0), (1000.0, 100, 30.0)];
/// The goal at village load: bytes written per stored message, in message bytes.
const GOAL_RATIO: f64 = 4.0;

/// Bytes written and messages acknowledged by one server in one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub acked: u64,
    pub write_bytes: u64,
}

impl Written {
    fn per_message(self) -> f64 {
        self.write_bytes as f64 / self.acked.max(1) as f64
    }
}

impl From<&PhaseResult> for Written {
    fn from(r: &PhaseResult) -> Self {
        Self { acked: r.acked, write_bytes: r.write_bytes }
    }
}

impl From<&PeerResult> for Written {
    fn from(r: &PeerResult) -> Self {
        Self { acked: r.acked, write_bytes: r.write_bytes }
    }
}

/// One repetition at one rate: the hub, Mosquitto, JetStream.
#[derive(Debug, Clone, Copy)]
pub struct WearRep {
    pub rate: f64,
    pub servers: [Written; 3],
}

pub struct WearRun {
    pub reps: Vec<WearRep>,
    /// The bytes of one message body as generated.
    pub body_bytes: usize,
    pub elapsed: Duration,
}

const SERVERS: [(&str, &str); 3] = [
    ("Outpost relay", "`stored`: committed to SQLite (WAL) with fsync, one transaction per group"),
    (
        "Mosquitto (QoS 1, persistence)",
        "PUBACK: in memory; the whole store written out every second (`autosave_interval 1`)",
    ),
    (
        "NATS JetStream (file storage)",
        "PubAck: written to the stream's block file (page cache); fsynced by a background timer",
    ),
];

pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<WearRun> {
    peers::ensure_installed().await?;
    load::set_body_bytes(args.body_bytes);
    load::base();
    let body_bytes = load::sample_body().len();
    let started = Instant::now();
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let mut out = Vec::new();
    for r in 0..reps {
        for (rate, clients, secs) in LOADS {
            let secs = if args.quick { secs / 6.0 } else { secs };
            eprintln!("wear: repetition {} of {reps}, {rate} messages/s for {secs} s", r + 1);
            let t = Timing { measure: Duration::from_secs_f64(secs), ..args.timing() };
            let dir = tmp.join(format!("wear-{r}-{rate}"));
            let topology = Topology { clients, room_size: 2 };
            let mut world = World::create(&dir.join("outpost"), topology, clients).context("setting up the hub")?;
            let hub = phases::load_phase(&mut world, Drive::Open { rate, emergency_rate: 0.0 }, &t, "outpost").await?;
            let open = Load::Open { every: Duration::from_secs_f64(clients as f64 / rate) };
            let mosquitto = peers::run_peer(Peer::Mosquitto, &dir, Group::pairs(clients), open, &t).await?;
            let jetstream = peers::run_peer(Peer::JetStream, &dir, Group::pairs(clients), open, &t).await?;
            let rep = WearRep { rate, servers: [(&hub).into(), (&mosquitto).into(), (&jetstream).into()] };
            for ((name, _), w) in SERVERS.iter().zip(rep.servers) {
                eprintln!(
                    "  {name}: {} messages, {} bytes written, {:.0} per message ({:.1}× the message)",
                    w.acked,
                    w.write_bytes,
                    w.per_message(),
                    w.per_message() / body_bytes as f64
                );
            }
            out.push(rep);
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(WearRun { reps: out, body_bytes, elapsed: started.elapsed() })
}

pub fn markdown(args: &Args, command: &str, machine: &MachineInfo, run: &WearRun) -> Section {
    let mut o = String::new();
    let _ = writeln!(o, "## SD-card wear run\n");
    o.push_str(&machine.header(command));
    let _ = writeln!(o, "- Disk under the data directories (`df`): {}", machine.disk);
    let _ = writeln!(
        o,
        "- Each row: fresh server and empty data directory; message bodies of {} bytes (JSON); rooms of 2 (one delivery per message); {:.0} s warm-up; open loop at the rate shown; bytes are the server process's `write_bytes` (`/proc/PID/io`) over the measured window; {} repetition(s), whole run {:.0} s\n",
        run.body_bytes,
        args.timing().warmup.as_secs_f64(),
        run.reps.len() / LOADS.len(),
        run.elapsed.as_secs_f64()
    );
    let mut rows = Vec::new();
    for (rate, clients, _) in LOADS {
        let at: Vec<&WearRep> = run.reps.iter().filter(|r| r.rate == rate).collect();
        if at.is_empty() {
            continue;
        }
        let _ = writeln!(o, "### {} messages/s ({clients} connections)\n", group(rate));
        let _ = writeln!(
            o,
            "| server | what an acknowledgement means | messages in the window | bytes written per message: median (min–max) | × the message's bytes | × Outpost's |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
        let hub = Summary::of(&at.iter().map(|r| r.servers[0].per_message()).collect::<Vec<_>>());
        for (i, (name, means)) in SERVERS.iter().enumerate() {
            let per = Summary::of(&at.iter().map(|r| r.servers[i].per_message()).collect::<Vec<_>>());
            let acked = Summary::of(&at.iter().map(|r| r.servers[i].acked as f64).collect::<Vec<_>>());
            let _ = writeln!(
                o,
                "| {name} | {means} | {} | {} | {:.1} | {:.2} |",
                acked.show_int(),
                per.show_int(),
                per.median / run.body_bytes as f64,
                per.median / hub.median
            );
        }
        let _ = writeln!(o);
        let ratio = hub.median / run.body_bytes as f64;
        let metric = format!("bytes written per stored message at {} msg/s", group(rate));
        let result = format!("{} B ({ratio:.1}× the message)", hub.show_int());
        let jet = Summary::of(&at.iter().map(|r| r.servers[2].per_message()).collect::<Vec<_>>());
        let baseline = format!("JetStream {} B", group(jet.median));
        let ratio_cell = format!("{:.2}× JetStream", hub.median / jet.median);
        rows.push(if rate == LOADS[0].0 {
            Row::goal(
                metric,
                result,
                baseline,
                ratio_cell,
                format!("≤ {GOAL_RATIO}× the message bytes"),
                ratio <= GOAL_RATIO,
            )
        } else {
            Row::info(metric, result, baseline, ratio_cell, "for context")
        });
    }
    let _ = writeln!(o, "## SD-card wear results\n");
    table(&mut o, &rows);
    let _ = writeln!(o, "Every repetition (bytes written ÷ messages, per server: Outpost, Mosquitto, JetStream):\n");
    for r in &run.reps {
        let cells: Vec<String> =
            r.servers.iter().map(|w| format!("{} ÷ {} = {:.0}", w.write_bytes, w.acked, w.per_message())).collect();
        let _ = writeln!(o, "- {} msg/s: {}", group(r.rate), cells.join("; "));
    }
    let _ = writeln!(o);
    Section { text: o, rows }
}
