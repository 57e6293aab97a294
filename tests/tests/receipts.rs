//! Custody receipts, typing, presence and history as a user sees them.

use outpost_tests::client::chat;
use outpost_tests::{Device, World};
use serde_json::json;

#[tokio::test]
async fn ack_and_read_turn_into_delivered_and_read_receipts_for_the_sender() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let mut c = w.device("chausiku", "c", &["clinic"]).await;
    let m = a.send_stored(chat("clinic", "how is the patient?")).await?;
    let id = m["id"].as_str().unwrap_or_default().to_owned();

    let got = b.expect("message").await?;
    b.send_json(&json!({"v":1,"type":"ack","cursor":got["cursor"]})).await?;
    let r = a.expect("receipt").await?;
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str(), r["by"].as_str()),
        (Some(id.as_str()), Some("delivered"), Some("baraka"))
    );
    assert!(r["at"].as_u64().is_some());

    b.send_json(&json!({"v":1,"type":"read","room":"clinic","id":id})).await?;
    let r = a.expect("receipt").await?;
    assert_eq!((r["state"].as_str(), r["by"].as_str()), (Some("read"), Some("baraka")));

    // Acking again, or acking and reading on baraka's second device, makes no second
    // receipt. Barrier: a message baraka's second device sends after those frames; the
    // first ack was taken before it, and amina gets receipts and messages in cursor
    // order, so a second receipt would arrive before that message.
    b.send_json(&json!({"v":1,"type":"ack","cursor":got["cursor"]})).await?;
    b.sync().await?;
    let mut b2 = w.device("baraka", "b2", &["clinic"]).await;
    let on_b2 = b2.expect("message").await?;
    assert_eq!(on_b2["msg"]["id"], id.as_str());
    b2.send_json(&json!({"v":1,"type":"ack","cursor":on_b2["cursor"]})).await?;
    b2.send_json(&json!({"v":1,"type":"read","room":"clinic","id":id})).await?;
    let barrier = b2.send_stored(chat("clinic", "noted")).await?;
    assert_eq!(receipts_before(&mut a, &barrier).await?, Vec::<serde_json::Value>::new());

    // C's receipt is its own.
    let got_c = c.expect("message").await?;
    c.send_json(&json!({"v":1,"type":"ack","cursor":got_c["cursor"]})).await?;
    let r = a.expect("receipt").await?;
    assert_eq!((r["state"].as_str(), r["by"].as_str()), (Some("delivered"), Some("chausiku")));
    // Receipts go to the sender only. Barrier: a later message in the room, which baraka
    // gets after anything logged before it.
    let barrier = a.send_stored(chat("clinic", "thank you both")).await?;
    assert_eq!(b.expect("message").await?["msg"]["body"]["text"], "noted", "from baraka's other device");
    assert_eq!(receipts_before(&mut b, &barrier).await?, Vec::<serde_json::Value>::new());
    Ok(())
}

/// The receipts `d` gets before the message `barrier` (its `stored` frame): messages and
/// receipts reach a device in cursor order, so these are all that were logged for it
/// before the barrier. Any other message on the way fails the call.
async fn receipts_before(d: &mut Device, barrier: &serde_json::Value) -> anyhow::Result<Vec<serde_json::Value>> {
    let m = d.expect("message").await?;
    anyhow::ensure!(m["cursor"] == barrier["cursor"], "expected the barrier {barrier}, got {m}");
    Ok(d.take("receipt"))
}

