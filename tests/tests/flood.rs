//! A 10,000-frame garbage flood leaves the hub serving other devices with bounded memory.
//!
//! Attackers send 10,000 hostile frames in total, from several connections at once:
//! invalid JSON, valid JSON of the wrong shape, unknown types, wrong versions, binary
//! frames, frames just over `limits.max_frame_bytes`, deeply nested JSON, `history` with
//! absurd limits, a second `hello`, garbage before `hello`, `send` before `hello`, and
//! text frames that are not UTF-8. Meanwhile two devices in a room keep exchanging
//! messages. Asserted: each legitimate send gets exactly one `stored` and reaches the
//! other device exactly once, during and after the flood; every hostile frame gets the
//! answer docs/protocol.md gives for it (counted per error code) or the connection ends
//! as the document says; and the hub's peak resident memory stays within a bound of its
//! size before the flood.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use outpost_tests::client::chat;
use outpost_tests::{Device, EVENT_TIMEOUT, World};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The hub's default `limits.max_frame_bytes` (256 KiB); the test runs with defaults.
const MAX_FRAME: usize = 256 << 10;
/// Signed-in attackers, each on its own connection, all flooding at once.
const SIGNED_IN_ATTACKERS: usize = 4;
/// Frames each signed-in attacker sends (see [`signed_in_garbage`]).
const PER_SIGNED_IN: usize = 2_200;
/// Connections that send garbage without ever saying `hello`, and frames on each (few
/// enough to be answered well inside `limits.hello_timeout_secs`).
const PRE_HELLO_ATTACKERS: usize = 4;
const PER_PRE_HELLO: usize = 250;
/// Connections that each send one `send` before `hello` (closed with 4001).
const SEND_BEFORE_HELLO: usize = 100;
/// Connections that each send one text frame that is not UTF-8 (dropped).
const INVALID_UTF8: usize = 100;
const TOTAL: usize =
    SIGNED_IN_ATTACKERS * PER_SIGNED_IN + PRE_HELLO_ATTACKERS * PER_PRE_HELLO + SEND_BEFORE_HELLO + INVALID_UTF8;

/// Peak RSS growth allowed over the value before the flood. What the hub may hold for the
/// flood: per attacker connection a read buffer that grew to a frame of up to twice
/// `max_frame_bytes` plus that message being assembled (≈1 MiB), and a write buffer of
/// error frames waiting for a slow reader (bounded by TCP back-pressure, small). With 8
/// attackers open at once that is ≈8 MiB; the rest is allocator slack (glibc keeps freed
/// blocks per thread arena: 2 cores → several arenas). 32 MiB is 4× the
/// estimate: a leak per frame (10,000 frames, 50 MB of oversized and nested ones) or an
/// unbounded queue would blow it, ordinary allocator behaviour does not.
const RSS_GROWTH_BOUND_KIB: u64 = 32 << 10;

/// What docs/protocol.md says the hub answers to one hostile frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Answer {
    /// An `error` frame with this code; the connection stays open.
    Error(&'static str),
    /// A `history` frame (limits are clamped, not refused).
    History,
}

fn text(s: impl Into<String>) -> Message {
    Message::Text(s.into().into())
}

/// `[[[…]]]` nested `depth` deep: far past serde_json's recursion limit (128).
fn nested(depth: usize) -> String {
    let mut s = "[".repeat(depth);
    s.push_str(&"]".repeat(depth));
    s
}

