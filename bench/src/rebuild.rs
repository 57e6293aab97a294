//! `--phases rebuild`: a hub on a new SD card rebuilt from the cloud over an emulated
//! uplink (real relay and cloud processes, `outpost_tests::linkemu`).
//!
//! Per link preset, mode and repetition: a fresh cloud; a hub enrolled and connected once
//! (so the cloud knows its rooms); the hub stopped; a doctor posting `--rebuild-messages`
//! messages across [`ROOMS`] rooms at the cloud; then the hub enrolled again under the
//! same relay id on an empty directory and started behind the link emulator, with a
//! phone signed in to it at once. Measured from the hub's start: when the phone holds the
//! newest message of every room (what a worker opening any room sees first), and when it
//! holds all of them. The two modes are the same build with `limits.rebuild_recent_per_room`
//! at its default (200: each room's latest messages first) and at 0 (history oldest
//! first only, the same-run baseline).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::linkemu::{LinkEmu, Preset};
use outpost_tests::{Cloud, Device};
use serde_json::json;

use crate::Args;
use crate::procfs::MachineInfo;
use crate::stats::Summary;

/// Rooms the history is spread over.
const ROOMS: usize = 10;
/// Longest a rebuild may take before the run gives up on it.
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// One rebuild.
#[derive(Debug, Clone)]
pub struct RebuildRun {
    pub preset: String,
    /// `limits.rebuild_recent_per_room` of the cloud.
    pub recent: usize,
    pub messages: usize,
    /// From the hub's start until the phone held every room's newest message.
    pub to_latest: Duration,
    /// Until it held every message.
    pub to_all: Duration,
    /// Bytes the emulated link carried down (cloud → hub) meanwhile.
    pub down_bytes: u64,
}

async fn device(url: &str, token: &str, name: &str) -> anyhow::Result<Device> {
    let mut d = Device::connect(url).await?;
    d.hello(token, name, None, None).await?;
    Ok(d)
}

