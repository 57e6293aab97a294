//! What a new device gets (docs/protocol.md, "What a new device gets"): each room's latest
//! `limits.signin_recent_per_room` messages, reaching back to what its user has not read
//! yet, then live traffic; older messages with `history`. Resuming with a cursor stays
//! exact. Against a real hub process.

use outpost_tests::Cloud;
use outpost_tests::client::{Device, chat};
use serde_json::{Value, json};

async fn phone(cloud: &Cloud, url: &str, user: &str, device: &str, cursor: Option<u64>) -> anyhow::Result<Device> {
    let tok = cloud.token(user, "worker", &["clinic", "village"], "1h")?;
    let mut d = Device::connect(url).await?;
    d.hello(&tok, device, cursor, None).await?;
    Ok(d)
}

fn texts(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| f["msg"]["body"]["text"].as_str().unwrap_or_default().to_owned()).collect()
}

fn numbered(room: &str, range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("{room} {n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_gets_each_rooms_latest_then_pages_back_and_a_cursor_resumes_exactly() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let relay = cloud.provision_relay("village-7", &tmp.path().join("relay"))?.start(&[]).await?;
    let url = relay.ws_url();

    // A quiet room's five old messages, then 300 in a busy room.
    let mut amina = phone(&cloud, &url, "amina", "amina-phone", None).await?;
    let mut ids = Vec::new();
    for n in 1..=5 {
        amina.send_stored(chat("village", &format!("village {n}"))).await?;
    }
    for n in 1..=300 {
        ids.push(amina.send_stored(chat("clinic", &format!("clinic {n}"))).await?);
    }

    // Zawadi's first device: the latest 200 of the clinic and all of the village, in log
    // order, then live.
    let mut zawadi = phone(&cloud, &url, "zawadi", "zawadi-phone", None).await?;
    let replayed = zawadi.settle("message").await?;
    let mut want = numbered("village", 1..=5);
    want.extend(numbered("clinic", 101..=300));
    assert_eq!(texts(&replayed), want);
    amina.send_stored(chat("clinic", "clinic live")).await?;
    assert_eq!(zawadi.expect("message").await?["msg"]["body"]["text"], "clinic live");

    // Older messages are a `history` away, newest page first.
    let oldest = replayed.iter().find(|f| f["msg"]["room"] == "clinic").map(|f| f["cursor"].clone());
    zawadi.send_json(&json!({"v":1,"type":"history","room":"clinic","before":oldest,"limit":200})).await?;
    let page = zawadi.expect("history").await?;
    let older: Vec<Value> = page["messages"].as_array().cloned().unwrap_or_default();
    let older_texts: Vec<String> =
        older.iter().map(|m| m["msg"]["body"]["text"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(older_texts, numbered("clinic", 1..=100), "{page}");
    assert_eq!(page["more"], false);

    // Baraka read the clinic up to message 40 on his old phone: his new one reaches back
    // to what he has not read (41 onwards), not only the latest 200.
    let mut old_phone = phone(&cloud, &url, "baraka", "baraka-old", None).await?;
    old_phone.settle("message").await?;
    let fortieth = ids[39]["id"].as_str().unwrap_or_default().to_owned();
    old_phone.send_json(&json!({"v":1,"type":"read","room":"clinic","id":fortieth})).await?;
    old_phone.sync().await?;
    let mut new_phone = phone(&cloud, &url, "baraka", "baraka-new", None).await?;
    let got = texts(&new_phone.settle("message").await?);
    let mut want = numbered("village", 1..=5);
    want.extend(numbered("clinic", 41..=300));
    want.push("clinic live".into());
    assert_eq!(got, want);

    // A device resuming with a cursor gets everything after it, however much.
    let after_tenth = ids[9]["cursor"].as_u64().unwrap_or_default();
    let mut back = phone(&cloud, &url, "zawadi", "zawadi-tablet", Some(after_tenth)).await?;
    let got = texts(&back.settle("message").await?);
    let mut want = numbered("clinic", 11..=300);
    want.push("clinic live".into());
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_window_off_a_new_device_gets_everything() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let env = [("OUTPOST_LIMITS__SIGNIN_RECENT_PER_ROOM", "0")];
    let relay = cloud.provision_relay("village-7", &tmp.path().join("relay"))?.start(&env).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", "amina-phone", None).await?;
    for n in 1..=250 {
        amina.send_stored(chat("clinic", &format!("clinic {n}"))).await?;
    }
    let mut zawadi = phone(&cloud, &relay.ws_url(), "zawadi", "zawadi-phone", None).await?;
    assert_eq!(texts(&zawadi.settle("message").await?), numbered("clinic", 1..=250));
    Ok(())
}
