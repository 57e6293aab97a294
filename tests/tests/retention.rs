//! Retention with real `outpost-relay` and `outpost-cloud` processes: what the cloud
//! confirmed leaves the hub after `storage.retain_days` (the clock moved a month on with
//! `testing.clock_offset_secs`), nothing unconfirmed and no undelivered emergency ever
//! does, history past the hub comes from the cloud, the quota prunes before it refuses,
//! and the cloud's legal hold and audited deletion.

use std::collections::HashSet;
use std::time::Duration;

use outpost_tests::client::chat;
use outpost_tests::http::request;
use outpost_tests::{Cloud, Device, EVENT_TIMEOUT, command, free_udp_addr};
use serde_json::{Value, json};

/// 31 days: one past the hubs' `retain_days = 30`.
const MONTH_LATER: &str = "2678400";
/// How often status is looked at while waiting for retention to act.
const POLL: Duration = Duration::from_millis(100);

/// A hub keeping confirmed messages 30 days, looking every second, retrying the cloud
/// fast.
const HUB: &[(&str, &str)] = &[
    ("OUTPOST_STORAGE__RETAIN_DAYS", "30"),
    ("OUTPOST_STORAGE__PRUNE_INTERVAL_SECS", "1"),
    ("OUTPOST_UPLINK__RETRY_MAX_SECS", "1"),
];

fn later(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = HUB.to_vec();
    env.push(("OUTPOST_TESTING__CLOCK_OFFSET_SECS", MONTH_LATER));
    env.extend_from_slice(extra);
    env
}

/// A device signed in with a token that outlives the month the clock jumps.
async fn phone(cloud: &Cloud, url: &str, user: &str, role: &str) -> anyhow::Result<Device> {
    let tok = cloud.token(user, role, &["clinic"], "90d")?;
    let mut d = Device::connect(url).await?;
    d.hello(&tok, &format!("{user}-device"), None, None).await?;
    Ok(d)
}

async fn status(base: &str) -> anyhow::Result<Value> {
    let (code, s) = request(base, "GET", "/status.json", None, None).await?;
    anyhow::ensure!(code == 200, "status.json answered {code}");
    Ok(s)
}

