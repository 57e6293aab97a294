//! The load generator: many WebSocket devices speaking protocol v1 to one relay.
//!
//! Each device is one task owning its socket, so a slow device never delays another's
//! measurements and no lock sits on the hot path; each keeps its own histograms, merged
//! when the phase ends. Two ways to drive load:
//!
//! * **closed loop** ([`closed_loop`]): every device keeps `window` sends awaiting their
//!   `stored` frame, sending the next as soon as one is acked. With enough devices and a
//!   big enough window the hub's writer always has a full queue, so acked messages per
//!   second is its durable ingest capacity. Latency here is mostly queueing (Little's law:
//!   in flight ÷ rate) and is reported only as a by-product.
//! * **open loop** ([`open_loop`]): every device sends on a fixed schedule regardless of
//!   answers, together a steady total rate. Latency is measured from the *scheduled* send
//!   time, so a stall anywhere (including in this generator) shows up instead of quietly
//!   lowering the rate; how late the generator itself was is recorded separately.
//!
//! Message bodies carry the scheduled send time (nanoseconds since this process's
//! [`base`]) so a receiving device in the same process can measure delivery latency.
//! Only messages sent inside the measurement window are counted; the warm-up before it and
//! the drain after it are not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{new_hist, record};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Handshakes in progress at once: enough to connect hundreds of devices in about a second
/// without a thundering herd on the relay's accept loop.
const CONNECT_PARALLEL: usize = 32;

/// Filler that makes a message body about 100 bytes of JSON, a typical short chat line.
const BODY_PAD: &str = "a short status line from the field, padded to a typical chat size.";

/// The text every generated message carries (the hub's and the peers' alike): the
/// 100-byte line, unless [`set_body_bytes`] made it longer.
pub fn body_text() -> &'static str {
    BODY_TEXT.get().map_or(BODY_PAD, String::as_str)
}

static BODY_TEXT: OnceLock<String> = OnceLock::new();

/// A body as the generators write it (for its length).
pub fn sample_body() -> String {
    format!(r#"{{"t":{},"c":{},"text":"{}"}}"#, u64::MAX / 1000, 99, body_text())
}

/// Makes every generated body about `bytes` of JSON (the SD-card wear phase measures
/// 1 KiB messages); call once, before any load runs.
pub fn set_body_bytes(bytes: usize) {
    // The body's other fields (`t`, `c` and the JSON around them) take about 35 bytes.
    let len = bytes.saturating_sub(35).max(BODY_PAD.len());
    let text: String = BODY_PAD.chars().cycle().take(len).collect();
    let _ = BODY_TEXT.set(text);
}

/// The instant all body timestamps count from.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds, not microseconds: the receiver rebuilds the exact instant, so a message
/// scheduled exactly at the window's edge is counted on both sides alike.
fn nanos_since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_nanos() as u64
}

/// One connected, signed-in device.
pub struct Conn {
    ws: Ws,
    idx: usize,
    room: Arc<str>,
    seq: u64,
}

/// Connects and signs in devices `range` (token `i` for device `i`), in order.
pub async fn connect_all(
    url: &str,
    tokens: &[String],
    range: std::ops::Range<usize>,
    room_of: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Conn>> {
    if tokens.len() < range.end {
        bail!("{} devices need as many tokens; only {} issued", range.end, tokens.len());
    }
    futures_util::stream::iter(range)
        .map(|i| connect_one(url, &tokens[i], i, room_of(i)))
        .buffered(CONNECT_PARALLEL)
        .try_collect()
        .await
}

async fn connect_one(url: &str, token: &str, idx: usize, room: String) -> anyhow::Result<Conn> {
    // Nagle off, as browsers do: a pipelining client must not wait for the peer's ACKs.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("device {idx}: connecting {url}"))?;
    let hello = serde_json::json!({
        "v": 1, "type": "hello", "token": token, "device": format!("d{idx:04}"),
        "cursor": null, "epoch": null,
    });
    ws.send(Message::text(hello.to_string())).await?;
    let deadline = Instant::now() + outpost_tests::EVENT_TIMEOUT;
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("device {idx}: no welcome in time"))?
            .with_context(|| format!("device {idx}: closed before welcome"))??;
        if let Message::Text(t) = msg {
            let f: InFrame<'_> = serde_json::from_str(t.as_str())?;
            match f.ty {
                "welcome" => break,
                "error" => bail!("device {idx}: hello refused: {}", t.as_str()),
                _ => {}
            }
        }
    }
    Ok(Conn { ws, idx, room: room.into(), seq: 0 })
}

