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

/// A running cloud, and a running hub of it whose uplink leads nowhere (no network in the
/// village), with an empty stick.
struct Offline {
    cloud: Cloud,
    cloud_proc: outpost_tests::CloudProc,
    relay_dir: outpost_tests::RelayDir,
    relay: outpost_tests::Relay,
    stick: std::path::PathBuf,
}

impl Offline {
    async fn start(tmp: &Path) -> anyhow::Result<Self> {
        let cloud = Cloud::init(&tmp.join("cloud"))?;
        let cloud_proc = cloud.start(&free_udp_addr()?).await?;
        let relay_dir = cloud.provision_relay_at("village-7", &tmp.join("relay"), &free_udp_addr()?)?;
        let relay = relay_dir.start(&[]).await?;
        let stick = tmp.join("stick");
        std::fs::create_dir(&stick)?;
        Ok(Self { cloud, cloud_proc, relay_dir, relay, stick })
    }
}

fn ids(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| f["msg"]["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_without_network_reaches_the_doctor_by_stick_and_gets_the_reply_back() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let Offline { cloud, cloud_proc, relay_dir, relay, stick } = Offline::start(tmp.path()).await?;

    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "neema-laptop").await?;
    let visits = amina.send_chats("clinic", 300, "visit").await?;
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
    let after = amina.send_chats("clinic", 1, "by network").await?;
    let f = dr.expect("message").await?;
    assert_eq!(f["msg"]["id"], after[0].as_str(), "the first message the doctor gets is the new one: {f}");
    dr.no_frame_of("message", Duration::from_millis(500)).await?;
    assert_eq!(held(&cloud.db())?, 303);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stick_from_another_cloud_for_another_hub_or_changed_on_the_way_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let other_cloud = Cloud::init(&tmp.path().join("other-cloud"))?;
    let village7 = cloud.provision_relay_at("village-7", &tmp.path().join("relay7"), &free_udp_addr()?)?;
    let village8 = cloud.provision_relay_at("village-8", &tmp.path().join("relay8"), &free_udp_addr()?)?;
    let mut relay = village7.start(&[]).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    amina.send_chats("clinic", 5, "visit").await?;
    amina.close().await;
    // Every command below runs with its server stopped: it opens the database itself.
    relay.terminate().await?;
    let stick = tmp.path().join("stick");
    std::fs::create_dir(&stick)?;
    ok("outpost-relay", &[&"export", &"--dir", &village7.dir, &"--to", &stick]).await?;
    let hub_file = stick.join("village-7.to-cloud.outpost");

    // Another cloud's hub: refused, and nothing imported.
    let (success, _, err) = cli("outpost-cloud", &[&"import", &"--dir", &other_cloud.dir, &hub_file]).await?;
    assert!(!success && err.contains("another cloud") && err.contains("(refused)"), "{err}");
    assert_eq!(held(&other_cloud.db()).unwrap_or(0), 0);

    // One changed byte in the messages (just before the signature at the end): refused
    // by its signature, and nothing imported.
    let mut bytes = std::fs::read(&hub_file)?;
    let at = bytes.len() - 100;
    bytes[at] ^= 0x20;
    let tampered = tmp.path().join("tampered.to-cloud.outpost");
    std::fs::write(&tampered, &bytes)?;
    let (success, _, err) = cli("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &tampered]).await?;
    assert!(!success && err.contains("signature does not match") && err.contains("(tampered)"), "{err}");
    assert_eq!(held(&cloud.db()).unwrap_or(0), 0);

    // Something else entirely.
    let photo = tmp.path().join("photo.to-cloud.outpost");
    std::fs::write(&photo, b"\xff\xd8\xff\xe0 a photo")?;
    let (success, _, err) = cli("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &photo]).await?;
    assert!(!success && err.contains("not an Outpost stick file"), "{err}");

    // The real one: imported, answered.
    let out = ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &hub_file]).await?;
    assert!(out.contains("5 entries (5 new)"), "{out}");
    assert_eq!(held(&cloud.db())?, 5);
    let answer = stick.join("village-7.from-cloud.outpost");

    // The answer for village 7 taken to village 8, and a hub's own file given back to it.
    let (success, _, err) = cli("outpost-relay", &[&"import", &"--dir", &village8.dir, &answer]).await?;
    assert!(!success && err.contains("for hub \"village-7\", not this one"), "{err}");
    let (success, _, err) = cli("outpost-relay", &[&"import", &"--dir", &village7.dir, &hub_file]).await?;
    assert!(!success && err.contains("import it there with `outpost-cloud import`"), "{err}");
    // On demand, only for a hub the cloud has a certificate of (kept at enrollment).
    let (success, _, err) =
        cli("outpost-cloud", &[&"export", &"--dir", &cloud.dir, &"--relay", &"village-9", &"--to", &stick]).await?;
    assert!(!success && err.contains("no certificate of hub village-9"), "{err}");
    ok("outpost-cloud", &[&"export", &"--dir", &cloud.dir, &"--relay", &"village-8", &"--to", &stick])
        .await
        .map(|_| ())
        .or_else(|e| if e.to_string().contains("never reached this cloud") { Ok(()) } else { Err(e) })?;
    let out = ok("outpost-relay", &[&"import", &"--dir", &village7.dir, &answer]).await?;
    assert!(out.contains("confirmed through"), "{out}");
    Ok(())
}

