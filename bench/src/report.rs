//! The Markdown report: how the run was made, the headline table against the goals, the
//! same-run baselines, where the CPU went, and every repetition's raw numbers.
//!
//! Goals are the ones the hub was asked to meet; the table says "met" or "not met" and
//! leaves the explanation to a human who watched the run.

use std::fmt::Write as _;
use std::time::Duration;

use crate::goals::{Row, Section, table};
use crate::hub::{RELAY_ENV, Topology};
use crate::phases::{PhaseResult, Rep, Timing};
use crate::procfs::MachineInfo;
use crate::stats::{Summary, group};
use crate::{Args, Phase};

/// Durable ingest goal, messages/s with 500 WebSocket clients.
const GOAL_INGEST: f64 = 50_000.0;
/// Ingest as a share of the same-run raw SQLite baseline (best group size).
const GOAL_RATIO: f64 = 0.35;
const GOAL_ACK_P50_MS: f64 = 5.0;
const GOAL_ACK_P99_MS: f64 = 15.0;
const GOAL_DELIVERY_P99_MS: f64 = 20.0;
const GOAL_EMERGENCY_P99_MS: f64 = 15.0;
const GOAL_MIB_PER_1K: f64 = 8.0;

pub struct Report<'a> {
    pub args: &'a Args,
    pub command: String,
    pub machine: MachineInfo,
    pub timing: Timing,
    pub topology: Topology,
    pub reps: Vec<Rep>,
    pub elapsed: Duration,
}

fn sum(reps: &[Rep], f: impl Fn(&Rep) -> f64) -> Summary {
    Summary::of(&reps.iter().map(f).collect::<Vec<_>>())
}

