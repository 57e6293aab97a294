//! The cloud as several `outpost-cloud` nodes on one PostgreSQL database (a private
//! cluster each test starts: initdb and pg_ctl as the `postgres` user on a free port), with
//! real hubs over QUIC and doctors over WebSocket: a doctor on another node than the
//! hub's, a node killed with SIGKILL during a drain (the hub fails over to the next node),
//! PostgreSQL itself restarted during a drain, the events feed across nodes, an SQLite
//! cloud moved into PostgreSQL with `outpost-cloud migrate`, and photos that reach one
//! node (uploaded, or from a hub) and are downloaded or resumed through another that
//! runs on a copy of the cloud's directory.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use outpost_store_postgres::testing::TestCluster;
use outpost_tests::client::chat;
use outpost_tests::media::{Upload, call, download, info, info_until, photo, sha256_hex};
use outpost_tests::{Cloud, Device, free_udp_addr};
use serde_json::{Value, json};

/// Test hubs retry the cloud within 2 s, and take a backlog of thousands from one phone
/// at once (the send rate limit is tested elsewhere).
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2"), ("OUTPOST_LIMITS__RATE_BURST", "10000")];

/// Upload chunks, as the web client sends them.
const CHUNK: usize = 256 << 10;

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
    // From cursor 0: every message of the drain (no cursor would give the latest window).
    dr.hello(&token, "neema-laptop", Some(0), None).await?;
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
    // A photo the SQLite cloud holds as a file, and an upload it has part of.
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let (img, img2) = (photo(600_000, 31), photo(900_000, 32));
    let mut whole = Upload::new(&lite.http_base(), &neema, &img);
    whole.create().await?;
    assert_eq!(whole.run(CHUNK, None).await?, img.len() as u64);
    let mut half = Upload::new(&lite.http_base(), &neema, &img2);
    half.create().await?;
    let at = half.run(CHUNK, Some(300_000)).await?;
    assert_eq!(lite.terminate().await?, Some(0));

    let out = outpost_tests::command("outpost-cloud")
        .args(["migrate", "--dir"])
        .arg(tmp.path().join("cloud"))
        .args(["--database", &url])
        .output()?;
    assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("media: 1 blobs") && said.contains("1 unfinished uploads"), "{said}");

    let pg_node = cloud.start_with_args(&quic, &["--database", &url]).await?;
    // The media moved too: the photo is served, the upload resumes where it was.
    let got = download(&pg_node.http_base(), &neema, &whole.sha).await?;
    assert_eq!((got.status, sha256_hex(&got.body)), (200, whole.sha.clone()), "the photo moved into PostgreSQL");
    half.base = pg_node.http_base();
    assert_eq!(half.offset().await?, at, "the upload goes on from what the SQLite cloud had");
    assert_eq!(half.run(CHUNK, None).await?, img2.len() as u64);
    assert_eq!(half.sent_bytes, img2.len() as u64, "nothing was sent twice");
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
    let out = outpost_tests::command("outpost-cloud")
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
    let out = outpost_tests::command("outpost-cloud").args(["audit", "--dir"]).arg(&cloud.dir).output()?;
    let log = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(count("revocation"), 1, "{log}");
    assert!(count("login_refused") >= 2, "both nodes' refusals are audited in the shared log: {log}");
    Ok(())
}

/// The first `message` frame whose body names `sha`.
async fn media_message(d: &mut Device, sha: &str) -> anyhow::Result<Value> {
    loop {
        let f = d.expect("message").await?;
        if f["msg"]["body"]["media"]["sha256"] == sha {
            return Ok(f);
        }
    }
}

/// `GET` of bytes `range` (`N-M` or `N-`) of a blob.
async fn range(base: &str, token: &str, sha: &str, range: &str) -> anyhow::Result<outpost_tests::media::Resp> {
    let h = [("Range", format!("bytes={range}"))];
    call(base, "GET", &format!("/api/media/{sha}"), Some(token), &h, &[]).await
}

/// The photo is whole on `base`, and its ranges are the photo's.
async fn downloads_whole_and_by_range(base: &str, token: &str, sha: &str, img: &[u8]) -> anyhow::Result<()> {
    let size = img.len();
    let full = download(base, token, sha).await?;
    assert_eq!(full.status, 200, "{}", String::from_utf8_lossy(&full.body));
    assert_eq!(full.header("content-type"), Some("image/jpeg"));
    assert!(sha256_hex(&full.body) == sha && full.body.len() == size, "the whole photo, {} bytes", full.body.len());
    // Across the database's 256 KiB rows, and an open end from the middle of one.
    let part = range(base, token, sha, "200000-599999").await?;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some(format!("bytes 200000-599999/{size}").as_str()));
    assert!(part.body == img[200_000..600_000], "bytes 200000-599999 as uploaded");
    let tail = range(base, token, sha, &format!("{}-", size - 100_001)).await?;
    assert_eq!(tail.status, 206);
    assert!(tail.body == img[size - 100_001..], "the last 100001 bytes as uploaded");
    assert_eq!(range(base, token, sha, &format!("{size}-")).await?.status, 416);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_uploaded_through_one_node_is_downloaded_through_another_and_an_upload_resumes_there()
-> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud-a"), &url)?;
    // Node B runs on a copy of the directory, as it would on another machine.
    let copy = cloud.copy_to(&tmp.path().join("cloud-b"))?;
    let node_a = cloud.start("127.0.0.1:0").await?;
    let node_b = copy.start("127.0.0.1:0").await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = copy.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut phone = cloud.worker(&node_a.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = copy.doctor(&node_b.ws_url(), &["clinic"]).await?;

    // A worker at the hospital uploads a photo through node A and sends it.
    let img = photo(1_500_000, 21);
    let mut up = Upload::new(&node_a.http_base(), &amina, &img);
    assert_eq!(up.create().await?.status, 201);
    assert_eq!(up.run(CHUNK, None).await?, img.len() as u64);
    phone.send_stored(up.message("clinic", "wound, day 2", "IMG_0101.jpg")).await?;
    // The doctor on node B gets the message and the photo from B.
    let m = media_message(&mut dr, &up.sha).await?;
    assert_eq!(m["msg"]["body"]["media"]["size"], img.len());
    let (status, v) = info(&node_b.http_base(), &neema, &up.sha).await?;
    assert_eq!((status, &v["available"]), (200, &Value::Bool(true)), "node B has the photo: {v}");
    downloads_whole_and_by_range(&node_b.http_base(), &neema, &up.sha, &img).await?;

    // Another upload begins on A; the phone's next requests land on B, which goes on
    // from what A acknowledged.
    let img2 = photo(2_000_000, 22);
    let size = img2.len() as u64;
    let mut up2 = Upload::new(&node_a.http_base(), &amina, &img2);
    assert_eq!(up2.create().await?.status, 201);
    let at = up2.run(CHUNK, Some(700_000)).await?;
    assert!(at >= 700_000 && at < size, "part of the photo went through A: {at}");
    up2.base = node_b.http_base();
    assert_eq!(up2.offset().await?, at, "node B resumes where node A acknowledged");
    assert_eq!(up2.run(CHUNK, None).await?, size);
    assert_eq!(up2.sent_bytes, size, "nothing A had was sent again");
    up2.base = node_a.http_base();
    assert_eq!(up2.create().await?.status, 200, "node A knows the upload is complete");
    let back = download(&node_a.http_base(), &amina, &up2.sha).await?;
    assert_eq!(sha256_hex(&back.body), up2.sha, "node A serves what B completed");

    // Neither node's directory holds media: the bytes are in the database.
    for dir in [&cloud.dir, &copy.dir] {
        assert!(!dir.join("data/media").exists(), "{} holds no media files", dir.display());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_a_hub_sends_to_one_node_is_downloaded_through_another() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud-a"), &url)?;
    let copy = cloud.copy_to(&tmp.path().join("cloud-b"))?;
    let node_a = cloud.start("127.0.0.1:0").await?;
    let node_b = copy.start("127.0.0.1:0").await?;
    let relay =
        cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &node_a.quic_addr())?.start(&[]).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = copy.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut phone = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = copy.doctor(&node_b.ws_url(), &["clinic"]).await?;

    let img = photo(1_200_000, 23);
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    assert_eq!(up.run(CHUNK, None).await?, img.len() as u64);
    phone.send_stored(up.message("clinic", "rash, left arm", "IMG_0102.jpg")).await?;
    // The message reaches the doctor on B through A and the database; the photo follows
    // on the hub's bulk lane into A, and B serves it.
    media_message(&mut dr, &up.sha).await?;
    let base_b = node_b.http_base();
    let every = Duration::from_millis(100);
    info_until(&base_b, &neema, &up.sha, every, Duration::from_secs(60), |v| v["available"] == true).await?;
    downloads_whole_and_by_range(&base_b, &neema, &up.sha, &img).await?;
    // The hub learns that the hospital holds it.
    let hub = relay.http_base();
    info_until(&hub, &amina, &up.sha, every, Duration::from_secs(30), |v| v["custody"] == "forwarded").await?;
    Ok(())
}

