//! Every error code of the contract, provoked by the input that causes it; after each the
//! hub keeps serving (the same connection where the contract keeps it open, and always
//! other devices).

use std::time::Duration;

use outpost_tests::client::chat;
use outpost_tests::{Device, World};
use serde_json::json;

/// The hub still stores and delivers for other devices.
async fn still_serving(w: &World) -> anyhow::Result<()> {
    let mut x = w.device("probe-x", "probe-x", &["probe"]).await;
    let mut y = w.device("probe-y", "probe-y", &["probe"]).await;
    let s = x.send_stored(chat("probe", "still there?")).await?;
    assert_eq!(y.expect("message").await?["cursor"], s["cursor"]);
    Ok(())
}

#[tokio::test]
async fn malformed_frames_get_bad_frame_or_unsupported_version_and_the_session_goes_on() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    for bad in [
        "this is not json".to_owned(),
        "[1,2,3]".to_owned(),
        json!({"v":1}).to_string(),
        json!({"v":1,"type":"teleport"}).to_string(),
        json!({"v":1,"type":"send","msg":{"room":"clinic"}}).to_string(),
        json!({"v":1,"type":"send","msg":{"id":"not-a-uuid","room":"clinic","kind":"chat","body":1,"seq":1}})
            .to_string(),
        json!({"v":1,"type":"ack","cursor":"soon"}).to_string(),
    ] {
        a.send_text(bad.clone()).await?;
        let (code, f) = a.expect_error().await?;
        assert_eq!(code, "bad_frame", "{bad} -> {f}");
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    a.send_text(json!({"v":2,"type":"ping"}).to_string()).await?;
    assert_eq!(a.expect_error().await?.0, "unsupported_version");
    // A bad message body names the message it refused.
    let id = outpost_tests::new_id();
    a.send_text(
        json!({"v":1,"type":"send","msg":{"id":id,"room":"bad room!","kind":"chat","body":1,"seq":1}}).to_string(),
    )
    .await?;
    let (code, f) = a.expect_error().await?;
    assert_eq!((code.as_str(), f["id"].as_str()), ("bad_frame", Some(id.as_str())));
    a.send_stored(chat("clinic", "the same connection still works")).await?;
    still_serving(&w).await
}

#[tokio::test]
async fn authentication_failures_close_with_4001() -> anyhow::Result<()> {
    let w = World::start().await?;
    // A forged token.
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    assert!(d.hello("not.a.token", "d1", None, None).await.is_err());
    assert_eq!(d.expect_close().await?, Some(4001));
    // A frame before hello.
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    let mut sneaky = chat("clinic", "sneaky");
    sneaky["seq"] = json!(1);
    d.send_json(&json!({"v":1,"type":"send","msg":sneaky})).await?;
    let (code, _) = d.expect_error().await?;
    assert_eq!(code, "unauthenticated");
    assert_eq!(d.expect_close().await?, Some(4001));
    // A token from another cloud.
    let other = outpost_tests::Cloud::init(&w.tmp.path().join("other-cloud"))?;
    let foreign = other.token("amina", "worker", &["clinic"], "1h")?;
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    d.send_json(&json!({"v":1,"type":"hello","token":foreign,"device":"d3","cursor":null,"epoch":null})).await?;
    let (code, _) = d.expect_error().await?;
    assert_eq!(code, "unauthenticated");
    assert_eq!(d.expect_close().await?, Some(4001));
    // A tampered token (role changed in the payload).
    let good = w.token("amina", "worker", &["clinic"]);
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = w.token("amina", "admin", &["clinic", "everything"]);
    let tampered = format!("{}.{}.{}", parts[0], forged_claims.split('.').nth(1).unwrap_or_default(), parts[2]);
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    assert!(d.hello(&tampered, "d4", None, None).await.is_err());
    assert_eq!(d.expect_close().await?, Some(4001));
    still_serving(&w).await
}

