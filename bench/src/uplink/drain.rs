//! A backlog drained over an emulated link, with emergencies sent while it drains.
//!
//! The hub stores `n` corpus messages from the village's phones while its cloud is down
//! (pipelined sends; the cloud's QUIC port has no listener). Then the cloud starts and a
//! doctor's device connects to it; the clock runs until the doctor has every backlog
//! message. Meanwhile a phone sends an emergency every `interval` (from the moment the
//! first backlog message reaches the doctor, so the drain is under way) and the doctor
//! notes when each arrives. Afterwards the same number of bytes the relay put into its
//! batches goes through a fresh emulator with the same preset as one bare QUIC stream:
//! the baseline.
//!
//! On the TCP path ([`Transport::Tcp`]) the emulator drops every UDP datagram and the hub
//! reaches the cloud through a TCP forwarder shaped with the same preset; bytes are the
//! TCP payload through it, and the baseline is one plain TCP connection through a fresh
//! forwarder ([`tcp_base`]). From before the cloud starts to the end, 500 more phones are signed in
//! and idle, so the hub's memory is read in the situation the memory goal names.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::linkemu::Preset;
use serde_json::json;
use tokio::time::{Instant, sleep, sleep_until};

use super::model::{self, ModelRun};
use super::quic_base::{self, Transfer};
use super::tcp_base;
use super::village::{self, Doctor, DoctorSeen, Phone};
use super::world::{Batches, Bytes, CpuMark, CpuShare, LogTail, Site, Transport, Village, watch_connect};
use crate::stats::{self, Latency};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct DrainSpec {
    pub preset: Preset,
    pub transport: Transport,
    pub messages: usize,
    pub emergencies: usize,
    pub interval: Duration,
    pub seed: u64,
    /// Keep the directories (logs, databases) afterwards.
    pub keep: bool,
    /// Also run the windowing model (`super::model`) after the baseline.
    pub model: bool,
    /// The idle phones sign in to the backlog's room with no cursor, so each is replaying
    /// the whole backlog and, as it never reads, stalls mid-replay: the worst case of a
    /// village reconnecting at once, not the idle hub the memory goal names.
    pub idle_replay: bool,
}

/// What one drain measured.
#[derive(Debug, Clone)]
pub struct DrainResult {
    pub messages: usize,
    pub backlog_emergencies: usize,
    pub fill_secs: f64,
    /// Sum of the backlog's `send` frames (what the phones typed, as JSON).
    pub send_json_bytes: u64,
    /// Cloud listening → relay log says `uplink connected`.
    pub connect_wait: Duration,
    /// The transport that `uplink connected` line named (`quic`, `tcp`).
    pub connected_over: String,
    /// Cloud listening → first backlog message at the doctor.
    pub first_arrival: Duration,
    /// Cloud listening → every backlog message at the doctor.
    pub total: Duration,
    /// `uplink connected` → every backlog message at the doctor (what the baseline is
    /// compared with).
    pub drain: Duration,
    pub arrived: usize,
    pub duplicates: u64,
    /// Link payload (UDP, or TCP on the TCP path) from cloud start to the last arrival.
    pub bytes: Bytes,
    /// Of it, from cloud start to `uplink connected` (handshake and hello).
    pub connect_bytes: Bytes,
    pub batches: Batches,
    pub baseline: Transfer,
    pub emergency: Latency,
    pub emergency_sent: usize,
    pub emergency_arrived: usize,
    pub emergency_latencies_ms: Vec<f64>,
    pub cpu: CpuShare,
    /// The windowing model's runs, if asked for: (fair scheduling, without).
    pub model: Option<(ModelRun, ModelRun)>,
    /// Signed-in idle phones on the hub from before the cloud starts to the end.
    pub idle_phones: usize,
    /// Hub `VmRSS` with the backlog waiting and the idle phones signed in.
    pub rss_waiting_kib: u64,
    /// Hub `VmRSS` when the backlog is all at the cloud (phones still signed in).
    pub rss_drained_kib: u64,
}

/// The relay's smallest window (`FlowConfig::default`: two batches of 32 KiB), which the
/// drains showed it stays at on these links.
const MODEL_WINDOW: u64 = 64 * 1024;
/// Batches the model sends: enough for many window turns, few enough to stay short.
const MODEL_BATCHES: usize = 40;

impl DrainResult {
    /// Uplink drain time over baseline time: ≥ 0.9 is the goal.
    pub fn ratio(&self) -> f64 {
        self.baseline.transfer.as_secs_f64() / self.drain.as_secs_f64().max(1e-9)
    }
}

/// Idle phones signed in while the backlog waits and drains (the memory goal's 500).
const IDLE_PHONES: usize = 500;
/// Quiet time after they signed in before the hub's memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// Longest a drain may take before the run gives up on it.
const DRAIN_LIMIT: Duration = Duration::from_secs(20 * 60);
/// How long after the last backlog message late emergencies are still waited for.
const EMERGENCY_GRACE: Duration = Duration::from_secs(15);

