//! Calls on the village network (docs/protocol.md, `call`): the hub relays each step of a
//! call between two people's devices and stores none of it; ringing reaches every device
//! of the callee, the answer goes on between two devices, the callee's other devices hear
//! it was answered, a callee who is not connected is `unavailable` at once, and a missed
//! call is a message like any other.

use outpost_tests::{Device, World};
use serde_json::{Value, json};

fn step(call: &str, to: &str, signal: &str, extra: Value) -> Value {
    let mut f = json!({"v": 1, "type": "call", "call": call, "room": "clinic", "to": to, "signal": signal});
    if let (Some(f), Value::Object(extra)) = (f.as_object_mut(), extra) {
        f.extend(extra);
    }
    f
}

/// The next `call` frame, with the fields every step has checked.
async fn expect_call(d: &mut Device, call: &str, from: &str, signal: &str) -> anyhow::Result<Value> {
    let f = d.expect("call").await?;
    assert_eq!(
        (f["call"].as_str(), f["room"].as_str(), f["from"].as_str(), f["signal"].as_str()),
        (Some(call), Some("clinic"), Some(from), Some(signal)),
        "{f}"
    );
    Ok(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_call_rings_every_device_goes_on_between_two_and_is_never_stored() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut amina = w.device("amina", "amina-phone", &["clinic"]).await;
    let mut phone = w.device("baraka", "baraka-phone", &["clinic"]).await;
    let mut tab = w.device("baraka", "baraka-tab", &["clinic"]).await;
    let call = outpost_tests::new_id();

    // The invite rings both of baraka's devices, naming the caller's device.
    amina.send_json(&step(&call, "baraka", "invite", json!({"video": true}))).await?;
    for d in [&mut phone, &mut tab] {
        let f = expect_call(d, &call, "amina", "invite").await?;
        assert_eq!((f["from_device"].as_str(), f["video"].as_bool()), (Some("amina-phone"), Some(true)));
    }
    phone.send_json(&step(&call, "amina", "ringing", json!({"device": "amina-phone"}))).await?;
    expect_call(&mut amina, &call, "baraka", "ringing").await?;

    // Answered on the tablet: the caller learns which device, the phone stops ringing.
    tab.send_json(&step(&call, "amina", "accept", json!({"device": "amina-phone"}))).await?;
    assert_eq!(expect_call(&mut amina, &call, "baraka", "accept").await?["from_device"], "baraka-tab");
    assert_eq!(expect_call(&mut phone, &call, "baraka", "accept").await?["from_device"], "baraka-tab");

    // Offer, answer and candidates go between the two devices only, as sent.
    let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n";
    amina.send_json(&step(&call, "baraka", "offer", json!({"device": "baraka-tab", "sdp": sdp}))).await?;
    assert_eq!(expect_call(&mut tab, &call, "amina", "offer").await?["sdp"], sdp);
    tab.send_json(&step(&call, "amina", "answer", json!({"device": "amina-phone", "sdp": sdp}))).await?;
    assert_eq!(expect_call(&mut amina, &call, "baraka", "answer").await?["sdp"], sdp);
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 192.168.4.23 51234 typ host",
                           "sdpMid": "0", "sdpMLineIndex": 0});
    amina.send_json(&step(&call, "baraka", "ice", json!({"device": "baraka-tab", "candidate": candidate}))).await?;
    assert_eq!(expect_call(&mut tab, &call, "amina", "ice").await?["candidate"], candidate);
    // Hang-up to all of baraka's devices: the phone's next call frame is that, so it got
    // none of the steps meant for the tablet.
    amina.send_json(&step(&call, "baraka", "hangup", json!({}))).await?;
    expect_call(&mut tab, &call, "amina", "hangup").await?;
    expect_call(&mut phone, &call, "amina", "hangup").await?;

    // Nothing of it was stored: a new device of baraka's replays no call and no message.
    let mut late = w.reader("baraka", "baraka-laptop", &["clinic"]).await;
    late.sync().await?;
    assert!(late.take("call").is_empty() && late.take("message").is_empty());

    // A missed call is a message the caller leaves, checked and stored like any other.
    let missed = json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "call.missed",
                        "body": {"to": "baraka", "call": call, "video": true}});
    amina.send_stored(missed.clone()).await?;
    let got = late.expect("message").await?;
    assert_eq!((got["msg"]["kind"].clone(), got["msg"]["body"]["to"].clone()), (json!("call.missed"), json!("baraka")));
    let mut bad = missed;
    bad["id"] = json!(outpost_tests::new_id());
    bad["body"]["call"] = json!("just now");
    let id = amina.send_msg(bad).await?;
    assert_eq!(amina.answer(&id).await?["code"], "invalid_event");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_not_connected_is_unavailable_at_once_and_bad_steps_are_refused() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut amina = w.device("amina", "amina-phone", &["clinic"]).await;
    // Juma is connected, but without the room: he is not rung through it.
    let mut juma = w.device("juma", "juma-phone", &["ward"]).await;
    let call = outpost_tests::new_id();
    amina.send_json(&step(&call, "juma", "invite", json!({}))).await?;
    let f = expect_call(&mut amina, &call, "juma", "unavailable").await?;
    assert!(f.get("from_device").is_none(), "{f}");
    amina.send_json(&step(&outpost_tests::new_id(), "chausiku", "invite", json!({"video": false}))).await?;
    assert_eq!(amina.expect("call").await?["signal"], "unavailable");

    // A call to oneself, or an `unavailable` from a client: bad_frame; a room outside the
    // token: refused like typing there.
    amina.send_json(&step(&call, "amina", "invite", json!({}))).await?;
    let (code, refusal) = amina.expect_error().await?;
    assert_eq!((code.as_str(), refusal["id"].as_str()), ("bad_frame", Some(call.as_str())), "{refusal}");
    amina.send_json(&step(&call, "juma", "unavailable", json!({}))).await?;
    assert_eq!(amina.expect_error().await?.0, "bad_frame");
    let mut other_room = step(&call, "juma", "invite", json!({}));
    other_room["room"] = json!("ward");
    amina.send_json(&other_room).await?;
    let (code, _) = amina.expect_error().await?;
    assert!(code == "forbidden" || code == "unknown_room", "{code}");
    // Juma got nothing of it.
    juma.sync().await?;
    assert!(juma.take("call").is_empty());
    Ok(())
}
