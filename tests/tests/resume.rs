//! Resume by cursor, resync on a foreign epoch or an impossible cursor.

use outpost_tests::client::chat;
use outpost_tests::{Device, World};
use serde_json::json;

fn cursor(f: &serde_json::Value) -> u64 {
    f["cursor"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn reconnecting_with_a_cursor_replays_exactly_what_was_missed() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a-phone", &["clinic"]).await;
    let mut b = w.device("baraka", "b-phone", &["clinic"]).await;
    for i in 0..3 {
        a.send_stored(chat("clinic", &format!("before {i}"))).await?;
    }
    let seen = b.messages(3).await?;
    let last = cursor(&seen[2]);
    let epoch = b.welcome["epoch"].as_str().unwrap_or_default().to_owned();
    // B also sends one of its own, then goes away.
    b.send_stored(chat("clinic", "mine")).await?;
    b.close().await;

    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(a.send_stored(chat("clinic", &format!("while away {i}"))).await?["id"].clone());
    }
    let tok = w.token("baraka", "worker", &["clinic"]);
    let mut b = Device::connect(&w.relay.ws_url()).await?;
    let welcome = b.hello(&tok, "b-phone", Some(last), Some(&epoch)).await?;
    assert_eq!(welcome["epoch"], epoch.as_str());
    let replay = b.settle("message").await?;
    let ids: Vec<_> = replay.iter().map(|f| f["msg"]["id"].clone()).collect();
    assert_eq!(ids, missed, "exactly the five missed messages, in order, not its own");
    assert!(b.take("resync").is_empty());

    // Live traffic continues after the replay.
    let live = a.send_stored(chat("clinic", "live")).await?;
    assert_eq!(cursor(&b.expect("message").await?), cursor(&live));
    Ok(())
}

#[tokio::test]
async fn a_foreign_epoch_gets_resync_and_the_full_replay() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a-phone", &["clinic"]).await;
    let mut all = Vec::new();
    for i in 0..4 {
        all.push(a.send_stored(chat("clinic", &format!("m{i}"))).await?);
    }
    let tok = w.token("amina", "worker", &["clinic"]);
    // Same device, a cursor from an SD card that was replaced.
    let mut again = Device::connect(&w.relay.ws_url()).await?;
    let welcome = again.hello(&tok, "a-phone", Some(2), Some("old-card-epoch")).await?;
    let resync = again.expect("resync").await?;
    assert_eq!(resync["epoch"], welcome["epoch"]);
    assert_eq!(resync["cursor"], welcome["cursor"]);
    let replay = again.settle("message").await?;
    let cursors: Vec<u64> = replay.iter().map(cursor).collect();
    let expected: Vec<u64> = all.iter().map(cursor).collect();
    assert_eq!(cursors, expected, "full replay, including the device's own messages");
    Ok(())
}

#[tokio::test]
async fn a_cursor_beyond_the_head_is_treated_as_foreign() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a-phone", &["clinic"]).await;
    a.send_stored(chat("clinic", "one")).await?;
    let epoch = a.welcome["epoch"].as_str().unwrap_or_default().to_owned();
    let tok = w.token("baraka", "worker", &["clinic"]);
    let mut b = Device::connect(&w.relay.ws_url()).await?;
    b.hello(&tok, "b-phone", Some(1_000_000), Some(&epoch)).await?;
    b.expect("resync").await?;
    assert_eq!(b.settle("message").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_epoch_survives_restarts_and_a_new_database_gets_a_new_one() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    let a = w.device("amina", "a-phone", &["clinic"]).await;
    let epoch = a.welcome["epoch"].clone();
    a.close().await;
    assert_eq!(w.relay.terminate().await?, Some(0), "graceful stop exits 0");
    w.restart_relay().await?;
    let a = w.device("amina", "a-phone", &["clinic"]).await;
    assert_eq!(a.welcome["epoch"], epoch);
    // A second relay (a replaced SD card) has its own epoch.
    let other = w.cloud.provision_relay("r2", &w.tmp.path().join("relay2"))?.start(&[]).await?;
    let tok = w.token("amina", "worker", &["clinic"]);
    let mut d = Device::connect(&other.ws_url()).await?;
    let welcome = d.hello(&tok, "a-phone", Some(1), epoch.as_str()).await?;
    assert_ne!(welcome["epoch"], epoch);
    d.expect("resync").await?;
    Ok(())
}

#[tokio::test]
async fn a_device_id_is_only_unique_per_user() -> anyhow::Result<()> {
    let w = World::start().await?;
    // Two people who both call their device "phone".
    let mut a = w.device("amina", "phone", &["clinic"]).await;
    let b = w.device("baraka", "phone", &["clinic"]).await;
    let epoch = b.welcome["epoch"].as_str().unwrap_or_default().to_owned();
    b.close().await;
    let m = a.send_stored(chat("clinic", "for baraka")).await?;
    let tok = w.token("baraka", "worker", &["clinic"]);
    let mut b = Device::connect(&w.relay.ws_url()).await?;
    b.hello(&tok, "phone", Some(0), Some(&epoch)).await?;
    let got = b.settle("message").await?;
    assert_eq!(got.len(), 1, "amina's message is not mistaken for baraka's own");
    assert_eq!(got[0]["cursor"], m["cursor"]);
    Ok(())
}

#[tokio::test]
async fn a_phone_in_a_long_replay_still_gets_its_emergency_out_at_once() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a-phone", &["clinic"]).await;
    // About 12 MB of history: far more than the socket buffers between hub and phone hold
    // (4 MiB of send buffer on loopback), so a phone that is not reading yet holds the
    // hub's replay to it, as a phone on a weak Wi-Fi corner slows it.
    let report = "x".repeat(60_000);
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            a.send_msg(json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "report",
            "priority": "normal", "body": {"n": i, "text": report}}))
                .await?,
        );
    }
    for id in &ids {
        a.expect_stored(id).await?;
    }

    // Baraka's phone comes back with nothing (a full replay) and an emergency queued: it
    // sends both at once and reads nothing for now.
    let tok = w.token("baraka", "worker", &["clinic"]);
    let mut b = Device::connect(&w.relay.ws_url()).await?;
    let alert = json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "alert", "priority": "emergency",
        "body": {"text": "postpartum haemorrhage, house 12"}, "seq": 1});
    b.send_together(&[
        json!({"v": 1, "type": "hello", "token": tok, "device": "b-phone"}),
        json!({"v": 1, "type": "send", "msg": alert}),
    ])
    .await?;
    // The hub takes the emergency while the replay to Baraka is stuck: Amina has it live.
    let live = a.expect("message").await?;
    assert_eq!(live["msg"]["id"], alert["id"], "the emergency waited for the sender's replay");

    // Baraka's phone then sees what the protocol promises, in order: welcome, the whole
    // replay once, then the answer to its send.
    let welcome = b.next().await?;
    assert_eq!(welcome["type"], "welcome");
    let replayed = b.messages(ids.len()).await?;
    let replayed: Vec<_> = replayed.iter().map(|f| f["msg"]["id"].clone()).collect();
    assert_eq!(replayed, ids.iter().map(|i| json!(i)).collect::<Vec<_>>());
    let stored = b.answer(alert["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(stored["type"], "stored");
    Ok(())
}