pub async fn run(root: &Path, spec: DrainSpec) -> anyhow::Result<DrainResult> {
    let mut site = Site::create_on(root, spec.preset, spec.transport).await?;
    let village = Village::generate(spec.seed, spec.messages);
    let (tokens, doctor_token) = village.tokens(&site.cloud)?;

    // The backlog: each person's messages from their own phone, in corpus order.
    let (plans, ids, send_json_bytes) = village::plans(&village, &tokens)?;
    let started = Instant::now();
    let stored = village::fill(&site.relay.ws_url(), plans).await.context("building the backlog")?;
    let fill_secs = started.elapsed().as_secs_f64();
    eprintln!("    backlog of {stored} messages stored in {fill_secs:.1} s; starting the cloud");

    // The emergency sender: a phone of a person not in the corpus, in one room.
    let room = village.rooms.first().cloned().unwrap_or_else(|| "clinic".into());
    let nurse_token = site.cloud.token("nurse-on-call", "worker", &[&room], "3h")?;
    let nurse = Phone::start(&site.relay.ws_url(), &nurse_token, "nurse-on-call-phone").await?;

    // The memory goal's situation: the backlog waiting for the cloud and a village's
    // phones signed in and idle (one user's token, a device id each). Idle means caught
    // up: they are in a room of their own, with nothing to replay (unless `idle_replay`).
    let relay_pid = site.relay.child.id();
    let idle_room = if spec.idle_replay { room.clone() } else { "waiting-room".to_owned() };
    let idle_token = site.cloud.token("idle-phones", "worker", &[&idle_room], "3h")?;
    let idle_tokens = vec![idle_token; IDLE_PHONES];
    let idle = crate::load::connect_all(&site.relay.ws_url(), &idle_tokens, 0..IDLE_PHONES, |_| idle_room.clone())
        .await
        .context("signing in the idle phones")?;
    sleep(IDLE_SETTLE).await;
    let rss_pid = relay_pid.context("the relay has no pid")?;
    let rss_waiting_kib = crate::procfs::rss_kib(rss_pid)?;
    eprintln!("    hub RSS with the backlog waiting and {IDLE_PHONES} idle phones: {} KiB", rss_waiting_kib);

    let mut seen = DoctorSeen::default();
    seen.set_watch(ids);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let (up, down) = site.counters();
    let connected = watch_connect(LogTail::from_end(&site.relay_log()), up, down);
    let cpu0 = CpuMark::take(relay_pid, None);
    let b0 = site.bytes();
    let mut cloud = site.cloud.start(&site.quic).await.context("starting outpost-cloud")?;
    let listening = Instant::now();
    let cloud_pid = cloud.child.id();
    let doctor = Doctor::start(&cloud.ws_url(), &doctor_token, "neema-laptop", Some(seen.clone())).await?;

    // Emergencies, one per interval, from the first backlog arrival until the backlog is
    // in (or `emergencies` were sent).
    let started_draining = doctor.wait_until(listening + DRAIN_LIMIT, |s| s.first_watched_at.is_some()).await;
    let mut sent_at: Vec<(u128, Instant)> = Vec::new();
    if started_draining {
        let mut next = Instant::now();
        for k in 0..spec.emergencies {
            let backlog_in = doctor.wait_until(next, |s| s.watched_done_at.is_some()).await;
            if backlog_in {
                break;
            }
            sleep_until(next).await;
            let id = uuid::Uuid::now_v7();
            let frame = json!({"v": 1, "type": "send", "msg": {
                "id": id.to_string(), "room": room, "kind": "alert", "priority": "emergency",
                "body": {"text": format!("postpartum haemorrhage, house {}", 10 + k), "location": "house 12"},
                "seq": k + 1,
            }});
            let at = Instant::now();
            nurse.send(frame.to_string()).await?;
            sent_at.push((id.as_u128(), at));
            next += spec.interval;
        }
    }
    let all_in = doctor.wait_until(listening + DRAIN_LIMIT, |s| s.watched_done_at.is_some()).await;
    let b1 = site.bytes();
    let cpu = CpuMark::since(&cpu0, relay_pid, cloud_pid);
    let emergency_ids: HashSet<u128> = sent_at.iter().map(|(id, _)| *id).collect();
    doctor
        .wait_until(Instant::now() + EMERGENCY_GRACE, |s| emergency_ids.iter().all(|i| s.messages.contains_key(i)))
        .await;

    let (done_at, first_at, arrived, duplicates, latencies) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("doctor state poisoned"))?;
        let arrived = s.watch.len() - s.watched_left;
        let lat: Vec<f64> = sent_at
            .iter()
            .filter_map(|(id, at)| s.messages.get(id).map(|a| (a.at - *at).as_secs_f64() * 1000.0))
            .collect();
        (s.watched_done_at, s.first_watched_at, arrived, s.duplicates, lat)
    };
    let connected = if connected.is_finished() {
        connected.await.ok()
    } else {
        connected.abort();
        None
    };
    let (conn_at, conn_bytes, connected_over) = connected.unwrap_or((listening, b0, String::new()));
    if connected_over != spec.transport.label() {
        eprintln!("warning: the uplink connected over {connected_over:?}, not {}", spec.transport.label());
    }
    if !all_in {
        eprintln!("warning: only {arrived} of {} backlog messages reached the cloud in time", spec.messages);
    }
    let done_at = done_at.unwrap_or_else(Instant::now);
    let log = std::fs::read_to_string(site.relay_log()).unwrap_or_default();
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let batches = Batches::parse(&lines);

    let rss_drained_kib = crate::procfs::rss_kib(rss_pid)?;
    crate::load::close_all(idle).await;
    drop(doctor);
    drop(nurse);
    site.stop_relay().await;
    let _ = cloud.kill9().await;

    let mut h = stats::new_hist();
    for ms in &latencies {
        stats::record(&mut h, (*ms * 1000.0) as u64);
    }
    let r = DrainResult {
        messages: spec.messages,
        backlog_emergencies: village.emergencies(),
        fill_secs,
        send_json_bytes,
        connect_wait: conn_at.saturating_duration_since(listening),
        connected_over,
        first_arrival: first_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(listening)),
        total: done_at.saturating_duration_since(listening),
        drain: done_at.saturating_duration_since(conn_at),
        arrived,
        duplicates,
        bytes: b1.since(&b0),
        connect_bytes: conn_bytes.since(&b0),
        batches,
        baseline: Transfer {
            bytes: 0,
            handshake: Duration::ZERO,
            transfer: Duration::ZERO,
            up_link_bytes: 0,
            down_link_bytes: 0,
            up_dropped_packets: 0,
        },
        emergency: Latency::of(&h),
        emergency_sent: sent_at.len(),
        emergency_arrived: latencies.len(),
        emergency_latencies_ms: latencies,
        cpu,
        model: None,
        idle_phones: IDLE_PHONES,
        rss_waiting_kib,
        rss_drained_kib,
    };
    eprintln!(
        "    drained in {:.1} s after connecting ({:.1} s from cloud start; connect {:.1} s); {} batches, {} B in batches, {} B up; emergencies p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} of {}); relay CPU {:.0} %, cloud {:.0} %",
        r.drain.as_secs_f64(),
        r.total.as_secs_f64(),
        r.connect_wait.as_secs_f64(),
        r.batches.normal + r.batches.emergency,
        r.batches.bytes(),
        r.bytes.up,
        r.emergency.p50_ms,
        r.emergency.p99_ms,
        r.emergency.max_ms,
        r.emergency_arrived,
        r.emergency_sent,
        r.cpu.relay,
        r.cpu.cloud,
    );
    // Give the machine a moment between the drain and its baseline.
    sleep(Duration::from_millis(500)).await;
    let bytes = r.batches.bytes().max(1);
    let baseline = match spec.transport {
        Transport::Quic => {
            eprintln!("    baseline: {bytes} B on one QUIC stream through the same preset…");
            quic_base::transfer(spec.preset, bytes).await.context("the QUIC baseline")?
        }
        Transport::Tcp => {
            eprintln!("    baseline: {bytes} B on one plain TCP connection through the same preset…");
            tcp_base::transfer(spec.preset, bytes).await.context("the TCP baseline")?
        }
    };
    eprintln!(
        "    baseline took {:.1} s ({:.0} kbit/s); ratio baseline/uplink {:.2}",
        baseline.transfer.as_secs_f64(),
        baseline.goodput_kbit(),
        baseline.transfer.as_secs_f64() / r.drain.as_secs_f64().max(1e-9)
    );
    // The model replays the link on bare QUIC over UDP: a diagnosis of the QUIC path only.
    let model = if spec.model && spec.transport == Transport::Quic && r.batches.normal > 0 {
        let size = r.batches.normal_bytes / r.batches.normal;
        let n = MODEL_BATCHES.min(r.batches.normal as usize).max(2);
        let fair = model::run(spec.preset, n, size, MODEL_WINDOW, true).await?;
        let fifo = model::run(spec.preset, n, size, MODEL_WINDOW, false).await?;
        eprintln!(
            "    model: {n} batches of {size} B, window {MODEL_WINDOW} B: fair scheduling {:.1} s, in order {:.1} s",
            fair.secs, fifo.secs
        );
        Some((fair, fifo))
    } else {
        None
    };
    if spec.keep {
        eprintln!("    kept {}", site.root.display());
    } else {
        let _ = std::fs::remove_dir_all(&site.root);
    }
    Ok(DrainResult { baseline, model, ..r })
}