/// The parts of a server frame the generator looks at; serde skips the rest unparsed.
#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
    #[serde(default, borrow)]
    msg: Option<InMsg<'a>>,
}

#[derive(Deserialize)]
struct InMsg<'a> {
    #[serde(borrow)]
    priority: &'a str,
    body: InBody,
}

#[derive(Deserialize)]
struct InBody {
    t: u64,
}

/// The phase's clock: sending starts at `start`, is measured in `from..to`, stops at
/// `to`; devices keep reading until `linger`, and give up on missing answers at `hard_end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub from: Instant,
    pub to: Instant,
    pub linger: Instant,
    pub hard_end: Instant,
}

impl Window {
    pub fn new(warmup: Duration, measure: Duration, drain: Duration) -> Self {
        // A short lead so every task is spawned and waiting before the first send.
        let start = Instant::now() + Duration::from_millis(200);
        let from = start + warmup;
        let to = from + measure;
        let linger = to + drain;
        Self { start, from, to, linger, hard_end: linger + Duration::from_secs(10) }
    }

    fn measured(&self, t: Instant) -> bool {
        t >= self.from && t < self.to
    }

    pub fn secs(&self) -> f64 {
        (self.to - self.from).as_secs_f64()
    }
}

/// What the devices of one phase observed, merged.
pub struct Observed {
    /// Send → `stored`, normal priority (open loop: from the scheduled time).
    pub ack: Histogram<u64>,
    pub ack_emergency: Histogram<u64>,
    /// Scheduled send → `message` frame at another device.
    pub delivery: Histogram<u64>,
    pub delivery_emergency: Histogram<u64>,
    /// How late the generator sent relative to its schedule (open loop only).
    pub send_lag: Histogram<u64>,
    /// `stored` frames received inside the window (closed-loop throughput).
    pub acked_in_window: u64,
    pub sent_in_window: u64,
    pub emergency_sent_in_window: u64,
    /// Deliveries the topology implies for the messages sent in the window.
    pub deliveries_expected: u64,
    /// Sends still unanswered when the devices gave up.
    pub unanswered: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Observed {
    fn new() -> Self {
        Self {
            ack: new_hist(),
            ack_emergency: new_hist(),
            delivery: new_hist(),
            delivery_emergency: new_hist(),
            send_lag: new_hist(),
            acked_in_window: 0,
            sent_in_window: 0,
            emergency_sent_in_window: 0,
            deliveries_expected: 0,
            unanswered: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, o: Self) {
        for (a, b) in [
            (&mut self.ack, &o.ack),
            (&mut self.ack_emergency, &o.ack_emergency),
            (&mut self.delivery, &o.delivery),
            (&mut self.delivery_emergency, &o.delivery_emergency),
            (&mut self.send_lag, &o.send_lag),
        ] {
            // Same bounds everywhere, so adding cannot fail; a failure would only lose data.
            let _ = a.add(b);
        }
        self.acked_in_window += o.acked_in_window;
        self.sent_in_window += o.sent_in_window;
        self.emergency_sent_in_window += o.emergency_sent_in_window;
        self.deliveries_expected += o.deliveries_expected;
        self.unanswered += o.unanswered;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn deliveries(&self) -> u64 {
        self.delivery.len() + self.delivery_emergency.len()
    }
}

/// One device's bookkeeping while it runs.
struct Device {
    conn: Conn,
    window: Window,
    recipients: u64,
    /// Send time (scheduled in open loop) and emergency flag of every unanswered send.
    inflight: HashMap<u128, (Instant, bool)>,
    obs: Observed,
}

impl Device {
    fn new(conn: Conn, window: Window, recipients: usize) -> Self {
        Self { conn, window, recipients: recipients as u64, inflight: HashMap::new(), obs: Observed::new() }
    }

    /// Queues one `send` frame (not flushed) stamped with `at`.
    async fn feed_send(&mut self, at: Instant, emergency: bool) -> anyhow::Result<()> {
        let c = &mut self.conn;
        c.seq += 1;
        let id = uuid::Uuid::now_v7();
        let priority = if emergency { "emergency" } else { "normal" };
        let frame = format!(
            r#"{{"v":1,"type":"send","msg":{{"id":"{id}","room":"{room}","kind":"chat","priority":"{priority}","body":{{"t":{t},"c":{c},"text":"{text}"}},"seq":{seq}}}}}"#,
            text = body_text(),
            room = c.room,
            t = nanos_since_base(at),
            c = c.idx,
            seq = c.seq,
        );
        c.ws.feed(Message::text(frame)).await?;
        self.inflight.insert(id.as_u128(), (at, emergency));
        if self.window.measured(at) {
            self.obs.sent_in_window += 1;
            self.obs.deliveries_expected += self.recipients;
            if emergency {
                self.obs.emergency_sent_in_window += 1;
            }
        }
        Ok(())
    }

    fn handle(&mut self, msg: Message) -> anyhow::Result<()> {
        let Message::Text(text) = msg else {
            return Ok(());
        };
        let now = Instant::now();
        let f: InFrame<'_> =
            serde_json::from_str(text.as_str()).with_context(|| format!("unreadable frame: {}", text.as_str()))?;
        match f.ty {
            "stored" | "error" => {
                if f.ty == "error" {
                    let code = f.code.unwrap_or("unknown").to_owned();
                    *self.obs.errors.entry(code).or_default() += 1;
                }
                let sent =
                    f.id.and_then(|id| uuid::Uuid::parse_str(id).ok())
                        .and_then(|id| self.inflight.remove(&id.as_u128()));
                if let (Some((at, emergency)), "stored") = (sent, f.ty) {
                    if self.window.measured(at) {
                        let h = if emergency { &mut self.obs.ack_emergency } else { &mut self.obs.ack };
                        record(h, (now - at).as_micros() as u64);
                    }
                    if self.window.measured(now) {
                        self.obs.acked_in_window += 1;
                    }
                }
            }
            "message" => {
                if let Some(m) = f.msg {
                    let at = base() + Duration::from_nanos(m.body.t);
                    if self.window.measured(at) {
                        let h = if m.priority == "emergency" {
                            &mut self.obs.delivery_emergency
                        } else {
                            &mut self.obs.delivery
                        };
                        record(h, now.saturating_duration_since(at).as_micros() as u64);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Handles one frame, then every frame already buffered, without waiting.
    async fn read_burst(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        let first = match timeout_at(deadline, self.conn.ws.next()).await {
            Err(_) => return Ok(false),
            Ok(None) => bail!("device {}: the relay closed the connection", self.conn.idx),
            Ok(Some(m)) => m?,
        };
        self.handle(first)?;
        while let Some(Some(m)) = self.conn.ws.next().now_or_never() {
            self.handle(m?)?;
        }
        Ok(true)
    }

    fn finish(mut self) -> Observed {
        self.obs.unanswered = self.inflight.len() as u64;
        self.obs
    }
}

/// Keeps `window` sends unanswered per device until `w.to`, then collects the answers.
async fn closed_loop_device(conn: Conn, w: Window, window: usize, recipients: usize) -> anyhow::Result<Observed> {
    let mut d = Device::new(conn, w, recipients);
    sleep_until(w.start).await;
    loop {
        let now = Instant::now();
        if now < w.to {
            if d.inflight.len() < window {
                while d.inflight.len() < window {
                    d.feed_send(Instant::now(), false).await?;
                }
                d.conn.ws.flush().await?;
            }
        } else if d.inflight.is_empty() || now >= w.hard_end {
            break;
        }
        // Before `to` a full window guarantees an answer is coming; after it, only the
        // unanswered remain, and `hard_end` bounds the wait for a relay that lost them.
        if !d.read_burst(w.hard_end).await? {
            break;
        }
    }
    Ok(d.finish())
}

/// A tiny deterministic generator (xorshift64*) so runs mix emergencies the same way.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends every `period` from `w.start + phase` until `w.to`, whatever the answers.
async fn open_loop_device(
    conn: Conn,
    w: Window,
    period: Duration,
    phase: Duration,
    emergency_share: f64,
    recipients: usize,
) -> anyhow::Result<Observed> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (conn.idx as u64 + 1).wrapping_mul(0x1000_0001));
    let mut d = Device::new(conn, w, recipients);
    let mut due = w.start + phase;
    loop {
        let now = Instant::now();
        if now >= w.hard_end || (now >= w.linger && d.inflight.is_empty()) {
            break;
        }
        // After the schedule ends: wake at `linger` to leave, or, with answers still
        // missing, only at `hard_end` so the reads below are not starved.
        let wake = if due < w.to {
            due
        } else if now < w.linger {
            w.linger
        } else {
            w.hard_end
        };
        tokio::select! {
            // Sending on time comes first: a generator that reads while it should be
            // sending would report its own lateness as the hub's latency.
            biased;
            () = sleep_until(wake) => {
                let mut fed = false;
                while due < w.to && due <= Instant::now() {
                    if w.measured(due) {
                        record(&mut d.obs.send_lag, (Instant::now() - due).as_micros() as u64);
                    }
                    let emergency = rng.unit() < emergency_share;
                    d.feed_send(due, emergency).await?;
                    due += period;
                    fed = true;
                }
                if fed {
                    d.conn.ws.flush().await?;
                }
            }
            r = d.read_burst(w.hard_end) => {
                if !r? {
                    break;
                }
            }
        }
    }
    Ok(d.finish())
}

/// How a phase drives its devices.
#[derive(Debug, Clone, Copy)]
pub enum Drive {
    /// `window` unanswered sends per device, as fast as the hub answers.
    Closed { window: usize },
    /// `rate` messages/s in total, evenly spread; `emergency_rate` of them emergencies.
    Open { rate: f64, emergency_rate: f64 },
}

/// Runs one phase on already-connected devices and merges what they saw.
pub async fn run(
    conns: Vec<Conn>,
    drive: Drive,
    w: Window,
    recipients: impl Fn(usize) -> usize,
) -> anyhow::Result<Observed> {
    let n = conns.len().max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let r = recipients(conn.idx);
        match drive {
            Drive::Closed { window } => {
                tasks.spawn(closed_loop_device(conn, w, window, r));
            }
            Drive::Open { rate, emergency_rate } => {
                let period = Duration::from_secs_f64(n as f64 / rate);
                let phase = period.mul_f64(conn.idx as f64 / n as f64);
                let share = (emergency_rate / rate).clamp(0.0, 1.0);
                tasks.spawn(open_loop_device(conn, w, period, phase, share, r));
            }
        }
    }
    let mut all = Observed::new();
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(o)) => all.merge(o),
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        eprintln!("warning: {} device(s) failed; first: {}", failures.len(), failures[0]);
        *all.errors.entry("device_failed".into()).or_default() += failures.len() as u64;
    }
    Ok(all)
}

/// Closes devices politely so the relay's sessions end cleanly before the next phase.
pub async fn close_all(conns: Vec<Conn>) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        tasks.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.ws.close(None)).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}
