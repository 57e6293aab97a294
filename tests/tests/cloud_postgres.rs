//! The cloud as several `outpost-cloud` nodes on one PostgreSQL database (a private
//! cluster each test starts: initdb and pg_ctl as the `postgres` user on a free port), with
//! real hubs over QUIC and doctors over WebSocket: a doctor on another node than the
//! hub's, a node killed with SIGKILL during a drain (the hub fails over to the next node),
//! PostgreSQL itself restarted during a drain, the events feed across nodes, and an
//! SQLite cloud moved into PostgreSQL with `outpost-cloud migrate`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use outpost_store_postgres::testing::TestCluster;
use outpost_tests::client::chat;
use outpost_tests::{Cloud, Device, free_udp_addr};
use serde_json::Value;

/// Test hubs retry the cloud within 2 s, and take a backlog of thousands from one phone
/// at once (the send rate limit is tested elsewhere).
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2"), ("OUTPOST_LIMITS__RATE_BURST", "10000")];

fn cluster() -> anyhow::Result<(TestCluster, String)> {
    let c = TestCluster::start().map_err(anyhow::Error::msg)?;
    let url = c.create_database("cloud").map_err(anyhow::Error::msg)?;
    Ok((c, url))
}

/// A cloud directory whose nodes run on `url`.
fn cloud_on(dir: &std::path::Path, url: &str) -> anyhow::Result<Cloud> {
    let cloud = Cloud::init(dir)?;
    cloud.configure(&format!("[storage]\ndatabase = \"{url}\"\n"))?;
    Ok(cloud)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_on_another_node_than_the_hubs_gets_its_messages_and_the_reply_goes_down() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    // Two nodes on the same directory and database.
    let node_a = cloud.start("127.0.0.1:0").await?;
    let node_b = cloud.start("127.0.0.1:0").await?;
    let relay =
        cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &node_a.quic_addr())?.start(&[]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&node_b.ws_url(), &["clinic"]).await?;

    // Live: through the hub, node A, PostgreSQL, node B.
    let q = amina.send_stored(chat("clinic", "fever 39.5, what dose?")).await?;
    let at_b = dr.expect("message").await?;
    assert_eq!(at_b["msg"]["id"], q["id"], "the doctor on node B got the hub's message live");

    // The reply is written on node B and goes down the hub's link on node A.
    let mut reply = chat("clinic", "paracetamol 1 g, recheck in 4 h");
    reply["reply_to"] = q["id"].clone();
    let r = dr.send_stored(reply).await?;
    let got = amina.expect("message").await?;
    assert_eq!(got["msg"]["id"], r["id"], "the reply reached the worker through the other node");

    // And on replay: a second doctor on node A sees both, in order.
    let mut dr2 = cloud.doctor(&node_a.ws_url(), &["clinic"]).await?;
    let both = dr2.messages(2).await?;
    assert_eq!(both[0]["msg"]["id"], q["id"]);
    assert_eq!(both[1]["msg"]["id"], r["id"]);
    Ok(())
}

/// `senders` each store `n` messages on the hub (while the cloud is away); returns the ids
/// by sender, in order.
async fn backlog(senders: &mut [(String, Device)], n: usize) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut sent = HashMap::new();
    for (user, d) in senders.iter_mut() {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(d.send_msg(chat("clinic", &format!("{user} {i}"))).await?);
        }
        for id in &ids {
            d.expect_stored(id).await?;
        }
        sent.insert(user.clone(), ids);
    }
    Ok(sent)
}

/// What a doctor received: each message once, and each sender's in order.
fn check_exactly_once_in_order(got: &[Value], sent: &HashMap<String, Vec<String>>) {
    let mut seen = HashSet::new();
    let mut by_sender: HashMap<String, Vec<String>> = HashMap::new();
    for f in got {
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(id.clone()), "message {id} delivered twice");
        by_sender.entry(f["msg"]["from"].as_str().unwrap_or_default().to_owned()).or_default().push(id);
    }
    assert_eq!(&by_sender, sent, "every message, each sender's in order");
}

