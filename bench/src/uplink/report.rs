//! The uplink section of the report: how it was run, results against the goals with their
//! same-run baselines, and every repetition's raw numbers.

use std::fmt::Write as _;

use super::UplinkRun;
use super::drain::{DrainResult, DrainSpec};
use super::mix::{MixResult, Mode};
use super::world::{RELAY_ENV, Transport};
use crate::Args;
use crate::goals::{Row, Section, table};
use crate::procfs::MachineInfo;
use crate::stats::{Summary, group};

const GOAL_BYTES_PER_MSG: f64 = 45.0;
const GOAL_JSON_RATIO: f64 = 4.5;
const GOAL_BASELINE_RATIO: f64 = 0.9;
/// The hub at 500 sockets with a 100,000-message backlog.
const GOAL_HUB_MIB: f64 = 48.0;

/// Drain time and emergency p99 goals per preset name.
fn goals(preset: &str) -> Option<(f64, f64)> {
    match preset {
        "3g" => Some((60.0, 1000.0)),
        "edge" => Some((240.0, 2500.0)),
        _ => None,
    }
}

fn sum(v: impl Iterator<Item = f64>) -> Summary {
    Summary::of(&v.collect::<Vec<_>>())
}

pub fn markdown(args: &Args, command: &str, machine: &MachineInfo, run: &UplinkRun) -> Section {
    let mut o = String::new();
    header(&mut o, args, command, machine, run);
    let rows = rows(run);
    let _ = writeln!(o, "## Uplink results\n");
    table(&mut o, &rows);
    mix_table(&mut o, run);
    drain_table(&mut o, run);
    Section { text: o, rows }
}

fn header(o: &mut String, args: &Args, command: &str, m: &MachineInfo, run: &UplinkRun) {
    let s = &run.mix_spec;
    let _ = writeln!(o, "## Uplink run\n");
    o.push_str(&m.header(command));
    let _ = writeln!(
        o,
        "- Mode: {}; whole uplink phase {:.0} s",
        if args.quick { "quick (smoke run)" } else { "full" },
        run.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "- Link emulator (`tests/src/linkemu.rs`, userspace UDP proxy): 3G = 768 kbit/s up, 1.5 Mbit/s down, 300 ms RTT, 0.5 % loss; EDGE = 200 kbit/s each way, 840 ms RTT, 1 % loss; tail-drop queue of 2 s of sending time"
    );
    if run.drains.iter().any(|(_, d, _)| d.transport == Transport::Tcp) {
        let _ = writeln!(
            o,
            "- TCP path (drains marked TCP): the emulator drops every UDP datagram, so the hub's QUIC attempt times out (10 s) and it carries the same QUIC link over TLS on TCP to the same address, through a forwarder on the emulator's port (`TcpForward`) shaped with the same preset: same rate, delay and jitter per direction, in chunks of at most 1,460 bytes, and the same 2 s queue, which pushes back on the sender through TCP's flow control instead of dropping. No loss: a byte stream has no packets to lose, and the forwarder ends TCP on both sides, so neither side's TCP runs slow start or loss recovery over the emulated delay. The TCP numbers are the best case for TCP on such a link; QUIC inside the tunnel still sees the whole delay. Bytes are the TCP payload through the forwarder (outer TLS records, the 2-byte datagram framing, and the QUIC datagrams inside)"
        );
    }
    // Without the bytes-per-message runs (`--mix-reps 0`) there is nothing to describe.
    if !run.mix.is_empty() {
        let _ = writeln!(
            o,
            "- Bytes per message (3G, {} repetition(s), corpus seeds {}…): {} corpus messages from {} phones (every phone in every room), the doctor's {} posts acked and read by every phone (one `delivered` and one `read` receipt each, going up); live at {} msg/s with the cloud up, and as a backlog sent while the cloud was down (kill -9) then drained at once",
            run.mix.len(),
            s.seed,
            s.messages,
            run.mix.first().map_or(0, |m| m.0.phones),
            run.mix.first().map_or(0, |m| m.0.posts),
            s.rate,
        );
        let _ = writeln!(
            o,
            "- Bytes are UDP payload through the emulator (QUIC headers, TLS tags, acknowledgements, retransmissions, keep-alives and our control frames all included), from just before the village traffic until 1 s after the doctor's device had every message and receipt"
        );
    }
    if let Some((_, d, _)) = run.drains.first() {
        let _ = writeln!(
            o,
            "- Drain: {} corpus messages (no receipts) stored from the phones while the cloud was down, then the cloud starts; times from the cloud listening, and from the relay's `uplink connected` log line, to the doctor's device on the cloud having every one; {} emergencies, one every {} ms, from a phone on the hub to the doctor while it drains; 500 more phones signed in on the hub from before the cloud starts, {} (the hub's VmRSS read 3 s after they signed in, and again when the backlog is all at the cloud)",
            group(d.messages as f64),
            d.emergencies,
            d.interval.as_millis(),
            if d.idle_replay {
                "in the backlog's room with no cursor and never reading: each stalls in a full replay (`--idle-replay`)"
            } else {
                "idle: caught up, in a room of their own"
            }
        );
    }
    let _ = writeln!(
        o,
        "- Baseline: a bare quinn transfer of the bytes the relay put into batches (sum of its `batch sent` sizes) on one unidirectional stream through a fresh emulator with the same preset, the link's own transport settings, self-signed certificate; timed from the end of the handshake to the receiver reading the end of the stream. Ratio = baseline time ÷ uplink drain time (connected → all arrived)"
    );
    if run.drains.iter().any(|(_, d, _)| d.transport == Transport::Tcp) {
        let _ = writeln!(
            o,
            "- Baseline on the TCP path: the same number of bytes on one plain TCP connection (no TLS, no tunnel) through a fresh forwarder with the same preset; timed from the connection being open to the receiver reading the end of the stream. Same ratio"
        );
    }
    let env: Vec<String> = crate::hub::relay_env(RELAY_ENV).iter().map(|(k, v)| format!("`{k}={v}`")).collect();
    let _ = writeln!(o, "- Relay environment: {}\n", env.join(", "));
}

