//! Photos and voice notes end to end, with real processes: resumable uploads to the hub
//! (a dropped chunk, a hub killed with -9), the preview in the message, the full blob on
//! the uplink's bulk lane (behind emergencies, resumed after a cut), downstream media
//! from the cloud, and the limits.

use std::time::Duration;

use base64::Engine as _;
use outpost_tests::client::chat;
use outpost_tests::linkemu::{LinkEmu, Preset};
use outpost_tests::media::{Upload, call, download, info, info_until, photo, sha256_hex};
use outpost_tests::{Cloud, Device, World, free_udp_addr};
use serde_json::{Value, json};

/// Test hubs retry the cloud within 2 s.
const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];
const CHUNK: usize = 256 << 10;
/// How often the scenarios ask `/info` (there is no push for a blob's arrival).
const POLL: Duration = Duration::from_millis(100);

async fn device(url: &str, token: &str, name: &str) -> anyhow::Result<Device> {
    let mut d = Device::connect(url).await?;
    d.hello(token, name, None, None).await?;
    Ok(d)
}

/// The first `message` frame whose body names `sha`.
async fn media_message(d: &mut Device, sha: &str) -> anyhow::Result<Value> {
    loop {
        let f = d.expect("message").await?;
        if f["msg"]["body"]["media"]["sha256"] == sha {
            return Ok(f);
        }
    }
}

