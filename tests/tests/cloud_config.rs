//! The cloud's own settings in force, seen from outside: a storage quota from `cloud.toml`
//! (reported, and enforced on doctors' messages), media retention from `cloud.toml`,
//! listeners from the file instead of flags, and a bad file or variable stopping
//! `outpost-cloud run` with exit 64 and every problem listed.

use std::time::Duration;

use outpost_tests::client::chat;
use outpost_tests::media::{Upload, download, info, info_until, sha256_hex};
use outpost_tests::{Cloud, CloudProc, Device, EVENT_TIMEOUT};
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;
/// The default emergency reserve (64 MiB), left as it is by these files.
const RESERVE: u64 = 64 << 20;
const POLL: Duration = Duration::from_millis(100);

async fn doctor(cloud: &Cloud, proc: &CloudProc, user: &str) -> anyhow::Result<Device> {
    let token = cloud.token(user, "doctor", &["clinic"], "1h")?;
    let mut d = Device::connect(&proc.ws_url()).await?;
    d.hello(&token, &format!("{user}-laptop"), None, None).await?;
    Ok(d)
}

async fn status(proc: &CloudProc) -> anyhow::Result<Value> {
    let (_, s) = outpost_tests::http::request(&proc.http_base(), "GET", "/status.json", None, None).await?;
    Ok(s)
}

/// A gauge from the cloud's Prometheus `/metrics`.
async fn gauge(proc: &CloudProc, name: &str) -> anyhow::Result<Option<f64>> {
    let r = outpost_tests::media::call(&proc.http_base(), "GET", "/metrics", None, &[], &[]).await?;
    Ok(String::from_utf8_lossy(&r.body)
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok()))
}

fn emergency(text: &str) -> Value {
    let mut m = chat("clinic", text);
    m["priority"] = json!("emergency");
    m["kind"] = json!("alert");
    m
}

#[tokio::test]
async fn a_2_gib_quota_in_cloud_toml_is_the_quota_the_cloud_enforces() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    // The cloud counts its media files by their length. A sparse file has the length of
    // 2 GiB less the reserve without taking that disk space, so it stands in for that
    // much stored media without a test writing 2 GiB.
    let partial = cloud.dir.join("data/media/partial");
    std::fs::create_dir_all(&partial)?;
    std::fs::File::create(partial.join("filler"))?.set_len(2 * GIB - RESERVE)?;

    // With the default quota (8 GiB) those bytes leave plenty of room.
    let mut proc = cloud.start("127.0.0.1:0").await?;
    let s = status(&proc).await?;
    assert_eq!(s["storage"]["quota_bytes"], 8 * GIB, "{s}");
    let mut dr = doctor(&cloud, &proc, "dr-neema").await?;
    dr.send_stored(chat("clinic", "ward round at 9")).await?;
    drop(dr);
    assert_eq!(proc.terminate().await?, Some(0));

    // The same bytes under the 2 GiB quota set in cloud.toml: past quota − reserve.
    cloud.configure("[storage]\nquota_bytes = 2147483648\n")?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let s = status(&proc).await?;
    assert_eq!(s["storage"]["quota_bytes"], 2 * GIB, "{s}");
    assert_eq!(s["storage"]["bulk_limit_bytes"], 2 * GIB - RESERVE, "{s}");
    assert!(s["storage"]["used_bytes"].as_u64() >= Some(2 * GIB - RESERVE), "{s}");
    assert_eq!(gauge(&proc, "outpost_storage_quota_bytes").await?, Some((2 * GIB) as f64));

    let mut dr = doctor(&cloud, &proc, "dr-neema").await?;
    let id = dr.send_msg(chat("clinic", "ward round at 10")).await?;
    let refused = dr.answer(&id).await?;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("storage_full")),
        "{refused}"
    );
    // The reserve is there for emergencies.
    dr.send_stored(emergency("patient collapsed in ward 3")).await?;
    Ok(())
}

