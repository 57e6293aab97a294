//! Uplink bytes per message on a realistic mix: corpus messages (chat, vitals reports, the
//! odd emergency alert) sent as real `send` frames by the village's phones, plus
//! `delivered` and `read` receipts going up because the phones ack and read the doctor's
//! posts.
//!
//! The doctor first posts one message per `posts_every` village messages (they go down
//! the link and reach every phone). Then the village traffic plays: message `i` from its
//! sender's phone; after every `posts_every` messages, every phone acks and reads the next
//! of the doctor's posts, which makes one `delivered` and one `read` receipt per phone
//! that travel up. Two ways:
//!
//! * **live**: the cloud is up; messages go at `rate` per second in total, so the link
//!   carries them as a trickle of small batches;
//! * **backlog**: the cloud is stopped (kill -9) before the village traffic, which is sent
//!   as fast as the phones can; the cloud then starts and the hub drains everything at
//!   once in big batches. This run's bytes include the reconnect (QUIC and TLS handshake
//!   with the hub's certificate, `Hello`), reported separately.
//!
//! Bytes are the UDP payload that crossed the emulator (3G) from just before the village
//! traffic to a second after the doctor had every message and receipt.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use outpost_tests::linkemu::Preset;
use tokio::time::{Instant, sleep, sleep_until};

use super::village::{self, Doctor, DoctorSeen, Phone};
use super::world::{Batches, Bytes, LogTail, Site, Village, watch_connect};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Backlog,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Live => "live trickle",
            Mode::Backlog => "backlog drained at once",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MixSpec {
    pub preset: Preset,
    pub messages: usize,
    pub posts_every: usize,
    pub rate: f64,
    pub seed: u64,
    /// Keep the directories (logs, databases) afterwards.
    pub keep: bool,
}

/// What one mix run measured.
#[derive(Debug, Clone)]
pub struct MixResult {
    pub mode: Mode,
    pub messages: usize,
    pub emergencies: usize,
    pub phones: usize,
    pub posts: usize,
    pub messages_arrived: usize,
    pub receipts_expected: usize,
    pub receipts_arrived: usize,
    /// UDP payload over the measured stretch.
    pub bytes: Bytes,
    /// Backlog only: of it, the reconnect (cloud start → `uplink connected`).
    pub connect_bytes: Option<Bytes>,
    /// The phones' `send` frames.
    pub send_json: u64,
    /// The receipts as the doctor's device received them (`receipt` frames).
    pub receipt_json: u64,
    /// The messages as the doctor's device received them (`message` frames, with cursor,
    /// sender, device, clock and time).
    pub delivered_json: u64,
    pub batches: Batches,
    pub secs: f64,
}

impl MixResult {
    pub fn per_message(&self) -> f64 {
        self.bytes.up as f64 / self.messages_arrived.max(1) as f64
    }
    pub fn per_entry(&self) -> f64 {
        self.bytes.up as f64 / (self.messages_arrived + self.receipts_arrived).max(1) as f64
    }
    /// Raw JSON (send frames + receipt frames) over UDP bytes up.
    pub fn json_ratio(&self) -> f64 {
        (self.send_json + self.receipt_json) as f64 / self.bytes.up.max(1) as f64
    }
    pub fn delivered_ratio(&self) -> f64 {
        (self.delivered_json + self.receipt_json) as f64 / self.bytes.up.max(1) as f64
    }
}

const ARRIVAL_LIMIT: Duration = Duration::from_secs(180);
/// After the last arrival, the acks and QUIC acknowledgements still in flight.
const SETTLE: Duration = Duration::from_secs(1);
const DOCTOR_LINES: &[&str] = &[
    "Please bring the child to the clinic tomorrow morning",
    "Start ORS and recheck in 4 hours",
    "Referral accepted, ambulance is on the way",
    "Asante, continue the same dose",
];

