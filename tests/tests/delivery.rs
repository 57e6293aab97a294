//! Multi-device rooms: every member gets each message exactly once, in each sender's
//! order; the sender gets `stored`; other rooms see nothing.

use std::collections::{HashMap, HashSet};

use outpost_tests::World;
use outpost_tests::client::chat;
use serde_json::json;

#[tokio::test]
async fn room_members_get_every_message_exactly_once_in_sender_order() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut b = w.device("baraka", "baraka-phone", &["clinic"]).await;
    let mut c = w.device("chausiku", "chausiku-tab", &["clinic", "maternity"]).await;
    let mut outsider = w.device("daudi", "daudi-phone", &["maternity"]).await;

    const N: usize = 200;
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    // Interleave two senders without waiting for each `stored`: pipelined like a real
    // outbox flush.
    for i in 0..N {
        sent_a.push(a.send_msg(chat("clinic", &format!("a{i}"))).await?);
        sent_b.push(b.send_msg(chat("clinic", &format!("b{i}"))).await?);
    }
    let mut cursors = HashSet::new();
    for id in &sent_a {
        let s = a.expect_stored(id).await?;
        assert!(s.get("duplicate").is_none(), "first send is not a duplicate: {s}");
        assert!(cursors.insert(s["cursor"].as_u64().unwrap_or(0)), "cursors are unique");
    }
    for id in &sent_b {
        b.expect_stored(id).await?;
    }

    // C sees all 2N, each once, each sender's in order, cursors strictly increasing.
    let got = c.messages(2 * N).await?;
    let mut by_sender: HashMap<String, Vec<String>> = HashMap::new();
    let mut last_cursor = 0;
    for f in &got {
        let cur = f["cursor"].as_u64().unwrap_or(0);
        assert!(cur > last_cursor, "cursor order");
        last_cursor = cur;
        let m = &f["msg"];
        assert_eq!(m["room"], "clinic");
        assert!(m["hlc"].as_u64().unwrap_or(0) > 0 && m["at"].as_u64().unwrap_or(0) > 0);
        by_sender
            .entry(m["from"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(m["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(by_sender["amina"], sent_a);
    assert_eq!(by_sender["baraka"], sent_b);
    // A sees B's messages but never its own echoed back.
    let at_a = a.messages(N).await?;
    assert!(at_a.iter().all(|f| f["msg"]["from"] == "baraka"));
    // Barriers: one more message per room. Each member gets a room's messages in cursor
    // order, so an extra copy (or amina's own) would arrive before it.
    let last = b.send_stored(chat("clinic", "last")).await?;
    assert_eq!(c.expect("message").await?["cursor"], last["cursor"], "C got more than 2N");
    assert_eq!(a.expect("message").await?["cursor"], last["cursor"], "A got more than B's N");
    let elsewhere = c.send_stored(chat("maternity", "elsewhere")).await?;
    assert_eq!(outsider.expect("message").await?["cursor"], elsewhere["cursor"], "clinic leaked to maternity");
    Ok(())
}

#[tokio::test]
async fn a_message_carries_what_the_sender_wrote_plus_server_fields() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "phone-1", &["clinic"]).await;
    let mut b = w.device("baraka", "phone-2", &["clinic"]).await;
    let first = a.send_stored(chat("clinic", "question")).await?;
    let q = b.expect("message").await?;
    let reply = json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "report", "priority": "urgent",
        "body": {"temp": 39.5, "notes": ["fever", "cough"]}, "seq": 7, "reply_to": q["msg"]["id"]});
    let stored = b.send_stored(reply.clone()).await?;
    let got = a.expect("message").await?;
    assert_eq!(got["cursor"], stored["cursor"]);
    let m = &got["msg"];
    for k in ["id", "room", "kind", "priority", "body", "seq", "reply_to"] {
        assert_eq!(m[k], reply[k], "field {k}");
    }
    assert_eq!(m["from"], "baraka");
    assert_eq!(m["device"], "phone-2");
    assert!(m["hlc"].as_u64() > q["msg"]["hlc"].as_u64(), "a reply is ordered after what it answers");
    assert!(first["cursor"].as_u64() < stored["cursor"].as_u64());
    Ok(())
}

