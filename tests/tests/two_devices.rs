//! One user on two devices (a phone and a tablet): each device is its own connection, so
//! it gets what the other one sends, while receipts count the user once and ack marks
//! are kept per device.

use outpost_tests::World;
use outpost_tests::client::chat;
use serde_json::json;

#[tokio::test]
async fn a_message_from_one_device_reaches_the_users_other_device_but_not_itself() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut phone = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut tablet = w.device("amina", "amina-tablet", &["clinic"]).await;
    let mut b = w.device("baraka", "baraka-phone", &["clinic"]).await;
    let stored = phone.send_stored(chat("clinic", "from the phone")).await?;

    let got = tablet.expect("message").await?;
    assert_eq!(got["cursor"], stored["cursor"]);
    assert_eq!((got["msg"]["from"].as_str(), got["msg"]["device"].as_str()), (Some("amina"), Some("amina-phone")));
    assert_eq!(b.expect("message").await?["cursor"], stored["cursor"]);

    // Barrier: a later message in the same room. The phone gets the room's messages in
    // cursor order, so had its own message been echoed, it would have come first.
    let later = b.send_stored(chat("clinic", "seen, thanks")).await?;
    let first = phone.expect("message").await?;
    assert_eq!(first["cursor"], later["cursor"], "the phone got its own message back: {first}");
    Ok(())
}

#[tokio::test]
async fn typing_on_one_device_reaches_the_users_other_device_and_the_room() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut phone = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut tablet = w.device("amina", "amina-tablet", &["clinic"]).await;
    let mut b = w.device("baraka", "baraka-phone", &["clinic"]).await;
    phone.send_json(&json!({"v":1,"type":"typing","room":"clinic","active":true})).await?;
    for d in [&mut tablet, &mut b] {
        let t = d.expect("typing").await?;
        assert_eq!(
            (t["room"].as_str(), t["user"].as_str(), t["active"].as_bool()),
            (Some("clinic"), Some("amina"), Some(true))
        );
    }
    // Barrier: baraka types after he saw amina typing. Typing reaches the phone the same
    // way, so had the phone been sent its own, that would have come first.
    b.send_json(&json!({"v":1,"type":"typing","room":"clinic","active":true})).await?;
    let t = phone.expect("typing").await?;
    assert_eq!(t["user"], "baraka", "the phone got its own typing back: {t}");
    Ok(())
}

#[tokio::test]
async fn reading_on_both_devices_makes_one_read_receipt_per_reader() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut phone = w.device("baraka", "baraka-phone", &["clinic"]).await;
    let mut tablet = w.device("baraka", "baraka-tablet", &["clinic"]).await;
    let m = a.send_stored(chat("clinic", "the results are in")).await?;
    phone.expect("message").await?;
    let on_tablet = tablet.expect("message").await?;

    phone.send_json(&json!({"v":1,"type":"read","room":"clinic","id":m["id"]})).await?;
    let r = a.expect("receipt").await?;
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str(), r["by"].as_str()),
        (m["id"].as_str(), Some("read"), Some("baraka"))
    );

    // The tablet reads the same message, then acks it. Its frames are handled in order,
    // so a second `read` receipt would reach amina before the `delivered` one.
    tablet.send_json(&json!({"v":1,"type":"read","room":"clinic","id":m["id"]})).await?;
    tablet.send_json(&json!({"v":1,"type":"ack","cursor":on_tablet["cursor"]})).await?;
    let r = a.expect("receipt").await?;
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str(), r["by"].as_str()),
        (m["id"].as_str(), Some("delivered"), Some("baraka")),
        "one read receipt per reader, whatever device they read on"
    );
    Ok(())
}

#[tokio::test]
async fn each_device_keeps_its_own_ack_mark_and_resumes_from_its_own_cursor() -> anyhow::Result<()> {
    let w = World::start().await?;
    // The tablet is signed in to a room the phone is not.
    let tablet = w.device("amina", "amina-tablet", &["clinic", "maternity"]).await;
    let (resume, epoch) = (tablet.welcome["cursor"].as_u64(), tablet.welcome["epoch"].clone());
    tablet.close_and_wait().await?;
    let mut phone = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut b = w.device("baraka", "baraka-phone", &["clinic", "maternity"]).await;
    let in_maternity = b.send_stored(chat("maternity", "bed 4 is free")).await?;
    let in_clinic = b.send_stored(chat("clinic", "queue is long today")).await?;

    // The phone holds the clinic message, and its ack covers the maternity one's cursor.
    let got = phone.expect("message").await?;
    assert_eq!(got["cursor"], in_clinic["cursor"]);
    phone.send_json(&json!({"v":1,"type":"ack","cursor":got["cursor"]})).await?;
    let r = b.expect("receipt").await?;
    assert_eq!((r["id"].as_str(), r["state"].as_str()), (in_clinic["id"].as_str(), Some("delivered")));

    // The tablet never acked: resuming from its own cursor it still gets both messages,
    // whatever the phone acknowledged.
    let mut tablet = outpost_tests::Device::connect(&w.relay.ws_url()).await?;
    let tok = w.token("amina", "worker", &["clinic", "maternity"]);
    tablet.hello(&tok, "amina-tablet", resume, epoch.as_str()).await?;
    let replay = tablet.messages(2).await?;
    let cursors: Vec<_> = replay.iter().map(|f| f["cursor"].clone()).collect();
    assert_eq!(cursors, [in_maternity["cursor"].clone(), in_clinic["cursor"].clone()]);

    // Its ack starts from its own mark, not the phone's: the maternity message, which only
    // the tablet could see, is delivered now.
    tablet.send_json(&json!({"v":1,"type":"ack","cursor":in_clinic["cursor"]})).await?;
    let r = b.expect("receipt").await?;
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str(), r["by"].as_str()),
        (in_maternity["id"].as_str(), Some("delivered"), Some("amina"))
    );
    Ok(())
}
