//! The uplink when UDP does not pass: the hub carries the same link over TLS on TCP to
//! the same `HOST:PORT` (docs/uplink.md, "When UDP is blocked"), directly or through an
//! HTTP proxy, and moves back to QUIC once UDP passes again. UDP is dropped by the link
//! emulator (every datagram, both ways); TCP goes through a forwarder on the emulator's
//! port number, as it would through the same network.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::client::chat;
use outpost_tests::http::request;
use outpost_tests::linkemu::{LinkEmu, Preset, TcpForward};
use outpost_tests::proc::Relay;
use outpost_tests::proxy::ConnectProxy;
use outpost_tests::{Cloud, Device, free_udp_addr};
use serde_json::Value;

/// `senders × per_sender` messages stored on the hub (acked); their ids in sending order
/// per sender.
async fn fill(cloud: &Cloud, relay: &Relay, senders: usize, per_sender: usize) -> anyhow::Result<Vec<Vec<String>>> {
    fill_padded(cloud, relay, senders, per_sender, 0).await
}

/// [`fill`] with `pad` random letters in each body (the compressor cannot shrink them).
async fn fill_padded(
    cloud: &Cloud,
    relay: &Relay,
    senders: usize,
    per_sender: usize,
    pad: usize,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rng = outpost_tests::corpus::Rng::new(7);
    let mut all = Vec::new();
    for s in 0..senders {
        let user = format!("worker{s}");
        let mut d = cloud.clinic_device(&relay.ws_url(), &user, "worker", &format!("{user}-phone")).await?;
        let mut ids = Vec::new();
        for n in 0..per_sender {
            let noise: String = (0..pad).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
            ids.push(d.send_msg(chat("clinic", &format!("{user} message {n} {noise}"))).await?);
        }
        for id in &ids {
            d.expect_stored(id).await?;
        }
        all.push(ids);
    }
    Ok(all)
}

/// Reads `message` frames until every id was seen: fails on a duplicate, and on one
/// sender's messages out of their order.
async fn collect_in_order(d: &mut Device, senders: &[Vec<String>]) -> anyhow::Result<()> {
    collect_watching(d, senders, None).await.map(|_| ())
}

/// [`collect_in_order`], also waiting for `watch`: how many of `senders`' messages had
/// arrived before it.
async fn collect_watching(
    d: &mut Device,
    senders: &[Vec<String>],
    watch: Option<&str>,
) -> anyhow::Result<Option<usize>> {
    let want: HashSet<&String> = senders.iter().flatten().collect();
    let position: std::collections::HashMap<&String, (usize, usize)> = senders
        .iter()
        .enumerate()
        .flat_map(|(s, ids)| ids.iter().enumerate().map(move |(i, id)| (id, (s, i))))
        .collect();
    let mut next = vec![0usize; senders.len()];
    let mut seen = HashSet::new();
    let mut watched = None;
    while seen.len() < want.len() || (watch.is_some() && watched.is_none()) {
        let f = d.expect("message").await.with_context(|| format!("{} of {} arrived", seen.len(), want.len()))?;
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        if watch == Some(id.as_str()) {
            watched = Some(seen.len());
        }
        let Some(&(s, i)) = position.get(&id) else { continue };
        anyhow::ensure!(seen.insert(id.clone()), "message {id} delivered twice");
        anyhow::ensure!(i == next[s], "sender {s}: message {i} arrived when {} was next", next[s]);
        next[s] += 1;
    }
    Ok(watched)
}