/// Waits until `pid` has `file` open (the command is at work on it).
async fn until_open(pid: u32, file: &Path) -> anyhow::Result<()> {
    let file = std::fs::canonicalize(file)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd"))
            && fds.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == file))
        {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "process {pid} never opened {}", file.display());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Kills `bin args` with SIGKILL once `db` holds more than `from` messages and fewer than
/// `to`; returns what it held then.
async fn kill_inside(
    bin: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    db: &Path,
    from: usize,
    to: usize,
) -> anyhow::Result<usize> {
    let mut cmd = tokio::process::Command::from(command(bin));
    for a in args {
        cmd.arg(a);
    }
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = held(db).unwrap_or(0);
        if n > from {
            child.start_kill()?;
            child.wait().await?;
            let n = held(db)?;
            anyhow::ensure!(n < to, "the import ended ({n} of {to}) before it could be killed");
            return Ok(n);
        }
        anyhow::ensure!(child.try_wait()?.is_none(), "{bin} ended before it imported anything");
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{bin} imported nothing in 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A phone may send as fast as the test can (a backlog of weeks, made in seconds).
const UNLIMITED: &[(&str, &str)] =
    &[("OUTPOST_LIMITS__RATE_PER_SEC", "100000"), ("OUTPOST_LIMITS__RATE_BURST", "100000")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_export_and_of_import_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const FROM_VILLAGE: usize = 20_000;
    const FROM_DOCTOR: usize = 5_000;
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let village = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &free_udp_addr()?)?;
    let mut relay = village.start(UNLIMITED).await?;
    let mut amina = cloud.worker(&relay.ws_url(), "amina", &["clinic"]).await?;
    let sent = amina.send_chats("clinic", FROM_VILLAGE, "visit").await?;
    amina.close().await;
    relay.terminate().await?;
    let stick = tmp.path().join("stick");
    std::fs::create_dir(&stick)?;
    let hub_file = stick.join("village-7.to-cloud.outpost");

    // Export killed while it reads the hub's database: no file, or never half of one.
    let mut export = tokio::process::Command::from(command("outpost-relay"))
        .args(["export", "--dir"])
        .arg(&village.dir)
        .arg("--to")
        .arg(&stick)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pid = export.id().unwrap_or(0);
    until_open(pid, &village.db()).await?;
    anyhow::ensure!(export.try_wait()?.is_none(), "the export ended before it could be killed");
    export.start_kill()?;
    export.wait().await?;
    assert!(!hub_file.exists(), "a killed export leaves no file behind under the real name");
    ok("outpost-relay", &[&"export", &"--dir", &village.dir, &"--to", &stick]).await?;

    // Import killed half way through: what it committed stays, the rest comes the next
    // time, nothing twice.
    let at_kill =
        kill_inside("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick], &cloud.db(), 0, FROM_VILLAGE).await?;
    assert!(at_kill > 0 && at_kill < FROM_VILLAGE, "{at_kill}");
    ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick]).await?;
    assert_eq!(held(&cloud.db())?, FROM_VILLAGE);

    // The doctor reads them all, once each and in order, and answers at length.
    let quic = free_udp_addr()?;
    let unlimited = [("OUTPOST_CLOUD_LIMITS__RATE_PER_SEC", "100000"), ("OUTPOST_CLOUD_LIMITS__RATE_BURST", "100000")];
    let mut cloud_proc = cloud.start_with_env(&quic, &unlimited).await?;
    let mut dr = cloud.clinic_device(&cloud_proc.ws_url(), "dr-neema", "doctor", "neema-laptop").await?;
    let got = ids(&dr.messages(FROM_VILLAGE).await?);
    assert_eq!(got, sent, "every message once, in order");
    let replies = dr.send_chats("clinic", FROM_DOCTOR, "advice").await?;
    dr.close().await;
    cloud_proc.terminate().await?;
    ok("outpost-cloud", &[&"export", &"--dir", &cloud.dir, &"--relay", &"village-7", &"--to", &stick]).await?;

    // The hub's import killed half way through, then done again.
    let at_kill = kill_inside(
        "outpost-relay",
        &[&"import", &"--dir", &village.dir, &stick],
        &village.db(),
        FROM_VILLAGE,
        FROM_VILLAGE + FROM_DOCTOR,
    )
    .await?;
    assert!(at_kill > FROM_VILLAGE, "{at_kill}");
    let out = ok("outpost-relay", &[&"import", &"--dir", &village.dir, &stick]).await?;
    assert!(out.contains(&format!("confirmed through {FROM_VILLAGE}")), "{out}");
    assert_eq!(held(&village.db())?, FROM_VILLAGE + FROM_DOCTOR);

    // A phone on the hub pages back through the doctor's replies: each once, in order.
    let relay = village.start(&[]).await?;
    let mut zawadi = cloud.worker(&relay.ws_url(), "zawadi", &["clinic"]).await?;
    let mut seen = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"v": 1, "type": "history", "room": "clinic", "limit": 200});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        zawadi.send_json(&req).await?;
        let page = zawadi.expect("history").await?;
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        before = msgs.first().and_then(|m| m["cursor"].as_u64());
        seen.splice(0..0, ids(&msgs));
        if page["more"] != true {
            break;
        }
    }
    let doctors: HashSet<&String> = replies.iter().collect();
    let from_doctor: Vec<String> = seen.iter().filter(|id| doctors.contains(id)).cloned().collect();
    assert_eq!(from_doctor, replies, "every reply once, in order");
    assert_eq!(seen.len(), FROM_VILLAGE + FROM_DOCTOR);
    let s = status(&relay.http_base()).await?;
    assert_eq!(s["backlog"]["messages"], 0, "the cloud confirmed everything: {s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_taken_in_a_village_without_network_reaches_the_doctor_whole_by_stick() -> anyhow::Result<()> {
    use outpost_tests::media::{Upload, download, info, photo, sha256_hex};
    let tmp = tempfile::tempdir()?;
    let Offline { cloud, cloud_proc, relay_dir, relay, stick } = Offline::start(tmp.path()).await?;

    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let img = photo(600_000, 3);
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    up.run(256 << 10, None).await?;
    let mut phone = Device::connect(&relay.ws_url()).await?;
    phone.hello(&amina, "amina-phone", None, None).await?;
    phone.send_stored(up.message("clinic", "wound, day 2", "IMG_7.jpg")).await?;
    let s = status(&relay.http_base()).await?;
    assert_eq!(s["backlog"]["files"], 1, "the photo waits for the cloud: {s}");

    ok("outpost-relay", &[&"export", &"--dir", &relay_dir.dir, &"--to", &stick]).await?;
    let out = ok("outpost-cloud", &[&"import", &"--dir", &cloud.dir, &stick]).await?;
    assert!(out.contains("1 media files"), "{out}");

    // The doctor has the whole photo at once, not only its preview.
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let (code, v) = info(&cloud_proc.http_base(), &neema, &up.sha).await?;
    assert_eq!((code, &v["available"]), (200, &json!(true)), "{v}");
    let full = download(&cloud_proc.http_base(), &neema, &up.sha).await?;
    assert_eq!(sha256_hex(&full.body), up.sha, "the same bytes");

    // Back at the hub, the photo counts as confirmed: nothing waits, nothing goes again.
    let out = ok("outpost-relay", &[&"import", &"--dir", &relay_dir.dir, &stick]).await?;
    assert!(out.contains("1 media files"), "{out}");
    let s = status(&relay.http_base()).await?;
    assert_eq!((s["backlog"]["files"].as_u64(), s["backlog"]["messages"].as_u64()), (Some(0), Some(0)), "{s}");
    let (_, v) = info(&relay.http_base(), &amina, &up.sha).await?;
    assert_eq!(v["custody"], "forwarded", "{v}");
    Ok(())
}