/// The results table's rows: bytes per message (live and backlog), then per preset the
/// drain time, the ratio to bare QUIC, emergencies during the drain and the hub's memory,
/// each summarised over that preset's drains.
fn rows(run: &UplinkRun) -> Vec<Row> {
    let mut rows = Vec::new();
    for mode in [Mode::Live, Mode::Backlog] {
        let pick = |m: &(MixResult, MixResult)| if mode == Mode::Live { m.0.clone() } else { m.1.clone() };
        let rs: Vec<MixResult> = run.mix.iter().map(pick).collect();
        if rs.is_empty() {
            continue;
        }
        let per_msg = sum(rs.iter().map(MixResult::per_message));
        let per_entry = sum(rs.iter().map(MixResult::per_entry));
        let ratio = sum(rs.iter().map(MixResult::json_ratio));
        let json_per_msg =
            sum(rs.iter().map(|r| (r.send_json + r.receipt_json) as f64 / r.messages_arrived.max(1) as f64));
        rows.push(Row::goal(
            format!("uplink bytes per message, 3G, {} (B/msg; per entry incl. receipts)", mode.label()),
            format!("{}; {}", per_msg.show(1), per_entry.show(1)),
            format!("raw JSON (send + receipt frames): {} B/msg", json_per_msg.show(0)),
            format!("{}×", ratio.show(2)),
            format!("≤ {GOAL_BYTES_PER_MSG} B/msg and ≥ {GOAL_JSON_RATIO}×"),
            per_msg.median <= GOAL_BYTES_PER_MSG && ratio.median >= GOAL_JSON_RATIO,
        ));
    }
    for (name, transport) in drain_groups(run) {
        let ds: Vec<&DrainResult> = run
            .drains
            .iter()
            .filter(|(n, spec, _)| *n == name && spec.transport == transport)
            .map(|(_, _, d)| d)
            .collect();
        let Some(first) = ds.first() else { continue };
        let s = |f: &dyn Fn(&DrainResult) -> f64| sum(ds.iter().map(|d| f(d)));
        if transport == Transport::Tcp {
            rows.extend(tcp_rows(run, &name, &ds));
            continue;
        }
        let label = name.to_uppercase();
        let (goal_secs, goal_p99) = goals(&name).unwrap_or((f64::NAN, f64::NAN));
        let all_arrived = ds.iter().all(|d| d.arrived == d.messages);
        let total = s(&|d| d.total.as_secs_f64());
        rows.push(Row::goal(
            format!(
                "drain of {} messages, {label}: cloud listening → all at the cloud (s; {} drain(s))",
                group(first.messages as f64),
                ds.len()
            ),
            format!("{} (link up after {})", total.show(1), s(&|d| d.connect_wait.as_secs_f64()).show(1)),
            "",
            "",
            format!("≤ {goal_secs:.0} s"),
            total.median <= goal_secs && all_arrived,
        ));
        let ratio = s(&|d| d.ratio());
        rows.push(Row::goal(
            format!("drain, {label}: uplink connected → all at the cloud (s)"),
            s(&|d| d.drain.as_secs_f64()).show(1),
            format!(
                "bare QUIC, the same bytes ({}) on one stream: {} s",
                group(first.baseline.bytes as f64),
                s(&|d| d.baseline.transfer.as_secs_f64()).show(1)
            ),
            ratio.show(2),
            format!("≥ {GOAL_BASELINE_RATIO}× baseline"),
            ratio.median >= GOAL_BASELINE_RATIO,
        ));
        let p99 = s(&|d| d.emergency.p99_ms);
        let (sent, arrived): (usize, usize) =
            ds.iter().fold((0, 0), |(s, a), d| (s + d.emergency_sent, a + d.emergency_arrived));
        rows.push(Row::goal(
            format!(
                "emergency to the cloud during the {label} drain, p50 / p99 / max (ms; {arrived} of {sent} arrived)"
            ),
            format!(
                "{} / {} / {}",
                s(&|d| d.emergency.p50_ms).show(0),
                p99.show(0),
                s(&|d| d.emergency.max_ms).show(0)
            ),
            "",
            "",
            format!("p99 ≤ {goal_p99:.0} ms"),
            sent > 0 && arrived == sent && p99.median <= goal_p99,
        ));
        let waiting = s(&|d| d.rss_waiting_kib as f64 / 1024.0);
        let drained = s(&|d| d.rss_drained_kib as f64 / 1024.0);
        let result = format!("{}; {}", waiting.show(1), drained.show(1));
        let backlog = group(first.messages as f64);
        let stalled = run.drains.iter().any(|(n, spec, _)| *n == name && spec.idle_replay);
        rows.push(if stalled {
            Row::info(
                format!("hub memory, {} phones stalled in a full replay + {backlog} messages waiting; after the drain (MiB, VmRSS)", first.idle_phones),
                result,
                "",
                "",
                "(the worst case, `--idle-replay`; not the goal's idle phones)",
            )
        } else {
            Row::goal(
                format!("hub memory, {} idle phones + {backlog} messages waiting for the cloud; after the drain (MiB, VmRSS)", first.idle_phones),
                result,
                "",
                "",
                format!("≤ {GOAL_HUB_MIB} MiB"),
                waiting.median.max(drained.median) <= GOAL_HUB_MIB,
            )
        });
        let per_msg = s(&|d| d.bytes.up as f64 / d.arrived.max(1) as f64);
        rows.push(Row::info(
            format!("uplink bytes per message in the {label} drain (messages only, big batches)"),
            per_msg.show(1),
            format!("raw JSON (send frames): {:.0} B/msg", first.send_json_bytes as f64 / first.messages.max(1) as f64),
            format!("{}×", s(&|d| d.send_json_bytes as f64 / d.bytes.up.max(1) as f64).show(2)),
            "(information)",
        ));
    }
    rows
}

