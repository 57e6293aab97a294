//! The people at both ends of the uplink: health workers' phones on the hub and a doctor's
//! browser on the cloud, each one task owning its WebSocket (protocol v1, raw JSON).
//!
//! * [`Phone`]: a village device driven by commands (send a frame, ack, read, sync). It
//!   remembers the doctor's posts it received (id → cursor) so the benchmark can make it
//!   ack and read them at chosen points, which is what sends `delivered` and `read`
//!   receipts up the link.
//! * [`Doctor`]: a device on the cloud that posts messages and timestamps every `message`
//!   and `receipt` frame the moment it is read: the arrival clock of every uplink
//!   measurement.
//! * [`fill`]: many `send` frames from several phones, pipelined, as fast as the hub
//!   acknowledges them — how a backlog is built.
//!
//! Nothing here interprets timings; the scenarios do.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use outpost_shared::uplink::batch::WireMessage;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The parts of a server frame the benchmark looks at; serde skips the rest unparsed.
#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    state: Option<&'a str>,
    #[serde(default, borrow)]
    by: Option<&'a str>,
    #[serde(default, borrow)]
    msg: Option<InMsg<'a>>,
}

#[derive(Deserialize)]
struct InMsg<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    room: &'a str,
    #[serde(borrow)]
    from: &'a str,
}

fn uuid_of(s: &str) -> Option<u128> {
    uuid::Uuid::parse_str(s).ok().map(|u| u.as_u128())
}

/// Connects and signs in; returns the socket after `welcome`.
pub async fn connect(url: &str, token: &str, device: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("{device}: connecting {url}"))?;
    let hello = json!({"v": 1, "type": "hello", "token": token, "device": device, "cursor": null, "epoch": null});
    ws.send(Message::text(hello.to_string())).await?;
    let deadline = Instant::now() + outpost_tests::EVENT_TIMEOUT;
    loop {
        let m = timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("{device}: no welcome in time"))?
            .with_context(|| format!("{device}: closed before welcome"))??;
        if let Message::Text(t) = m {
            let f: In<'_> = serde_json::from_str(t.as_str())?;
            match f.ty {
                "welcome" => return Ok(ws),
                "error" => bail!("{device}: hello refused: {}", t.as_str()),
                _ => {}
            }
        }
    }
}

/// The `send` frame a phone writes for a corpus message, with a fresh id and the phone's
/// own `seq`. Returns (id, frame text).
pub fn send_frame(m: &WireMessage, seq: u64) -> anyhow::Result<(u128, String)> {
    let id = uuid::Uuid::now_v7();
    let body = RawValue::from_string(m.body.clone()).context("corpus body is not JSON")?;
    let frame = json!({"v": 1, "type": "send", "msg": {
        "id": id.to_string(), "room": m.room, "kind": m.kind, "priority": m.priority, "body": body, "seq": seq,
    }});
    Ok((id.as_u128(), frame.to_string()))
}

enum PhoneCmd {
    Send(String),
    AckRead { post: u128 },
    Sync(oneshot::Sender<()>),
}

/// What a phone has seen, shared with the benchmark.
#[derive(Debug, Default)]
pub struct PhoneSeen {
    /// Doctor's posts received: id → (cursor, room).
    pub posts: HashMap<u128, (u64, String)>,
    pub sent: u64,
    pub stored: u64,
    pub errors: Vec<String>,
}

