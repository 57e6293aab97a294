//! The status page and metrics an NGO engineer looks at: a backlog while the cloud is
//! down that clears once it is back.

use outpost_tests::client::chat;
use outpost_tests::http::{get_text, request};
use outpost_tests::{Cloud, Device, free_udp_addr};
use serde_json::Value;

const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "1")];

async fn status(base: &str) -> anyhow::Result<Value> {
    let (code, s) = request(base, "GET", "/status.json", None, None).await?;
    anyhow::ensure!(code == 200, "status.json answered {code}");
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_a_backlog_while_the_cloud_is_down_and_clears_after() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let relay = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?.start(FAST_RETRY).await?;
    let base = relay.ws_url().replace("ws://", "http://").trim_end_matches("/ws").to_owned();

    let tok = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = Device::connect(&relay.ws_url()).await?;
    amina.hello(&tok, "amina-phone", None, None).await?;
    for i in 0..20 {
        amina.send_stored(chat("clinic", &format!("report {i}"))).await?;
    }
    let mut alert = chat("clinic", "help");
    alert["priority"] = serde_json::json!("emergency");
    amina.send_stored(alert).await?;

    let s = status(&base).await?;
    assert_eq!(s["uplink"]["configured"], true);
    assert_eq!(s["uplink"]["connected"], false);
    assert_eq!(s["backlog"]["messages"], 21);
    assert!(s["backlog"]["oldest_emergency_at"].is_u64());
    assert!(s["storage"]["used_bytes"].as_u64() > Some(0));
    assert_eq!(s["devices"]["connected"], 1);
    // The page for people says the same as status.json.
    let (code, html) = get_text(&base, "/status").await?;
    assert_eq!(code, 200);
    for shown in [
        "<title>Outpost hub status</title>",
        "<h1>Outpost hub village-7</h1>",
        "<th>Uplink</th><td><b class=bad>not connected</b>",
        "<th>Waiting for the cloud</th><td>21 messages (",
        "<th>Oldest waiting emergency</th><td><b class=bad>",
        "<th>Connected devices</th><td>1</td>",
    ] {
        assert!(html.contains(shown), "{shown:?} missing from:\n{html}");
    }

    // The cloud comes up; every message gets `forwarded` once it is acknowledged, and
    // then the backlog is empty.
    let _cloud = cloud.start(&quic).await?;
    let mut forwarded = 0;
    while forwarded < 21 {
        if amina.expect("receipt").await?["state"] == "forwarded" {
            forwarded += 1;
        }
    }
    let s = status(&base).await?;
    assert_eq!(s["uplink"]["connected"], true);
    assert_eq!(s["backlog"]["messages"], 0, "{s}");
    assert!(s["backlog"]["oldest_emergency_at"].is_null());
    assert!(s["uplink"]["last_contact"].is_u64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_in_prometheus_format() -> anyhow::Result<()> {
    let w = outpost_tests::World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    a.send_stored(chat("clinic", "counted")).await?;
    let base = w.relay.ws_url().replace("ws://", "http://").trim_end_matches("/ws").to_owned();
    let host = base.trim_start_matches("http://");
    // /metrics is plain text: read it raw.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    // Whole lines for the values: "outpost_connections 1" must not pass for 10 or 11.
    for line in ["outpost_messages_stored_total 1", "outpost_connections 1"] {
        assert!(raw.lines().any(|l| l == line), "{line} missing from:\n{raw}");
    }
    for name in ["outpost_commit_seconds_bucket", "outpost_backlog_messages"] {
        assert!(raw.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{raw}");
    }
    Ok(())
}