/// A text frame of `len` bytes that is valid JSON apart from its size.
fn oversized(len: usize) -> Message {
    let pad = len - r#"{"v":1,"type":"ping","pad":""}"#.len();
    text(format!(r#"{{"v":1,"type":"ping","pad":"{}"}}"#, "x".repeat(pad)))
}

/// The mix each signed-in attacker sends, with the answer the protocol gives each frame.
fn signed_in_garbage(k: usize) -> Vec<(Message, Answer)> {
    use Answer::{Error, History};
    let id = || outpost_tests::new_id();
    let mut out: Vec<(Message, Answer)> = Vec::with_capacity(PER_SIGNED_IN);
    let mut add = |n: usize, f: &dyn Fn(usize) -> (Message, Answer)| out.extend((0..n).map(f));
    // Not JSON, or not an object with a string `type`.
    add(350, &|i| {
        let t = match i % 7 {
            0 => "this is not json".to_owned(),
            1 => "{\"v\":1,\"type\":\"send\"".to_owned(),
            2 => "[1,2,3]".to_owned(),
            3 => String::new(),
            4 => "\u{0}\u{1}\u{2}".to_owned(),
            5 => format!("{{\"v\":1,\"type\":{i}}}"),
            _ => "null".to_owned(),
        };
        (text(t), Error("bad_frame"))
    });
    // Known types, fields of the wrong type or missing.
    add(400, &|i| {
        let v = match i % 8 {
            0 => json!({"v":1,"type":"ack","cursor":"soon"}),
            1 => json!({"v":1,"type":"send","msg":5}),
            2 => json!({"v":1,"type":"typing","room":7,"active":"yes"}),
            3 => json!({"v":1,"type":"read","room":"clinic","id":"not-a-uuid"}),
            4 => json!({"v":1,"type":"ack","cursor":-1}),
            5 => json!({"v":1,"type":"send","msg":{"id":id(),"room":"bad room!","kind":"chat","body":1,"seq":1}}),
            6 => json!({"v":1,"type":"join","room":["clinic"]}),
            _ => json!({"v":1,"type":"presence","status":"offline"}),
        };
        (text(v.to_string()), Error("bad_frame"))
    });
    add(300, &|i| {
        let ty = ["teleport", "media_chunk", "", "SEND", "hello2"][i % 5];
        (text(json!({"v":1,"type":ty}).to_string()), Error("bad_frame"))
    });
    add(200, &|i| {
        let v = [json!(2), json!("1"), json!(1.0), json!(-1), json!(u64::MAX)][i % 5].clone();
        (text(json!({"v":v,"type":"ping"}).to_string()), Error("unsupported_version"))
    });
    add(200, &|i| (Message::Binary(vec![0xde, 0xad, (i % 256) as u8].into()), Error("bad_frame")));
    // Deeply nested JSON, mostly 10,000 deep (20 KB), some 120,000 deep (240 KB, just
    // under the frame limit). As a whole frame it is not an object: `bad_frame`. As a
    // message body it is valid JSON that serde_json's recursion limit does not catch (the
    // body is kept raw): `too_large` for nesting past `limits.max_body_depth` (64), or for
    // size past `limits.max_body_bytes` (the 240 KB ones); never stored and fanned out.
    add(200, &|i| {
        let depth = if i % 20 == 1 { 120_000 } else { 10_000 };
        if i % 2 == 0 {
            return (text(nested(depth)), Error("bad_frame"));
        }
        let t = format!(
            r#"{{"v":1,"type":"send","msg":{{"id":"{}","room":"clinic","kind":"chat","body":{},"seq":1}}}}"#,
            id(),
            nested(depth)
        );
        (text(t), Error("too_large"))
    });
    // `history` with absurd limits: the largest u32 is clamped to 200 and answered;
    // numbers that are not a u32 are bad frames.
    add(300, &|i| match i % 3 {
        0 => (text(json!({"v":1,"type":"history","room":"clinic","limit":u32::MAX}).to_string()), History),
        1 => (text(json!({"v":1,"type":"history","room":"clinic","limit":1u64 << 40}).to_string()), Error("bad_frame")),
        _ => (text(r#"{"v":1,"type":"history","room":"clinic","limit":1e300}"#), Error("bad_frame")),
    });
    // Just over the frame limit (up to twice it the connection stays open).
    add(50, &|i| (oversized(MAX_FRAME + 1 + i * 97), Error("too_large")));
    add(50, &|_| {
        let hello = json!({"v":1,"type":"hello","token":"x.y.z","device":"again","cursor":null,"epoch":null});
        (text(hello.to_string()), Error("bad_frame"))
    });
    add(150, &|i| {
        let v = json!({"v":1,"type":"send","msg":{"id":id(),"room":"clinic","kind":"chat","body":{"n":i}}});
        (text(v.to_string()), Error("bad_frame"))
    });
    assert_eq!(out.len(), PER_SIGNED_IN);
    // Interleave the kinds so every moment of the flood mixes them; `k` varies the order
    // between attackers.
    let n = out.len();
    let mut mixed: Vec<(Message, Answer)> = Vec::with_capacity(n);
    let mut slots: Vec<Option<(Message, Answer)>> = out.into_iter().map(Some).collect();
    let step = 7 + 2 * k; // coprime with 2,200 for k < 4 (7, 9, 11 are; 13 is)
    let mut j = 0;
    for _ in 0..n {
        while slots[j].is_none() {
            j = (j + 1) % n;
        }
        mixed.extend(slots[j].take());
        j = (j + step) % n;
    }
    mixed
}

/// Garbage before `hello`: each gets an error and the hub keeps waiting for `hello`.
fn pre_hello_garbage() -> Vec<(Message, Answer)> {
    (0..PER_PRE_HELLO)
        .map(|i| match i % 6 {
            0 => (text("not json at all"), Answer::Error("bad_frame")),
            1 => (Message::Binary(vec![1, 2, 3].into()), Answer::Error("bad_frame")),
            2 => (text(json!({"v":1,"type":"teleport"}).to_string()), Answer::Error("bad_frame")),
            3 => (text(json!({"v":7,"type":"hello"}).to_string()), Answer::Error("unsupported_version")),
            4 => (text(nested(10_000)), Answer::Error("bad_frame")),
            _ => (oversized(MAX_FRAME + 1 + i), Answer::Error("too_large")),
        })
        .collect()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> anyhow::Result<Ws> {
    Ok(tokio_tungstenite::connect_async(url).await.with_context(|| format!("connecting {url}"))?.0)
}

/// Next JSON text frame, or None when the connection ended (close frame, EOF or reset).
async fn next_json(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, ws.next()).await.context("the hub went silent")? {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(t.as_str())?)),
            Some(Ok(_)) => {}
        }
    }
}

/// Sends `frames` as fast as the socket takes them while reading the answers; then a
/// `ping` whose `pong` marks the end (the hub answers frames in order). Returns how many
/// of each answer arrived.
async fn flood(ws: Ws, frames: Vec<(Message, Answer)>) -> anyhow::Result<BTreeMap<Answer, usize>> {
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::spawn(async move {
        for (m, _) in frames {
            tx.feed(m).await?;
        }
        tx.send(text(r#"{"type":"ping"}"#)).await?;
        anyhow::Ok(tx)
    });
    let mut got = BTreeMap::new();
    loop {
        let f = match tokio::time::timeout(EVENT_TIMEOUT, rx.next()).await.context("the hub went silent")? {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str())?,
            Some(Ok(Message::Close(c))) => bail!("the hub closed an attacker's connection: {c:?}"),
            None | Some(Err(_)) => bail!("an attacker's connection ended before its pong"),
            Some(Ok(_)) => continue,
        };
        let answer = match f["type"].as_str() {
            Some("pong") => break,
            Some("error") => {
                let code = f["code"].as_str().unwrap_or_default();
                let known = ["bad_frame", "unsupported_version", "too_large", "rate_limited"];
                Answer::Error(known.into_iter().find(|k| *k == code).with_context(|| format!("unexpected {f}"))?)
            }
            Some("history") => Answer::History,
            // Live traffic of the room the attacker is a member of.
            _ => continue,
        };
        *got.entry(answer).or_insert(0) += 1;
    }
    let mut tx = writer.await??;
    let _ = tx.close().await;
    Ok(got)
}

fn tally(frames: &[(Message, Answer)]) -> BTreeMap<Answer, usize> {
    let mut t = BTreeMap::new();
    for (_, a) in frames {
        *t.entry(*a).or_insert(0) += 1;
    }
    t
}

async fn signed_in(w: &World, user: &str, frames: Vec<(Message, Answer)>) -> anyhow::Result<()> {
    let token = w.token(user, "worker", &["clinic"]);
    let mut ws = connect(&w.relay.ws_url()).await?;
    let hello = json!({"v":1,"type":"hello","token":token,"device":user,"cursor":null,"epoch":null});
    ws.send(text(hello.to_string())).await?;
    loop {
        let f = next_json(&mut ws).await?.context("closed before welcome")?;
        if f["type"] == "welcome" {
            break;
        }
    }
    let want = tally(&frames);
    let got = flood(ws, frames).await?;
    ensure!(got == want, "{user}: answers {got:?}, expected {want:?}");
    Ok(())
}

async fn pre_hello(url: String) -> anyhow::Result<()> {
    let frames = pre_hello_garbage();
    let want = tally(&frames);
    let got = flood(connect(&url).await?, frames).await?;
    ensure!(got == want, "before hello: answers {got:?}, expected {want:?}");
    Ok(())
}

/// A `send` before `hello`: `unauthenticated`, then close 4001.
async fn send_before_hello(url: String) -> anyhow::Result<()> {
    for _ in 0..SEND_BEFORE_HELLO {
        let mut ws = connect(&url).await?;
        let mut m = chat("clinic", "sneaky");
        m["seq"] = json!(1);
        ws.send(text(json!({"v":1,"type":"send","msg":m}).to_string())).await?;
        let f = next_json(&mut ws).await?.context("no answer to a send before hello")?;
        ensure!(f["type"] == "error" && f["code"] == "unauthenticated", "send before hello: {f}");
        let code = loop {
            match tokio::time::timeout(EVENT_TIMEOUT, ws.next()).await? {
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break None,
            }
        };
        ensure!(code == Some(4001), "send before hello closed with {code:?}, not 4001");
    }
    Ok(())
}

/// A text frame that is not UTF-8 breaks the WebSocket protocol itself: the hub ends the
/// connection (docs/protocol.md, "Closing codes"), with no error frame.
async fn invalid_utf8(w: &World) -> anyhow::Result<()> {
    let token = w.token("mallory-utf8", "worker", &["clinic"]);
    for i in 0..INVALID_UTF8 {
        let mut ws = connect(&w.relay.ws_url()).await?;
        let hello = json!({"v":1,"type":"hello","token":token,"device":format!("u{i}"),"cursor":null,"epoch":null});
        ws.send(text(hello.to_string())).await?;
        let payload: Vec<u8> = [&br#"{"v":1,"type":"ping","x":""#[..], &[0xc3, 0x28, 0xff], b"\"}"].concat();
        ws.send(Message::Frame(Frame::message(payload, OpCode::Data(Data::Text), true))).await?;
        while let Some(f) = next_json(&mut ws).await? {
            ensure!(f["type"] != "error" && f["type"] != "pong", "invalid UTF-8 was answered: {f}");
        }
    }
    Ok(())
}

/// One legitimate device's side of the conversation: sends until the flood is over and
/// then `after` more, each waited for (`stored`, exactly once); returns the ids it sent
/// and the slowest send-to-`stored` time (printed, not asserted: timing is the bench's).
async fn converse(
    dev: &mut Device,
    me: &str,
    flood_over: &AtomicBool,
    after: usize,
) -> anyhow::Result<(Vec<String>, std::time::Duration)> {
    let mut sent = Vec::new();
    let mut slowest = std::time::Duration::ZERO;
    let mut left_after = after;
    loop {
        if flood_over.load(Ordering::Acquire) {
            if left_after == 0 {
                break;
            }
            left_after -= 1;
        }
        let t = tokio::time::Instant::now();
        let id = dev.send_msg(chat("clinic", &format!("{me} {}", sent.len()))).await?;
        dev.expect_stored(&id).await.with_context(|| format!("{me} message {}", sent.len()))?;
        slowest = slowest.max(t.elapsed());
        sent.push(id);
    }
    Ok((sent, slowest))
}

/// Kernel's view of the hub's memory: (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_leaves_the_hub_serving_with_bounded_memory() -> anyhow::Result<()> {
    assert_eq!(TOTAL, 10_000);
    let w = Arc::new(World::start().await?);
    let pid = w.relay.child.id().context("relay pid")?;
    let mut amina = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut baraka = w.device("baraka", "baraka-phone", &["clinic"]).await;
    // Warm up the paths the legitimate traffic uses, then take the baseline.
    for i in 0..20 {
        amina.send_stored(chat("clinic", &format!("warm-up {i}"))).await?;
        baraka.send_stored(chat("clinic", &format!("warm-up {i}"))).await?;
    }
    baraka.messages(20).await?;
    amina.messages(20).await?;
    let (rss_before, hwm_before) = rss_kib(pid)?;

    let flood_over = Arc::new(AtomicBool::new(false));
    let talk = |mut dev: Device, me: &'static str| {
        let over = flood_over.clone();
        tokio::spawn(async move {
            let (sent, slowest) = converse(&mut dev, me, &over, 20).await?;
            anyhow::Ok((dev, sent, slowest))
        })
    };
    let amina_talk = talk(amina, "amina");
    let baraka_talk = talk(baraka, "baraka");

    let started = tokio::time::Instant::now();
    let mut attacks = tokio::task::JoinSet::new();
    for k in 0..SIGNED_IN_ATTACKERS {
        let w = w.clone();
        attacks.spawn(async move { signed_in(&w, &format!("mallory-{k}"), signed_in_garbage(k)).await });
    }
    for _ in 0..PRE_HELLO_ATTACKERS {
        attacks.spawn(pre_hello(w.relay.ws_url()));
    }
    attacks.spawn(send_before_hello(w.relay.ws_url()));
    let w2 = w.clone();
    attacks.spawn(async move { invalid_utf8(&w2).await });
    while let Some(r) = attacks.join_next().await {
        r??;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let (rss_flood, hwm_flood) = rss_kib(pid)?;
    flood_over.store(true, Ordering::Release);

    let (mut amina, amina_sent, amina_slowest) = amina_talk.await??;
    let (mut baraka, baraka_sent, baraka_slowest) = baraka_talk.await??;
    // Exactly once: every message of the other device arrived, none twice, none extra;
    // no `stored` beyond the one per send already consumed.
    for (dev, from, name) in [(&mut amina, &baraka_sent, "amina"), (&mut baraka, &amina_sent, "baraka")] {
        dev.sync().await?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in dev.take("message") {
            *seen.entry(m["msg"]["id"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        // Some may still be on the wire: wait for the rest by id.
        while from.iter().any(|id| !seen.contains_key(id)) {
            let m = dev.expect("message").await.with_context(|| format!("{name} is missing messages"))?;
            *seen.entry(m["msg"]["id"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        dev.sync().await?;
        for m in dev.take("message") {
            *seen.entry(m["msg"]["id"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(dups.is_empty(), "{name} got messages twice: {dups:?}");
        ensure!(seen.len() == from.len(), "{name} got {} messages, the other device sent {}", seen.len(), from.len());
        ensure!(dev.take("stored").is_empty(), "{name} got a stored it did not ask for");
        ensure!(dev.take("error").is_empty(), "{name} got an error");
    }
    let (rss_after, hwm_after) = rss_kib(pid)?;
    println!(
        "flood: {TOTAL} frames in {flood_secs:.1} s; legit messages {} + {}, slowest stored {:?}; \
         VmRSS before {rss_before} KiB, at end of flood {rss_flood} KiB, after {rss_after} KiB; \
         VmHWM before {hwm_before} KiB, after flood {hwm_flood} KiB, end {hwm_after} KiB",
        amina_sent.len(),
        baraka_sent.len(),
        amina_slowest.max(baraka_slowest)
    );
    let growth = hwm_after.saturating_sub(rss_before);
    ensure!(
        growth <= RSS_GROWTH_BOUND_KIB,
        "the hub's peak RSS grew by {growth} KiB during the flood (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    ensure!(w.relay_dir.log().lines().all(|l| !l.contains("panicked")), "the hub panicked:\n{}", w.relay_dir.log());
    Ok(())
}