/// Polls `/status.json` until `ok` holds (or fails with the last status after a deadline).
async fn status_until(base: &str, what: &str, ok: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + 3 * EVENT_TIMEOUT;
    loop {
        let s = status(base).await?;
        if ok(&s) {
            return Ok(s);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("waited for {what}; status: {s}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn pruned_by_age(s: &Value) -> u64 {
    s["retention"]["pruned_by_age"].as_u64().unwrap_or(0)
}

/// The hub's cloud holds everything it was sent.
fn all_confirmed(s: &Value) -> bool {
    s["backlog"]["messages"] == 0 && s["uplink"]["connected"] == true
}

async fn history(d: &mut Device, req: Value) -> anyhow::Result<Value> {
    let mut frame = json!({"v":1,"type":"history","room":"clinic"});
    if let (Some(f), Some(r)) = (frame.as_object_mut(), req.as_object()) {
        f.extend(r.clone());
    }
    d.send_json(&frame).await?;
    d.expect("history").await
}

fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .map_or_else(Vec::new, |m| m.iter().map(|m| m["msg"]["id"].as_str().unwrap_or_default().to_owned()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_leave_the_hub_after_retain_days_and_history_comes_back_from_the_cloud() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let mut cloud_proc = cloud.start(&quic).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let mut relay = relay_dir.start(HUB).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", "worker").await?;
    let mut dr = phone(&cloud, &cloud_proc.ws_url(), "dr-neema", "doctor").await?;

    let mut confirmed = amina.send_chats("clinic", 10, "visit").await?;
    // An emergency nobody's device has received: the hub keeps it however old.
    let mut alert = chat("clinic", "child not breathing");
    alert["priority"] = json!("emergency");
    let alert_id = amina.send_stored(alert).await?["id"].as_str().unwrap_or_default().to_owned();
    // A doctor's reply comes down: the cloud holds it by definition.
    let reply = dr.send_stored(chat("clinic", "on my way")).await?["id"].as_str().unwrap_or_default().to_owned();
    loop {
        if amina.expect("message").await?["msg"]["id"] == reply.as_str() {
            break;
        }
    }
    confirmed.push(reply.clone());
    status_until(&relay.http_base(), "the cloud to confirm everything", all_confirmed).await?;

    // The cloud goes away; three more messages stay unconfirmed.
    cloud_proc.terminate().await?;
    let unconfirmed = amina.send_chats("clinic", 3, "after the cut").await?;
    amina.close().await;
    relay.terminate().await?;

    // A month later, still without the cloud: exactly the confirmed old ones go.
    let mut relay = relay_dir.start(&later(&[])).await?;
    let s = status_until(&relay.http_base(), "11 messages pruned by age", |s| pruned_by_age(s) >= 11).await?;
    assert_eq!(pruned_by_age(&s), 11, "only what the cloud confirmed: {s}");
    assert!(s["retention"]["last_prune_at"].is_u64(), "{s}");
    assert_eq!(s["retention"]["retain_days"], 30);
    let mut zawadi = phone(&cloud, &relay.ws_url(), "zawadi", "worker").await?;
    assert!(zawadi.welcome["pruned_through"].as_u64() > Some(0), "{}", zawadi.welcome);
    zawadi.settle("message").await?;
    let page = history(&mut zawadi, json!({"limit": 50})).await?;
    let held: HashSet<String> = ids(&page).into_iter().collect();
    let expected: HashSet<String> = unconfirmed.iter().cloned().chain([alert_id.clone()]).collect();
    assert_eq!(held, expected, "the unconfirmed and the undelivered emergency stay: {page}");
    assert_eq!(page["unavailable"]["code"], "history_in_cloud", "{page}");
    assert_eq!(page["more"], false);
    assert_eq!(pruned_by_age(&status(&relay.http_base()).await?), 11, "nothing unconfirmed went");

    // The cloud is back: the three are confirmed, then pruned too; the emergency stays.
    let _cloud_proc = cloud.start(&quic).await?;
    status_until(&relay.http_base(), "14 messages pruned by age", |s| pruned_by_age(s) == 14).await?;

    // A fresh phone pages back through the whole room: the hub's and the cloud's.
    let mut pages = Vec::new();
    let mut req = json!({"limit": 4});
    loop {
        let page = history(&mut zawadi, req.clone()).await?;
        assert!(page["unavailable"].is_null(), "{page}");
        let oldest = page["messages"][0]["msg"]["hlc"].clone();
        let more = page["more"] == true;
        pages.push(page);
        if !more {
            break;
        }
        anyhow::ensure!(pages.len() < 20, "history never ends: {pages:?}");
        req = json!({"limit": 4, "before_hlc": oldest});
    }
    let mut seen: Vec<String> = pages.iter().rev().flat_map(ids).collect();
    let all: HashSet<String> = confirmed.iter().chain(&unconfirmed).cloned().chain([alert_id.clone()]).collect();
    assert_eq!(seen.len(), all.len(), "each message once: {pages:?}");
    assert_eq!(seen.drain(..).collect::<HashSet<_>>(), all);
    let from_cloud: u64 = pages.iter().map(|p| p["from_cloud"].as_u64().unwrap_or(0)).sum();
    assert_eq!(from_cloud, 14, "what the hub removed came from the cloud");
    let alert_entry = pages
        .iter()
        .flat_map(|p| p["messages"].as_array().cloned().unwrap_or_default())
        .find(|m| m["msg"]["id"] == alert_id.as_str());
    assert!(alert_entry.is_some_and(|m| m["cursor"].as_u64() > Some(0)), "the emergency is the hub's own copy");

    let s = status(&relay.http_base()).await?;
    assert_eq!(
        (s["retention"]["pruned_by_age"].as_u64(), s["retention"]["pruned_by_quota"].as_u64()),
        (Some(14), Some(0))
    );
    assert!(s["retention"]["oldest_held_at"].is_u64(), "the emergency is still held: {s}");
    let (_, page) = outpost_tests::http::get_text(&relay.http_base(), "/status").await?;
    assert!(page.contains("removed 14 by age"), "{page}");
    relay.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_prunes_confirmed_messages_first_and_refuses_only_when_nothing_is_confirmed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let mut cloud_proc = cloud.start(&quic).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let small = [
        ("OUTPOST_STORAGE__QUOTA_BYTES", "2000000"),
        ("OUTPOST_STORAGE__EMERGENCY_RESERVE_BYTES", "300000"),
        ("OUTPOST_STORAGE__PRUNE_ABOVE_PERCENT", "60"),
        ("OUTPOST_UPLINK__RETRY_MAX_SECS", "1"),
    ];
    let mut relay = relay_dir.start(&small).await?;
    let base = relay.http_base();
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", "worker").await?;
    let big = "x".repeat(4000);
    let msg = |text: &str| {
        json!({"id": outpost_tests::new_id(), "room": "clinic", "kind": "report",
        "priority": "normal", "body": {"text": text, "notes": big}})
    };

    // Twice the quota's worth, in rounds the cloud confirms: every send is taken.
    for round in 0..20 {
        let mut sent = Vec::new();
        for i in 0..50 {
            sent.push(amina.send_msg(msg(&format!("round {round} report {i}"))).await?);
        }
        for id in &sent {
            let a = amina.answer(id).await?;
            anyhow::ensure!(a["type"] == "stored", "round {round}: {a}");
        }
        status_until(&base, "the cloud to confirm the round", all_confirmed).await?;
    }
    let s = status(&base).await?;
    assert!(s["retention"]["pruned_by_quota"].as_u64() > Some(0), "{s}");
    assert_eq!(s["retention"]["pruned_by_age"], 0, "the default 90 days: nothing is that old");
    assert!(s["storage"]["used_bytes"].as_u64() < s["storage"]["bulk_limit_bytes"].as_u64(), "{s}");

    // Without the cloud nothing new is confirmed: the quota refuses again, and the
    // emergency reserve still takes an alert.
    cloud_proc.terminate().await?;
    let mut refused = None;
    for i in 0..1000 {
        let id = amina.send_msg(msg(&format!("offline {i}"))).await?;
        let a = amina.answer(&id).await?;
        if a["type"] == "error" {
            refused = Some(a);
            break;
        }
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("the quota never refused"))?;
    assert_eq!(refused["code"], "storage_full", "{refused}");
    let mut alert = chat("clinic", "mother bleeding");
    alert["priority"] = json!("emergency");
    amina.send_stored(alert).await?;
    relay.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_pruning_loses_nothing_unconfirmed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let mut cloud_proc = cloud.start(&quic).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let mut relay = relay_dir.start(HUB).await?;
    let mut amina = phone(&cloud, &relay.ws_url(), "amina", "worker").await?;
    // Within a device's burst allowance (2,000), so no send is rate-limited.
    const CONFIRMED: u64 = 1500;
    amina.send_chats("clinic", CONFIRMED as usize, "old").await?;
    status_until(&relay.http_base(), "the cloud to confirm everything", all_confirmed).await?;
    cloud_proc.terminate().await?;
    let unconfirmed = amina.send_chats("clinic", 20, "unconfirmed").await?;
    amina.close().await;
    relay.terminate().await?;

    // Small batches: many transactions to be killed between (or inside).
    let mut relay = relay_dir.start(&later(&[("OUTPOST_STORAGE__PRUNE_BATCH", "50")])).await?;
    status_until(&relay.http_base(), "pruning to start", |s| pruned_by_age(s) > 0).await?;
    relay.kill9().await?;

    let relay = relay_dir.start(&later(&[])).await?;
    let s =
        status_until(&relay.http_base(), "every confirmed message pruned", |s| pruned_by_age(s) >= CONFIRMED).await?;
    assert_eq!(pruned_by_age(&s), CONFIRMED, "counted once each across the crash: {s}");
    let mut zawadi = phone(&cloud, &relay.ws_url(), "zawadi", "worker").await?;
    zawadi.settle("message").await?;
    let page = history(&mut zawadi, json!({"limit": 200})).await?;
    assert_eq!(ids(&page), unconfirmed, "every unconfirmed message, in order: {page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_keeps_held_rooms_and_an_audited_delete_erases() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let env = [("OUTPOST_CLOUD_STORAGE__RETAIN_DAYS", "30")];
    let mut proc = cloud.start_with_env("127.0.0.1:0", &env).await?;
    let marker = |room: &str, i: usize| format!("case-note-{room}-{i}-zq9");
    for room in ["clinic", "inquest"] {
        let tok = cloud.token("dr-neema", "doctor", &[room], "90d")?;
        let mut dr = Device::connect(&proc.ws_url()).await?;
        dr.hello(&tok, "neema-laptop", None, None).await?;
        for i in 0..5 {
            dr.send_stored(chat(room, &marker(room, i))).await?;
        }
        dr.close().await;
    }
    let cli = |args: &[&str]| {
        let mut cmd = command("outpost-cloud");
        cmd.args(args).arg("--dir").arg(&cloud.dir);
        cmd.output()
    };
    let held = cli(&["hold", "inquest", "--reason", "coroner case 12"])?;
    assert!(held.status.success(), "{held:?}");
    proc.terminate().await?;

    // A month later the cloud's retention (which looks once at start) removes the old
    // room's messages, not the held room's.
    let mut later_env = env.to_vec();
    later_env.push(("OUTPOST_CLOUD_TESTING__CLOCK_OFFSET_SECS", MONTH_LATER));
    let mut proc = cloud.start_with_env("127.0.0.1:0", &later_env).await?;
    let s = status_until(&proc.http_base(), "the cloud to prune", |s| pruned_by_age(s) >= 5).await?;
    assert_eq!(pruned_by_age(&s), 5, "nothing of the held room: {s}");
    assert_eq!(s["retention"]["retain_days"], 30);
    proc.terminate().await?;
    let count = |room: &str| -> anyhow::Result<i64> {
        let c = rusqlite::Connection::open(cloud.db())?;
        Ok(c.query_row("SELECT count(*) FROM messages WHERE room = ?1", [room], |r| r.get(0))?)
    };
    assert_eq!((count("clinic")?, count("inquest")?), (0, 5), "the held room keeps everything");

    // Deleting from a held room is refused; after release it erases.
    let refused = cli(&["delete", "--room", "inquest", "--before", "2999-01-01", "--by", "records-officer"])?;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("legal hold"), "{refused:?}");
    assert_eq!(count("inquest")?, 5);
    let released = cli(&["release", "inquest", "--reason", "case closed"])?;
    assert!(released.status.success(), "{released:?}");
    let deleted = cli(&["delete", "--room", "inquest", "--before", "2999-01-01", "--by", "records-officer"])?;
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(String::from_utf8_lossy(&deleted.stdout).contains("erased 5 messages"), "{deleted:?}");
    assert_eq!(count("inquest")?, 0);
    // Really erased: no trace of the bodies in the database file or its WAL.
    for file in ["cloud.db", "cloud.db-wal"] {
        let bytes = std::fs::read(cloud.db().with_file_name(file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("case-note-inquest"), "{file} still holds a deleted message");
    }
    let audit = cli(&["audit"])?;
    let log = String::from_utf8_lossy(&audit.stdout);
    assert!(log.contains("legal_hold") && log.contains("hold_released"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"deletion\"") && l.contains("erased 5 messages") && l.contains("records-officer")),
        "{log}"
    );
    Ok(())
}
