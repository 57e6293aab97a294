//! What the cloud sends each hub, and what survives a replaced database, with real
//! `outpost-relay` and `outpost-cloud` processes over real QUIC: two hubs sharing a room,
//! a database replaced at either end (history newest first, files on demand), a post to a
//! room no hub serves yet, and a worker's
//! receipts travelling back to the doctor.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use outpost_tests::client::chat;
use outpost_tests::http::request;
use outpost_tests::{Cloud, Device};
use serde_json::{Value, json};

/// Test hubs retry the cloud within 2 s (the default cap of 30 s would only slow the
/// tests down; the backoff policy itself is tested in the protocol crate).
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

/// `user`'s phone on the hub at `url`, replaying `rooms` from the beginning.
async fn phone(cloud: &Cloud, url: &str, user: &str, rooms: &[&str]) -> anyhow::Result<Device> {
    let tok = cloud.token(user, "worker", rooms, "1h")?;
    let mut d = Device::connect(url).await?;
    d.hello(&tok, &format!("{user}-phone"), None, None).await?;
    Ok(d)
}

/// `user`'s reading device, replaying `rooms` from cursor 0: every message (a sign-in
/// with no cursor gets each room's latest window only).
async fn reader(cloud: &Cloud, url: &str, user: &str, rooms: &[&str]) -> anyhow::Result<Device> {
    let tok = cloud.token(user, "worker", rooms, "1h")?;
    let mut d = Device::connect(url).await?;
    d.hello(&tok, &format!("{user}-reader"), Some(0), None).await?;
    Ok(d)
}

