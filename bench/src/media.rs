//! `--phases media`: a 5 MB photo from a village phone to the hospital over an emulated
//! uplink (real relay and cloud processes, `outpost_tests::linkemu`).
//!
//! Per link preset and repetition: a fresh cloud and hub; the worker uploads the photo
//! to the hub over the LAN (not timed), the link is known to be up (a chat has crossed),
//! then the worker sends the message naming the photo. Measured from that `send`:
//! time until the doctor's browser on the cloud has the message with its preview, time
//! until the cloud holds the whole photo (its `/info` polled every 100 ms), and the UDP
//! bytes the emulated link carried each way meanwhile (QUIC headers, acks and the
//! message batch included). While the photo is in transit the worker raises an emergency
//! every few seconds (at most [`EMERGENCIES`]); each one's time from `send` to the
//! doctor's device is recorded, with how much of the photo had arrived by then. Same-run
//! baseline: the time the photo's bytes alone take at the preset's nominal rate.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::client::chat;
use outpost_tests::linkemu::{LinkEmu, Preset};
use outpost_tests::media::{Upload, info, photo};
use outpost_tests::{Cloud, Device};

use crate::Args;
use crate::procfs::MachineInfo;
use crate::stats::{Summary, group};

/// One photo crossing one link.
#[derive(Debug, Clone)]
pub struct MediaRun {
    pub preset: String,
    pub file_bytes: u64,
    pub preview_bytes: u64,
    pub to_preview: Duration,
    pub to_full: Duration,
    pub up_bytes: u64,
    pub down_bytes: u64,
    /// The photo alone at the preset's nominal uplink rate.
    pub nominal: Duration,
    /// Emergencies raised while the photo was in transit: latency to the doctor, and
    /// the bytes of the photo at the cloud when it arrived.
    pub emergencies: Vec<(Duration, u64)>,
}

/// Emergencies raised per photo transfer at most, and how far apart.
const EMERGENCIES: usize = 8;
const EMERGENCY_EVERY: Duration = Duration::from_secs(3);

async fn device(url: &str, token: &str, name: &str) -> anyhow::Result<Device> {
    let mut d = Device::connect(url).await?;
    d.hello(token, name, None, None).await?;
    Ok(d)
}