#[tokio::test]
async fn receipts_wait_for_an_offline_sender() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let m = a.send_stored(chat("clinic", "are you there?")).await?;
    let cursor = m["cursor"].as_u64();
    let epoch = a.welcome["epoch"].as_str().unwrap_or_default().to_owned();
    a.close().await;
    let got = b.expect("message").await?;
    b.send_json(&json!({"v":1,"type":"ack","cursor":got["cursor"]})).await?;
    b.send_json(&json!({"v":1,"type":"read","room":"clinic","id":m["id"]})).await?;
    b.sync().await?;

    let tok = w.token("amina", "worker", &["clinic"]);
    let mut a = Device::connect(&w.relay.ws_url()).await?;
    a.hello(&tok, "a", cursor, Some(&epoch)).await?;
    let first = a.expect("receipt").await?;
    let second = a.expect("receipt").await?;
    assert_eq!((first["state"].as_str(), second["state"].as_str()), (Some("delivered"), Some("read")));
    assert!(first["cursor"].as_u64() < second["cursor"].as_u64(), "receipts replay in log order");
    Ok(())
}

#[tokio::test]
async fn typing_reaches_the_room_only_and_is_never_stored() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let mut other = w.device("daudi", "d", &["maternity"]).await;
    a.send_json(&json!({"v":1,"type":"typing","room":"clinic","active":true})).await?;
    let t = b.expect("typing").await?;
    assert_eq!(
        (t["room"].as_str(), t["user"].as_str(), t["active"].as_bool()),
        (Some("clinic"), Some("amina"), Some(true))
    );
    // Barriers: typing that must arrive, sent after amina's was passed on. Typing reaches
    // each connection in the order it was passed on, so had daudi (in another room) or
    // amina herself been sent hers, it would have come first.
    let mut e = w.device("esther", "e", &["maternity"]).await;
    e.send_json(&json!({"v":1,"type":"typing","room":"maternity","active":true})).await?;
    assert_eq!(other.expect("typing").await?["user"], "esther", "typing leaked to another room");
    b.send_json(&json!({"v":1,"type":"typing","room":"clinic","active":true})).await?;
    assert_eq!(a.expect("typing").await?["user"], "baraka", "amina got her own typing back");
    // A newcomer's replay holds no typing event.
    let mut late = w.device("chausiku", "c", &["clinic"]).await;
    late.sync().await?;
    assert!(late.take("typing").is_empty());
    Ok(())
}

#[tokio::test]
async fn presence_online_offline_and_throttling() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let b = w.device("baraka", "b", &["clinic"]).await;
    let p = a.expect("presence").await?;
    assert_eq!((p["user"].as_str(), p["status"].as_str()), (Some("baraka"), Some("online")));
    // A newcomer learns who is already online.
    let mut c = w.device("chausiku", "c", &["clinic"]).await;
    let mut online: Vec<String> =
        c.settle("presence").await?.iter().map(|f| f["user"].as_str().unwrap_or_default().to_owned()).collect();
    online.sort();
    assert_eq!(online, ["amina", "baraka"]);
    a.settle("presence").await?; // chausiku came online
    b.close().await;
    let p = a.expect("presence").await?;
    assert_eq!((p["user"].as_str(), p["status"].as_str()), (Some("baraka"), Some("offline")));
    assert!(p["last_seen"].as_u64().is_some());

    // Ten updates at once: at most the per-user allowance (2/s, burst 2) is passed on.
    for i in 0..10 {
        let status = if i % 2 == 0 { "away" } else { "online" };
        c.send_json(&json!({"v":1,"type":"presence","status":status})).await?;
    }
    c.sync().await?;
    a.sync().await?;
    let passed = a.take("presence").into_iter().filter(|f| f["user"] == "chausiku").count();
    assert!((1..=3).contains(&passed), "throttled to about 2 per second, got {passed}");
    Ok(())
}

