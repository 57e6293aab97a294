//! A USB stick as the uplink, with real `outpost-relay` and `outpost-cloud` processes: a
//! village whose hub never reaches the cloud sends its messages by stick and gets the
//! doctor's reply and its receipts back the same way; sticks imported twice, a stick and
//! the network carrying the same entries, a kill -9 in the middle of an export and of an
//! import never lose or repeat a message; a stick from another cloud, for another hub or
//! changed on the way is refused.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use outpost_tests::client::chat;
use outpost_tests::http::request;
use outpost_tests::{Cloud, Device, command, free_udp_addr};
use serde_json::{Value, json};

/// Runs `bin args` to its end: (success, stdout, stderr).
async fn cli(bin: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = tokio::process::Command::from(command(bin));
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs `bin args`, which must succeed; its stdout.
async fn ok(bin: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> anyhow::Result<String> {
    let (success, out, err) = cli(bin, args).await?;
    anyhow::ensure!(success, "{bin} {:?} failed: {err}{out}", args.iter().map(|a| a.as_ref()).collect::<Vec<_>>());
    Ok(out)
}

/// Messages a SQLite database holds.
fn held(db: &Path) -> anyhow::Result<usize> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(db, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let n: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    Ok(usize::try_from(n)?)
}

async fn status(base: &str) -> anyhow::Result<Value> {
    let (code, s) = request(base, "GET", "/status.json", None, None).await?;
    anyhow::ensure!(code == 200, "status.json answered {code}");
    Ok(s)
}

/// Sends `n` chat messages from `d` and waits until each is stored.
async fn send_many(d: &mut Device, n: usize, what: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(d.send_msg(chat("clinic", &format!("{what} {i}"))).await?);
    }
    for id in &ids {
        d.expect_stored(id).await?;
    }
    Ok(ids)
}

fn ids(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| f["msg"]["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_without_network_reaches_the_doctor_by_stick_and_gets_the_reply_back() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let cloud_proc = cloud.start(&quic).await?;
    // The hub's uplink leads nowhere: no network in the village.
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &free_udp_addr()?)?;
    let relay = relay_dir.start(&[]).await?;
    let stick = tmp.path().join("stick");
    std::fs::create_dir(&stick)?;

    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "neema-laptop").await?;
    let visits = send_many(&mut amina, 300, "visit").await?;
    let mut alert = chat("clinic", "child not breathing");
    alert["priority"] = json!("emergency");
    let alert_id = amina.send_stored(alert).await?["id"].as_str().unwrap_or_default().to_owned();

    // At the hub, while it serves: the stick takes everything.
    let out = ok("outpost-relay", &[&"export", &"--dir", &relay_dir.dir, &"--to", &stick]).await?;
    assert!(out.contains("exported for the cloud"), "{out}");
    let hub_file = stick.join("village-7.to-cloud.outpost");
    assert!(hub_file.is_file(), "{out}");
    assert_eq!(held(&cloud.db())?, 0, "the stick has not reached the cloud yet");

    // At the cloud, while it serves: every message reaches the doctor once, the
    // emergency first (as on the link).
    let out = ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick]).await?;
    assert!(out.contains("village-7"), "{out}");
    let got = dr.messages(301).await.with_context(|| format!("the doctor after the import: {out}\n{}", cloud.log()))?;
    let got_ids = ids(&got);
    assert_eq!(got_ids[0], alert_id, "the emergency comes first");
    assert_eq!(got_ids.iter().collect::<HashSet<_>>().len(), 301, "each message once");
    assert_eq!(got_ids[1..], visits[..], "the rest in the order they were sent");
    assert!(stick.join("village-7.from-cloud.outpost").is_file(), "the answer is written beside the hub's file");

    // The doctor answers; the cloud writes the answer again on demand, with the reply.
    let reply = dr.send_stored(chat("clinic", "on my way")).await?["id"].as_str().unwrap_or_default().to_owned();
    let out =
        ok("outpost-cloud", &[&"export", &"--dir", &cloud.dir, &"--relay", &"village-7", &"--to", &stick]).await?;
    assert!(out.contains("exported for hub village-7"), "{out}");

    // Back at the hub: the reply reaches the worker, and she learns the hospital holds
    // every message of hers.
    let out = ok("outpost-relay", &[&"import", &"--dir", &relay_dir.dir, &stick]).await?;
    assert!(out.contains("imported the cloud's answer"), "{out}");
    let mut forwarded = HashSet::new();
    let mut replied = false;
    let all: HashSet<String> = visits.iter().cloned().chain([alert_id.clone()]).collect();
    while forwarded.len() < all.len() || !replied {
        let f =
            amina.next().await.with_context(|| format!("{} forwarded, replied {replied}: {out}", forwarded.len()))?;
        match f["type"].as_str() {
            Some("receipt") if f["state"] == "forwarded" => {
                forwarded.insert(f["id"].as_str().unwrap_or_default().to_owned());
            }
            Some("message") => {
                assert_eq!(f["msg"]["id"], reply.as_str(), "only the doctor's reply comes down: {f}");
                replied = true;
            }
            _ => {}
        }
    }
    assert_eq!(forwarded, all);
    let s = status(&relay.http_base()).await?;
    assert_eq!(s["backlog"]["messages"], 0, "nothing waits for the cloud: {s}");

    // The same sticks again: nothing repeats.
    ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &hub_file]).await?;
    ok("outpost-relay", &[&"import", &"--dir", &relay_dir.dir, &stick]).await?;
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    amina.no_frame_of("message", Duration::from_millis(200)).await?;
    assert_eq!(held(&cloud.db())?, 302);
    assert_eq!(held(&relay_dir.db())?, 302);

    // The network comes: the link carries on from what the sticks confirmed, and
    // nothing is sent twice.
    amina.close().await;
    let mut relay = relay;
    relay.terminate().await?;
    let relay = relay_dir.start_via(&cloud_proc.quic_addr(), &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "1")]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let after = send_many(&mut amina, 1, "by network").await?;
    let f = dr.expect("message").await?;
    assert_eq!(f["msg"]["id"], after[0].as_str(), "the first message the doctor gets is the new one: {f}");
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    assert_eq!(held(&cloud.db())?, 303);
    Ok(())
}