/// How many times each message id reaches a device that replays `rooms` from the
/// beginning, once the replay is complete.
async fn replay_counts(cloud: &Cloud, url: &str, user: &str, rooms: &[&str]) -> anyhow::Result<HashMap<String, usize>> {
    let mut d = reader(cloud, url, user, rooms).await?;
    let mut counts = HashMap::new();
    for f in d.settle("message").await? {
        *counts.entry(f["msg"]["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    d.close().await;
    Ok(counts)
}

/// Polls a device's replay until it holds every id in `want` (a resend over the link
/// takes a moment); returns the last counts, each id with how often it came.
async fn replay_until_complete(
    cloud: &Cloud,
    url: &str,
    user: &str,
    rooms: &[&str],
    want: &[String],
) -> anyhow::Result<HashMap<String, usize>> {
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    loop {
        let counts = replay_counts(cloud, url, user, rooms).await?;
        if want.iter().all(|id| counts.contains_key(id)) {
            return Ok(counts);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the replay never held every message: {} of {} ({counts:?})",
            want.iter().filter(|id| counts.contains_key(*id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `n` chat messages "`text` 0", "`text` 1", ... to `room` from `d`, each once it
/// was stored; returns their ids.
async fn send_all(d: &mut Device, room: &str, text: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let stored = d.send_stored(chat(room, &format!("{text} {i}"))).await?;
        ids.push(stored["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}

/// Removes a stopped server's SQLite database (and its WAL), as a replaced disk would.
fn remove_db(db: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_sharing_a_room_hear_each_other_once_through_the_cloud() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let quic = cloud_proc.quic_addr();
    let hub_a = cloud.provision_relay_at("village-7", &tmp.path().join("a"), &quic)?.start(FAST_RETRY).await?;
    let hub_b = cloud.provision_relay_at("village-9", &tmp.path().join("b"), &quic)?.start(FAST_RETRY).await?;
    let mut amina = phone(&cloud, &hub_a.ws_url(), "amina", &["district"]).await?;
    let mut baraka = phone(&cloud, &hub_b.ws_url(), "baraka", &["district"]).await?;

    // A message on hub A reaches baraka on hub B live, by way of the cloud.
    let q = amina.send_stored(chat("district", "measles case, who has vaccine?")).await?;
    let got = baraka.expect("message").await.context("amina's message on hub B")?;
    assert_eq!((&got["msg"]["id"], &got["msg"]["from"]), (&q["id"], &json!("amina")));

    // His reply reaches amina on hub A.
    let mut reply = chat("district", "we have 40 doses");
    reply["reply_to"] = q["id"].clone();
    let r = baraka.send_stored(reply).await?;
    let back = amina.expect("message").await.context("baraka's reply on hub A")?;
    assert_eq!((&back["msg"]["id"], &back["msg"]["from"]), (&r["id"], &json!("baraka")));

    // Each hub's replay holds both messages exactly once: the message that went out and
    // came back (or would, without the cloud's origin filter) is not doubled.
    let want = [q["id"].as_str().unwrap_or_default().to_owned(), r["id"].as_str().unwrap_or_default().to_owned()];
    for (hub, user) in [(&hub_b, "baraka"), (&hub_a, "amina")] {
        let counts = replay_counts(&cloud, &hub.ws_url(), user, &["district"]).await?;
        let expected: HashMap<String, usize> = want.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(counts, expected, "{user}'s replay on their hub: each message once");
    }
    // Neither live session saw a message twice: a fresh message from each side is the
    // next one the other gets (messages arrive in order, so a second copy of an earlier
    // one would have come first).
    let barrier = amina.send_stored(chat("district", "barrier from A")).await?;
    let next = baraka.expect("message").await.context("amina's barrier")?;
    assert_eq!(next["msg"]["id"], barrier["id"], "baraka got a message twice: {next}");
    let barrier = baraka.send_stored(chat("district", "barrier from B")).await?;
    let next = amina.expect("message").await.context("baraka's barrier")?;
    assert_eq!(next["msg"]["id"], barrier["id"], "amina got a message twice: {next}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_database_was_replaced_gets_its_rooms_back_from_the_cloud_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let mut relay = relay_dir.start(FAST_RETRY).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    // Amina's two messages reach the doctor and the doctor's three reach the hub (amina
    // has them), then the hub's disk is replaced: a new, empty database with a new epoch.
    let mut sent = send_all(&mut amina, "clinic", "visit", 2).await?;
    dr.messages(2).await?;
    sent.extend(send_all(&mut dr, "clinic", "instruction", 3).await?);
    amina.messages(3).await?;
    let old_epoch = amina.welcome["epoch"].clone();
    amina.close().await;
    relay.terminate().await?;
    remove_db(&relay_dir.db())?;
    relay = relay_dir.start(FAST_RETRY).await?;

    // The cloud resends the room — the village's own earlier messages too, which only
    // the cloud still holds — and the new database holds each message once.
    let counts = replay_until_complete(&cloud, &relay.ws_url(), "amina", &["clinic"], &sent).await?;
    let once: HashMap<String, usize> = sent.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts, once, "each of amina's and the doctor's messages once on the new database");
    let fresh = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    assert_ne!(fresh.welcome["epoch"], old_epoch, "the replaced database has a new epoch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_card_swap_a_fresh_phone_sees_the_whole_room_again() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let quic = cloud_proc.quic_addr();
    let mut relay = cloud.provision_relay_at("village-7", &tmp.path().join("card-1"), &quic)?.start(FAST_RETRY).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    // 200 of the village's messages and 20 replies, all carried across the link.
    let mut room = send_all(&mut amina, "clinic", "register entry", 200).await?;
    dr.messages(200).await?;
    room.extend(send_all(&mut dr, "clinic", "advice", 20).await?);
    amina.messages(20).await?;
    amina.close().await;

    // The card dies; the hub is enrolled again under the same relay id on a new one.
    relay.terminate().await?;
    relay = cloud.provision_relay_at("village-7", &tmp.path().join("card-2"), &quic)?.start(FAST_RETRY).await?;

    // A fresh phone gets the whole room back, each message once.
    let counts = replay_until_complete(&cloud, &relay.ws_url(), "baraka", &["clinic"], &room).await?;
    let once: HashMap<String, usize> = room.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts.len(), 220);
    assert_eq!(counts, once, "each of the room's 220 messages once on the new card");

    // Newest first: the room's latest 200 came back before the 20 oldest, so a phone that
    // opened the room during the rebuild saw the recent conversation first. A phone's
    // replay follows the order the hub stored them in.
    let order = stamps(&mut reader(&cloud, &relay.ws_url(), "baraka", &["clinic"]).await?).await?;
    let first: HashSet<&str> = order.iter().take(200).map(|(_, id)| id.as_str()).collect();
    let latest: HashSet<&str> = room[20..].iter().map(String::as_str).collect();
    assert_eq!(first, latest, "the first 200 stored on the new card are the room's latest 200");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_card_swap_a_photos_preview_is_back_at_once_and_its_file_on_demand() -> anyhow::Result<()> {
    use outpost_tests::media::{Upload, download, info, info_until, photo, sha256_hex};
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let quic = cloud_proc.quic_addr();
    let mut relay = cloud.provision_relay_at("village-7", &tmp.path().join("card-1"), &quic)?.start(FAST_RETRY).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;

    // A 5 MB photo, sent in the room and carried to the cloud, file and all.
    let img = photo(5_000_000, 11);
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    up.run(256 << 10, None).await?;
    let mut a = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    a.send_stored(up.message("clinic", "wound, day 5", "IMG_0500.jpg")).await?;
    let poll = Duration::from_millis(100);
    info_until(&cloud_proc.http_base(), &neema, &up.sha, poll, outpost_tests::EVENT_TIMEOUT, |v| {
        v["available"] == true
    })
    .await?;
    a.close().await;

    // The card dies; the hub comes back on a new one under the same relay id.
    relay.terminate().await?;
    relay = cloud.provision_relay_at("village-7", &tmp.path().join("card-2"), &quic)?.start(FAST_RETRY).await?;
    let hub = relay.http_base();

    // A fresh phone sees the message with its preview as soon as the message is back.
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    let msg = loop {
        let mut b = phone(&cloud, &relay.ws_url(), "baraka", &["clinic"]).await?;
        let frames = b.settle("message").await?;
        b.close().await;
        if let Some(m) = frames.into_iter().find(|f| f["msg"]["body"]["media"]["sha256"] == up.sha.as_str()) {
            break m;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the photo's message never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let preview = &msg["msg"]["body"]["media"]["preview"];
    assert!(preview["data"].as_str().is_some_and(|d| d.len() > 100), "the preview travels in the message: {preview}");

    // The file itself is not pushed to the rebuilt hub: the first ask finds it missing
    // and asks the cloud, and it arrives on that demand.
    let baraka = cloud.token("baraka", "worker", &["clinic"], "1h")?;
    let (status, first) = info(&hub, &baraka, &up.sha).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["available"].clone(), first["requested"].clone()), (json!(false), json!(true)), "{first}");
    let r = download(&hub, &baraka, &up.sha).await?;
    assert_eq!(r.status, 404, "not on the new card yet");
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("asked the cloud")), "{:?}", r.json());
    info_until(&hub, &baraka, &up.sha, poll, Duration::from_secs(120), |v| v["available"] == true).await?;
    let full = download(&hub, &baraka, &up.sha).await?;
    assert_eq!(full.status, 200);
    assert_eq!(sha256_hex(&full.body), up.sha, "the same bytes as the photo sent before the card died");
    assert_eq!(full.body.len(), img.len());
    Ok(())
}

/// `(hlc, id)` of every message a fresh sign-in replays, in cursor order.
async fn stamps(d: &mut Device) -> anyhow::Result<Vec<(u64, String)>> {
    Ok(d.settle("message")
        .await?
        .iter()
        .map(|f| (f["msg"]["hlc"].as_u64().unwrap_or(0), f["msg"]["id"].as_str().unwrap_or_default().to_owned()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_and_the_cloud_list_a_room_in_one_order_by_stamp() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    // The hub starts with its uplink pointing nowhere: the village and the hospital
    // write while they cannot reach each other.
    let nowhere = outpost_tests::free_udp_addr()?;
    let mut relay = relay_dir.start(&[("OUTPOST_UPLINK__CLOUD", nowhere.as_str())]).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;
    let a = amina.send_stored(chat("clinic", "written first, in the village")).await?;
    let b = dr.send_stored(chat("clinic", "written second, at the hospital")).await?;
    assert!(a["hlc"].as_u64() < b["hlc"].as_u64(), "stored says each message's stamp: {a} {b}");

    // The link comes up: each side receives the other's message after its own.
    amina.close().await;
    relay.terminate().await?;
    relay = relay_dir.start(FAST_RETRY).await?;
    let got = dr.expect("message").await.context("the village's message at the cloud")?;
    assert_eq!(got["msg"]["hlc"], a["hlc"], "a message keeps its stamp across the link");

    let at_hub = stamps(&mut phone(&cloud, &relay.ws_url(), "baraka", &["clinic"]).await?).await?;
    let at_cloud = stamps(&mut cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?).await?;
    let ids = |v: &[(u64, String)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    let (first, second) = (a["id"].as_str().unwrap_or_default(), b["id"].as_str().unwrap_or_default());
    assert_eq!(ids(&at_hub), [first, second], "the hub holds them in the order they reached it");
    assert_eq!(ids(&at_cloud), [second, first], "the cloud holds them in the order they reached it");
    // The room's order, by stamp then id, is one on both (what every client shows).
    let (mut hub_order, mut cloud_order) = (at_hub.clone(), at_cloud.clone());
    hub_order.sort();
    cloud_order.sort();
    assert_eq!(hub_order, cloud_order, "one order of the room on the hub and on the cloud");
    assert_eq!(ids(&hub_order), [first, second]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_whose_database_was_replaced_gets_the_hubs_log_again_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let mut cloud_proc = cloud.start("127.0.0.1:0").await?;
    let quic = cloud_proc.quic_addr();
    let relay = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?.start(FAST_RETRY).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    let mut sent = send_all(&mut amina, "clinic", "visit", 5).await?;
    dr.messages(5).await?;
    // The doctor's own answer reaches the hub before the cloud's database is lost: only
    // the hub holds it afterwards.
    sent.push(dr.send_stored(chat("clinic", "seen, all fine")).await?["id"].as_str().unwrap_or_default().to_owned());
    amina.messages(1).await?;
    dr.close().await;

    // The cloud's database is replaced; the cloud comes back on the same address.
    cloud_proc.terminate().await?;
    remove_db(&cloud.db())?;
    cloud_proc = cloud.start(&quic).await?;

    // The hub resends its log: a doctor signing in replays each message once.
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    let counts = loop {
        let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for f in dr.settle("message").await? {
            *counts.entry(f["msg"]["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
        dr.close().await;
        if sent.iter().all(|id| counts.contains_key(id)) {
            break counts;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the new cloud database never got the hub's log: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let once: HashMap<String, usize> = sent.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts, once, "each of the hub's messages, and the doctor's own, once on the new cloud database");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctors_post_to_a_room_no_hub_serves_yet_reaches_the_first_worker_to_join_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud
        .provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?
        .start(FAST_RETRY)
        .await?;
    // The hub is connected and already serves another room, so its sender is running
    // and has passed the post below when the new room appears.
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic", "maternity"]).await?;
    amina.send_stored(chat("clinic", "link check")).await?;
    dr.expect("message").await?;

    let his = cloud.token("his", "doctor", &["maternity"], "1h")?;
    let id = outpost_tests::new_id();
    let post = json!({"id": id, "kind": "chat", "body": {"text": "ANC clinic moves to Thursday"}});
    let (status, created) =
        request(&cloud_proc.http_base(), "POST", "/api/rooms/maternity/messages", Some(&his), Some(&post)).await?;
    assert_eq!(status, 201, "{created}");
    // Something newer in a room the hub serves crosses first: the post is behind the
    // hub's sender once this arrives.
    let later = dr.send_stored(chat("clinic", "thanks")).await?;
    let got = amina.expect("message").await?;
    assert_eq!(got["msg"]["id"], later["id"], "the doctor's later message in clinic");

    // Zawadi, whose token names maternity, signs in on the hub: the post reaches her.
    let mut zawadi = phone(&cloud, &relay.ws_url(), "zawadi", &["maternity"]).await?;
    let got = zawadi.expect("message").await.context("the post, once the hub serves maternity")?;
    assert_eq!((&got["msg"]["id"], &got["msg"]["room"]), (&json!(id), &json!("maternity")));
    assert_eq!(got["msg"]["body"]["text"], "ANC clinic moves to Thursday");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_delivered_and_read_receipts_reach_the_doctor() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud
        .provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?
        .start(FAST_RETRY)
        .await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    let advice = dr.send_stored(chat("clinic", "bring her in tomorrow")).await?;
    let got = amina.expect("message").await?;
    assert_eq!(got["msg"]["id"], advice["id"]);
    // Amina's phone acks it (it is on her phone) and she opens it.
    amina.send_json(&json!({"v":1,"type":"ack","cursor":got["cursor"]})).await?;
    amina.send_json(&json!({"v":1,"type":"read","room":"clinic","id":advice["id"]})).await?;

    // On the doctor's laptop: delivered to amina, then read by amina.
    let mut states: Vec<Value> = Vec::new();
    while !states.iter().any(|r| r["state"] == "read") {
        let r = dr.expect("receipt").await.with_context(|| format!("amina's receipts; so far {states:?}"))?;
        if r["id"] == advice["id"] && r["state"] != "forwarded" {
            states.push(r);
        }
    }
    let seen: Vec<(&Value, &Value)> = states.iter().map(|r| (&r["state"], &r["by"])).collect();
    assert_eq!(seen, [(&json!("delivered"), &json!("amina")), (&json!("read"), &json!("amina"))]);
    Ok(())
}