#[tokio::test]
async fn history_pages_back_through_a_room() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic", "maternity"]).await;
    let mut cursors = Vec::new();
    for i in 0..25 {
        cursors.push(a.send_stored(chat("clinic", &format!("m{i}"))).await?["cursor"].as_u64().unwrap_or(0));
        a.send_stored(chat("maternity", "elsewhere")).await?;
    }
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    b.send_json(&json!({"v":1,"type":"history","room":"clinic","before":null,"limit":10})).await?;
    let page = b.expect("history").await?;
    let got: Vec<u64> =
        page["messages"].as_array().into_iter().flatten().map(|m| m["cursor"].as_u64().unwrap_or(0)).collect();
    assert_eq!(got, cursors[15..].to_vec(), "the newest ten, oldest first");
    assert_eq!(page["more"], true);
    b.send_json(&json!({"v":1,"type":"history","room":"clinic","before":got[0],"limit":500})).await?;
    let page = b.expect("history").await?;
    let older: Vec<u64> =
        page["messages"].as_array().into_iter().flatten().map(|m| m["cursor"].as_u64().unwrap_or(0)).collect();
    assert_eq!(older, cursors[..15].to_vec());
    assert_eq!(page["more"], false);
    assert_eq!(page["messages"][0]["msg"]["body"]["text"], "m0");
    Ok(())
}

#[tokio::test]
async fn history_gives_fifty_by_default_and_never_more_than_two_hundred() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    const N: usize = 210;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(a.send_msg(chat("clinic", &format!("m{i}"))).await?);
    }
    let mut cursors = Vec::new();
    for id in &ids {
        cursors.push(a.expect_stored(id).await?["cursor"].as_u64().unwrap_or(0));
    }
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    for (frame, newest) in [
        (json!({"v":1,"type":"history","room":"clinic"}), 50),
        (json!({"v":1,"type":"history","room":"clinic","before":null,"limit":u32::MAX}), 200),
    ] {
        b.send_json(&frame).await?;
        let page = b.expect("history").await?;
        let got: Vec<u64> =
            page["messages"].as_array().into_iter().flatten().map(|m| m["cursor"].as_u64().unwrap_or(0)).collect();
        assert_eq!(got, cursors[N - newest..].to_vec(), "the newest {newest}, oldest first, for {frame}");
        assert_eq!(page["more"], true);
    }
    Ok(())
}

#[tokio::test]
async fn a_large_ack_is_worked_off_oldest_first_within_the_cap() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_LIMITS__MAX_RECEIPTS_PER_ACK", "2")]).await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.send_stored(chat("clinic", &format!("m{i}"))).await?["id"].clone());
    }
    let got = b.messages(5).await?;
    let last = got[4]["cursor"].clone();
    let mut receipts = Vec::new();
    // Each ack of the same cursor yields at most two more receipts, oldest first; the
    // fourth yields none. Barrier after each: a message baraka sends next.
    for (round, expected) in [2usize, 2, 1, 0].into_iter().enumerate() {
        b.send_json(&json!({"v":1,"type":"ack","cursor":last})).await?;
        let barrier = b.send_stored(chat("clinic", &format!("ack {round} sent"))).await?;
        let these = receipts_before(&mut a, &barrier).await?;
        assert_eq!(these.len(), expected, "receipts for ack {round}: {these:#?}");
        assert!(these.iter().all(|r| r["state"] == "delivered" && r["by"] == "baraka"));
        receipts.extend(these.into_iter().map(|r| r["id"].clone()));
    }
    assert_eq!(receipts, ids);
    Ok(())
}