#[tokio::test]
async fn a_sender_cannot_write_as_someone_else() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "phone-1", &["clinic"]).await;
    let mut b = w.device("baraka", "phone-2", &["clinic"]).await;
    // Who sent it and from which device come from the token and the connection; fields
    // of the frame that claim otherwise change nothing.
    let mut forged = chat("clinic", "take 10 tablets at once");
    forged["from"] = json!("dr-okafor");
    forged["device"] = json!("hospital-desk");
    forged["msg"] = json!({"from": "dr-okafor"});
    let stored = a.send_stored(forged).await?;
    let got = b.expect("message").await?;
    assert_eq!(got["cursor"], stored["cursor"]);
    assert_eq!(got["msg"]["from"], "amina", "the sender is the token's user: {got}");
    assert_eq!(got["msg"]["device"], "phone-1", "the device is the connection's: {got}");
    Ok(())
}

#[tokio::test]
async fn a_resent_id_is_deduplicated_with_the_same_cursor() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "phone-1", &["clinic"]).await;
    let mut b = w.device("baraka", "phone-2", &["clinic"]).await;
    let msg = chat("clinic", "only once");
    let first = a.send_stored(msg.clone()).await?;
    let mut again = msg.clone();
    again["seq"] = json!(1);
    let second = a.send_stored(again.clone()).await?;
    assert_eq!(second["cursor"], first["cursor"]);
    assert_eq!(second["duplicate"], true);
    // Even from another connection of the same device.
    let mut a2 = w.device("amina", "phone-1", &["clinic"]).await;
    let third = a2.send_stored(again).await?;
    assert_eq!(third["cursor"], first["cursor"]);
    assert_eq!(third["duplicate"], true);
    assert_eq!(b.expect("message").await?["cursor"], first["cursor"]);
    // Barrier: the next message; a stored duplicate would have come before it.
    let next = a.send_stored(chat("clinic", "next")).await?;
    assert_eq!(b.expect("message").await?["cursor"], next["cursor"], "the re-sent id arrived twice");
    Ok(())
}

/// A phone on a poor Wi-Fi reads slower than its room writes: its queue on the hub
/// overflows again and again, also while it is catching up from the log, and it still
/// gets every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_far_behind_a_busy_room_gets_every_message_once_in_order() -> anyhow::Result<()> {
    const N: usize = 4_000;
    let tmp = tempfile::tempdir()?;
    let cloud = outpost_tests::Cloud::init(&tmp.path().join("cloud"))?;
    let relay_dir =
        cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &outpost_tests::free_udp_addr()?)?;
    let env = [
        // A queue of four live entries per device: a slow reader overflows it at once.
        ("OUTPOST_LIMITS__OUTBOUND_QUEUE", "4"),
        ("OUTPOST_LIMITS__RATE_PER_SEC", "100000"),
        ("OUTPOST_LIMITS__RATE_BURST", "100000"),
    ];
    let relay = relay_dir.start(&env).await?;
    let mut slow = cloud.worker(&relay.ws_url(), "zawadi", &["clinic"]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let pad = "x".repeat(1000);
    let writer = tokio::spawn(async move {
        let mut sent = Vec::with_capacity(N);
        for round in 0..N / 500 {
            let mut ids = Vec::new();
            for i in 0..500 {
                ids.push(amina.send_msg(chat("clinic", &format!("{round}/{i} {pad}"))).await?);
            }
            for id in &ids {
                amina.expect_stored(id).await?;
            }
            sent.extend(ids);
        }
        anyhow::Ok(sent)
    });
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        let f = slow.expect("message").await?;
        got.push(f["msg"]["id"].as_str().unwrap_or_default().to_owned());
        if got.len() % 100 == 0 {
            // Reading in fits and starts, as a phone whose Wi-Fi comes and goes.
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
    }
    let sent = writer.await??;
    assert_eq!(got.len(), sent.len());
    assert_eq!(got, sent, "every message once, in the order it was sent");
    slow.no_frame_of("message", std::time::Duration::from_millis(300)).await?;
    Ok(())
}