/// The hub's uplink status once `done` holds.
async fn uplink(relay: &Relay, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = request(&relay.http_base(), "GET", "/status.json", None, None).await?;
        if done(&status["uplink"]) {
            return Ok(status["uplink"].clone());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the uplink never got there: {}", status["uplink"]);
        // Polled as an operator's monitoring would.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Test hubs retry within 2 s and try QUIC again every 2 s while on TCP.
fn env_with(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("OUTPOST_UPLINK__RETRY_MAX_SECS", "2".to_owned()),
        ("OUTPOST_UPLINK__PRIMARY_RETRY_SECS", "2".to_owned()),
    ];
    env.extend_from_slice(extra);
    env
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_dropped_2000_messages_cross_over_tcp_once_in_order_and_the_link_returns_to_quic() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let cloud_proc = cloud.start(&quic).await?;
    let tcp = cloud_proc.tcp_addr().context("the cloud opened no TCP path")?;
    assert_eq!(tcp, quic, "the TCP path is on the QUIC address's port by default");
    let emu = LinkEmu::start(quic.parse()?, Preset::CLEAR).await?;
    emu.cut();
    // TCP at 2 Mbit/s: the backlog below takes seconds to cross.
    let forward = TcpForward::start_with_rate(emu.addr(), tcp.parse()?, 2_000_000).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &emu.addr().to_string())?;
    let env = env_with(&[]);
    let mut relay = relay_dir.start(&as_refs(&env)).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;

    let started = tokio::time::Instant::now();
    let status = uplink(&relay, |u| u["connected"] == true).await?;
    assert_eq!(status["transport"], "tcp", "{status}");
    eprintln!("on TCP {} ms after start (one QUIC attempt first)", started.elapsed().as_millis());
    assert!(forward.connections.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    let senders = fill_padded(&cloud, &relay, 4, 500, 600).await?;
    // An emergency raised while that backlog (~1.3 MB) crosses goes ahead of it.
    let mut w = cloud.clinic_device(&relay.ws_url(), "amina", "worker", "amina-phone").await?;
    let mut alert = chat("clinic", "child not breathing");
    alert["kind"] = serde_json::json!("alert");
    alert["priority"] = serde_json::json!("emergency");
    let raised = tokio::time::Instant::now();
    let id = w.send_msg(alert).await?;
    w.expect_stored(&id).await?;
    let before = collect_watching(&mut dr, &senders, Some(&id)).await?.context("the emergency never arrived")?;
    eprintln!(
        "the emergency arrived after {before} of 2000 backlog messages, {} ms after it was raised",
        raised.elapsed().as_millis()
    );
    assert!(before < 2000, "the emergency waited for the whole backlog");

    // UDP passes again: the hub tries QUIC in the background and moves back.
    emu.restore();
    let status = uplink(&relay, |u| u["connected"] == true && u["transport"] == "quic").await?;
    assert_eq!(status["transport"], "quic");
    let after = w.send_msg(chat("clinic", "back on QUIC")).await?;
    w.expect_stored(&after).await?;
    let f = dr.expect("message").await?;
    assert_eq!(f["msg"]["id"], after.as_str(), "nothing repeated on the way back");
    relay.terminate().await?;
    Ok(())
}

/// Waits until the cloud holds at least `mark` messages.
async fn until_cloud_holds(cloud: &Cloud, mark: usize) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    while cloud.messages_held()? < mark {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(90),
            "the drain stalled below {mark}: {}",
            cloud.messages_held()?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_hub_and_cloud_during_a_drain_over_tcp_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let emu = LinkEmu::start(quic.parse()?, Preset::CLEAR).await?;
    emu.cut();
    // TCP at 1 Mbit/s: the backlog takes seconds to cross, so the kills land inside it.
    let _forward = TcpForward::start_with_rate(emu.addr(), quic.parse()?, 1_000_000).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &emu.addr().to_string())?;
    let env = env_with(&[]);
    let mut relay = relay_dir.start(&as_refs(&env)).await?;
    let senders = fill(&cloud, &relay, 4, 1000).await?;
    let total = 4000;

    // The cloud comes up; kill -9 of the hub, then of the cloud, while the backlog
    // crosses over TCP; each comes back and the drain resumes where it was.
    let mut cloud_proc = cloud.start(&quic).await?;
    until_cloud_holds(&cloud, total / 4).await?;
    relay.kill9().await?;
    let held = cloud.messages_held()?;
    assert!(held < total, "the hub was killed inside the drain: {held} of {total}");
    relay = relay_dir.start(&as_refs(&env)).await?;
    until_cloud_holds(&cloud, held + total / 4).await?;
    cloud_proc.kill9().await?;
    let held = cloud.messages_held()?;
    assert!(held < total, "the cloud was killed inside the drain: {held} of {total}");
    let cloud_proc = cloud.start(&quic).await?;
    let status = uplink(&relay, |u| u["connected"] == true).await?;
    assert_eq!(status["transport"], "tcp");
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;
    collect_in_order(&mut dr, &senders).await?;
    assert_eq!(cloud.messages_held()?, total, "each message stored once");
    relay.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_http_proxy_with_credentials_the_link_gets_out() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let cloud_proc = cloud.start(&quic).await?;
    // UDP goes nowhere; TCP only through the proxy, which wants credentials.
    let emu = LinkEmu::start(quic.parse()?, Preset::CLEAR).await?;
    emu.cut();
    let _forward = TcpForward::start(emu.addr(), quic.parse()?).await?;
    let proxy = ConnectProxy::start(Some("hub:s3cret")).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &emu.addr().to_string())?;
    let env = env_with(&[("OUTPOST_UPLINK__PROXY", proxy.url(Some("hub:s3cret")))]);
    let relay = relay_dir.start(&as_refs(&env)).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;

    let status = uplink(&relay, |u| u["connected"] == true).await?;
    assert_eq!(status["transport"], "tcp");
    let senders = fill(&cloud, &relay, 1, 100).await?;
    collect_in_order(&mut dr, &senders).await?;
    let tunnels = proxy.tunnels.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(tunnels.contains(&emu.addr().to_string()), "the hub went through the proxy: {tunnels:?}");
    assert_eq!(proxy.refused.lock().map(|r| *r).unwrap_or(1), 0);
    Ok(())
}
