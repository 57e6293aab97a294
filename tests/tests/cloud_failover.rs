//! A cloud of several nodes: a hub enrolled with several addresses fails over when the
//! node it is on dies, is on a live one within 10 s, loses and doubles nothing, and goes
//! back to its first address when that answers again.
//!
//! Until the cloud's shared database lands, "another node" is a cloud process with the
//! same directory on another address, started after the first was killed: two processes
//! on one SQLite file at once are not supported.

use std::collections::HashSet;
use std::time::Duration;

use outpost_tests::client::chat;
use outpost_tests::http::request;
use outpost_tests::linkemu::{LinkEmu, Preset};
use outpost_tests::{Cloud, Device, free_udp_addr};
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Test hubs retry within 2 s (the default cap of 30 s would only slow the tests down)
/// and try their first address every second while on another (default 300 s). The
/// policies themselves are tested in `outpost_shared::uplink::failover`.
const SETTINGS: &[(&str, &str)] =
    &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2"), ("OUTPOST_UPLINK__PRIMARY_RETRY_SECS", "1")];

/// The promise: a hub is on a live node within this of the node it was on dying.
const FAILOVER_CONTRACT: Duration = Duration::from_secs(10);

/// How often the hub's status is looked at while waiting for it to change address.
const POLL: Duration = Duration::from_millis(50);

async fn status(base: &str) -> anyhow::Result<Value> {
    let (code, s) = request(base, "GET", "/status.json", None, None).await?;
    anyhow::ensure!(code == 200, "status.json answered {code}");
    Ok(s)
}

/// The hub's `/metrics` (plain text).
async fn metrics(base: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(outpost_tests::EVENT_TIMEOUT, s.read_to_string(&mut raw)).await??;
    Ok(raw)
}

/// Waits until the hub's status says it is connected to `addr`; returns how long after
/// `since` it first said so. Fails once `limit` has passed.
async fn connected_to(base: &str, addr: &str, since: Instant, limit: Duration) -> anyhow::Result<Duration> {
    loop {
        let s = status(base).await?;
        if s["uplink"]["connected"] == true && s["uplink"]["cloud"] == addr {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < limit,
            "not connected to {addr} after {:?}: {}",
            since.elapsed(),
            s["uplink"]
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A worker who keeps sending on the hub, whatever the uplink does.
struct Sender {
    stop: oneshot::Sender<()>,
    /// How many messages the hub has stored so far.
    stored: watch::Receiver<usize>,
    task: JoinHandle<anyhow::Result<(Device, Vec<String>)>>,
}

impl Sender {
    /// Sends a message every 100 ms, each stored by the hub before the next.
    fn start(mut d: Device, label: &'static str) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let (count, stored) = watch::channel(0);
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let m = d.send_stored(chat("clinic", &format!("{label} {}", ids.len()))).await?;
                ids.push(m["id"].as_str().unwrap_or_default().to_owned());
                count.send_replace(ids.len());
            }
            Ok((d, ids))
        });
        Self { stop, stored, task }
    }

    /// Waits until `more` messages were stored after this call, then stops the worker;
    /// its device and the ids of everything it sent.
    async fn finish_after(mut self, more: usize) -> anyhow::Result<(Device, Vec<String>)> {
        let target = *self.stored.borrow() + more;
        let reached = tokio::time::timeout(outpost_tests::EVENT_TIMEOUT, self.stored.wait_for(|n| *n >= target)).await;
        let _ = self.stop.send(());
        let result = self.task.await?;
        anyhow::ensure!(matches!(reached, Ok(Ok(_))), "the worker stopped sending: {:?}", result.err());
        result
    }
}

