//! `--phases stick`: a USB stick as the uplink (`outpost-relay export`, `outpost-cloud
//! import`, `outpost-relay import`; `outpost_engine::mule`).
//!
//! A hub stores `--drain-messages` corpus messages (the uplink phase's village: chat,
//! vitals, alerts, events) while it has no network (its emulated link cut, UDP and TCP).
//! Then, with the hub and the cloud running as they would in the field, the stick makes
//! its round: the hub's export, the cloud's import (a doctor's device signed in at the
//! cloud counts every message's arrival, once), and the cloud's answer imported at the
//! hub. Reported: each step's wall time, the stick's bytes per message against the JSON
//! the phones sent, and the time from the import's start to the doctor holding all.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::linkemu::Preset;
use tokio::time::Instant;

use crate::Args;
use crate::goals::Section;
use crate::procfs::MachineInfo;
use crate::stats::Summary;
use crate::uplink::village::{self, Doctor, DoctorSeen};
use crate::uplink::world::{Site, Village};

/// One round of the stick.
#[derive(Debug, Clone)]
pub struct StickRep {
    pub messages: usize,
    pub send_json_bytes: u64,
    pub file_bytes: u64,
    pub answer_bytes: u64,
    pub export: Duration,
    pub import: Duration,
    pub to_doctor: Duration,
    pub answer_import: Duration,
    pub arrived: usize,
    pub duplicates: u64,
}

impl StickRep {
    fn per_message(&self) -> f64 {
        self.file_bytes as f64 / self.messages.max(1) as f64
    }
}

/// Runs `bin args` to success; its wall time.
async fn timed(bin: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let out = tokio::process::Command::from(outpost_tests::command(bin)).args(args).output().await?;
    anyhow::ensure!(out.status.success(), "{bin} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((started.elapsed(), String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

async fn once(root: &Path, messages: usize, seed: u64) -> anyhow::Result<StickRep> {
    let mut site = Site::create(root, Preset::CLEAR).await?;
    // No network in the village: every datagram dropped, and no TCP path.
    site.emu.cut();
    let village = Village::generate(seed, messages);
    let (tokens, doctor_token) = village.tokens(&site.cloud)?;
    let (plans, ids, send_json_bytes) = village::plans(&village, &tokens)?;
    let stored = village::fill(&site.relay.ws_url(), plans).await.context("storing the village's messages")?;
    eprintln!("    {stored} messages stored on the hub; the stick's round begins");

    let stick = root.join("stick");
    std::fs::create_dir_all(&stick)?;
    let relay_dir = site.relay_dir.dir.clone();
    let (export, line) = timed(
        "outpost-relay",
        &["export".as_ref(), "--dir".as_ref(), relay_dir.as_os_str(), "--to".as_ref(), stick.as_os_str()],
    )
    .await?;
    eprintln!("    {line} ({:.1} s)", export.as_secs_f64());
    let file_bytes = std::fs::metadata(stick.join("village-1.to-cloud.outpost"))
        .or_else(|_| std::fs::metadata(first_file(&stick, ".to-cloud.outpost")?))
        .map(|m| m.len())?;

    let mut cloud = site.cloud.start(&site.quic).await.context("starting outpost-cloud")?;
    let mut seen = DoctorSeen::default();
    seen.set_watch(ids);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let doctor = Doctor::start(&cloud.ws_url(), &doctor_token, "neema-laptop", Some(seen.clone())).await?;
    let cloud_dir = site.cloud.dir.clone();
    let started = Instant::now();
    let (import, line) =
        timed("outpost-cloud", &["import".as_ref(), "--dir".as_ref(), cloud_dir.as_os_str(), stick.as_os_str()])
            .await?;
    eprintln!("    {line} ({:.1} s)", import.as_secs_f64());
    let all_in = doctor.wait_until(Instant::now() + Duration::from_secs(600), |s| s.watched_done_at.is_some()).await;
    let (to_doctor, arrived, duplicates) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("doctor state poisoned"))?;
        (
            s.watched_done_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(started)),
            s.watch.len() - s.watched_left,
            s.duplicates,
        )
    };
    if !all_in {
        eprintln!("warning: only {arrived} of {messages} messages reached the doctor");
    }
    let answer = first_file(&stick, ".from-cloud.outpost")?;
    let answer_bytes = std::fs::metadata(&answer)?.len();
    let (answer_import, line) =
        timed("outpost-relay", &["import".as_ref(), "--dir".as_ref(), relay_dir.as_os_str(), stick.as_os_str()])
            .await?;
    eprintln!("    {line} ({:.1} s)", answer_import.as_secs_f64());
    drop(doctor);
    site.stop_relay().await;
    let _ = cloud.kill9().await;
    Ok(StickRep {
        messages,
        send_json_bytes,
        file_bytes,
        answer_bytes,
        export,
        import,
        to_doctor,
        answer_import,
        arrived,
        duplicates,
    })
}

