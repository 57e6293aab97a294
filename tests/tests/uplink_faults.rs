//! The uplink under faults: kill -9 of either end during a drain, a cut link, an
//! emergency during a big drain on a slow link, and a relay enrolled elsewhere.
//! Links are emulated in userspace (`outpost_tests::linkemu`).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;

use outpost_tests::client::chat;
use outpost_tests::corpus::Rng;
use outpost_tests::linkemu::{LinkEmu, Preset};
use outpost_tests::{Cloud, Device, free_udp_addr};
/// Test hubs retry the cloud within 2 s (the default cap of 30 s would only slow the
/// tests down; the backoff policy itself is tested in the protocol crate).
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

use serde_json::json;

/// Fills the hub with `senders × per_sender` messages; returns their ids.
async fn fill(
    cloud: &Cloud,
    relay_url: &str,
    senders: usize,
    per_sender: usize,
    body_bytes: usize,
) -> anyhow::Result<Vec<String>> {
    let mut rng = Rng::new(42);
    let mut all = Vec::new();
    for s in 0..senders {
        let user = format!("worker{s}");
        let mut d = cloud.clinic_device(relay_url, &user, "worker", &format!("{user}-phone")).await?;
        let mut ids = Vec::new();
        for n in 0..per_sender {
            // Random text: the compressor cannot make the backlog small.
            let text: String = (0..body_bytes).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
            ids.push(d.send_msg(chat("clinic", &format!("{n} {text}"))).await?);
        }
        for id in &ids {
            d.expect_stored(id).await?;
        }
        all.extend(ids);
    }
    Ok(all)
}

/// Reads `message` frames until every id in `want` was seen; fails on a duplicate.
async fn collect_all(d: &mut Device, want: &HashSet<String>) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    while !want.is_subset(&seen) {
        let f = d.expect("message").await.with_context(|| format!("{} of {} arrived", seen.len(), want.len()))?;
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(seen.insert(id.clone()), "message {id} delivered twice");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_relay_and_cloud_during_a_drain_over_edge_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let emu = LinkEmu::start(quic.parse()?, Preset::EDGE).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let via = emu.addr().to_string();
    let mut relay = relay_dir.start_via(&via, FAST_RETRY).await?;
    let ids: HashSet<String> = fill(&cloud, &relay.ws_url(), 5, 1000, 16).await?.into_iter().collect();

    let mut cloud_proc = cloud.start(&quic).await?;
    // Six faults, alternately hub and cloud, each once the cloud holds another tenth of
    // the ~5,000-message backlog: every kill lands inside the drain, after progress since
    // the last one, and the last leaves 40 % (several batches) still to cross.
    let total = ids.len();
    for fault in 1..=6 {
        let mark = total * fault / 10;
        let start = tokio::time::Instant::now();
        while cloud.messages_held()? < mark {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "the drain stalled below {mark} of {total} before fault {fault}: {}",
                cloud.messages_held()?
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let which = if fault % 2 == 1 {
            relay.kill9().await?;
            "hub"
        } else {
            cloud_proc.kill9().await?;
            "cloud"
        };
        // Read after the kill: the count never falls, so below the total now means the
        // drain was unfinished when the process died.
        let held = cloud.messages_held()?;
        eprintln!("fault {fault}: kill -9 of the {which} with {held} of {total} at the cloud");
        assert!(held >= mark && held < total, "fault {fault} ({which}) inside the drain: {held} of {total}");
        if which == "hub" {
            relay = relay_dir.start_via(&via, FAST_RETRY).await?;
        } else {
            cloud_proc = cloud.start(&quic).await?;
        }
    }
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;
    if let Err(e) = collect_all(&mut dr, &ids).await {
        eprintln!("--- cloud log\n{}\n--- relay log\n{}", cloud.log(), relay_dir.log());
        return Err(e);
    }
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_edge_link_resumes_and_delivers_everything_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let emu = LinkEmu::start(cloud_proc.quic_addr().parse()?, Preset::EDGE).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let relay = relay_dir.start_via(&emu.addr().to_string(), FAST_RETRY).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;
    let ids: HashSet<String> = fill(&cloud, &relay.ws_url(), 3, 1000, 16).await?.into_iter().collect();
    // Let the drain start, then cut the link for a few seconds mid-way.
    dr.expect("message").await?;
    emu.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    emu.restore();
    let mut again = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop-2").await?;
    collect_all(&mut again, &ids).await?;
    again.no_frame_of("message", Duration::from_millis(500)).await?;
    assert!(emu.up.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0, "the cut dropped traffic");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_overtakes_a_large_drain_over_3g() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let emu = LinkEmu::start(quic.parse()?, Preset::THREE_G).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let relay = relay_dir.start_via(&emu.addr().to_string(), FAST_RETRY).await?;
    // About 1.2 MB of incompressible backlog: some 12 s of 3G uplink.
    let backlog: HashSet<String> = fill(&cloud, &relay.ws_url(), 2, 1000, 600).await?.into_iter().collect();
    let mut sender = cloud.clinic_device(&relay.ws_url(), "amina", "worker", "amina-phone").await?;

    let cloud_proc = cloud.start(&quic).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;
    // The drain is under way once the first backlog message arrives.
    dr.expect("message").await?;
    let mut alert = chat("clinic", "postpartum haemorrhage, house 12");
    alert["priority"] = json!("emergency");
    alert["kind"] = json!("alert");
    let sent_at = tokio::time::Instant::now();
    let id = sender.send_msg(alert).await?;
    let mut before = 1usize;
    loop {
        let f = dr.expect("message").await?;
        if f["msg"]["id"] == id.as_str() {
            break;
        }
        before += 1;
    }
    let latency = sent_at.elapsed();
    eprintln!("emergency reached the cloud in {latency:?}, after {before} of {} backlog messages", backlog.len());
    // The normal lane keeps at most about 2 × the bandwidth-delay product in the network
    // (3G: 96 KB/s × 0.3 s, some 58 KB: under 100 of these 600-byte messages), and the
    // emergency's own stream goes before anything queued behind it; so fewer than a
    // window's worth of the backlog reaches the cloud before it (24–48 in clean runs). A
    // link that queued the backlog beyond its window lets some 185 through first. Counted
    // in messages, not time: what is in flight is bounded by the window whatever the
    // machine's load, while the time it takes is not.
    const WINDOW: usize = 100;
    assert!(
        before < WINDOW,
        "the emergency waited behind more than a window of the drain: {before} of {} backlog messages before it \
         ({latency:?})",
        backlog.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_enrolled_by_another_cloud_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ours = Cloud::init(&tmp.path().join("ours"))?;
    let theirs = Cloud::init(&tmp.path().join("theirs"))?;
    let cloud_proc = ours.start("127.0.0.1:0").await?;
    let intruder = theirs.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    // Even trusting our CA (so only our check can stop it), its certificate is foreign.
    std::fs::copy(ours.dir.join("keys/relay-ca.crt"), intruder.dir.join("identity/ca.crt"))?;
    let relay = intruder.start(FAST_RETRY).await?;
    let mut w = theirs.clinic_device(&relay.ws_url(), "mallory", "worker", "m-phone").await?;
    w.send_stored(chat("clinic", "let me in")).await?;
    let mut dr = ours.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "laptop").await?;
    // Wait for the relay to have tried (and failed) at least twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while intruder.log().matches("uplink down").count() < 2 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the relay never tried: {}", intruder.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dr.no_frame_of("message", Duration::from_millis(300)).await?;
    assert!(!ours.log().contains("relay connected"), "{}", ours.log());
    Ok(())
}