async fn one(dir: &Path, name: &str, preset: Preset, img: &[u8]) -> anyhow::Result<MediaRun> {
    let cloud = Cloud::init(&dir.join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let emu = LinkEmu::start(cloud_proc.quic_addr().parse()?, preset).await?;
    let relay_dir = cloud.provision_relay_at("village-b", &dir.join("relay"), &cloud_proc.quic_addr())?;
    let relay = relay_dir.start_via(&emu.addr().to_string(), &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")]).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut worker = device(&relay.ws_url(), &amina, "amina-phone").await?;
    let mut doctor = device(&cloud_proc.ws_url(), &neema, "laptop").await?;
    // The link is up and idle once a chat has crossed.
    let hi = worker.send_stored(chat("clinic", "hello")).await?;
    let hi_id = hi["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let f = doctor.expect("message").await?;
        if f["msg"]["id"] == hi_id.as_str() {
            break;
        }
    }
    let mut up = Upload::new(&relay.http_base(), &amina, img);
    up.create().await?;
    up.run(1 << 20, None).await?;

    let (up0, down0) = (emu.up.bytes.load(Ordering::Relaxed), emu.down.bytes.load(Ordering::Relaxed));
    let started = tokio::time::Instant::now();
    worker.send_stored(up.message("clinic", "wound, day 3", "IMG_0412.jpg")).await?;
    let (to_preview, preview_bytes) = loop {
        let f = doctor.expect("message").await?;
        if f["msg"]["body"]["media"]["sha256"] == up.sha.as_str() {
            let data = f["msg"]["body"]["media"]["preview"]["data"].as_str().unwrap_or_default();
            break (started.elapsed(), (data.len() as u64) * 3 / 4);
        }
    };
    let deadline = started + Duration::from_secs(1800);
    let base = cloud_proc.http_base();
    // Emergencies while the photo crosses: each must overtake the chunks still queued.
    let mut emergencies = Vec::new();
    while emergencies.len() < EMERGENCIES {
        let (_, v) = info(&base, &neema, &up.sha).await?;
        if v["available"] == true {
            break;
        }
        let mut alert = chat("clinic", "postpartum haemorrhage, house 12");
        alert["priority"] = serde_json::json!("emergency");
        alert["kind"] = serde_json::json!("alert");
        let sent = tokio::time::Instant::now();
        let id = worker.send_msg(alert).await?;
        loop {
            let f = doctor.expect("message").await?;
            if f["msg"]["id"] == id.as_str() {
                break;
            }
        }
        let latency = sent.elapsed();
        let (_, v) = info(&base, &neema, &up.sha).await?;
        emergencies.push((latency, v["received"].as_u64().unwrap_or(0)));
        tokio::time::sleep(EMERGENCY_EVERY.saturating_sub(sent.elapsed())).await;
    }
    let to_full = loop {
        let (_, v) = info(&base, &neema, &up.sha).await?;
        if v["available"] == true {
            break started.elapsed();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the photo did not arrive in 30 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let up_bytes = emu.up.bytes.load(Ordering::Relaxed) - up0;
    let down_bytes = emu.down.bytes.load(Ordering::Relaxed) - down0;
    let nominal = Duration::from_secs_f64(img.len() as f64 * 8.0 / preset.up.rate_bps.max(1) as f64);
    drop(relay);
    Ok(MediaRun {
        preset: name.to_owned(),
        file_bytes: img.len() as u64,
        preview_bytes,
        to_preview,
        to_full,
        up_bytes,
        down_bytes,
        nominal,
        emergencies,
    })
}

/// Runs every preset `reps` times.
pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<Vec<MediaRun>> {
    let img = photo(5_000_000, 2026);
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    let mut out = Vec::new();
    for name in &args.presets {
        let preset = Preset::by_name(name).with_context(|| format!("unknown preset {name:?}"))?;
        for r in 0..reps {
            eprintln!("media: 5 MB photo over {name}, repetition {} of {reps}", r + 1);
            out.push(one(&tmp.join(format!("media-{name}-{r}")), name, preset, &img).await?);
        }
    }
    Ok(out)
}

pub fn markdown(args: &Args, command: &str, machine: &MachineInfo, runs: &[MediaRun]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Media: a 5 MB photo from the village to the hospital\n");
    o.push_str(&machine.header(command));
    let _ = writeln!(
        o,
        "- Each repetition: fresh hub and cloud, the photo uploaded to the hub over the LAN first; timed from the worker's `send`. Link presets as in the uplink section (userspace emulator: rate, delay, jitter, loss). Default `[media]` settings: chunks of at most 64 KiB, at most 4 in flight, bytes in flight near the measured bandwidth-delay product."
    );
    let _ = writeln!(o, "- Repetitions per preset: {}\n", args.reps.unwrap_or(if args.quick { 1 } else { 3 }));
    let _ = writeln!(
        o,
        "| link | file | preview | time to preview, s | time to full photo, s | photo alone at nominal rate, s | full ÷ nominal | uplink bytes | uplink ÷ file | downlink bytes |"
    );
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for name in &args.presets {
        let rs: Vec<&MediaRun> = runs.iter().filter(|r| &r.preset == name).collect();
        if rs.is_empty() {
            continue;
        }
        let s = |f: &dyn Fn(&MediaRun) -> f64| Summary::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            group(rs[0].file_bytes as f64),
            s(&|r| r.preview_bytes as f64).show_int(),
            s(&|r| r.to_preview.as_secs_f64()).show(2),
            s(&|r| r.to_full.as_secs_f64()).show(1),
            rs[0].nominal.as_secs_f64(),
            s(&|r| r.to_full.as_secs_f64() / r.nominal.as_secs_f64()).show(2),
            s(&|r| r.up_bytes as f64).show_int(),
            s(&|r| r.up_bytes as f64 / r.file_bytes as f64).show(3),
            s(&|r| r.down_bytes as f64).show_int(),
        );
    }
    let _ = writeln!(
        o,
        "\nEmergencies raised while the photo was crossing (one every {} s, at most {EMERGENCIES} per transfer), from the worker's `send` to the doctor's device:\n",
        EMERGENCY_EVERY.as_secs()
    );
    let _ = writeln!(o, "| link | emergencies | p50, ms | max, ms | photo bytes at the cloud when they arrived |");
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | --- |");
    for name in &args.presets {
        let all: Vec<(Duration, u64)> =
            runs.iter().filter(|r| &r.preset == name).flat_map(|r| r.emergencies.iter().copied()).collect();
        if all.is_empty() {
            continue;
        }
        let ms: Vec<f64> = all.iter().map(|(d, _)| d.as_secs_f64() * 1000.0).collect();
        let s = Summary::of(&ms);
        let size = runs.iter().find(|r| &r.preset == name).map_or(0, |r| r.file_bytes);
        let partial = all.iter().filter(|(_, got)| *got < size).count();
        let _ = writeln!(
            o,
            "| {name} | {} | {:.0} | {:.0} | {partial} of {} arrived while the photo was still incomplete |",
            all.len(),
            s.median,
            s.max,
            all.len()
        );
    }
    o.push('\n');
    o
}
