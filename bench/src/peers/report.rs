//! The peers comparison's Markdown section: how the run was made, the saturated and the
//! fixed-rate tables with ratios against Outpost, and every repetition's numbers.

use std::fmt::Write as _;
use std::time::Duration;

use super::{PeerResult, PeersRep, Versions};
use crate::Args;
use crate::goals::{Row, Section, table};
use crate::procfs::MachineInfo;
use crate::stats::{Summary, group};

/// Which peer's result a report row reads.
type Pick = fn(&PeersRep) -> &PeerResult;

/// The Markdown section: run facts, the comparison table, per-repetition numbers.
pub fn markdown(
    args: &Args,
    command: &str,
    machine: &MachineInfo,
    v: &Versions,
    reps: &[PeersRep],
    elapsed: Duration,
) -> Section {
    let t = args.timing();
    let mut o = String::new();
    let _ = writeln!(o, "## Peers run\n");
    o.push_str(&machine.header(command));
    let _ = writeln!(o, "- Disk under the data directories (`df`): {}", machine.disk);
    let _ = writeln!(o, "- Peers: {} (Debian package); {} (Debian package)", v.mosquitto, v.nats);
    let _ = writeln!(
        o,
        "- Each row: fresh server and empty data directory, {} client connections, {} publishes awaiting acknowledgement per connection, ~100-byte payloads, {:.0} s warm-up, {:.0} s measured; every client also receives its room-mates' messages (rooms of 2, 1 delivery per message; rooms of {} in their own table); {} repetition(s), whole run {:.0} s",
        args.clients,
        args.window,
        t.warmup.as_secs_f64(),
        t.measure.as_secs_f64(),
        super::ROOMS_OF,
        reps.len(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "- Generator: this process (Rust, Tokio, one task per connection); rumqttc for MQTT, async-nats for NATS\n"
    );

    let s = |f: &dyn Fn(&PeersRep) -> f64| Summary::of(&reps.iter().map(f).collect::<Vec<_>>());
    let op_rate = s(&|r| r.outpost.acked_per_sec);
    let op_p99 = s(&|r| r.outpost.ack.p99_ms);
    let _ = writeln!(o, "## Peers results\n");
    let _ = writeln!(
        o,
        "| server | what an acknowledgement means | acked msg/s: median (min–max) | Outpost ÷ this (msg/s) | ack p50 (ms) | ack p99 (ms) | this ÷ Outpost (p99) | delivery p99 (ms) | server CPU (% of a core) |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let _ = writeln!(
        o,
        "| Outpost relay (WebSocket, rooms of 2) | `stored`: in SQLite, committed with fsync (group commit) | {} | 1 | {} | {} | 1 | {} | {} |",
        op_rate.show_int(),
        s(&|r| r.outpost.ack.p50_ms).show(1),
        op_p99.show(1),
        s(&|r| r.outpost.delivery.p99_ms).show(1),
        s(&|r| r.outpost.cpu.relay_pct).show(0),
    );
    let rows: [(&str, &str, Pick); 2] = [
        (
            "Mosquitto, MQTT QoS 1, persistence on",
            "PUBACK: in broker memory; on disk only from the next whole-database snapshot (every 1 s here), nothing per message",
            |r| &r.mosquitto,
        ),
        (
            "nats-server, JetStream, file storage",
            "PubAck: in the stream's block file (OS page cache); fsync by a background timer, not per message (`sync_interval` does not exist in 2.9)",
            |r| &r.jetstream,
        ),
    ];
    for (name, means, f) in rows {
        let _ = writeln!(
            o,
            "| {name} | {means} | {} | {} | {} | {} | {} | {} | {} |",
            s(&|r| f(r).acked_per_sec).show_int(),
            s(&|r| r.outpost.acked_per_sec / f(r).acked_per_sec).show(2),
            s(&|r| f(r).ack.p50_ms).show(1),
            s(&|r| f(r).ack.p99_ms).show(1),
            s(&|r| f(r).ack.p99_ms / r.outpost.ack.p99_ms).show(2),
            s(&|r| f(r).delivery.p99_ms).show(1),
            s(&|r| f(r).broker_cpu_pct).show(0),
        );
    }
    let _ = writeln!(
        o,
        "\nRatios are computed per repetition (same repetition's Outpost row) and then summarised. Latency at saturation is queueing (in flight ÷ rate), so p99 here compares how evenly each server serves a full queue, not an unloaded round trip.\n"
    );
    let rate = group(args.rate);
    let _ = writeln!(o, "## At a fixed {rate} msg/s (open loop, below saturation)\n");
    let _ = writeln!(
        o,
        "Every client sends on a fixed schedule ({:.1} msg/s each, evenly phased), latency from the scheduled send time; Outpost's row is its steady phase without emergencies.\n",
        args.rate / args.clients as f64
    );
    let _ = writeln!(
        o,
        "| server | acked msg/s | ack p50 (ms) | ack p99 (ms) | this ÷ Outpost (p99) | delivery p99 (ms) | server CPU (% of a core) |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
    let _ = writeln!(
        o,
        "| Outpost relay | {} | {} | {} | 1 | {} | {} |",
        s(&|r| r.steady.0.acked_per_sec).show_int(),
        s(&|r| r.steady.0.ack.p50_ms).show(2),
        s(&|r| r.steady.0.ack.p99_ms).show(2),
        s(&|r| r.steady.0.delivery.p99_ms).show(2),
        s(&|r| r.steady.0.cpu.relay_pct).show(0),
    );
    let steady_rows: [(&str, Pick); 2] = [("Mosquitto", |r| &r.steady.1), ("JetStream", |r| &r.steady.2)];
    for (name, f) in steady_rows {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s(&|r| f(r).acked_per_sec).show_int(),
            s(&|r| f(r).ack.p50_ms).show(2),
            s(&|r| f(r).ack.p99_ms).show(2),
            s(&|r| f(r).ack.p99_ms / r.steady.0.ack.p99_ms).show(2),
            s(&|r| f(r).delivery.p99_ms).show(2),
            s(&|r| f(r).broker_cpu_pct).show(0),
        );
    }
    let _ = writeln!(o);
    let _ =
        writeln!(o, "## Rooms of {} (closed loop, {} deliveries per message)\n", super::ROOMS_OF, super::ROOMS_OF - 1);
    let _ = writeln!(
        o,
        "| server | acked msg/s | msg/s per server core | Outpost ÷ this (per core) | ack p99 (ms) | delivery p99 (ms) | deliveries seen / expected | server CPU (% of a core) |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let outpost_per_core = |r: &PeersRep| per_core(r.rooms.0.acked_per_sec, r.rooms.0.cpu.relay_pct);
    let _ = writeln!(
        o,
        "| Outpost relay | {} | {} | 1 | {} | {} | {} / {} | {} |",
        s(&|r| r.rooms.0.acked_per_sec).show_int(),
        s(&outpost_per_core).show_int(),
        s(&|r| r.rooms.0.ack.p99_ms).show(1),
        s(&|r| r.rooms.0.delivery.p99_ms).show(1),
        s(&|r| r.rooms.0.deliveries as f64).show_int(),
        s(&|r| r.rooms.0.deliveries_expected as f64).show_int(),
        s(&|r| r.rooms.0.cpu.relay_pct).show(0),
    );
    let room_rows: [(&str, Pick); 2] = [("Mosquitto", |r| &r.rooms.1), ("JetStream", |r| &r.rooms.2)];
    for (name, f) in room_rows {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} | {} / {} | {} |",
            s(&|r| f(r).acked_per_sec).show_int(),
            s(&|r| per_core(f(r).acked_per_sec, f(r).broker_cpu_pct)).show_int(),
            s(&|r| outpost_per_core(r) / per_core(f(r).acked_per_sec, f(r).broker_cpu_pct)).show(2),
            s(&|r| f(r).ack.p99_ms).show(1),
            s(&|r| f(r).delivery.p99_ms).show(1),
            s(&|r| f(r).deliveries as f64).show_int(),
            s(&|r| f(r).deliveries_expected as f64).show_int(),
            s(&|r| f(r).broker_cpu_pct).show(0),
        );
    }
    let _ = writeln!(
        o,
        "\n\"Per server core\" divides the acknowledged rate by the server's own CPU over the window (its threads, in cores), so a server that used less than a core is not credited with the idle rest. With `--server-cpus` every server had the same single core.\n"
    );
    let rows = goal_rows(reps, args.clients, &rate);
    let _ = writeln!(o, "## Against the goal (Outpost ahead on durable throughput and on p99)\n");
    table(&mut o, &rows);
    let _ = writeln!(o, "## Peers, every repetition\n");
    let _ = writeln!(
        o,
        "| rep | server | acked msg/s | ack p50 / p99 / max (ms) | deliveries seen / expected | server CPU % | generator CPU % | machine busy % | unanswered / errors |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, r) in reps.iter().enumerate() {
        for (name, p) in [("Outpost", &r.outpost), ("Outpost, fixed rate", &r.steady.0)] {
            let errs: u64 = p.errors.iter().map(|(_, n)| n).sum();
            let _ = writeln!(
                o,
                "| {} | {name} | {} | {:.1} / {:.1} / {:.1} | {} / {} | {:.0} | {:.0} | {:.0} | {} / {errs} |",
                i + 1,
                group(p.acked_per_sec),
                p.ack.p50_ms,
                p.ack.p99_ms,
                p.ack.max_ms,
                group(p.deliveries as f64),
                group(p.deliveries_expected as f64),
                p.cpu.relay_pct,
                p.cpu.generator_pct,
                p.cpu.machine_busy_pct,
                p.unanswered,
            );
        }
        for (name, x) in [
            ("Mosquitto", &r.mosquitto),
            ("JetStream", &r.jetstream),
            ("Mosquitto, fixed rate", &r.steady.1),
            ("JetStream, fixed rate", &r.steady.2),
        ] {
            let _ = writeln!(
                o,
                "| {} | {name} | {} | {:.1} / {:.1} / {:.1} | {} / {} | {:.0} | {:.0} | {:.0} | {} / {} |",
                i + 1,
                group(x.acked_per_sec),
                x.ack.p50_ms,
                x.ack.p99_ms,
                x.ack.max_ms,
                group(x.deliveries as f64),
                group(x.deliveries_expected as f64),
                x.broker_cpu_pct,
                x.generator_cpu_pct,
                x.machine_busy_pct,
                x.unanswered,
                x.errors.len(),
            );
        }
    }
    let _ = writeln!(o);
    Section { text: o, rows }
}