#[tokio::test]
async fn a_large_read_is_worked_off_oldest_first_within_the_cap() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_LIMITS__MAX_RECEIPTS_PER_ACK", "2")]).await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.send_stored(chat("clinic", &format!("m{i}"))).await?["id"].clone());
    }
    b.messages(5).await?;
    let mut receipts = Vec::new();
    // Reading up to the newest covers all five: each `read` of it yields at most two more
    // `read` receipts, oldest first; the fourth yields none. (No ack: no `delivered`.)
    for (round, expected) in [2usize, 2, 1, 0].into_iter().enumerate() {
        b.send_json(&json!({"v":1,"type":"read","room":"clinic","id":ids[4]})).await?;
        let barrier = b.send_stored(chat("clinic", &format!("read {round} sent"))).await?;
        let these = receipts_before(&mut a, &barrier).await?;
        assert_eq!(these.len(), expected, "receipts for read {round}: {these:#?}");
        assert!(these.iter().all(|r| r["state"] == "read" && r["by"] == "baraka"));
        receipts.extend(these.into_iter().map(|r| r["id"].clone()));
    }
    assert_eq!(receipts, ids);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_overtakes_a_slow_readers_backlog_marked_ahead() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    b.sync().await?;
    // B stops reading while A sends far more than the socket buffers hold.
    let filler = "n".repeat(32 * 1024);
    const N: usize = 400;
    for i in 0..N {
        let id = a.send_msg(chat("clinic", &format!("{i} {filler}"))).await?;
        if i % 50 == 49 {
            a.expect_stored(&id).await?;
        }
    }
    a.sync().await?;
    let mut alert = chat("clinic", "eclampsia, send the ambulance");
    alert["priority"] = json!("emergency");
    alert["kind"] = json!("alert");
    let stored = a.send_stored(alert).await?;
    // Now B reads up to the emergency, which arrives ahead of part of the backlog.
    let mut got = Vec::new();
    while got.last().is_none_or(|f: &serde_json::Value| f["ahead"].is_null()) {
        got.push(b.expect("message").await?);
    }
    let pos = got.len() - 1;
    assert!(pos < N, "the emergency arrived before the end of the backlog (at {pos})");
    assert_eq!(got[pos]["cursor"], stored["cursor"], "an overtaking frame is marked");
    // B acks the emergency's cursor at once, before it has the messages it overtook. The
    // hub counts only what it wrote to B in order, and nothing after the emergency was
    // written in order yet: that ack must not deliver the emergency. Barrier: a message B
    // sends right after the ack.
    b.send_json(&json!({"v":1,"type":"ack","cursor":stored["cursor"]})).await?;
    let barrier = b.send_msg(chat("clinic", "on my way")).await?;
    // B reads on: the rest of the backlog follows, and the emergency is not sent again.
    got.extend(b.messages(N - pos).await?);
    assert!(got.iter().enumerate().all(|(i, f)| i == pos || f["ahead"].is_null()));
    let mut cursors: Vec<u64> = got.iter().map(|f| f["cursor"].as_u64().unwrap_or(0)).collect();
    cursors.sort_unstable();
    cursors.dedup();
    assert_eq!(cursors.len(), N + 1, "every message exactly once");

    let m = a.expect("message").await?;
    assert_eq!(m["msg"]["id"], barrier.as_str());
    let first = a.take("receipt");
    assert!(!first.is_empty(), "the messages B held in order are delivered");
    assert!(
        first.iter().all(|r| r["state"] == "delivered" && r["by"] == "baraka" && r["id"] != stored["id"]),
        "an ack of a cursor written ahead delivered the emergency: {first:#?}"
    );

    // The emergency is delivered once B acks a cursor past it that came in order: A's
    // next message. Every message then has exactly one `delivered` receipt.
    let next = a.send_stored(chat("clinic", "is it there yet?")).await?;
    let m = b.expect("message").await?;
    assert_eq!((&m["cursor"], &m["ahead"]), (&next["cursor"], &serde_json::Value::Null));
    b.send_json(&json!({"v":1,"type":"ack","cursor":m["cursor"]})).await?;
    let barrier = b.send_msg(chat("clinic", "arrived")).await?;
    let m = a.expect("message").await?;
    assert_eq!(m["msg"]["id"], barrier.as_str());
    let mut delivered: Vec<String> =
        first.iter().chain(&a.take("receipt")).map(|r| r["id"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(delivered.iter().any(|id| stored["id"] == id.as_str()), "the emergency is delivered");
    delivered.sort();
    let all = delivered.len();
    delivered.dedup();
    assert_eq!((all, delivered.len()), (N + 2, N + 2), "one delivered receipt for each message");

    // Had B dropped off right after the emergency, resuming from the last cursor it then
    // held in order brings back everything the emergency overtook (and the emergency,
    // which a replay may repeat).
    let safe = if pos == 0 { b.welcome["cursor"].as_u64() } else { got[pos - 1]["cursor"].as_u64() };
    let (epoch, tok) = (b.welcome["epoch"].clone(), w.token("baraka", "worker", &["clinic"]));
    b.close_and_wait().await?;
    let mut b = Device::connect(&w.relay.ws_url()).await?;
    b.hello(&tok, "b", safe, epoch.as_str()).await?;
    let mut expected: Vec<u64> = cursors.into_iter().filter(|c| Some(*c) > safe).collect();
    expected.extend(next["cursor"].as_u64());
    let replay = b.settle("message").await?;
    let replayed: Vec<u64> = replay.iter().map(|f| f["cursor"].as_u64().unwrap_or(0)).collect();
    assert_eq!(replayed, expected);
    Ok(())
}

#[tokio::test]
async fn leave_stops_live_messages_of_a_room_and_join_resumes_them() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic", "maternity"]).await;
    let mut b = w.device("baraka", "b", &["clinic", "maternity"]).await;
    b.send_json(&json!({"v":1,"type":"leave","room":"maternity"})).await?;
    b.sync().await?;
    a.send_stored(chat("maternity", "not for b now")).await?;
    let c = a.send_stored(chat("clinic", "for b")).await?;
    assert_eq!(b.expect("message").await?["cursor"], c["cursor"], "only the clinic message arrives live");
    b.send_json(&json!({"v":1,"type":"join","room":"maternity"})).await?;
    b.sync().await?;
    let m = a.send_stored(chat("maternity", "for b again")).await?;
    assert_eq!(b.expect("message").await?["cursor"], m["cursor"]);
    // Rooms outside the token cannot be joined.
    b.send_json(&json!({"v":1,"type":"join","room":"no-such-room"})).await?;
    assert_eq!(b.expect_error().await?.0, "unknown_room");
    Ok(())
}