/// The preview a message carries, decoded.
fn preview_of(m: &Value) -> Vec<u8> {
    let data = m["msg"]["body"]["media"]["preview"]["data"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default()
}

/// A counter from a server's Prometheus `/metrics`.
async fn metric(base: &str, name: &str) -> anyhow::Result<f64> {
    let r = call(base, "GET", "/metrics", None, &[], &[]).await?;
    let text = String::from_utf8_lossy(&r.body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_photo_survives_a_dropped_chunk_and_a_hub_restart_and_reaches_the_cloud_intact() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &quic)?;
    let mut relay = relay_dir.start_via(&quic, FAST_RETRY).await?;
    let img = photo(5_000_000, 7);
    assert!(img.len() >= 5_000_000, "a 5 MB photo ({} bytes)", img.len());
    let size = img.len() as u64;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;

    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    let r = up.create().await?;
    assert_eq!((r.status, r.offset()), (201, Some(0)), "{r:?}");
    up.run(CHUNK, Some(1_500_000)).await?;

    // The phone's Wi-Fi drops in the middle of a chunk. With a checksum the chunk cannot
    // be checked, so none of it is kept...
    let at = up.offset().await?;
    up.patch_cut(at, CHUNK, CHUNK / 2, true).await?;
    let patch_then_head = up.patch(at, 0).await?;
    assert_eq!(patch_then_head.offset(), Some(at), "a cut checksummed chunk leaves the offset where it was");
    // ...without one, what arrived is kept and the upload continues after it.
    up.patch_cut(at, CHUNK, 100_000, false).await?;
    assert_eq!(up.offset_after(at).await?, at + 100_000, "the bytes that arrived before the cut are kept");
    up.run(CHUNK, Some(1_000_000)).await?;

    // The hub is killed; what it acknowledged is still there after the restart.
    let before = up.offset().await?;
    relay.kill9().await?;
    relay = relay_dir.start_via(&quic, FAST_RETRY).await?;
    up.base = relay.http_base();
    assert_eq!(up.offset().await?, before, "acknowledged chunks survive kill -9");
    assert_eq!(up.run(CHUNK, None).await?, size);
    assert_eq!(up.sent_bytes, size + CHUNK as u64 / 2, "nothing the hub had was sent again (only the dropped chunk)");
    assert_eq!(up.create().await?.status, 200, "a finished upload answers complete at once");

    // The message carries the true size and type and a small preview.
    let mut a = device(&relay.ws_url(), &amina, "amina-phone").await?;
    let mut b = device(&relay.ws_url(), &cloud.token("baraka", "worker", &["clinic"], "1h")?, "baraka-phone").await?;
    a.send_stored(up.message("clinic", "left forearm, day 3", "IMG_0412.jpg")).await?;
    let m = media_message(&mut b, &up.sha).await?;
    let media = &m["msg"]["body"]["media"];
    assert_eq!(media["size"], size);
    assert_eq!(media["type"], "image/jpeg");
    assert_eq!(media["name"], "IMG_0412.jpg");
    assert_eq!(m["msg"]["body"]["text"], "left forearm, day 3");
    let preview = preview_of(&m);
    assert_eq!(&preview[..3], &[0xFF, 0xD8, 0xFF], "the preview is a JPEG");
    assert!(preview.len() < 32_000, "the preview is small: {} bytes", preview.len());
    assert!(media["preview"]["width"].as_u64().unwrap_or(0) <= 256);

    // While the cloud is away, the hub's status page counts the photo as waiting.
    let status = |base: String| async move {
        let (_, s) = outpost_tests::http::request(&base, "GET", "/status.json", None, None).await?;
        anyhow::Ok(s["backlog"].clone())
    };
    let waiting = status(relay.http_base()).await?;
    assert_eq!((waiting["files"].as_u64(), waiting["file_bytes"].as_u64()), (Some(1), Some(size)), "{waiting}");

    // The doctor on the cloud gets the message with its preview, then the full photo.
    let cloud_proc = cloud.start(&quic).await?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut dr = device(&cloud_proc.ws_url(), &neema, "laptop").await?;
    let at_cloud = media_message(&mut dr, &up.sha).await?;
    assert_eq!(preview_of(&at_cloud), preview, "the same preview reaches the hospital");
    let base = cloud_proc.http_base();
    info_until(&base, &neema, &up.sha, POLL, Duration::from_secs(120), |v| v["available"] == true).await?;
    let full = download(&base, &neema, &up.sha).await?;
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), Some("image/jpeg"));
    assert_eq!(sha256_hex(&full.body), up.sha, "the cloud holds the same bytes");

    // And the hub learns that the hospital has it.
    let hub = relay.http_base();
    info_until(&hub, &amina, &up.sha, POLL, Duration::from_secs(30), |v| v["custody"] == "forwarded").await?;
    assert_eq!(status(hub).await?["files"], 0, "nothing waits once the cloud confirmed it");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_edge_the_preview_comes_first_and_an_emergency_overtakes_the_remaining_chunks() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let emu = LinkEmu::start(cloud_proc.quic_addr().parse()?, Preset::EDGE).await?;
    let relay_dir = cloud.provision_relay_at("village-2", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let relay = relay_dir.start_via(&emu.addr().to_string(), FAST_RETRY).await?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut dr = device(&cloud_proc.ws_url(), &neema, "laptop").await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut a = device(&relay.ws_url(), &amina, "amina-phone").await?;

    // ~800 KB: half a minute of EDGE uplink.
    let img = photo(800_000, 11);
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    up.run(CHUNK, None).await?;
    a.send_stored(up.message("clinic", "rash", "rash.jpg")).await?;

    let m = media_message(&mut dr, &up.sha).await?;
    assert!(!preview_of(&m).is_empty(), "the preview came with the message");
    let base = cloud_proc.http_base();
    let (_, v) = info(&base, &neema, &up.sha).await?;
    assert_eq!(v["available"], false, "the preview arrived before the full photo: {v}");

    // Mid-transfer, an emergency.
    let v =
        info_until(&base, &neema, &up.sha, POLL, Duration::from_secs(60), |v| v["received"].as_u64() > Some(64 << 10))
            .await?;
    let before = v["received"].as_u64().unwrap_or(0);
    let mut alert = chat("clinic", "postpartum haemorrhage, house 12");
    alert["priority"] = json!("emergency");
    alert["kind"] = json!("alert");
    let id = a.send_msg(alert).await?;
    // Waited for longer than one event may take: a hub that let the photo go first would
    // deliver the emergency after the rest of it (half a minute), and the count below
    // says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = dr.next_wire(left).await?.ok_or_else(|| anyhow::anyhow!("the emergency never arrived"))?;
        if f["type"] == "message" && f["msg"]["id"] == id.as_str() {
            break;
        }
    }
    let (_, v) = info(&base, &neema, &up.sha).await?;
    let received = v["received"].as_u64().unwrap_or(0);
    // Only the photo's bytes already on their way may arrive ahead of the emergency: the
    // bulk lane keeps at most media.link_window chunks of media.link_chunk_bytes
    // unconfirmed (4 × 64 KiB by default), and every chunk behind them waits for it.
    let window = 4 * (64 << 10);
    let overtaken = received.saturating_sub(before);
    assert!(
        v["available"] == false && overtaken <= window,
        "{} photo bytes arrived between the emergency's sending and its arrival ({before} → {received} of {}); \
         at most {window} may be ahead of it",
        overtaken,
        img.len()
    );
    info_until(&base, &neema, &up.sha, POLL, Duration::from_secs(120), |v| v["available"] == true).await?;
    assert_eq!(sha256_hex(&download(&base, &neema, &up.sha).await?.body), up.sha);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_resumes_the_blob_at_the_clouds_offset() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let mut cloud_proc = cloud.start(&quic).await?;
    let emu = LinkEmu::start(quic.parse()?, Preset::THREE_G).await?;
    let relay_dir = cloud.provision_relay_at("village-3", &tmp.path().join("relay"), &quic)?;
    let relay = relay_dir.start_via(&emu.addr().to_string(), FAST_RETRY).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    let mut a = device(&relay.ws_url(), &amina, "amina-phone").await?;

    let img = photo(2_000_000, 13);
    let size = img.len() as u64;
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    up.run(CHUNK, None).await?;
    a.send_stored(up.message("clinic", "x-ray", "xray.jpg")).await?;

    let base = cloud_proc.http_base();
    let v =
        info_until(&base, &neema, &up.sha, POLL, Duration::from_secs(60), |v| v["received"].as_u64() > Some(size / 3))
            .await?;
    let received_before_cut = v["received"].as_u64().unwrap_or(0);
    // The link goes away and the connection with it (the cloud restarts meanwhile, so
    // the hub's old connection cannot survive the cut).
    emu.cut();
    cloud_proc.kill9().await?;
    cloud_proc = cloud.start(&quic).await?;
    emu.restore();
    let base = cloud_proc.http_base();
    info_until(&base, &neema, &up.sha, POLL, Duration::from_secs(120), |v| v["available"] == true).await?;
    assert_eq!(sha256_hex(&download(&base, &neema, &up.sha).await?.body), up.sha);

    // Resumed, not restarted: the hub sent the photo about once, not once plus the part
    // before the cut (what may be lost is the window of unconfirmed chunks).
    let sent = metric(&relay.http_base(), "outpost_media_bytes_sent_total").await? as u64;
    let window = 4 * (64 << 10);
    assert!(sent >= size, "the metric counts what the hub sent ({sent} of {size})");
    assert!(
        sent <= size + window,
        "the hub sent {sent} blob bytes for a {size}-byte photo; a restart from zero would be ≥ {}",
        size + received_before_cut
    );
    let resumed_at: Vec<u64> = relay_dir
        .log()
        .lines()
        .filter_map(|l| l.split("resume_at=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        resumed_at.iter().any(|&o| o >= received_before_cut),
        "a new connection resumed at the cloud's offset (≥ {received_before_cut}): {resumed_at:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctors_document_reaches_the_village() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-4", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let relay = relay_dir.start_via(&cloud_proc.quic_addr(), FAST_RETRY).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let neema = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
    // The hub serves the room (its worker is connected) before the doctor answers.
    let mut a = device(&relay.ws_url(), &amina, "amina-phone").await?;
    a.send_stored(chat("clinic", "please send the dosage chart")).await?;
    let mut dr = device(&cloud_proc.ws_url(), &neema, "laptop").await?;

    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let mut up = Upload::new(&cloud_proc.http_base(), &neema, &pdf);
    assert_eq!(up.create().await?.status, 201);
    up.run(CHUNK, None).await?;
    let mut msg = up.message("clinic", "dosage chart", "chart.pdf");
    msg["body"]["media"]["type"] = json!("application/pdf");
    dr.send_stored(msg).await?;

    let m = media_message(&mut a, &up.sha).await?;
    assert_eq!(m["msg"]["body"]["media"]["type"], "application/pdf");
    assert!(m["msg"]["body"]["media"].get("preview").is_none(), "documents have no preview");
    let hub = relay.http_base();
    info_until(&hub, &amina, &up.sha, POLL, Duration::from_secs(60), |v| v["available"] == true).await?;
    let got = download(&hub, &amina, &up.sha).await?;
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    assert_eq!(sha256_hex(&got.body), up.sha, "the village holds the doctor's bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_uploads_get_clear_refusals_and_lose_nothing() -> anyhow::Result<()> {
    let w = World::start_with(&[
        ("OUTPOST_MEDIA__MAX_BLOB_BYTES", "2000000"),
        ("OUTPOST_MEDIA__QUOTA_PER_USER_BYTES", "3000000"),
        ("OUTPOST_MEDIA__MAX_CHUNK_BYTES", "300000"),
    ])
    .await?;
    let base = w.relay.http_base();
    let amina = w.token("amina", "worker", &["clinic"]);
    let img = photo(1_500_000, 3);

    // No token, a bad name, over the size limit, a chunk over the chunk limit.
    let no_token = call(&base, "POST", "/api/media", None, &[("Upload-Length", "10".into())], &[]).await?;
    assert_eq!((no_token.status, no_token.code()), (401, "unauthenticated".into()));
    let h = [("Upload-Length", "10".to_owned()), ("Upload-Sha256", "ABC".to_owned())];
    let bad = call(&base, "POST", "/api/media", Some(&amina), &h, &[]).await?;
    assert_eq!((bad.status, bad.code()), (400, "bad_request".into()));
    let big = photo(2_100_000, 4);
    let r = Upload::new(&base, &amina, &big).create().await?;
    assert_eq!((r.status, r.code()), (413, "too_large".into()), "{}", String::from_utf8_lossy(&r.body));

    let mut up = Upload::new(&base, &amina, &img);
    up.create().await?;
    let r = up.patch(0, 400_000).await?;
    assert_eq!(r.status, 413, "a chunk over media.max_chunk_bytes");
    // The wrong offset is answered with the right one.
    let r = up.patch(1000, 1000).await?;
    assert_eq!((r.status, r.code(), r.offset()), (409, "offset_mismatch".into(), Some(0)));
    // A chunk whose checksum does not match is refused and not stored.
    let h = [
        ("Upload-Offset", "0".to_owned()),
        ("Content-Type", "application/offset+octet-stream".to_owned()),
        ("Upload-Checksum", format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode([0u8; 32]))),
    ];
    let r = call(&base, "PATCH", &format!("/api/media/{}", up.sha), Some(&amina), &h, &img[..1000]).await?;
    assert_eq!((r.status, r.code()), (460, "checksum_mismatch".into()));
    assert_eq!(up.offset().await?, 0);
    up.run(250_000, None).await?;

    // Per-user quota: 1.5 MB stored, another 1.6 MB would pass 3 MB.
    let second = photo(1_600_000, 5);
    let r = Upload::new(&base, &amina, &second).create().await?;
    assert_eq!((r.status, r.code()), (413, "quota_exceeded".into()));
    // An unfinished upload counts too, until the device abandons it (DELETE).
    let (third, fourth) = (photo(1_000_000, 6), photo(600_000, 8));
    let started = Upload::new(&base, &amina, &third);
    assert_eq!(started.create().await?.status, 201);
    assert_eq!(Upload::new(&base, &amina, &fourth).create().await?.code(), "quota_exceeded");
    let del = call(&base, "DELETE", &format!("/api/media/{}", started.sha), Some(&amina), &[], &[]).await?;
    assert_eq!(del.status, 204);
    assert!(started.offset().await.is_err(), "the abandoned upload is gone");
    assert_eq!(Upload::new(&base, &amina, &fourth).create().await?.status, 201);

    // Type by content: a web page named like a photo is refused once complete, and gone.
    let page = b"<html><script>alert(1)</script></html>".repeat(100);
    let mut fake = Upload::new(&base, &amina, &page);
    fake.create().await?;
    let r = fake.patch(0, page.len()).await?;
    assert_eq!((r.status, r.code()), (415, "unsupported_type".into()));
    assert!(fake.offset().await.is_err(), "a refused upload is discarded");
    // Bytes that do not hash to the name.
    let mut liar = Upload::new(&base, &amina, &img[..100_000]);
    liar.sha = sha256_hex(b"something else");
    liar.create().await?;
    let r = liar.patch(0, 100_000).await?;
    assert_eq!((r.status, r.code()), (422, "hash_mismatch".into()));

    // Naming a blob that is not here, or one someone else uploaded, is refused.
    let mut a = w.device("amina", "amina-phone", &["clinic"]).await;
    let ghost = Upload::new(&base, &amina, b"never uploaded");
    a.send_json(&json!({"v":1,"type":"send","msg": ghost.message("clinic", "", "x.jpg")})).await?;
    let (code, e) = a.expect_error().await?;
    assert_eq!(code, "bad_frame", "{e}");
    let juma = w.token("juma", "worker", &["maternity"]);
    let mut j = w.device("juma", "juma-phone", &["maternity"]).await;
    j.send_json(&json!({"v":1,"type":"send","msg": up.message("maternity", "", "x.jpg")})).await?;
    assert_eq!(j.expect_error().await?.0, "bad_frame", "a hash alone is no permission");
    assert_eq!(download(&base, &juma, &up.sha).await?.status, 404, "not visible outside its rooms");

    // Once sent in the clinic, the clinic's members may fetch it; still not juma.
    a.send_stored(up.message("clinic", "wound", "w.jpg")).await?;
    let baraka = w.token("baraka", "worker", &["clinic"]);
    assert_eq!(sha256_hex(&download(&base, &baraka, &up.sha).await?.body), up.sha);
    let r =
        call(&base, "GET", &format!("/api/media/{}", up.sha), Some(&baraka), &[("Range", "bytes=100-199".into())], &[])
            .await?;
    assert_eq!((r.status, r.body.as_slice()), (206, &img[100..200]));
    assert_eq!(download(&base, &juma, &up.sha).await?.status, 404);

    // The same file: a member of the room may use it at once; someone who may not see
    // it sends the bytes (a hash is no proof of holding the file); it is stored once.
    assert_eq!(Upload::new(&base, &baraka, &img).create().await?.status, 200);
    let mut from_juma = Upload::new(&base, &juma, &img);
    assert_eq!(from_juma.create().await?.status, 201);
    assert_eq!(from_juma.run(250_000, None).await?, img.len() as u64);
    let files = walk(&w.relay_dir.dir.join("data/media/blobs"));
    assert_eq!(files.len(), 1, "one file for one blob: {files:?}");

    // After all this the hub still serves.
    a.send_stored(chat("clinic", "still here")).await?;
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// Asks for `sha` with `token` until the answer is no longer 200 (the hub applies a
/// revocation made on the command line within `security.revocation_poll_ms`); the last
/// answer, a 200 if it never changed within [`outpost_tests::EVENT_TIMEOUT`].
async fn download_until_refused(base: &str, token: &str, sha: &str) -> anyhow::Result<outpost_tests::media::Resp> {
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    loop {
        let r = download(base, token, sha).await?;
        if r.status != 200 || tokio::time::Instant::now() > deadline {
            return Ok(r);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_refuses_an_expired_token_and_a_revoked_one_of_the_user_who_uploaded_it() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_SECURITY__REVOCATION_POLL_MS", "100")]).await?;
    let base = w.relay.http_base();
    let amina = w.token("amina", "worker", &["clinic"]);
    let short = w.cloud.token("amina", "worker", &["clinic"], "2s")?;
    let stolen = w.token("amina", "worker", &["clinic"]);
    let img = photo(100_000, 21);
    let mut up = Upload::new(&base, &amina, &img);
    up.create().await?;
    up.run(CHUNK, None).await?;
    // Each token is good to begin with: the refusals below are about the token alone.
    for t in [&amina, &short, &stolen] {
        assert_eq!(download(&base, t, &up.sha).await?.status, 200);
    }

    // Expiry is about time passing; nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = download(&base, &short, &up.sha).await?;
    assert_eq!((r.status, r.code()), (401, "token_expired".into()), "an expired token");
    let r = Upload::new(&base, &short, &photo(50_000, 25)).create().await?;
    assert_eq!((r.status, r.code()), (401, "token_expired".into()), "an upload with an expired token");

    // The phone with this token was stolen: revoked on the hub, it no longer fetches the
    // user's files, nor uploads.
    let dir = w.relay_dir.dir.display().to_string();
    let out = std::process::Command::new(outpost_tests::bin("outpost-relay"))
        .args(["revoke", "--dir", &dir, "--token", &stolen, "--reason", "phone stolen"])
        .output()?;
    assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
    let r = download_until_refused(&base, &stolen, &up.sha).await?;
    assert_eq!((r.status, r.code()), (401, "unauthenticated".into()), "a revoked token");
    let r = Upload::new(&base, &stolen, &photo(50_000, 27)).create().await?;
    assert_eq!((r.status, r.code()), (401, "unauthenticated".into()), "an upload with a revoked token");

    // The user's other token still works.
    assert_eq!(sha256_hex(&download(&base, &amina, &up.sha).await?.body), up.sha);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_tell_browsers_not_to_guess_another_type() -> anyhow::Result<()> {
    let w = World::start().await?;
    let base = w.relay.http_base();
    let amina = w.token("amina", "worker", &["clinic"]);
    let img = photo(100_000, 29);
    let mut up = Upload::new(&base, &amina, &img);
    up.create().await?;
    up.run(CHUNK, None).await?;
    // The type was checked by content; a browser that sniffed could still run a file as
    // a page. Whole files and ranges both say so.
    let whole = download(&base, &amina, &up.sha).await?;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"), "{:?}", whole.headers);
    let range = [("Range", "bytes=0-99".to_owned())];
    let part = call(&base, "GET", &format!("/api/media/{}", up.sha), Some(&amina), &range, &[]).await?;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("x-content-type-options"), Some("nosniff"), "{:?}", part.headers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_past_media_max_pending_uploads_are_refused() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_MEDIA__MAX_PENDING_UPLOADS", "2")]).await?;
    let base = w.relay.http_base();
    let amina = w.token("amina", "worker", &["clinic"]);
    // Three different photos (`photo` draws the same one for seeds 2n and 2n + 1).
    let photos: Vec<Vec<u8>> = (0..3).map(|i| photo(50_000, 31 + 2 * i)).collect();
    let [first, second, third] = [0, 1, 2].map(|i| Upload::new(&base, &amina, &photos[i]));
    assert_eq!(first.create().await?.status, 201);
    assert_eq!(second.create().await?.status, 201);
    // Small files, far from any byte limit: the count of unfinished ones is what refuses.
    let r = third.create().await?;
    assert_eq!((r.status, r.code()), (413, "quota_exceeded".into()), "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("media.max_pending_uploads"), "the refusal names the setting");
    // Another user is not held back by amina's.
    let baraka = w.token("baraka", "worker", &["clinic"]);
    assert_eq!(Upload::new(&base, &baraka, &photos[2]).create().await?.status, 201);
    // Once one of hers is finished, she may start the next.
    let mut first = first;
    first.run(CHUNK, None).await?;
    assert_eq!(third.create().await?.status, 201, "a finished upload no longer counts");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_storage_quota_is_refused_with_507_storage_full() -> anyhow::Result<()> {
    // 8 MB of which 1 MB is kept for emergencies: room for 7 MB of files and messages.
    let w = World::start_with(&[
        ("OUTPOST_STORAGE__QUOTA_BYTES", "8000000"),
        ("OUTPOST_STORAGE__EMERGENCY_RESERVE_BYTES", "1000000"),
    ])
    .await?;
    let base = w.relay.http_base();
    let amina = w.token("amina", "worker", &["clinic"]);
    let create = |len: u64, seed: &'static str| {
        let (base, amina) = (base.clone(), amina.clone());
        async move {
            let h = [("Upload-Length", len.to_string()), ("Upload-Sha256", sha256_hex(seed.as_bytes()))];
            call(&base, "POST", "/api/media", Some(&amina), &h, &[]).await
        }
    };
    // Both are within media.max_blob_bytes (16 MiB) and the user's quota (256 MiB).
    assert_eq!(create(1_000_000, "fits").await?.status, 201, "a 1 MB upload fits");
    let r = create(7_500_000, "too big for the disk").await?;
    assert_eq!((r.status, r.code()), (507, "storage_full".into()), "{}", String::from_utf8_lossy(&r.body));
    // The messages' share of the disk is still there.
    let mut a = w.device("amina", "amina-phone", &["clinic"]).await;
    a.send_stored(chat("clinic", "the photo did not fit")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_retention_removed_from_the_hub_is_fetched_back_from_the_cloud_when_opened() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let quic = free_udp_addr()?;
    let _cloud_proc = cloud.start(&quic).await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &quic)?;
    let mut relay = relay_dir.start_via(&quic, FAST_RETRY).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "90d")?;
    let img = photo(400_000, 21);
    let mut up = Upload::new(&relay.http_base(), &amina, &img);
    up.create().await?;
    up.run(CHUNK, None).await?;
    let mut a = device(&relay.ws_url(), &amina, "amina-phone").await?;
    a.send_stored(up.message("clinic", "rash, day 1", "IMG_0001.jpg")).await?;
    a.close().await;
    // The hospital has the full photo: from now on the hub's media retention may remove it.
    info_until(&relay.http_base(), &amina, &up.sha, POLL, Duration::from_secs(60), |v| v["custody"] == "forwarded")
        .await?;
    relay.terminate().await?;

    // 31 days later (media.retention_days is 30) the hub's sweep, run at start, removes it.
    let month_later: &[(&str, &str)] =
        &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2"), ("OUTPOST_TESTING__CLOCK_OFFSET_SECS", "2678400")];
    relay = relay_dir.start_via(&quic, month_later).await?;
    let hub = relay.http_base();
    info_until(&hub, &amina, &up.sha, POLL, Duration::from_secs(60), |v| v["evicted"] == true).await?;

    // Someone opens it: the hub asks the cloud, and it is back, the same bytes.
    let r = download(&hub, &amina, &up.sha).await?;
    assert_eq!(r.status, 404, "not here at the moment it is asked for");
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("asked the cloud")), "{:?}", r.json());
    info_until(&hub, &amina, &up.sha, POLL, Duration::from_secs(120), |v| v["available"] == true).await?;
    let back = download(&hub, &amina, &up.sha).await?;
    assert_eq!((back.status, sha256_hex(&back.body)), (200, up.sha.clone()));

    // And it stays for another retention period: the sweep at the next start keeps it.
    relay.terminate().await?;
    relay = relay_dir.start_via(&quic, month_later).await?;
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    while metric(&relay.http_base(), "outpost_media_sweeps_total").await? < 1.0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the sweep at start never ran");
        tokio::time::sleep(POLL).await;
    }
    let (_, v) = info(&relay.http_base(), &amina, &up.sha).await?;
    assert_eq!((v["available"].as_bool(), v["evicted"].as_bool()), (Some(true), Some(false)), "{v}");
    Ok(())
}