/// A village phone on the hub.
pub struct Phone {
    tx: mpsc::Sender<PhoneCmd>,
    pub seen: Arc<Mutex<PhoneSeen>>,
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Phone {
    pub async fn start(url: &str, token: &str, device: &str) -> anyhow::Result<Self> {
        let ws = connect(url, token, device).await?;
        let (tx, rx) = mpsc::channel(4096);
        let seen: Arc<Mutex<PhoneSeen>> = Arc::default();
        let task = tokio::spawn(phone_task(ws, rx, seen.clone()));
        Ok(Self { tx, seen, name: device.to_owned(), task })
    }

    pub async fn send(&self, frame: String) -> anyhow::Result<()> {
        self.tx.send(PhoneCmd::Send(frame)).await.map_err(|_| anyhow::anyhow!("{}: phone task ended", self.name))
    }

    /// Acks the doctor's post `post` (by its cursor) and reads it: one `delivered` and one
    /// `read` receipt for the doctor. A post this phone has not received is skipped.
    pub async fn ack_read(&self, post: u128) -> anyhow::Result<()> {
        self.tx.send(PhoneCmd::AckRead { post }).await.map_err(|_| anyhow::anyhow!("{}: phone task ended", self.name))
    }

    /// Returns once the hub has processed every frame sent before (a ping round trip)
    /// and answered every `send` with `stored`.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + outpost_tests::EVENT_TIMEOUT;
        loop {
            let (tx, rx) = oneshot::channel();
            self.tx.send(PhoneCmd::Sync(tx)).await.map_err(|_| anyhow::anyhow!("{}: phone task ended", self.name))?;
            timeout_at(deadline, rx).await.with_context(|| format!("{}: no pong", self.name))??;
            let (sent, stored) = self.seen.lock().map(|s| (s.sent, s.stored)).unwrap_or((0, 0));
            if stored >= sent {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn posts(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.posts.len())
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn phone_task(mut ws: Ws, mut rx: mpsc::Receiver<PhoneCmd>, seen: Arc<Mutex<PhoneSeen>>) {
    let mut pongs: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let r = match cmd {
                    PhoneCmd::Send(f) => {
                        if let Ok(mut s) = seen.lock() {
                            s.sent += 1;
                        }
                        ws.send(Message::text(f)).await
                    }
                    PhoneCmd::AckRead { post } => {
                        let p = seen.lock().ok().and_then(|s| s.posts.get(&post).cloned());
                        match p {
                            Some((cursor, room)) => {
                                let id = uuid::Uuid::from_u128(post).to_string();
                                let ack = json!({"v": 1, "type": "ack", "cursor": cursor}).to_string();
                                let read = json!({"v": 1, "type": "read", "room": room, "id": id}).to_string();
                                match ws.feed(Message::text(ack)).await {
                                    Ok(()) => ws.send(Message::text(read)).await,
                                    Err(e) => Err(e),
                                }
                            }
                            None => Ok(()),
                        }
                    }
                    PhoneCmd::Sync(done) => {
                        pongs.push(done);
                        ws.send(Message::text(r#"{"v":1,"type":"ping"}"#)).await
                    }
                };
                if r.is_err() {
                    return;
                }
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                let Message::Text(t) = m else { continue };
                let Ok(f) = serde_json::from_str::<In<'_>>(t.as_str()) else { continue };
                match f.ty {
                    "stored" => {
                        if let Ok(mut s) = seen.lock() {
                            s.stored += 1;
                        }
                    }
                    "error" => {
                        if let Ok(mut s) = seen.lock() {
                            s.stored += 1;
                            s.errors.push(t.as_str().to_owned());
                        }
                    }
                    "pong" if !pongs.is_empty() => {
                        let _ = pongs.remove(0).send(());
                    }
                    "message" => {
                        if let (Some(m), Some(c)) = (f.msg, f.cursor)
                            && m.from.starts_with("dr-")
                            && let Some(id) = uuid_of(m.id)
                            && let Ok(mut s) = seen.lock()
                        {
                            s.posts.insert(id, (c, m.room.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One arrival at the doctor's device.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// Length of the frame's JSON text (the as-delivered size of the entry).
    pub json_len: usize,
}

/// Everything the doctor's device has received, by id.
#[derive(Debug, Default)]
pub struct DoctorSeen {
    /// `message` frames from anyone but the doctor, first arrival of each id.
    pub messages: HashMap<u128, Arrival>,
    /// `delivered` and `read` receipts about the doctor's posts: (id, state, by).
    pub receipts: HashMap<(u128, String, String), Arrival>,
    pub duplicates: u64,
    /// Ids whose arrival the benchmark waits for; `notify` fires when the last one came.
    pub watch: HashSet<u128>,
    pub watched_left: usize,
    pub watched_done_at: Option<Instant>,
    pub first_watched_at: Option<Instant>,
}

impl DoctorSeen {
    /// Waits for these ids (clears earlier ones; counts those already here).
    pub fn set_watch(&mut self, ids: HashSet<u128>) {
        let here = ids.iter().filter(|i| self.messages.contains_key(i)).count();
        self.watched_left = ids.len() - here;
        self.watch = ids;
        self.watched_done_at = None;
        self.first_watched_at = None;
    }
}

/// A doctor's browser on the cloud.
pub struct Doctor {
    ws_tx: mpsc::Sender<String>,
    pub seen: Arc<Mutex<DoctorSeen>>,
    pub changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Doctor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Doctor {
    /// Connects `user` (who must start with `dr-`) to the cloud's `url`. The record of
    /// arrivals can be carried over from an earlier connection (`seen`).
    pub async fn start(
        url: &str,
        token: &str,
        device: &str,
        seen: Option<Arc<Mutex<DoctorSeen>>>,
    ) -> anyhow::Result<Self> {
        let ws = connect(url, token, device).await?;
        let (ws_tx, rx) = mpsc::channel(1024);
        let seen = seen.unwrap_or_default();
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(doctor_task(ws, rx, seen.clone(), changed.clone()));
        Ok(Self { ws_tx, seen, changed, task })
    }

    /// Posts a chat message to `room`; returns its id.
    pub async fn post(&self, room: &str, text: &str, seq: u64) -> anyhow::Result<u128> {
        let id = uuid::Uuid::now_v7();
        let frame = json!({"v": 1, "type": "send", "msg": {
            "id": id.to_string(), "room": room, "kind": "chat", "priority": "normal",
            "body": {"text": text}, "seq": seq,
        }});
        self.ws_tx.send(frame.to_string()).await.map_err(|_| anyhow::anyhow!("doctor task ended"))?;
        Ok(id.as_u128())
    }

    /// Waits until `done` holds over what the doctor has seen, or `deadline`.
    pub async fn wait_until(&self, deadline: Instant, done: impl Fn(&DoctorSeen) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            if self.seen.lock().is_ok_and(|s| done(&s)) {
                return true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                return self.seen.lock().is_ok_and(|s| done(&s));
            }
        }
    }
}

async fn doctor_task(mut ws: Ws, mut rx: mpsc::Receiver<String>, seen: Arc<Mutex<DoctorSeen>>, changed: Arc<Notify>) {
    loop {
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { return };
                if ws.send(Message::text(f)).await.is_err() {
                    return;
                }
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                // The clock is read before parsing, so parsing costs never count as link time.
                let at = Instant::now();
                let Message::Text(t) = m else { continue };
                let Ok(f) = serde_json::from_str::<In<'_>>(t.as_str()) else { continue };
                let arrival = Arrival { at, json_len: t.len() };
                let Ok(mut s) = seen.lock() else { return };
                match f.ty {
                    "message" => {
                        let Some(m) = f.msg else { continue };
                        let Some(id) = uuid_of(m.id) else { continue };
                        if m.from.starts_with("dr-") {
                            continue;
                        }
                        if s.messages.insert(id, arrival).is_some() {
                            s.duplicates += 1;
                        } else if s.watch.contains(&id) {
                            s.first_watched_at.get_or_insert(at);
                            s.watched_left = s.watched_left.saturating_sub(1);
                            if s.watched_left == 0 {
                                s.watched_done_at = Some(at);
                            }
                        }
                    }
                    "receipt" => {
                        let (Some(id), Some(state), Some(by)) = (f.id.and_then(uuid_of), f.state, f.by) else {
                            continue;
                        };
                        if state == "delivered" || state == "read" {
                            s.receipts.entry((id, state.to_owned(), by.to_owned())).or_insert(arrival);
                        }
                    }
                    _ => continue,
                }
                drop(s);
                changed.notify_waiters();
            }
        }
    }
}

/// `village`'s messages as each person's phone will send them (`tokens` in the order of
/// `village.people`), in corpus order: the phones' plans, the ids to watch for, and the
/// bytes of JSON the phones send.
pub fn plans(
    village: &super::world::Village,
    tokens: &[String],
) -> anyhow::Result<(Vec<FillPlan>, HashSet<u128>, u64)> {
    let mut plans: Vec<FillPlan> = village
        .people
        .iter()
        .zip(tokens)
        .map(|((_, device), token)| FillPlan { token: token.clone(), device: device.clone(), frames: Vec::new() })
        .collect();
    let index: HashMap<&str, usize> = village.people.iter().enumerate().map(|(i, (u, _))| (u.as_str(), i)).collect();
    let mut ids = HashSet::with_capacity(village.messages.len());
    let mut json_bytes = 0u64;
    for m in &village.messages {
        let p = &mut plans[index[m.from.as_str()]];
        let (id, frame) = send_frame(m, p.frames.len() as u64 + 1)?;
        json_bytes += frame.len() as u64;
        ids.insert(id);
        p.frames.push(frame);
    }
    Ok((plans, ids, json_bytes))
}

/// One phone's share of a backlog: its token, device name and `send` frames.
pub struct FillPlan {
    pub token: String,
    pub device: String,
    pub frames: Vec<String>,
}

/// Sends `window` sends awaiting `stored` per phone at most.
const FILL_WINDOW: usize = 256;
/// Phones sending at once. Every phone is in every room, so each message is also
/// delivered live to the other phones connected at the time; a few at once keeps that
/// fan-out (which the hub pays while the backlog is built, not while it drains) small.
const FILL_PARALLEL: usize = 4;

/// Sends every plan's frames through its phone, pipelined, and returns once every one
/// was answered. Errors on any refused send.
pub async fn fill(url: &str, plans: Vec<FillPlan>) -> anyhow::Result<u64> {
    let url: Arc<str> = url.into();
    let mut pending = plans.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    let mut stored = 0u64;
    loop {
        while tasks.len() < FILL_PARALLEL {
            let Some(p) = pending.next() else { break };
            let url = url.clone();
            tasks.spawn(async move { fill_one(&url, p).await });
        }
        match tasks.join_next().await {
            Some(r) => stored += r??,
            None => return Ok(stored),
        }
    }
}

async fn fill_one(url: &str, plan: FillPlan) -> anyhow::Result<u64> {
    let mut ws = connect(url, &plan.token, &plan.device).await?;
    let total = plan.frames.len();
    let mut frames = plan.frames.into_iter();
    let (mut sent, mut answered) = (0usize, 0usize);
    let deadline_step = outpost_tests::EVENT_TIMEOUT;
    while answered < total {
        if sent < total && sent - answered < FILL_WINDOW {
            while sent < total && sent - answered < FILL_WINDOW {
                if let Some(f) = frames.next() {
                    ws.feed(Message::text(f)).await?;
                }
                sent += 1;
            }
            ws.flush().await?;
        }
        let m = timeout_at(Instant::now() + deadline_step, ws.next())
            .await
            .with_context(|| format!("{}: no answer in time ({answered} of {total})", plan.device))?
            .with_context(|| format!("{}: connection closed", plan.device))??;
        if let Message::Text(t) = m {
            let f: In<'_> = serde_json::from_str(t.as_str())?;
            match f.ty {
                "stored" => answered += 1,
                "error" => bail!("{}: send refused: {}", plan.device, t.as_str()),
                _ => {}
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(answered as u64)
}