async fn one(dir: &Path, name: &str, preset: Preset, recent: usize, n: usize) -> anyhow::Result<RebuildRun> {
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("ward-{i}")).collect();
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let cloud = Cloud::init(&dir.join("cloud"))?;
    let recent_s = recent.to_string();
    let env = [
        ("OUTPOST_CLOUD_LIMITS__REBUILD_RECENT_PER_ROOM", recent_s.as_str()),
        // A doctor posting a year of history in seconds is far above a device's limit.
        ("OUTPOST_CLOUD_LIMITS__RATE_PER_SEC", "1000000"),
        ("OUTPOST_CLOUD_LIMITS__RATE_BURST", "1000000"),
    ];
    let cloud_proc = cloud.start_with_env("127.0.0.1:0", &env).await?;
    let quic = cloud_proc.quic_addr();
    let worker = cloud.token("amina", "worker", &room_refs, "3h")?;
    let fast = [("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

    // The first card: connected once, so the cloud knows the hub and its rooms.
    let first = cloud.provision_relay_at("village-r", &dir.join("card-1"), &quic)?;
    let mut relay = first.start(&fast).await?;
    let mut phone = device(&relay.ws_url(), &worker, "amina-phone").await?;
    let hello = phone.send_stored(outpost_tests::client::chat(&rooms[0], "first card")).await?;
    let mut doctor =
        device(&cloud_proc.ws_url(), &cloud.token("dr-neema", "doctor", &room_refs, "3h")?, "laptop").await?;
    loop {
        let f = doctor.expect("message").await?;
        if f["msg"]["id"] == hello["id"] {
            break;
        }
    }
    phone.close().await;
    relay.terminate().await?;

    // The history, at the cloud: `n` posts across the rooms, the newest of each noted.
    let mut newest: HashMap<String, String> = HashMap::new();
    let mut all: HashSet<String> = HashSet::with_capacity(n + 1);
    all.insert(hello["id"].as_str().unwrap_or_default().to_owned());
    let mut window = Vec::new();
    for i in 0..n {
        let room = &rooms[i % ROOMS];
        let msg = json!({"id": outpost_tests::new_id(), "room": room, "kind": "chat", "priority": "normal",
            "body": {"text": format!("ward round note {i}: blood pressure checked, fluids given, review at noon")}});
        let id = doctor.send_msg(msg).await?;
        newest.insert(room.clone(), id.clone());
        all.insert(id.clone());
        window.push(id);
        if window.len() >= 512 {
            for id in window.drain(..) {
                doctor.expect_stored(&id).await?;
            }
        }
    }
    for id in window.drain(..) {
        doctor.expect_stored(&id).await?;
    }
    doctor.close().await;

    // The card dies: the hub comes back empty, behind the emulated link, and a phone
    // signs in to it at once.
    let emu = LinkEmu::start(quic.parse()?, preset).await?;
    let second = cloud.provision_relay_at("village-r", &dir.join("card-2"), &emu.addr().to_string())?;
    let down0 = emu.down.bytes.load(Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let relay = second.start(&fast).await?;
    let mut phone = device(&relay.ws_url(), &worker, "amina-phone-2").await?;
    let mut want_latest: HashSet<String> = newest.into_values().collect();
    let mut to_latest = None;
    let mut missing = all;
    let deadline = started + LIMIT;
    while !missing.is_empty() {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(f) = phone.next_wire(wait).await? else {
            anyhow::bail!("rebuild over {name}: {} of the history still missing after {LIMIT:?}", missing.len());
        };
        if f["type"] != "message" {
            continue;
        }
        let id = f["msg"]["id"].as_str().unwrap_or_default();
        missing.remove(id);
        if want_latest.remove(id) && want_latest.is_empty() {
            to_latest = Some(started.elapsed());
        }
    }
    let to_all = started.elapsed();
    let down_bytes = emu.down.bytes.load(Ordering::Relaxed) - down0;
    drop(relay);
    Ok(RebuildRun {
        preset: name.to_owned(),
        recent,
        messages: n,
        to_latest: to_latest.context("every room's newest message arrived")?,
        to_all,
        down_bytes,
    })
}

/// Every preset, both modes side by side, `reps` times.
pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<Vec<RebuildRun>> {
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let n = args.rebuild_messages.unwrap_or(if args.quick { 2_000 } else { 20_000 });
    let mut out = Vec::new();
    for name in &args.presets {
        let preset = Preset::by_name(name).with_context(|| format!("unknown preset {name:?}"))?;
        for r in 0..reps {
            // Alternating, so both modes meet the machine in the same state.
            for recent in [200, 0] {
                eprintln!("rebuild: {n} messages over {name}, newest-first {recent}, repetition {} of {reps}", r + 1);
                let dir = tmp.join(format!("rebuild-{name}-{recent}-{r}"));
                out.push(one(&dir, name, preset, recent, n).await?);
            }
        }
    }
    Ok(out)
}

pub fn markdown(args: &Args, command: &str, machine: &MachineInfo, runs: &[RebuildRun]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Rebuild: a hub on a new SD card gets its rooms back from the cloud\n");
    o.push_str(&machine.header(command));
    let _ = writeln!(
        o,
        "- Each repetition: fresh cloud; the hub connected once, stopped; a doctor posts the history ({ROOMS} rooms, ~90-byte notes) at the cloud; the hub enrolled again on an empty directory behind the link emulator, a phone signed in at once. Timed from the hub's start. Same build, `limits.rebuild_recent_per_room` = 200 (default) against 0 (oldest first only: the same-run baseline), alternating."
    );
    let _ = writeln!(o, "- Repetitions: {}\n", args.reps.unwrap_or(if args.quick { 1 } else { 3 }));
    let _ = writeln!(
        o,
        "| link | messages | newest first | every room's newest message at the phone, s | whole history, s | downlink bytes |"
    );
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: |");
    // Each preset's ratio, written under the table (a line between rows would end it).
    let mut ratios = String::new();
    for name in &args.presets {
        for recent in [200, 0] {
            let rs: Vec<&RebuildRun> = runs.iter().filter(|r| &r.preset == name && r.recent == recent).collect();
            let Some(first) = rs.first() else { continue };
            let s = |f: &dyn Fn(&RebuildRun) -> f64| Summary::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} |",
                first.messages,
                if recent > 0 { format!("{recent} per room") } else { "off (baseline)".into() },
                s(&|r| r.to_latest.as_secs_f64()).show(2),
                s(&|r| r.to_all.as_secs_f64()).show(1),
                s(&|r| r.down_bytes as f64).show_int(),
            );
        }
        let med = |recent: usize| {
            Summary::of(
                &runs
                    .iter()
                    .filter(|r| &r.preset == name && r.recent == recent)
                    .map(|r| r.to_latest.as_secs_f64())
                    .collect::<Vec<_>>(),
            )
            .median
        };
        let (with, without) = (med(200), med(0));
        if with > 0.0 && without > 0.0 {
            let _ = writeln!(
                ratios,
                "- {name}: every room's newest message arrives {:.1}× sooner with the newest-first pass (medians).",
                without / with
            );
        }
    }
    let _ = writeln!(o, "\n{ratios}");
    o
}