/// Messages of `room` the cloud at `base` still holds, read through the HTTP API.
async fn room_count(base: &str, token: &str, room: &str) -> anyhow::Result<usize> {
    let (status, v) = outpost_tests::http::request(
        base,
        "GET",
        &format!("/api/rooms/{room}/messages?after=0&limit=500"),
        Some(token),
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "{room}: {status} {v}");
    Ok(v["messages"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_retention_spares_held_rooms_and_an_audited_delete_erases() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let env = [("OUTPOST_CLOUD_STORAGE__RETAIN_DAYS", "30")];
    let node = cloud.start_with_env("127.0.0.1:0", &env).await?;
    let tok = cloud.token("dr-neema", "doctor", &["clinic", "inquest"], "90d")?;
    let mut dr = Device::connect(&node.ws_url()).await?;
    dr.hello(&tok, "neema-laptop", None, None).await?;
    for room in ["clinic", "inquest"] {
        for i in 0..5 {
            dr.send_stored(chat(room, &format!("case note {room} {i}"))).await?;
        }
    }
    // A patient's record edit stays however old: the record is read from it.
    let allergy = json!({"patient": "KJ-0042", "field": "allergies", "value": "penicillin", "role": "doctor"});
    dr.send_stored(json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "record.edit", "body": allergy}))
        .await?;
    dr.close().await;
    let cli = |args: &[&str]| {
        let mut cmd = outpost_tests::command("outpost-cloud");
        cmd.args(args).arg("--dir").arg(&cloud.dir);
        cmd.output()
    };
    let held = cli(&["hold", "inquest", "--reason", "coroner case 12"])?;
    assert!(held.status.success(), "{held:?}");
    drop(node);

    // A month later, a node's retention (which looks once at start) removes the old
    // room's messages and none of the held room's.
    let mut later = env.to_vec();
    later.push(("OUTPOST_CLOUD_TESTING__CLOCK_OFFSET_SECS", "2678400"));
    let node = cloud.start_with_env("127.0.0.1:0", &later).await?;
    let base = node.http_base();
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    while room_count(&base, &tok, "clinic").await? > 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the month-old room was never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, record) =
        outpost_tests::http::request(&base, "GET", "/api/rooms/clinic/records/KJ-0042", Some(&tok), None).await?;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["fields"][0]["value"], "penicillin", "the record edit was kept: {record}");
    assert_eq!(room_count(&base, &tok, "inquest").await?, 5, "the held room keeps everything");

    // Deletion is refused under hold; released, it erases and says so in the audit log.
    let refused = cli(&["delete", "--room", "inquest", "--before", "2999-01-01", "--by", "records-officer"])?;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("legal hold"), "{refused:?}");
    assert_eq!(room_count(&base, &tok, "inquest").await?, 5);
    assert!(cli(&["release", "inquest", "--reason", "case closed"])?.status.success());
    let deleted =
        cli(&["delete", "--room", "inquest", "--before", "2999-01-01", "--by", "records-officer", "--vacuum-full"])?;
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(String::from_utf8_lossy(&deleted.stdout).contains("erased 5 messages"), "{deleted:?}");
    assert_eq!(room_count(&base, &tok, "inquest").await?, 0);
    let log = String::from_utf8_lossy(&cli(&["audit"])?.stdout).into_owned();
    assert!(log.contains("legal_hold") && log.contains("hold_released"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("\"deletion\"") && l.contains("erased 5 messages") && l.contains("VACUUM FULL")),
        "{log}"
    );
    Ok(())
}

/// Runs `bin args`, which must succeed; its stdout.
fn run_ok(bin: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> anyhow::Result<String> {
    let out = outpost_tests::command(bin).args(args.iter().map(|a| a.as_ref())).output()?;
    anyhow::ensure!(out.status.success(), "{bin} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usb_stick_reaches_a_cloud_on_postgresql_beside_its_running_node() -> anyhow::Result<()> {
    let (_pg, url) = cluster()?;
    let tmp = tempfile::tempdir()?;
    let cloud = cloud_on(&tmp.path().join("cloud"), &url)?;
    let node = cloud.start("127.0.0.1:0").await?;
    // The hub's uplink leads nowhere: a village without network.
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &free_udp_addr()?)?;
    let relay = relay_dir.start(&[]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.clinic_device(&node.ws_url(), "dr-neema", "doctor", "laptop").await?;
    let sent = amina.send_chats("clinic", 50, "visit").await?;
    let stick = tmp.path().join("stick");
    std::fs::create_dir(&stick)?;

    // The import writes to the database beside the running node, which hears of it.
    run_ok("outpost-relay", &[&"export", &"--dir", &relay_dir.dir, &"--to", &stick])?;
    let out = run_ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick])?;
    assert!(out.contains("50 entries (50 new)"), "{out}");
    let got: Vec<Value> = dr.messages(50).await?;
    let ids: Vec<String> = got.iter().map(|f| f["msg"]["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids, sent, "every message once, in order, at the running node");

    // The reply and the receipt come back by stick.
    let reply = dr.send_stored(chat("clinic", "bring her in tomorrow")).await?;
    run_ok("outpost-cloud", &[&"export", &"--dir", &cloud.dir, &"--relay", &"village-7", &"--to", &stick])?;
    let out = run_ok("outpost-relay", &[&"import", &"--dir", &relay_dir.dir, &stick])?;
    assert!(out.contains("confirmed through 50"), "{out}");
    let mut forwarded = HashSet::new();
    let mut replied = false;
    while forwarded.len() < sent.len() || !replied {
        let f = amina.next().await?;
        if f["type"] == "receipt" && f["state"] == "forwarded" {
            forwarded.insert(f["id"].as_str().unwrap_or_default().to_owned());
        } else if f["type"] == "message" {
            assert_eq!(f["msg"]["id"], reply["id"], "{f}");
            replied = true;
        }
    }
    // The same stick again: nothing new at the doctor.
    run_ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick.join("village-7.to-cloud.outpost")])?;
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    Ok(())
}