#[tokio::test]
async fn an_expired_token_gets_token_expired() -> anyhow::Result<()> {
    let w = World::start().await?;
    let tok = w.cloud.token("amina", "worker", &["clinic"], "1s")?;
    // Expiry is about time passing; nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    d.send_json(&json!({"v":1,"type":"hello","token":tok,"device":"d","cursor":null,"epoch":null})).await?;
    let (code, _) = d.expect_error().await?;
    assert_eq!(code, "token_expired");
    assert_eq!(d.expect_close().await?, Some(4001));
    still_serving(&w).await
}

#[tokio::test]
async fn rooms_outside_the_token_are_forbidden_or_unknown() -> anyhow::Result<()> {
    let w = World::start().await?;
    let _owner = w.device("nurse", "n", &["maternity"]).await; // makes `maternity` known
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let msg = chat("maternity", "let me in");
    a.send_msg(msg.clone()).await?;
    let (code, f) = a.expect_error().await?;
    assert_eq!(code, "forbidden");
    assert_eq!(f["id"], msg["id"]);
    a.send_msg(chat("no-such-room", "hello?")).await?;
    assert_eq!(a.expect_error().await?.0, "unknown_room");
    for frame in [
        json!({"v":1,"type":"history","room":"maternity","before":null,"limit":10}),
        json!({"v":1,"type":"typing","room":"maternity","active":true}),
        json!({"v":1,"type":"read","room":"maternity","id":outpost_tests::new_id()}),
    ] {
        a.send_json(&frame).await?;
        assert_eq!(a.expect_error().await?.0, "forbidden", "{frame}");
    }
    a.send_stored(chat("clinic", "my own room is fine")).await?;
    still_serving(&w).await
}

#[tokio::test]
async fn oversized_frames_and_bodies_get_too_large() -> anyhow::Result<()> {
    let w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    // A frame over 256 KiB (but under the hard cap): refused, connection stays.
    let mut big = chat("clinic", &"x".repeat(300 * 1024));
    big["seq"] = json!(1);
    a.send_json(&json!({"v":1,"type":"send","msg":big})).await?;
    assert_eq!(a.expect_error().await?.0, "too_large");
    // A body over 64 KiB inside a legal frame: refused by id.
    let body = chat("clinic", &"y".repeat(70 * 1024));
    a.send_msg(body.clone()).await?;
    let (code, f) = a.expect_error().await?;
    assert_eq!((code.as_str(), &f["id"]), ("too_large", &body["id"]));
    a.send_stored(chat("clinic", "small is fine")).await?;
    // Far over the limit: refused and the connection is closed (1009, or a reset when the
    // unread rest of the frame is still in flight as the hub closes the socket).
    let huge = "z".repeat(600 * 1024);
    a.send_text(huge).await?;
    assert_eq!(a.expect_error().await?.0, "too_large");
    let code = a.expect_close().await?;
    assert!(matches!(code, Some(1009) | None), "closed with {code:?}");
    still_serving(&w).await
}

#[tokio::test]
async fn a_device_over_its_rate_gets_rate_limited() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_LIMITS__RATE_PER_SEC", "5"), ("OUTPOST_LIMITS__RATE_BURST", "10")]).await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(a.send_msg(chat("clinic", &format!("spam {i}"))).await?);
    }
    let mut stored = Vec::new();
    let mut limited = Vec::new();
    for id in &ids {
        let f = a.answer(id).await?;
        if f["type"] == "stored" {
            stored.push(f);
        } else if f["code"] == "rate_limited" {
            limited.push(f);
        }
    }
    assert!(stored.len() >= 10 && stored.len() < 40, "burst allowed, excess refused: {} stored", stored.len());
    assert_eq!(stored.len() + limited.len(), 40, "every send is answered");
    assert!(limited.iter().all(|f| ids.iter().any(|id| f["id"] == id.as_str())));
    still_serving(&w).await
}