pub async fn run(root: &Path, spec: MixSpec, mode: Mode) -> anyhow::Result<MixResult> {
    let mut site = Site::create(root, spec.preset).await?;
    let village = Village::generate(spec.seed, spec.messages);
    let (tokens, doctor_token) = village.tokens(&site.cloud)?;
    let mut cloud = site.cloud.start(&site.quic).await?;
    let doctor = Doctor::start(&cloud.ws_url(), &doctor_token, "neema-laptop", None).await?;
    let mut phones = Vec::new();
    for ((_, device), token) in village.people.iter().zip(&tokens) {
        phones.push(Phone::start(&site.relay.ws_url(), token, device).await?);
    }
    let index: HashMap<&str, usize> = village.people.iter().enumerate().map(|(i, (u, _))| (u.as_str(), i)).collect();

    // The doctor's posts reach every phone before the village starts.
    let n_posts = spec.messages.div_ceil(spec.posts_every.max(1));
    let mut posts = Vec::new();
    for j in 0..n_posts {
        let room = &village.rooms[j % village.rooms.len()];
        posts.push(doctor.post(room, DOCTOR_LINES[j % DOCTOR_LINES.len()], j as u64 + 1).await?);
    }
    let deadline = Instant::now() + ARRIVAL_LIMIT;
    while phones.iter().any(|p| p.posts() < n_posts) {
        if Instant::now() > deadline {
            bail!("the doctor's posts did not reach every phone");
        }
        sleep(Duration::from_millis(50)).await;
    }
    // Let the custody acks of the posts cross before measuring.
    sleep(Duration::from_secs(2)).await;

    let mut frames = Vec::with_capacity(spec.messages);
    let mut seqs = vec![0u64; phones.len()];
    let mut ids = std::collections::HashSet::new();
    let mut send_json = 0u64;
    for m in &village.messages {
        let p = index[m.from.as_str()];
        seqs[p] += 1;
        let (id, f) = village::send_frame(m, seqs[p])?;
        send_json += f.len() as u64;
        ids.insert(id);
        frames.push((p, f));
    }
    if let Ok(mut s) = doctor.seen.lock() {
        s.set_watch(ids);
    }
    let receipts_expected = n_posts * phones.len() * 2;

    let log = site.relay_log();
    let mut tail = LogTail::from_end(&log);
    let mut b0 = Bytes::read(&site.emu);
    if mode == Mode::Backlog {
        cloud.kill9().await?;
        sleep(Duration::from_millis(300)).await;
    }
    let t0 = Instant::now();
    let mut next_post = 0;
    for (i, (p, f)) in frames.into_iter().enumerate() {
        if mode == Mode::Live {
            sleep_until(t0 + Duration::from_secs_f64(i as f64 / spec.rate)).await;
        }
        phones[p].send(f).await?;
        if (i + 1) % spec.posts_every == 0 && next_post < n_posts {
            for ph in &phones {
                ph.ack_read(posts[next_post]).await?;
            }
            next_post += 1;
        }
    }
    for &post in &posts[next_post..] {
        for ph in &phones {
            ph.ack_read(post).await?;
        }
    }
    for ph in &phones {
        ph.sync().await.context("phones finishing their sends")?;
        if let Ok(s) = ph.seen.lock()
            && !s.errors.is_empty()
        {
            eprintln!("warning: {}: {} refused sends; first: {}", ph.name, s.errors.len(), s.errors[0]);
        }
    }

    let mut connect_bytes = None;
    let mut doctor = doctor;
    let mut measured_from = t0;
    if mode == Mode::Backlog {
        let seen = doctor.seen.clone();
        drop(doctor);
        // The outage's own traffic (the hub's retries into the void) is not the drain's.
        let connected = watch_connect(LogTail::from_end(&log), site.emu.up.clone(), site.emu.down.clone());
        // Batches sent into the dead connection during the outage never crossed.
        tail = LogTail::from_end(&log);
        b0 = Bytes::read(&site.emu);
        measured_from = Instant::now();
        cloud = site.cloud.start(&site.quic).await?;
        doctor = Doctor::start(&cloud.ws_url(), &doctor_token, "neema-laptop-2", Some(seen)).await?;
        let c = tokio::time::timeout(ARRIVAL_LIMIT, connected).await.context("the hub did not reconnect")??;
        connect_bytes = Some(c.1.since(&b0));
    }
    let complete = |s: &DoctorSeen| s.watched_left == 0 && s.receipts.len() >= receipts_expected;
    if !doctor.wait_until(Instant::now() + ARRIVAL_LIMIT, complete).await {
        eprintln!("warning: not everything reached the cloud in time");
    }
    let last = doctor.seen.lock().ok().and_then(|s| {
        let m = s.messages.values().map(|a| a.at).max();
        let r = s.receipts.values().map(|a| a.at).max();
        m.max(r)
    });
    sleep(SETTLE).await;
    let b1 = Bytes::read(&site.emu);
    let secs = last.map_or(0.0, |l| l.saturating_duration_since(measured_from).as_secs_f64());
    let batches = Batches::parse(&tail.new_lines());
    let r = {
        let s = doctor.seen.lock().map_err(|_| anyhow::anyhow!("doctor state poisoned"))?;
        MixResult {
            mode,
            messages: spec.messages,
            emergencies: village.emergencies(),
            phones: phones.len(),
            posts: n_posts,
            messages_arrived: s.watch.len() - s.watched_left,
            receipts_expected,
            receipts_arrived: s.receipts.len(),
            bytes: b1.since(&b0),
            connect_bytes,
            send_json,
            receipt_json: s.receipts.values().map(|a| a.json_len as u64).sum(),
            delivered_json: s.watch.iter().filter_map(|i| s.messages.get(i)).map(|a| a.json_len as u64).sum(),
            batches,
            secs,
        }
    };
    drop(phones);
    drop(doctor);
    site.stop_relay().await;
    let _ = cloud.kill9().await;
    if spec.keep {
        eprintln!("    kept {}", site.root.display());
    } else {
        let _ = std::fs::remove_dir_all(&site.root);
    }
    eprintln!(
        "    {}: {} msgs + {} receipts arrived ({} expected); {} B up ({:.1} B/msg, {:.1} B/entry), {} B down; JSON {:.2}× ({} batches)",
        mode.label(),
        r.messages_arrived,
        r.receipts_arrived,
        r.receipts_expected,
        r.bytes.up,
        r.per_message(),
        r.per_entry(),
        r.bytes.down,
        r.json_ratio(),
        r.batches.normal + r.batches.emergency,
    );
    Ok(r)
}