/// Acknowledged messages per second for each core's worth of the server's own CPU.
fn per_core(acked_per_sec: f64, cpu_pct: f64) -> f64 {
    acked_per_sec / (cpu_pct / 100.0).max(0.01)
}

/// The goal, per peer: Outpost acks more messages per second at saturation, and
/// has the lower ack p99 at the fixed rate. Ratios are taken within each repetition.
fn goal_rows(reps: &[PeersRep], clients: usize, rate: &str) -> Vec<Row> {
    let s = |f: &dyn Fn(&PeersRep) -> f64| Summary::of(&reps.iter().map(f).collect::<Vec<_>>());
    let peers: [(&str, Pick, Pick); 2] = [
        ("Mosquitto (QoS 1, persistence)", |r| &r.mosquitto, |r| &r.steady.1),
        ("JetStream (file storage)", |r| &r.jetstream, |r| &r.steady.2),
    ];
    let mut rows = Vec::new();
    for (name, saturated, fixed) in peers {
        let rate_ratio = s(&|r| r.outpost.acked_per_sec / saturated(r).acked_per_sec);
        rows.push(Row::goal(
            format!("durable throughput vs {name}, {clients} connections (Outpost msg/s; Outpost ÷ peer)"),
            s(&|r| r.outpost.acked_per_sec).show_int(),
            format!("{name}: {} msg/s", s(&|r| saturated(r).acked_per_sec).show_int()),
            rate_ratio.show(2),
            "Outpost ahead (> 1)",
            rate_ratio.median > 1.0,
        ));
        let pairs_ratio = s(&|r| {
            per_core(r.outpost.acked_per_sec, r.outpost.cpu.relay_pct)
                / per_core(saturated(r).acked_per_sec, saturated(r).broker_cpu_pct)
        });
        rows.push(Row::goal(
            format!(
                "durable throughput per server core vs {name}, rooms of 2 (Outpost msg/s per core; Outpost ÷ peer)"
            ),
            s(&|r| per_core(r.outpost.acked_per_sec, r.outpost.cpu.relay_pct)).show_int(),
            format!(
                "{name}: {} msg/s per core",
                s(&|r| per_core(saturated(r).acked_per_sec, saturated(r).broker_cpu_pct)).show_int()
            ),
            pairs_ratio.show(2),
            "Outpost ahead (> 1)",
            pairs_ratio.median > 1.0,
        ));
        let rooms: Pick = if name.starts_with("Mosquitto") { |r| &r.rooms.1 } else { |r| &r.rooms.2 };
        let per_core_ratio = s(&|r| {
            per_core(r.rooms.0.acked_per_sec, r.rooms.0.cpu.relay_pct)
                / per_core(rooms(r).acked_per_sec, rooms(r).broker_cpu_pct)
        });
        rows.push(Row::goal(
            format!(
                "durable throughput per server core vs {name}, rooms of {} (Outpost msg/s per core; Outpost ÷ peer)",
                super::ROOMS_OF
            ),
            s(&|r| per_core(r.rooms.0.acked_per_sec, r.rooms.0.cpu.relay_pct)).show_int(),
            format!(
                "{name}: {} msg/s per core",
                s(&|r| per_core(rooms(r).acked_per_sec, rooms(r).broker_cpu_pct)).show_int()
            ),
            per_core_ratio.show(2),
            "Outpost ahead (> 1)",
            per_core_ratio.median > 1.0,
        ));
        let p99_ratio = s(&|r| fixed(r).ack.p99_ms / r.steady.0.ack.p99_ms);
        rows.push(Row::goal(
            format!("ack p99 at {rate} msg/s vs {name} (Outpost ms; peer ÷ Outpost)"),
            s(&|r| r.steady.0.ack.p99_ms).show(2),
            format!("{name}: {} ms", s(&|r| fixed(r).ack.p99_ms).show(2)),
            p99_ratio.show(2),
            "Outpost ahead (> 1)",
            p99_ratio.median > 1.0,
        ));
    }
    rows
}