#[tokio::test]
async fn reading_on_one_device_marks_the_room_read_on_the_persons_others() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut amina = w.device("amina", "a", &["clinic", "ward"]).await;
    let mut phone = w.device("baraka", "baraka-phone", &["clinic", "ward"]).await;
    let mut tablet = w.device("baraka", "baraka-tablet", &["clinic", "ward"]).await;
    let mut other = w.device("chausiku", "c", &["clinic"]).await;
    amina.send_stored(chat("clinic", "first")).await?;
    let newest = amina.send_stored(chat("clinic", "second")).await?;
    phone.messages(2).await?;
    tablet.messages(2).await?;

    // Read on the phone: the tablet is told how far, nobody else is.
    phone.send_json(&json!({"v":1,"type":"read","room":"clinic","id":newest["id"]})).await?;
    let mark = tablet.expect("read_mark").await?;
    assert_eq!((mark["room"].as_str(), mark["cursor"].as_u64()), (Some("clinic"), newest["cursor"].as_u64()));
    // Committed after the read (one writer, in order): the laptop below sees the mark.
    amina.send_stored(chat("clinic", "after the read")).await?;
    let seen = other.settle("read_mark").await?;
    assert!(seen.is_empty(), "another person is not told: {seen:?}");
    let phone_marks = phone.settle("read_mark").await?;
    assert!(phone_marks.is_empty(), "the device that read is not told again: {phone_marks:?}");

    // A device signing in later learns the mark right after welcome, for the rooms it has.
    let mut laptop = w.device("baraka", "baraka-laptop", &["clinic", "ward"]).await;
    let marks = laptop.settle("read_mark").await?;
    let marks: Vec<(&str, Option<u64>)> =
        marks.iter().map(|m| (m["room"].as_str().unwrap_or(""), m["cursor"].as_u64())).collect();
    assert_eq!(marks, [("clinic", newest["cursor"].as_u64())], "one mark, for the room read");
    Ok(())
}