const DRAIN: usize = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_5000_message_drain_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let (quic_a, quic_b) = (free_udp_addr()?, free_udp_addr()?);
    // The hub knows two nodes; a third serves the doctor.
    let relay = cloud
        .provision_relay_at_all("village-7", &tmp.path().join("relay"), &[&quic_a, &quic_b])?
        .start(FAST_RETRY)
        .await?;
    let mut senders = Vec::new();
    for user in ["amina", "baraka"] {
        senders.push((user.to_owned(), cloud.worker(&relay.ws_url(), user, &["clinic"]).await?));
    }
    let sent = backlog(&mut senders, DRAIN).await?;

    let node_c = cloud.start("127.0.0.1:0").await?;
    let mut dr = cloud.doctor(&node_c.ws_url(), &["clinic"]).await?;
    let _node_b = cloud.start(&quic_b).await?;
    let mut node_a = cloud.start(&quic_a).await?;
    // Part of the drain has gone through node A when it dies; the hub moves to node B
    // and goes on from what PostgreSQL committed.
    let mut got = dr.messages(500).await?;
    node_a.kill9().await?;
    let killed = tokio::time::Instant::now();
    got.extend(dr.messages(2 * DRAIN - got.len()).await?);
    eprintln!("the drain finished {:.1} s after node A was killed", killed.elapsed().as_secs_f64());
    check_exactly_once_in_order(&got, &sent);
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_a_drain_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let (pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let quic_a = free_udp_addr()?;
    let relay = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic_a)?.start(FAST_RETRY).await?;
    let mut senders = Vec::new();
    for user in ["amina", "baraka"] {
        senders.push((user.to_owned(), cloud.worker(&relay.ws_url(), user, &["clinic"]).await?));
    }
    let sent = backlog(&mut senders, DRAIN).await?;
    let _node_a = cloud.start(&quic_a).await?;
    let node_b = cloud.start("127.0.0.1:0").await?;
    let token = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut dr = Device::connect(&node_b.ws_url()).await?;
    dr.hello(&token, "neema-laptop", None, None).await?;
    let mut got = dr.messages(500).await?;

    pg.stop_immediately().map_err(anyhow::Error::msg)?;
    pg.restart().map_err(anyhow::Error::msg)?;

    // The doctor's session may have been closed while the database was away; the browser
    // then resumes after the last cursor it holds, as the protocol says.
    while got.len() < 2 * DRAIN {
        match dr.expect("message").await {
            Ok(m) => got.push(m),
            Err(e) => {
                let cursor = got.last().and_then(|m| m["cursor"].as_u64());
                let epoch = dr.welcome["epoch"].as_str().map(str::to_owned);
                eprintln!("doctor reconnects after {} messages ({e})", got.len());
                dr = Device::connect(&node_b.ws_url()).await?;
                dr.hello(&token, "neema-laptop", cursor, epoch.as_deref()).await?;
            }
        }
    }
    check_exactly_once_in_order(&got, &sent);
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_cloud_moved_into_postgres_carries_on_without_a_resync() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let mut lite = cloud.start(&quic).await?;
    let relay = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?.start(FAST_RETRY).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&lite.ws_url(), &["clinic"]).await?;
    let mut before = Vec::new();
    for i in 0..20 {
        before.push(amina.send_stored(chat("clinic", &format!("before {i}"))).await?);
    }
    let seen = dr.messages(20).await?;
    let cursor = seen.last().and_then(|m| m["cursor"].as_u64());
    let epoch = dr.welcome["epoch"].as_str().map(str::to_owned);
    dr.close().await;
    assert_eq!(lite.terminate().await?, Some(0));

    let out = std::process::Command::new(outpost_tests::bin("outpost-cloud"))
        .args(["migrate", "--dir"])
        .arg(tmp.path().join("cloud"))
        .args(["--database", &url])
        .output()?;
    assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));

    let pg_node = cloud.start_with_args(&quic, &["--database", &url]).await?;
    // The doctor resumes within the same epoch after the cursor it holds: no resync.
    let token = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut dr = Device::connect(&pg_node.ws_url()).await?;
    let welcome = dr.hello(&token, "neema-laptop", cursor, epoch.as_deref()).await?;
    assert_eq!(welcome["epoch"].as_str(), epoch.as_deref(), "the epoch moved with the data");
    // The hub goes on where it was: only what is new arrives.
    let after = amina.send_stored(chat("clinic", "after the move")).await?;
    let next = dr.expect("message").await?;
    assert_eq!(next["msg"]["id"], after["id"], "the next message is the new one, nothing resent");
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    // Nothing was lost: the whole room is there, once each.
    let mut dr2 = cloud.doctor(&pg_node.ws_url(), &["clinic"]).await?;
    let all = dr2.messages(21).await?;
    let ids: Vec<&Value> = all.iter().map(|m| &m["msg"]["id"]).collect();
    let expected: Vec<&Value> = before.iter().chain([&after]).map(|s| &s["id"]).collect();
    assert_eq!(ids, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_feed_is_one_order_across_nodes_and_a_node_restart() -> anyhow::Result<()> {
    use outpost_tests::http::{events_page, post_message};
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let mut node_a = cloud.start("127.0.0.1:0").await?;
    let node_b = cloud.start("127.0.0.1:0").await?;
    let lab = cloud.token("lab", "doctor", &["ward-a", "ward-b"], "1h")?;
    let his = cloud.token("his", "doctor", &["ward-a", "ward-b"], "1h")?;

    // Two writers at once, one per node, into two rooms.
    let (base_a, base_b) = (node_a.http_base(), node_b.http_base());
    let writes = |base: String, room: &'static str| {
        let lab = lab.clone();
        async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                ids.push(post_message(&base, &lab, room, &format!("{room} {n}")).await?.1);
            }
            anyhow::Ok(ids)
        }
    };
    let (a, b) = tokio::join!(writes(base_a.clone(), "ward-a"), writes(base_b.clone(), "ward-b"));
    let posted: HashSet<String> = a?.into_iter().chain(b?).collect();

    // A hospital system pages through whichever node answers; node A dies and returns
    // in the middle.
    let mut got = Vec::new();
    let (first, mut next, _) = events_page(&base_a, &his, 0, 7).await?;
    got.extend(first);
    node_a.kill9().await?;
    let (second, n2, _) = events_page(&base_b, &his, next, 7).await?;
    got.extend(second);
    next = n2;
    let node_a = cloud.start("127.0.0.1:0").await?;
    let base_a = node_a.http_base();
    let mut more = true;
    let mut turn = 0;
    while more {
        let base = if turn % 2 == 0 { &base_a } else { &base_b };
        let (page, n, m) = events_page(base, &his, next, 7).await?;
        got.extend(page);
        (next, more, turn) = (n, m, turn + 1);
    }
    let cursors: Vec<u64> = got.iter().map(|(c, _, _)| *c).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "one increasing order across pages and nodes: {cursors:?}");
    let ids: HashSet<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids.len(), got.len(), "nothing twice");
    assert_eq!(ids, posted, "every message of both nodes, once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_once_is_enforced_by_every_node_and_audited_in_one_log() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let fast = [("OUTPOST_CLOUD_SECURITY__REVOCATION_POLL_MS", "100")];
    let node_a = cloud.start_with_env("127.0.0.1:0", &fast).await?;
    let node_b = cloud.start_with_env("127.0.0.1:0", &fast).await?;
    let stolen = cloud.token("dr-okello", "doctor", &["clinic"], "1h")?;
    let mut on_a = Device::connect(&node_a.ws_url()).await?;
    on_a.hello(&stolen, "okello-laptop", None, None).await?;
    let mut on_b = Device::connect(&node_b.ws_url()).await?;
    on_b.hello(&stolen, "okello-phone", None, None).await?;

    // One command, against the database the nodes share (named in cloud.toml).
    let out = std::process::Command::new(outpost_tests::bin("outpost-cloud"))
        .args(["revoke", "--dir"])
        .arg(&cloud.dir)
        .args(["--token", &stolen, "--reason", "laptop stolen"])
        .output()?;
    assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
    for (node, session) in [("A", &mut on_a), ("B", &mut on_b)] {
        let (code, e) = session.expect_error().await?;
        assert_eq!(code, "unauthenticated", "node {node}: {e}");
        assert_eq!(session.expect_close().await?, Some(4001), "node {node} ended the session");
    }
    for node in [&node_a, &node_b] {
        let mut again = Device::connect(&node.ws_url()).await?;
        assert!(again.hello(&stolen, "okello-laptop", None, None).await.is_err(), "every node refuses the token");
    }
    // One audit log: the revocation and both nodes' refusals are in it.
    let out = std::process::Command::new(outpost_tests::bin("outpost-cloud"))
        .args(["audit", "--dir"])
        .arg(&cloud.dir)
        .output()?;
    let log = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(count("revocation"), 1, "{log}");
    assert!(count("login_refused") >= 2, "both nodes' refusals are audited in the shared log: {log}");
    Ok(())
}