#[tokio::test]
async fn a_small_quota_in_cloud_toml_refuses_ordinary_messages_and_keeps_room_for_emergencies() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    cloud.configure("[storage]\nquota_bytes = 400000\nemergency_reserve_bytes = 200000\n")?;
    let proc = cloud.start("127.0.0.1:0").await?;
    assert_eq!(status(&proc).await?["storage"]["quota_bytes"], 400_000);
    let mut a = doctor(&cloud, &proc, "dr-neema").await?;
    let mut b = doctor(&cloud, &proc, "dr-okafor").await?;
    // Real messages fill it: 8 KiB each, until the cloud says no.
    let filler = "f".repeat(8 * 1024);
    let mut stored = 0;
    let mut refused = None;
    for i in 0..200 {
        let id = a.send_msg(chat("clinic", &format!("{i} {filler}"))).await?;
        let f = a.answer(&id).await?;
        if f["type"] == "stored" {
            stored += 1;
        } else {
            refused = Some(f);
            break;
        }
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("the quota was never reached"))?;
    assert_eq!(refused["code"], "storage_full", "{refused}");
    assert!(stored > 0, "some messages fit under the quota");
    let s = a.send_stored(emergency("postpartum haemorrhage, bed 4")).await?;
    let got = b.settle("message").await?;
    assert_eq!(got.len(), stored + 1, "everything acknowledged, then the emergency");
    assert_eq!(got.last().map(|f| f["cursor"].clone()), Some(s["cursor"].clone()));
    Ok(())
}

/// A PDF of about `n` bytes.
fn pdf(n: u32, seed: u32) -> Vec<u8> {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0..n).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8));
    b
}

#[tokio::test]
async fn media_retention_in_cloud_toml_removes_a_blob_90_days_after_it_arrived() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    cloud.configure("[media]\nretention_days = 90\n")?;
    let mut proc = cloud.start("127.0.0.1:0").await?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let (old, young) = (pdf(200_000, 1), pdf(150_000, 2));
    let mut shas = Vec::new();
    for bytes in [&old, &young] {
        let mut up = Upload::new(&proc.http_base(), &neema, bytes);
        assert_eq!(up.create().await?.status, 201);
        up.run(64 << 10, None).await?;
        shas.push(up.sha.clone());
    }
    let (old_sha, young_sha) = (shas[0].clone(), shas[1].clone());
    let base = proc.http_base();
    assert_eq!(download(&base, &neema, &old_sha).await?.status, 200);
    assert_eq!(proc.terminate().await?, Some(0));

    // While the cloud is stopped, the first arrived 91 days ago, the second 89.
    let db = rusqlite::Connection::open(cloud.db())?;
    let day: i64 = 86_400_000;
    let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    for (sha, days) in [(&old_sha, 91), (&young_sha, 89)] {
        let n = db.execute(
            "UPDATE blobs SET created = ?1 WHERE hex(sha256) = upper(?2)",
            rusqlite::params![now - days * day, sha],
        )?;
        assert_eq!(n, 1, "blob {sha} is in the cloud's database");
    }
    drop(db);

    // The sweep runs when the cloud starts.
    let proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();
    let v = info_until(&base, &neema, &old_sha, POLL, EVENT_TIMEOUT, |v| v["evicted"] == true).await?;
    assert_eq!((v["available"].as_bool(), v["size"].as_u64()), (Some(false), Some(old.len() as u64)), "{v}");
    let gone = download(&base, &neema, &old_sha).await?;
    assert_eq!((gone.status, gone.code()), (404, "not_found".to_owned()));
    let blob_file = |sha: &str| cloud.dir.join("data/media/blobs").join(&sha[..2]).join(sha);
    assert!(!blob_file(&old_sha).exists(), "the bytes are gone from disk");

    let (_, v) = info(&base, &neema, &young_sha).await?;
    assert_eq!((v["available"].as_bool(), v["evicted"].as_bool()), (Some(true), Some(false)), "{v}");
    let kept = download(&base, &neema, &young_sha).await?;
    assert_eq!((kept.status, sha256_hex(&kept.body)), (200, young_sha.clone()));
    assert!(blob_file(&young_sha).exists());
    assert!(cloud.log().contains("blob removed by retention (received long ago)"), "{}", cloud.log());
    Ok(())
}

#[test]
fn a_bad_cloud_toml_exits_64_listing_every_problem() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    cloud.configure(
        "[storage]\nquota_bytes = 1000000\nemergency_reserve_bytes = 2000000\nreaders = 0\n\
         [limits]\nmax_devices = 0\nrate_per_sec = 0\nidle_timeout_secs = 5\nping_interval_secs = 10\n\
         [media]\nretention = 90\n\
         [backups]\nevery_hours = 24\n",
    )?;
    let out = cloud.run_output(&["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for needle in [
        "invalid configuration",
        "storage.emergency_reserve_bytes must be smaller than storage.quota_bytes",
        "storage.readers must be greater than 0",
        "limits.max_devices must be greater than 0",
        "limits.rate_per_sec must be greater than 0",
        "limits.idle_timeout_secs must be longer than limits.ping_interval_secs",
        "[media]: unknown field `retention`",
        "unknown section `backups`",
    ] {
        assert!(err.contains(needle), "{needle:?} not reported in:\n{err}");
    }
    assert!(!cloud.db().exists(), "nothing was opened");
    Ok(())
}

