//! Store-and-forward to the cloud and back, with real `outpost-relay` and
//! `outpost-cloud` processes over real QUIC.

use std::collections::{HashMap, HashSet};

use outpost_tests::client::chat;
use outpost_tests::{Cloud, Device, free_udp_addr};
/// Test hubs retry the cloud within 2 s (the default cap of 30 s would only slow the
/// tests down; the backoff policy itself is tested in the protocol crate).
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_stored_while_the_cloud_is_down_arrives_exactly_once_in_order() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let relay = relay_dir.start(FAST_RETRY).await?;

    const PER_SENDER: usize = 1000;
    let mut senders = Vec::new();
    for user in ["amina", "baraka"] {
        senders.push(cloud.worker(&relay.ws_url(), user, &["clinic"]).await?);
    }
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for (i, d) in senders.iter_mut().enumerate() {
        let user = if i == 0 { "amina" } else { "baraka" };
        let mut ids = Vec::new();
        for n in 0..PER_SENDER {
            ids.push(d.send_msg(chat("clinic", &format!("{user} {n}"))).await?);
        }
        for id in &ids {
            d.expect_stored(id).await?;
        }
        sent.insert(user.to_owned(), ids);
    }

    // The cloud appears.
    let cloud_proc = cloud.start(&quic).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;
    let got = dr.messages(2 * PER_SENDER).await?;
    let mut seen = HashSet::new();
    let mut by_sender: HashMap<String, Vec<String>> = HashMap::new();
    for f in &got {
        let id = f["msg"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(id.clone()), "message {id} delivered twice");
        by_sender.entry(f["msg"]["from"].as_str().unwrap_or_default().to_owned()).or_default().push(id);
    }
    assert_eq!(by_sender, sent, "every message, each sender's in order");
    dr.no_frame_of("message", std::time::Duration::from_millis(500)).await?;

    // Each sender learns that the hospital has every one of its messages.
    for (i, d) in senders.iter_mut().enumerate() {
        let user = if i == 0 { "amina" } else { "baraka" };
        let mut forwarded = HashSet::new();
        while forwarded.len() < PER_SENDER {
            let r = d.expect("receipt").await?;
            if r["state"] == "forwarded" {
                forwarded.insert(r["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(forwarded, sent[user].iter().cloned().collect::<HashSet<_>>());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctors_reply_reaches_the_worker_live_and_after_reconnecting() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay =
        cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?.start(&[]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;

    let q = amina.send_stored(chat("clinic", "fever 39.5, what dose?")).await?;
    let at_cloud = dr.expect("message").await?;
    assert_eq!(at_cloud["msg"]["id"], q["id"]);
    assert_eq!(at_cloud["msg"]["from"], "amina");
    let mut reply = chat("clinic", "paracetamol 1 g, recheck in 4 h");
    reply["reply_to"] = q["id"].clone();
    let r = dr.send_stored(reply.clone()).await?;
    let got = amina.expect("message").await?;
    assert_eq!(got["msg"]["id"], r["id"]);
    assert_eq!(got["msg"]["from"], "dr-neema");
    assert!(got["msg"]["hlc"].as_u64() > at_cloud["msg"]["hlc"].as_u64(), "the reply sorts after the question");

    // Custody flows both ways: the doctor's device acks and reads; amina sees it.
    dr.send_json(&json!({"v":1,"type":"ack","cursor":at_cloud["cursor"]})).await?;
    dr.send_json(&json!({"v":1,"type":"read","room":"clinic","id":q["id"]})).await?;
    let mut states = Vec::new();
    while !states.contains(&"read".to_owned()) {
        let r: Value = amina.expect("receipt").await?;
        if r["id"] == q["id"] {
            states.push(r["state"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert!(states.contains(&"forwarded".to_owned()) && states.contains(&"delivered".to_owned()), "{states:?}");

    // Amina goes offline; the next reply waits on the hub for her.
    let epoch = amina.welcome["epoch"].as_str().unwrap_or_default().to_owned();
    let last = got["cursor"].as_u64();
    amina.close().await;
    let r2 = dr.send_stored(chat("clinic", "and drink plenty of water")).await?;
    // The doctor learns when the hub has it.
    loop {
        let f = dr.expect("receipt").await?;
        if f["id"] == r2["id"] && f["state"] == "forwarded" {
            break;
        }
    }
    let tok = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = Device::connect(&relay.ws_url()).await?;
    amina.hello(&tok, "amina-phone", last, Some(&epoch)).await?;
    let back = amina.expect("message").await?;
    assert_eq!(back["msg"]["id"], r2["id"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospital_systems_post_and_read_through_the_http_api() -> anyhow::Result<()> {
    use outpost_tests::http::request;
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud
        .provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?
        .start(FAST_RETRY)
        .await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let base = cloud_proc.http_base();
    let his = cloud.token("his", "doctor", &["clinic"], "1h")?;

    // A village message is readable over HTTP once it reached the cloud (a doctor's
    // device on the cloud tells us when).
    let mut dr = cloud.doctor(&cloud_proc.ws_url(), &["clinic"]).await?;
    let m = amina.send_stored(chat("clinic", "lab results please")).await?;
    dr.expect("message").await?;
    let path = "/api/rooms/clinic/messages?after=0";
    let (status, page) = request(&base, "GET", path, Some(&his), None).await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["messages"][0]["msg"]["id"], m["id"]);
    let next = page["next"].clone();

    // A posted message reaches the worker on the hub; a re-post is deduplicated.
    let id = outpost_tests::new_id();
    let post = json!({"id": id, "kind": "report", "body": {"hb": 11.2}, "reply_to": m["id"]});
    let (status, created) = request(&base, "POST", "/api/rooms/clinic/messages", Some(&his), Some(&post)).await?;
    assert_eq!(status, 201, "{created}");
    let (status, again) = request(&base, "POST", "/api/rooms/clinic/messages", Some(&his), Some(&post)).await?;
    assert_eq!((status, &again["duplicate"], &again["cursor"]), (200, &json!(true), &created["cursor"]));
    let got = amina.expect("message").await?;
    assert_eq!(got["msg"]["id"], id.as_str());
    assert_eq!(got["msg"]["body"]["hb"], 11.2);
    let (_, after) =
        request(&base, "GET", &format!("/api/rooms/clinic/messages?after={next}"), Some(&his), None).await?;
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(1));

    // Refusals carry the protocol's codes.
    let (status, e) = request(&base, "GET", path, None, None).await?;
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthenticated")));
    let other = cloud.token("his", "doctor", &["maternity"], "1h")?;
    let (status, e) = request(&base, "GET", path, Some(&other), None).await?;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));
    let (status, e) =
        request(&base, "POST", "/api/rooms/clinic/messages", Some(&his), Some(&json!({"nobody": 1}))).await?;
    assert_eq!((status, e["code"].as_str()), (400, Some("bad_frame")));
    Ok(())
}