fn first_file(dir: &Path, suffix: &str) -> std::io::Result<std::path::PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| std::io::Error::other(format!("no *{suffix} in {}", dir.display())))
}

pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<(Vec<StickRep>, Duration)> {
    let started = Instant::now();
    let reps = args.drain_reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let messages = args.drain_messages.unwrap_or(if args.quick { 5_000 } else { 100_000 });
    let mut out = Vec::with_capacity(reps);
    for rep in 0..reps {
        eprintln!("stick: round {} of {reps}, {messages} messages", rep + 1);
        out.push(once(&tmp.join(format!("stick-{rep}")), messages, crate::uplink::SEED + rep as u64).await?);
    }
    Ok((out, started.elapsed()))
}

pub fn markdown(command: &str, machine: &MachineInfo, reps: &[StickRep], elapsed: Duration) -> Section {
    let mut o = String::new();
    let _ = writeln!(o, "## A USB stick as the uplink\n");
    o.push_str(&machine.header(command));
    let messages = reps.first().map_or(0, |r| r.messages);
    let _ = writeln!(
        o,
        "- Each round: a fresh hub stores {messages} corpus messages (the uplink phase's village) with no network; then, hub and cloud running, `outpost-relay export`, `outpost-cloud import` (a doctor's device signed in at the cloud counts arrivals) and `outpost-relay import` of the answer, each a process timed from start to exit; {} round(s), {:.0} s in all\n",
        reps.len(),
        elapsed.as_secs_f64()
    );
    let s = |f: &dyn Fn(&StickRep) -> f64| Summary::of(&reps.iter().map(f).collect::<Vec<_>>());
    let per = s(&|r| r.per_message());
    let json = s(&|r| r.send_json_bytes as f64 / r.messages.max(1) as f64);
    let _ = writeln!(o, "| measure | median (min–max) |");
    let _ = writeln!(o, "| --- | --- |");
    let _ = writeln!(o, "| stick file, bytes per message | {} |", per.show(1));
    let _ = writeln!(o, "| the phones' `send` JSON, bytes per message (baseline) | {} |", json.show(1));
    let _ = writeln!(o, "| file ÷ JSON | {:.3} |", per.median / json.median.max(1e-9));
    let _ = writeln!(o, "| export, s | {} |", s(&|r| r.export.as_secs_f64()).show(2));
    let _ = writeln!(o, "| import at the cloud, s | {} |", s(&|r| r.import.as_secs_f64()).show(2));
    let _ = writeln!(
        o,
        "| import start → the doctor holds every message, s | {} |",
        s(&|r| r.to_doctor.as_secs_f64()).show(2)
    );
    let _ = writeln!(o, "| the answer's bytes | {} |", s(&|r| r.answer_bytes as f64).show_int());
    let _ = writeln!(o, "| the answer imported at the hub, s | {} |", s(&|r| r.answer_import.as_secs_f64()).show(2));
    let arrived: usize = reps.iter().map(|r| r.arrived).sum();
    let dups: u64 = reps.iter().map(|r| r.duplicates).sum();
    let _ = writeln!(
        o,
        "\nEvery round: {arrived} of {} messages reached the doctor, {dups} twice.\n",
        reps.len() * messages
    );
    Section { text: o, rows: Vec::new() }
}