#[test]
fn a_bad_outpost_cloud_variable_exits_64_listing_every_problem() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let env = [
        ("OUTPOST_CLOUD_STORAGE__QUOTA_BYTESS", "2147483648"),
        ("OUTPOST_CLOUD_MEDIA__RETENTION_DAYS", "soon"),
        ("OUTPOST_CLOUD_LIMITS__MAX_DEVICES", "0"),
        ("OUTPOST_CLOUD_BACKUP__ENABLED", "yes"),
        // Not a setting's shape: someone else's variable, left alone.
        ("OUTPOST_CLOUD_BIN_DIR", "/opt/outpost/bin"),
    ];
    let out = cloud.run_output(&["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0"], &env)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for needle in [
        "quota_bytess",
        "[media]: invalid type",
        "limits.max_devices must be greater than 0",
        "unknown section `backup`",
    ] {
        assert!(err.contains(needle), "{needle:?} not reported in:\n{err}");
    }
    assert!(!err.contains("bin_dir"), "a variable that is not a setting was reported:\n{err}");
    // Without --ws and --quic, and none in cloud.toml, the cloud says where to set them.
    let out = cloud.run_output(&[], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("server.listen is not set") && err.contains("server.quic_listen is not set"), "{err}");
    Ok(())
}

#[tokio::test]
async fn listeners_in_cloud_toml_need_no_flags_and_the_hubs_variables_are_not_the_clouds() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    cloud.configure("[server]\nlisten = \"127.0.0.1:0\"\nquic_listen = \"127.0.0.1:0\"\n")?;
    // A hub's variable in the same environment would be a bad value for a hub; the cloud
    // reads only OUTPOST_CLOUD_ ones.
    let proc = cloud
        .start_from_config(&[("OUTPOST_LIMITS__MAX_DEVICES", "0"), ("OUTPOST_CLOUD_LIMITS__MAX_BODY_BYTES", "100")])
        .await?;
    let mut dr = doctor(&cloud, &proc, "dr-neema").await?;
    dr.send_stored(chat("clinic", "short")).await?;
    let id = dr.send_msg(chat("clinic", &"long ".repeat(40))).await?;
    assert_eq!(dr.answer(&id).await?["code"], "too_large", "OUTPOST_CLOUD_LIMITS__MAX_BODY_BYTES is in force");
    Ok(())
}

/// The HTTP API takes the same send checks as a device's `send`, the rate limit among
/// them (from `[limits]` in cloud.toml), counted per user across their API calls: past
/// the burst a post is refused with 429 `rate_limited` and not stored, and another user
/// is not held back by it.
#[tokio::test]
async fn the_http_api_is_rate_limited_per_user_like_a_device() -> anyhow::Result<()> {
    use outpost_tests::http::request;
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    // One message a second, a burst of three: the fourth post in a row is over the limit.
    cloud.configure("[limits]\nrate_per_sec = 1\nrate_burst = 3\n")?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();
    let his = cloud.token("his", "doctor", &["clinic"], "1h")?;
    let post = |n: u32| json!({"id": outpost_tests::new_id(), "body": {"text": format!("result {n}")}});
    for n in 0..3 {
        let (status, created) =
            request(&base, "POST", "/api/rooms/clinic/messages", Some(&his), Some(&post(n))).await?;
        assert_eq!(status, 201, "post {n} is within the burst: {created}");
    }
    let refused_post = post(3);
    let (status, refused) =
        request(&base, "POST", "/api/rooms/clinic/messages", Some(&his), Some(&refused_post)).await?;
    assert_eq!((status, refused["code"].as_str()), (429, Some("rate_limited")), "{refused}");

    // Another user's bucket is their own.
    let lab = cloud.token("lab", "doctor", &["clinic"], "1h")?;
    let (status, other) = request(&base, "POST", "/api/rooms/clinic/messages", Some(&lab), Some(&post(4))).await?;
    assert_eq!(status, 201, "{other}");

    // The refused post was not stored: the room holds the four accepted ones only.
    let (_, page) = request(&base, "GET", "/api/rooms/clinic/messages?after=0", Some(&his), None).await?;
    let ids: Vec<&Value> =
        page["messages"].as_array().map(|m| m.iter().map(|p| &p["msg"]["id"]).collect()).unwrap_or_default();
    assert_eq!(ids.len(), 4, "{page}");
    assert!(!ids.contains(&&refused_post["id"]), "{page}");
    Ok(())
}