/// A fresh doctor's device on the cloud at `url` replays the room: every id in `want`
/// must be there exactly once, and nothing else may follow.
async fn exactly_once_at(cloud: &Cloud, url: &str, device: &str, want: &HashSet<String>) -> anyhow::Result<()> {
    let mut dr = cloud.clinic_device(url, "dr-neema", "doctor", device).await?;
    let mut seen = HashSet::new();
    while !want.is_subset(&seen) {
        let f = dr.expect("message").await.map_err(|e| {
            let missing: Vec<&String> = want.difference(&seen).take(5).collect();
            anyhow::anyhow!("{e}; {} of {} seen, missing e.g. {missing:?}", seen.len(), want.len())
        })?;
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(seen.insert(id.clone()), "message {id} arrived twice");
        anyhow::ensure!(want.contains(&id), "message {id} was never sent");
    }
    dr.no_frame_of("message", Duration::from_millis(500)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_fails_over_to_the_next_node_within_10_s_and_back_to_the_first() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let (a, b) = (free_udp_addr()?, free_udp_addr()?);
    let relay_dir = cloud.provision_relay_at_all("village-7", &tmp.path().join("relay"), &[&a, &b])?;
    let mut node = cloud.start(&a).await?;
    let relay = relay_dir.start(SETTINGS).await?;
    let base = relay.http_base();
    let s = status(&base).await?;
    assert_eq!(s["uplink"]["clouds"], serde_json::json!([a, b]), "both addresses from the bundle, in order");

    // Messages flow through the first node.
    let mut amina = cloud.clinic_device(&relay.ws_url(), "amina", "worker", "amina-phone").await?;
    let mut dr = cloud.clinic_device(&node.ws_url(), "dr-neema", "doctor", "laptop").await?;
    let mut sent = HashSet::new();
    for i in 0..5 {
        let m = amina.send_stored(chat("clinic", &format!("before {i}"))).await?;
        sent.insert(m["id"].as_str().unwrap_or_default().to_owned());
    }
    for f in dr.messages(5).await? {
        assert!(sent.contains(f["msg"]["id"].as_str().unwrap_or_default()), "{f}");
    }
    connected_to(&base, &a, Instant::now(), FAILOVER_CONTRACT).await?;

    // The first node dies while the worker keeps sending; the next node comes up with the
    // same database on the second address.
    let sender = Sender::start(amina, "during the failover to b");
    let died = Instant::now();
    node.kill9().await?;
    node = cloud.start(&b).await?;
    let b_up = died.elapsed();
    let took = connected_to(&base, &b, died, FAILOVER_CONTRACT).await?;
    eprintln!("failover a -> b: the hub was on b {took:?} after a died (b listening after {b_up:?})");
    let m = metrics(&base).await?;
    for line in
        [format!("outpost_uplink_cloud{{address=\"{b}\"}} 1"), format!("outpost_uplink_cloud{{address=\"{a}\"}} 0")]
    {
        assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
    }
    // And goes on sending once the hub is there.
    let (amina, ids) = sender.finish_after(5).await?;
    assert!(!ids.is_empty());
    sent.extend(ids);
    exactly_once_at(&cloud, &node.ws_url(), "laptop-on-b", &sent).await?;

    // Now b dies and a cloud comes back on the first address: the hub returns to it.
    let sender = Sender::start(amina, "during the return to a");
    let died = Instant::now();
    node.kill9().await?;
    node = cloud.start(&a).await?;
    let a_up = died.elapsed();
    let took = connected_to(&base, &a, died, FAILOVER_CONTRACT).await?;
    let how = if relay_dir.log().contains("the first cloud address answers again") {
        "its try at the first address"
    } else {
        "failing over past the last address"
    };
    eprintln!("return b -> a: the hub was on a {took:?} after b died (a listening after {a_up:?}), by {how}");
    let (_, ids) = sender.finish_after(5).await?;
    sent.extend(ids);
    exactly_once_at(&cloud, &node.ws_url(), "laptop-on-a", &sent).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_another_address_moves_back_to_the_first_once_it_answers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let node = cloud.start("127.0.0.1:0").await?;
    // Two addresses, one node: the first goes through a proxy that starts cut off (the
    // first node down), the second is the node's own. So the hub works on the second the
    // whole time, and only its tries at the first can bring it back there.
    let first = LinkEmu::start(node.quic_addr().parse()?, Preset::CLEAR).await?;
    first.cut();
    let a = first.addr().to_string();
    let b = node.quic_addr();
    let relay_dir = cloud.provision_relay_at_all("village-7", &tmp.path().join("relay"), &[&a, &b])?;
    let relay = relay_dir.start(SETTINGS).await?;
    let base = relay.http_base();
    let started = Instant::now();
    let took = connected_to(&base, &b, started, outpost_tests::EVENT_TIMEOUT).await?;
    eprintln!("with the first address down, the hub was on the second after {took:?}");
    let downs = relay_dir.log().matches("uplink down").count();

    let amina = cloud.clinic_device(&relay.ws_url(), "amina", "worker", "amina-phone").await?;
    let sender = Sender::start(amina, "while moving back");
    let restored = Instant::now();
    first.restore();
    let took = connected_to(&base, &a, restored, outpost_tests::EVENT_TIMEOUT).await?;
    eprintln!("the hub moved back to the first address {took:?} after it answered again");
    let log = relay_dir.log();
    assert!(log.contains("the first cloud address answers again"), "{log}");
    assert_eq!(log.matches("uplink down").count(), downs, "the link on the second never failed: {log}");
    let (_, ids) = sender.finish_after(5).await?;
    exactly_once_at(&cloud, &node.ws_url(), "laptop", &ids.into_iter().collect()).await?;
    assert!(first.up.packets.load(std::sync::atomic::Ordering::Relaxed) > 0, "the hub's traffic went through a");
    Ok(())
}

#[tokio::test]
async fn cloud_flags_replace_the_bundles_addresses() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), "127.0.0.1:4433")?;
    let (x, y) = (free_udp_addr()?, free_udp_addr()?);
    let relay = relay_dir.start_via_all(&[&x, &y], SETTINGS).await?;
    let s = status(&relay.http_base()).await?;
    assert_eq!(s["uplink"]["clouds"], serde_json::json!([x, y]), "{s}");
    // Nothing answers on either: it is trying one of them, not the bundle's address.
    assert!(s["uplink"]["cloud"] == x.as_str() || s["uplink"]["cloud"] == y.as_str(), "{s}");
    Ok(())
}