impl Report<'_> {
    pub fn markdown(&self) -> Section {
        let mut o = String::new();
        self.header(&mut o);
        let rows = self.rows();
        let _ = writeln!(o, "## Results\n");
        table(&mut o, &rows);
        self.baselines(&mut o);
        self.cpu(&mut o);
        self.per_rep(&mut o);
        Section { text: o, rows }
    }

    fn header(&self, o: &mut String) {
        let a = self.args;
        let m = &self.machine;
        let t = &self.timing;
        let topo = &self.topology;
        let _ = writeln!(o, "## Run\n");
        o.push_str(&m.header(&self.command));
        let _ = writeln!(o, "- Disk under the databases (`df`): {}", m.disk);
        let _ = writeln!(
            o,
            "- Mode: {}; {} repetition(s); results are the median with the min–max range over repetitions; whole run {:.0} s",
            if a.quick { "quick (smoke run)" } else { "full" },
            self.reps.len(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "- Each load phase: fresh relay (empty database), {} devices connected and signed in, {:.0} s warm-up, {:.0} s measured, {:.0} s drain",
            topo.clients,
            t.warmup.as_secs_f64(),
            t.measure.as_secs_f64(),
            t.drain.as_secs_f64()
        );
        let fanout = if topo.room_size == 1 {
            "each device alone in its room: no live fan-out".to_owned()
        } else {
            format!(
                "{} rooms of {}; every device sends into its room, so each message is delivered live to {} other device(s)",
                topo.rooms(),
                topo.room_size,
                topo.room_size - 1
            )
        };
        let _ = writeln!(o, "- Rooms: {fanout}");
        let _ = writeln!(
            o,
            "- Ingest: closed loop, {} sends awaiting `stored` per device ({} in flight in total), normal priority, ~100-byte bodies",
            a.window,
            a.window * topo.clients
        );
        let _ = writeln!(
            o,
            "- Steady: open loop, {} msg/s in total evenly spread over the devices ({:.1} msg/s each), {} emergencies/s among them; latency from the scheduled send time",
            group(a.rate),
            a.rate / topo.clients as f64,
            a.emergency_rate
        );
        let env: Vec<String> = crate::hub::relay_env(RELAY_ENV).iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(o, "- Relay environment: {}", env.join(", "));
        let _ = writeln!(
            o,
            "- Raw SQLite baseline: {} s per group size, one writer thread, WAL, synchronous=FULL, the hub's `messages` schema; fsync probe: {} × (write 4 KiB + fdatasync)\n",
            t.baseline_per_group.as_secs_f64(),
            t.fsync_count
        );
    }

    /// The results table's rows.
    pub fn rows(&self) -> Vec<Row> {
        let reps = &self.reps;
        let nan = f64::NAN;
        let ingest = sum(reps, |r| r.ingest.as_ref().map_or(nan, |p| p.acked_per_sec));
        let best = sum(reps, |r| r.best_group().map_or(f64::NAN, |g| g.rows_per_sec));
        let best_g = reps.first().and_then(Rep::best_group).map_or(0, |g| g.group);
        let ratio = sum(reps, |r| match (r.best_group(), &r.ingest) {
            (Some(g), Some(p)) => p.acked_per_sec / g.rows_per_sec,
            _ => nan,
        });
        let fs50 = sum(reps, |r| r.fsync.map_or(nan, |f| f.p50_ms));
        let fs99 = sum(reps, |r| r.fsync.map_or(nan, |f| f.p99_ms));
        let fsync = format!("fsync p50 {} ms, p99 {} ms", fs50.show(3), fs99.show(3));
        let i = |f: fn(&PhaseResult) -> f64| sum(reps, move |r| r.ingest.as_ref().map_or(nan, f));
        let ia50 = i(|p| p.ack.p50_ms);
        let ia99 = i(|p| p.ack.p99_ms);
        let iamax = i(|p| p.ack.max_ms);
        let s = |f: fn(&PhaseResult) -> f64| sum(reps, move |r| r.steady.as_ref().map_or(nan, f));
        let a50 = s(|p| p.ack.p50_ms);
        let a99 = s(|p| p.ack.p99_ms);
        let d50 = s(|p| p.delivery.p50_ms);
        let d99 = s(|p| p.delivery.p99_ms);
        let e50 = s(|p| p.delivery_emergency.p50_ms);
        let e99 = s(|p| p.delivery_emergency.p99_ms);
        let ea99 = s(|p| p.ack_emergency.p99_ms);
        let mem = sum(reps, |r| r.memory.map_or(nan, |m| m.mib_per_1k()));
        let mem_marginal = sum(reps, |r| r.memory.map_or(nan, |m| m.marginal_mib_per_1k()));
        let clients = self.topology.clients;

        let rate = group(self.args.rate);
        let sockets = self.reps.first().and_then(|r| r.memory).map_or(0, |m| m.sockets);
        let mut rows = Vec::new();
        if self.args.runs(Phase::Ingest) {
            rows.push(Row::goal(
                format!("durable ingest, {clients} WebSocket devices (msg/s acked)"),
                ingest.show_int(),
                format!("raw SQLite, {best_g} rows/commit: {} rows/s; {fsync}", best.show_int()),
                ratio.show(2),
                format!("≥ {} msg/s and ≥ {GOAL_RATIO}×", group(GOAL_INGEST)),
                ingest.median >= GOAL_INGEST && ratio.median >= GOAL_RATIO,
            ));
            rows.push(Row::info(
                "ack latency at saturation p50 / p99 / max (ms)",
                format!("{} / {} / {}", ia50.show(1), ia99.show(1), iamax.show(1)),
                fsync.clone(),
                "",
                "(queueing by design: in flight ÷ rate)",
            ));
        }
        if self.args.runs(Phase::Steady) {
            rows.push(Row::goal(
                format!("ack latency at {rate} msg/s, p50 (ms)"),
                a50.show(2),
                fsync,
                "",
                format!("≤ {GOAL_ACK_P50_MS}"),
                a50.median <= GOAL_ACK_P50_MS,
            ));
            rows.push(Row::goal(
                format!("ack latency at {rate} msg/s, p99 (ms)"),
                a99.show(2),
                "",
                "",
                format!("≤ {GOAL_ACK_P99_MS}"),
                a99.median <= GOAL_ACK_P99_MS,
            ));
            rows.push(Row::goal(
                format!("local delivery A→B at {rate} msg/s, p50 / p99 (ms)"),
                format!("{} / {}", d50.show(2), d99.show(2)),
                "",
                "",
                format!("p99 ≤ {GOAL_DELIVERY_P99_MS}"),
                d99.median <= GOAL_DELIVERY_P99_MS,
            ));
            rows.push(Row::goal(
                format!("emergency delivery, {}/s mixed in, p50 / p99 (ms)", self.args.emergency_rate),
                format!("{} / {}", e50.show(2), e99.show(2)),
                "",
                "",
                format!("p99 ≤ {GOAL_EMERGENCY_P99_MS}"),
                e99.median <= GOAL_EMERGENCY_P99_MS,
            ));
            rows.push(Row::info("emergency ack p99 (ms)", ea99.show(2), "", "", ""));
        }
        if self.args.runs(Phase::Memory) {
            rows.push(Row::goal(
                format!("relay memory per 1,000 idle sockets (MiB; {sockets} signed-in devices vs. none)"),
                mem.show(2),
                "",
                "",
                format!("≤ {GOAL_MIB_PER_1K}"),
                mem.median <= GOAL_MIB_PER_1K,
            ));
            rows.push(Row::info(
                format!("of which marginal: growth from {} to {sockets} sockets, per 1,000 (MiB)", sockets / 2),
                mem_marginal.show(2),
                "",
                "",
                "(information)",
            ));
        }
        if let Some(k) = self.args.compare_room_size {
            let ci = sum(reps, |r| r.compare.as_ref().map_or(f64::NAN, |c| c.0.acked_per_sec));
            let cd = sum(reps, |r| r.compare.as_ref().map_or(f64::NAN, |c| c.1.delivery.p99_ms));
            let ca = sum(reps, |r| r.compare.as_ref().map_or(f64::NAN, |c| c.1.ack.p99_ms));
            rows.push(Row::info(
                format!(
                    "comparison, rooms of {k} ({} deliveries per message): ingest msg/s; steady ack p99 / delivery p99 (ms)",
                    k.saturating_sub(1)
                ),
                format!("{}; {} / {}", ci.show_int(), ca.show(2), cd.show(2)),
                "",
                "",
                "(information)",
            ));
        }
        rows
    }

    fn baselines(&self, o: &mut String) {
        let _ = writeln!(o, "## Same-run baselines\n");
        let _ = writeln!(o, "| raw SQLite group commit | rows/s: median (min–max) | commits/s |");
        let _ = writeln!(o, "| --- | --- | --- |");
        for (i, g) in self.args.groups.iter().enumerate() {
            let rows = sum(&self.reps, |r| r.groups.get(i).map_or(f64::NAN, |x| x.rows_per_sec));
            let _ = writeln!(o, "| {g} rows per commit | {} | {} |", rows.show_int(), group(rows.median / *g as f64));
        }
        let f50 = sum(&self.reps, |r| r.fsync.map_or(f64::NAN, |f| f.p50_ms));
        let f99 = sum(&self.reps, |r| r.fsync.map_or(f64::NAN, |f| f.p99_ms));
        let fmax = sum(&self.reps, |r| r.fsync.map_or(f64::NAN, |f| f.max_ms));
        let _ = writeln!(
            o,
            "\nfsync latency (write 4 KiB + fdatasync): p50 {} ms, p99 {} ms, max {} ms.\n",
            f50.show(3),
            f99.show(3),
            fmax.show(2)
        );
    }

    fn cpu(&self, o: &mut String) {
        let _ = writeln!(o, "## Where the CPU went (measurement windows, medians)\n");
        let _ = writeln!(
            o,
            "Percentages of one core ({} cores = {}%); machine columns are shares of all cores.\n",
            self.machine.cpus,
            self.machine.cpus.parse::<f64>().unwrap_or(1.0) * 100.0
        );
        let _ = writeln!(
            o,
            "| phase | relay process | of it: store writer thread | relay threads waiting for a CPU | load generator | other processes | machine busy | machine iowait |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        let mut row = |name: &str, f: &dyn Fn(&Rep) -> Option<&PhaseResult>| {
            let c = |g: fn(&PhaseResult) -> f64| sum(&self.reps, |r| f(r).map_or(f64::NAN, g)).show(0);
            let _ = writeln!(
                o,
                "| {name} | {}% | {}% | {}% | {}% | {}% | {}% | {}% |",
                c(|p| p.cpu.relay_pct),
                c(|p| p.cpu.store_thread_pct),
                c(|p| p.cpu.relay_runq_pct),
                c(|p| p.cpu.generator_pct),
                c(|p| p.cpu.others_pct),
                c(|p| p.cpu.machine_busy_pct),
                c(|p| p.cpu.machine_iowait_pct),
            );
        };
        row("ingest (closed loop)", &|r| r.ingest.as_ref());
        row("steady (open loop)", &|r| r.steady.as_ref());
        if self.args.compare_room_size.is_some() {
            row("ingest, comparison rooms", &|r| r.compare.as_ref().map(|c| &c.0));
            row("steady, comparison rooms", &|r| r.compare.as_ref().map(|c| &c.1));
        }
        let _ = writeln!(o);
    }

    fn per_rep(&self, o: &mut String) {
        let _ = writeln!(o, "## Every repetition\n");
        let _ = writeln!(
            o,
            "| rep | fsync p50 / p99 (ms) | best raw SQLite (rows/s @ group) | ingest msg/s | ingest ack p50 / p99 (ms) | steady sent/s | steady ack p50 / p99 (ms) | delivery p99 (ms) | emergency delivery p99 (ms, n) | deliveries seen / expected | generator send lag p99 (ms) | MiB / 1k idle | errors |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let none = PhaseResult::empty();
        for (i, r) in self.reps.iter().enumerate() {
            let best = r.best_group().map_or("n/a".into(), |g| format!("{} @ {}", group(g.rows_per_sec), g.group));
            let fsync = r.fsync.unwrap_or_default();
            let ing = r.ingest.as_ref().unwrap_or(&none);
            let s = r.steady.as_ref().unwrap_or(&none);
            let mut errors: Vec<String> =
                ing.errors.iter().chain(&s.errors).map(|(k, v)| format!("{k}: {v}")).collect();
            let unanswered = ing.unanswered + s.unanswered;
            if unanswered > 0 {
                errors.push(format!("unanswered: {unanswered}"));
            }
            let _ = writeln!(
                o,
                "| {} | {:.3} / {:.3} | {best} | {} | {:.1} / {:.1} | {} | {:.2} / {:.2} | {:.2} | {:.2} ({}) | {} / {} | {:.2} | {} | {} |",
                i + 1,
                fsync.p50_ms,
                fsync.p99_ms,
                group(ing.acked_per_sec),
                ing.ack.p50_ms,
                ing.ack.p99_ms,
                group(s.sent_per_sec),
                s.ack.p50_ms,
                s.ack.p99_ms,
                s.delivery.p99_ms,
                s.delivery_emergency.p99_ms,
                s.emergency_sent,
                s.deliveries,
                s.deliveries_expected,
                s.send_lag.p99_ms,
                r.memory.map_or("n/a".into(), |m| format!("{:.2}", m.mib_per_1k())),
                if errors.is_empty() { "none".into() } else { errors.join(", ") },
            );
        }
        let _ = writeln!(o);
    }
}