#[tokio::test]
async fn a_full_store_refuses_bulk_but_keeps_room_for_emergencies() -> anyhow::Result<()> {
    let w = World::start_with(&[
        ("OUTPOST_STORAGE__QUOTA_BYTES", "400000"),
        ("OUTPOST_STORAGE__EMERGENCY_RESERVE_BYTES", "200000"),
    ])
    .await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let filler = "f".repeat(8 * 1024);
    let mut stored_ids = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let m = chat("clinic", &format!("{i} {filler}"));
        let id = a.send_msg(m).await?;
        let f = loop {
            let f = a.next().await?;
            if f["id"] == id.as_str() {
                break f;
            }
        };
        if f["type"] == "stored" {
            stored_ids.push(id);
        } else {
            refused = Some(f);
            break;
        }
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("the quota was never reached"))?;
    assert_eq!(refused["code"], "storage_full", "{refused}");
    // An emergency still gets through, and B receives it.
    let mut alert = chat("clinic", "patient collapsed");
    alert["priority"] = json!("emergency");
    alert["kind"] = json!("alert");
    let s = a.send_stored(alert).await?;
    // Everything acknowledged before is still there for B, then the emergency.
    let got = b.settle("message").await?;
    assert_eq!(got.len(), stored_ids.len() + 1);
    assert_eq!(got.last().map(|f| f["cursor"].clone()), Some(s["cursor"].clone()));
    Ok(())
}

#[tokio::test]
async fn hello_timeout_closes_with_4008() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_LIMITS__HELLO_TIMEOUT_SECS", "1")]).await?;
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    assert_eq!(d.expect_close().await?, Some(4008));
    still_serving(&w).await
}

#[tokio::test]
async fn a_token_that_expires_mid_session_ends_it() -> anyhow::Result<()> {
    let w = World::start().await?;
    let tok = w.cloud.token("amina", "worker", &["clinic"], "2s")?;
    let mut d = Device::connect(&w.relay.ws_url()).await?;
    d.hello(&tok, "a", None, None).await?;
    d.sync().await?;
    // Expiry is about time passing; nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    d.send_json(&json!({"v":1,"type":"ping"})).await?;
    assert_eq!(d.expect_error().await?.0, "token_expired");
    assert_eq!(d.expect_close().await?, Some(4001));
    still_serving(&w).await
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout() -> anyhow::Result<()> {
    let w =
        World::start_with(&[("OUTPOST_LIMITS__PING_INTERVAL_SECS", "1"), ("OUTPOST_LIMITS__IDLE_TIMEOUT_SECS", "2")])
            .await?;
    let mut quiet = w.device("amina", "a", &["clinic"]).await;
    let mut chatty = w.device("baraka", "b", &["clinic"]).await;
    // The quiet device neither sends nor reads (so it never answers the hub's pings);
    // the chatty one keeps pinging. Silence is the event here, so time has to pass.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        chatty.sync().await?;
    }
    assert_eq!(quiet.expect_close().await?, Some(4009));
    chatty.send_stored(chat("clinic", "still here")).await?;
    Ok(())
}

#[tokio::test]
async fn connection_limits_refuse_at_the_handshake_with_a_reason() -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let status_of = |r: anyhow::Result<Device>| match r {
        Ok(_) => None,
        Err(e) => e.chain().find_map(|c| match c.downcast_ref::<WsError>() {
            Some(WsError::Http(resp)) => Some(resp.status().as_u16()),
            _ => None,
        }),
    };
    let w = World::start_with(&[("OUTPOST_LIMITS__MAX_DEVICES", "3"), ("OUTPOST_LIMITS__MAX_CONNECTIONS_PER_IP", "2")])
        .await?;
    let a = Device::connect(&w.relay.ws_url()).await?;
    let b = Device::connect(&w.relay.ws_url()).await?;
    // A third connection from the same address is over the per-address limit.
    assert_eq!(status_of(Device::connect(&w.relay.ws_url()).await), Some(429));
    // From another loopback address the per-address limit is fresh, the hub-wide one is not.
    let other: std::net::IpAddr = "127.0.0.2".parse()?;
    let c = Device::connect_from(&w.relay.ws_url(), other).await?;
    assert_eq!(status_of(Device::connect_from(&w.relay.ws_url(), other).await), Some(503));
    // Closing a connection frees its slot.
    a.close_and_wait().await?;
    drop((b, c));
    let mut d = w.device("amina", "a", &["clinic"]).await;
    d.sync().await?;
    Ok(())
}