/// (Preset name, transport) of the drains, in the order they first ran.
fn drain_groups(run: &UplinkRun) -> Vec<(String, Transport)> {
    let mut groups: Vec<(String, Transport)> = Vec::new();
    for (n, spec, _) in &run.drains {
        let g = (n.clone(), spec.transport);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

/// The TCP path's rows for one preset: the same measurements as QUIC's, for information
/// (the goals are the QUIC link's), and how they compare with the same preset's QUIC
/// drains of this run.
fn tcp_rows(run: &UplinkRun, name: &str, ds: &[&DrainResult]) -> Vec<Row> {
    let Some(first) = ds.first() else { return Vec::new() };
    let s = |f: &dyn Fn(&DrainResult) -> f64| sum(ds.iter().map(|d| f(d)));
    let quic: Vec<&DrainResult> = run
        .drains
        .iter()
        .filter(|(n, spec, _)| n == name && spec.transport == Transport::Quic)
        .map(|(_, _, d)| d)
        .collect();
    let q = |f: &dyn Fn(&DrainResult) -> f64| sum(quic.iter().map(|d| f(d)));
    let label = format!("{} on TCP", name.to_uppercase());
    let (goal_secs, goal_p99) = goals(name).unwrap_or((f64::NAN, f64::NAN));
    let versus = |tcp: &Summary, quic: &Summary| {
        if quic.median > 0.0 { format!("{:.2}× QUIC's", tcp.median / quic.median) } else { String::new() }
    };
    let mut rows = Vec::new();
    let total = s(&|d| d.total.as_secs_f64());
    rows.push(Row::info(
        format!(
            "drain of {} messages, {label}: cloud listening → all at the cloud (s; {} drain(s))",
            group(first.messages as f64),
            ds.len()
        ),
        format!("{} (link up after {})", total.show(1), s(&|d| d.connect_wait.as_secs_f64()).show(1)),
        if quic.is_empty() { String::new() } else { format!("QUIC: {}", q(&|d| d.total.as_secs_f64()).show(1)) },
        versus(&total, &q(&|d| d.total.as_secs_f64())),
        format!("(QUIC's goal ≤ {goal_secs:.0} s)"),
    ));
    let drain = s(&|d| d.drain.as_secs_f64());
    rows.push(Row::info(
        format!("drain, {label}: uplink connected → all at the cloud (s)"),
        drain.show(1),
        format!(
            "plain TCP, the same bytes ({}) through the same shaped forwarder: {} s",
            group(first.baseline.bytes as f64),
            s(&|d| d.baseline.transfer.as_secs_f64()).show(1)
        ),
        format!(
            "{}{}",
            s(&|d| d.ratio()).show(2),
            if quic.is_empty() {
                String::new()
            } else {
                format!("; drain {}", versus(&drain, &q(&|d| d.drain.as_secs_f64())))
            }
        ),
        format!("(QUIC's goal ≥ {GOAL_BASELINE_RATIO}× baseline)"),
    ));
    let (sent, arrived): (usize, usize) =
        ds.iter().fold((0, 0), |(s, a), d| (s + d.emergency_sent, a + d.emergency_arrived));
    rows.push(Row::info(
        format!("emergency to the cloud during the {label} drain, p50 / p99 / max (ms; {arrived} of {sent} arrived)"),
        format!(
            "{} / {} / {}",
            s(&|d| d.emergency.p50_ms).show(0),
            s(&|d| d.emergency.p99_ms).show(0),
            s(&|d| d.emergency.max_ms).show(0)
        ),
        if quic.is_empty() {
            String::new()
        } else {
            format!(
                "QUIC: {} / {} / {}",
                q(&|d| d.emergency.p50_ms).show(0),
                q(&|d| d.emergency.p99_ms).show(0),
                q(&|d| d.emergency.max_ms).show(0)
            )
        },
        "",
        format!("(QUIC's goal p99 ≤ {goal_p99:.0} ms)"),
    ));
    rows.push(Row::info(
        format!(
            "hub memory, {} idle phones + {} messages waiting, {label}; after the drain (MiB, VmRSS)",
            first.idle_phones,
            group(first.messages as f64)
        ),
        format!(
            "{}; {}",
            s(&|d| d.rss_waiting_kib as f64 / 1024.0).show(1),
            s(&|d| d.rss_drained_kib as f64 / 1024.0).show(1)
        ),
        "",
        "",
        "(information)",
    ));
    let per_msg = s(&|d| d.bytes.up as f64 / d.arrived.max(1) as f64);
    rows.push(Row::info(
        format!("uplink bytes per message in the {label} drain (TCP payload; messages only, big batches)"),
        per_msg.show(1),
        format!(
            "raw JSON (send frames): {:.0} B/msg{}",
            first.send_json_bytes as f64 / first.messages.max(1) as f64,
            if quic.is_empty() {
                String::new()
            } else {
                format!("; QUIC (UDP payload): {} B/msg", q(&|d| d.bytes.up as f64 / d.arrived.max(1) as f64).show(1))
            }
        ),
        format!("{}×", s(&|d| d.send_json_bytes as f64 / d.bytes.up.max(1) as f64).show(2)),
        "(information)",
    ));
    rows
}

fn mix_table(o: &mut String, run: &UplinkRun) {
    if run.mix.is_empty() {
        return;
    }
    let _ = writeln!(o, "### Bytes per message, every run (3G)\n");
    let _ = writeln!(
        o,
        "| rep | mode | messages arrived / sent (emergencies among them) | receipts arrived / expected | UDP up B | of it reconnect B | UDP down B | B/msg up | B/entry up | send-frame JSON B/msg | as-delivered JSON B/msg | JSON ÷ UDP up (send frames; as delivered) | batches normal / emergency, B in batches | seconds |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, (live, backlog)) in run.mix.iter().enumerate() {
        for r in [live, backlog] {
            let _ = writeln!(
                o,
                "| {} | {} | {} / {} ({}) | {} / {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2}; {:.2} | {} / {}, {} | {:.1} |",
                i + 1,
                r.mode.label(),
                r.messages_arrived,
                r.messages,
                r.emergencies,
                r.receipts_arrived,
                r.receipts_expected,
                group(r.bytes.up as f64),
                r.connect_bytes.map_or("–".to_owned(), |b| group(b.up as f64)),
                group(r.bytes.down as f64),
                r.per_message(),
                r.per_entry(),
                r.send_json as f64 / r.messages_arrived.max(1) as f64,
                r.delivered_json as f64 / r.messages_arrived.max(1) as f64,
                r.json_ratio(),
                r.delivered_ratio(),
                r.batches.normal,
                r.batches.emergency,
                group(r.batches.bytes() as f64),
                r.secs,
            );
        }
    }
    let _ = writeln!(o);
}

/// Column heads of the drain table: the preset, and the repetition where there are several.
fn drain_labels(run: &UplinkRun) -> Vec<String> {
    let mut seen: Vec<(&str, Transport)> = Vec::new();
    run.drains
        .iter()
        .map(|(n, spec, _)| {
            let key = (n.as_str(), spec.transport);
            seen.push(key);
            let reps = run.drains.iter().filter(|(m, t, _)| (m.as_str(), t.transport) == key).count();
            let k = seen.iter().filter(|m| **m == key).count();
            let name = match spec.transport {
                Transport::Quic => n.to_uppercase(),
                Transport::Tcp => format!("{} TCP", n.to_uppercase()),
            };
            if reps > 1 { format!("{name} #{k}") } else { name }
        })
        .collect()
}

fn drain_table(o: &mut String, run: &UplinkRun) {
    if run.drains.is_empty() {
        return;
    }
    let _ = writeln!(o, "### Drains\n");
    let _ = writeln!(o, "| | {} |", drain_labels(run).join(" | "));
    let _ = writeln!(o, "| --- |{}", " --- |".repeat(run.drains.len()));
    let row = |o: &mut String, name: &str, f: &dyn Fn(&DrainSpec, &DrainResult) -> String| {
        let cells: Vec<String> = run.drains.iter().map(|(_, s, d)| f(s, d)).collect();
        let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
    };
    row(o, "messages (of them emergencies in the backlog)", &|_, d| {
        format!("{} ({})", group(d.messages as f64), d.backlog_emergencies)
    });
    row(o, "backlog built in (s)", &|_, d| format!("{:.1}", d.fill_secs));
    row(o, "cloud listening → link up / first arrival / all (s)", &|_, d| {
        format!(
            "{:.1} / {:.1} / {:.1}",
            d.connect_wait.as_secs_f64(),
            d.first_arrival.as_secs_f64(),
            d.total.as_secs_f64()
        )
    });
    row(o, "link up → all (s)", &|_, d| format!("{:.1}", d.drain.as_secs_f64()));
    row(o, "arrived / duplicates at the doctor", &|_, d| format!("{} / {}", d.arrived, d.duplicates));
    row(o, "batches normal / emergency", &|_, d| format!("{} / {}", d.batches.normal, d.batches.emergency));
    row(o, "bytes in batches (normal + emergency)", &|_, d| group(d.batches.bytes() as f64));
    row(o, "link up / down (B: UDP payload, TCP payload on TCP), up packets dropped by the emulator", &|_, d| {
        format!("{} / {}, {}", group(d.bytes.up as f64), group(d.bytes.down as f64), d.bytes.up_dropped)
    });
    row(o, "link up over", &|_, d| d.connected_over.clone());
    row(o, "of it before the link was up (handshake, Hello)", &|_, d| {
        format!("{} / {}", group(d.connect_bytes.up as f64), group(d.connect_bytes.down as f64))
    });
    row(o, "uplink goodput, batch bytes ÷ (link up → all) (kbit/s)", &|_, d| {
        format!("{:.0}", d.batches.bytes() as f64 * 8.0 / d.drain.as_secs_f64().max(1e-9) / 1000.0)
    });
    row(o, "normal window when batches left: min / median / max (B)", &|_, d| {
        let (a, m, z) = d.batches.window_range();
        format!("{} / {} / {}", group(a as f64), group(m as f64), group(z as f64))
    });
    row(o, "baseline: bytes, handshake, transfer (s), goodput (kbit/s)", &|_, d| {
        format!(
            "{}, {:.2} s, {:.1} s, {:.0}",
            group(d.baseline.bytes as f64),
            d.baseline.handshake.as_secs_f64(),
            d.baseline.transfer.as_secs_f64(),
            d.baseline.goodput_kbit()
        )
    });
    row(o, "baseline: bare QUIC, or plain TCP on TCP", &|s, _| match s.transport {
        Transport::Quic => "QUIC".to_owned(),
        Transport::Tcp => "TCP".to_owned(),
    });
    row(o, "baseline link up / down (B), up packets dropped", &|_, d| {
        format!(
            "{} / {}, {}",
            group(d.baseline.up_link_bytes as f64),
            group(d.baseline.down_link_bytes as f64),
            d.baseline.up_dropped_packets
        )
    });
    row(o, "ratio baseline ÷ uplink", &|_, d| format!("{:.2}", d.ratio()));
    if run.drains.iter().any(|(_, _, d)| d.model.is_some()) {
        row(o, "model (bare QUIC, the link's windowing): batches × size, window", &|_, d| match &d.model {
            Some((f, _)) => format!("{} × {} B, {} B", f.batches, group(f.batch_bytes as f64), group(f.window as f64)),
            None => "–".into(),
        });
        row(
            o,
            "model: fair (round-robin) stream scheduling / streams in order (s); goodput (kbit/s)",
            &|_, d| match &d.model {
                Some((f, q)) => {
                    let kbit = |m: &super::model::ModelRun| {
                        m.batches as f64 * m.batch_bytes as f64 * 8.0 / m.secs.max(1e-9) / 1000.0
                    };
                    format!("{:.1} / {:.1}; {:.0} / {:.0}", f.secs, q.secs, kbit(f), kbit(q))
                }
                None => "–".into(),
            },
        );
    }
    row(o, "emergencies sent / arrived; p50 / p99 / max (ms)", &|_, d| {
        format!(
            "{} / {}; {:.0} / {:.0} / {:.0}",
            d.emergency_sent, d.emergency_arrived, d.emergency.p50_ms, d.emergency.p99_ms, d.emergency.max_ms
        )
    });
    row(o, "every emergency (ms, in send order)", &|_, d| {
        d.emergency_latencies_ms.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" ")
    });
    row(o, "CPU while draining (% of a core): relay / cloud / bench / others; machine busy", &|_, d| {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}; {:.0} %",
            d.cpu.relay, d.cpu.cloud, d.cpu.bench, d.cpu.others, d.cpu.machine_busy
        )
    });
    let _ = writeln!(o);
}
