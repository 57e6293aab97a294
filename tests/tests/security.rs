//! Authorization, revocation and the audit log, against real hub and cloud processes.

use outpost_tests::World;
use outpost_tests::client::{Device, chat};
use outpost_tests::http::request;
use outpost_tests::proc::{Cloud, command};
use serde_json::{Value, json};

async fn signed_in(url: &str, token: &str, device: &str) -> anyhow::Result<Device> {
    let mut d = Device::connect(url).await?;
    d.hello(token, device, None, None).await?;
    Ok(d)
}

/// Every frame a device received so far (after a round trip through its session, so
/// everything queued for it before that point has been written).
async fn everything(d: &mut Device) -> anyhow::Result<Vec<Value>> {
    d.sync().await?;
    Ok(d.take_all())
}

fn leaks<'a>(frames: &'a [Value], secrets: &[&str]) -> Vec<&'a Value> {
    frames.iter().filter(|f| secrets.iter().any(|s| f.to_string().contains(s))).collect()
}

/// The matrix on one server (hub or cloud): `ann` (worker, ward-a), `bob` (worker,
/// ward-b), `dan` (doctor, both), `ada` (admin, both). Everything ann does in ward-a
/// must reach dan and never bob or ada; role rules refuse what the table says.
async fn matrix(url: &str, cloud: &Cloud) -> anyhow::Result<()> {
    let tok = |u: &str, role: &str, rooms: &[&str]| cloud.token(u, role, rooms, "1h");
    // The outsiders connect first, so they would see ann come online if presence leaked.
    let mut bob = signed_in(url, &tok("bob", "worker", &["ward-b"])?, "bob-1").await?;
    let mut ada = signed_in(url, &tok("ada", "admin", &["ward-a", "ward-b"])?, "ada-1").await?;
    let mut dan = signed_in(url, &tok("dan", "doctor", &["ward-a", "ward-b"])?, "dan-1").await?;
    let mut ann = signed_in(url, &tok("ann", "worker", &["ward-a"])?, "ann-1").await?;

    // Everything a member can do in ward-a.
    let m = ann.send_stored(chat("ward-a", "ann-secret-1")).await?;
    let mut alarm = chat("ward-a", "ann-secret-2");
    alarm["priority"] = json!("emergency");
    ann.send_stored(alarm).await?;
    ann.send_json(&json!({"v":1,"type":"typing","room":"ward-a","active":true})).await?;
    ann.send_json(&json!({"v":1,"type":"presence","status":"online"})).await?;
    ann.send_json(&json!({"v":1,"type":"history","room":"ward-a","before":null,"limit":10})).await?;
    assert_eq!(ann.expect("history").await?["messages"].as_array().map(Vec::len), Some(2));
    ann.sync().await?;

    // Positive control: the co-member receives all of it (so the absences below mean
    // something), and his delivered/read receipts go back to ann only.
    let got = dan.messages(2).await?;
    assert!(got.iter().all(|f| f["msg"]["room"] == "ward-a"));
    dan.expect("typing").await?;
    let last = got.iter().map(|f| f["cursor"].as_u64().unwrap_or(0)).max().unwrap_or(0);
    dan.send_json(&json!({"v":1,"type":"ack","cursor":last})).await?;
    dan.send_json(&json!({"v":1,"type":"read","room":"ward-a","id":m["id"]})).await?;
    let receipt = ann.expect("receipt").await?;
    assert_eq!(receipt["room"], "ward-a", "{receipt}");

    // Outsiders' attempts on ward-a are refused, and refusals leak nothing either.
    for frame in [
        json!({"v":1,"type":"history","room":"ward-a","before":null,"limit":10}),
        json!({"v":1,"type":"typing","room":"ward-a","active":true}),
        json!({"v":1,"type":"read","room":"ward-a","id":m["id"]}),
        json!({"v":1,"type":"join","room":"ward-a"}),
    ] {
        bob.send_json(&frame).await?;
        assert_eq!(bob.expect_error().await?.0, "forbidden", "bob: {frame}");
    }
    bob.send_msg(chat("ward-a", "let me in")).await?;
    assert_eq!(bob.expect_error().await?.0, "forbidden");
    // The admin is in both rooms by token but, by role, takes part in none.
    ada.send_msg(chat("ward-a", "admin writes")).await?;
    assert_eq!(ada.expect_error().await?.0, "forbidden");
    ada.send_json(&json!({"v":1,"type":"history","room":"ward-a","before":null,"limit":10})).await?;
    let (code, e) = ada.expect_error().await?;
    assert_eq!(code, "forbidden");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("admin")), "{e}");

    // Barrier: a message in ward-b that bob must get, committed after all of the above.
    dan.send_stored(chat("ward-b", "for ward b")).await?;
    assert_eq!(bob.expect("message").await?["msg"]["body"]["text"], "for ward b");
    let bob_saw = everything(&mut bob).await?;
    let ada_saw = everything(&mut ada).await?;
    assert!(leaks(&bob_saw, &["ward-a\"", "\"ann\"", "ann-secret"]).is_empty(), "bob saw {bob_saw:#?}");
    assert!(
        ada_saw.iter().all(|f| f["type"] != "message" && f["type"] != "receipt" && f["type"] != "typing"),
        "the admin received room traffic: {ada_saw:#?}"
    );
    assert!(leaks(&ada_saw, &["ann-secret", "for ward b"]).is_empty(), "ada saw {ada_saw:#?}");

    // A reconnecting outsider's replay holds nothing of ward-a either.
    let mut bob2 = signed_in(url, &tok("bob", "worker", &["ward-b"])?, "bob-2").await?;
    let replay = everything(&mut bob2).await?;
    assert!(replay.iter().any(|f| f["type"] == "message"), "bob's replay should hold ward-b's message");
    assert!(leaks(&replay, &["ward-a\"", "ann-secret"]).is_empty(), "bob's replay: {replay:#?}");
    Ok(())
}

#[tokio::test]
async fn the_authorization_matrix_holds_on_the_hub_and_on_the_cloud() -> anyhow::Result<()> {
    let w = World::start().await?;
    matrix(&w.relay.ws_url(), &w.cloud).await?;
    let cloud = w.cloud.start("127.0.0.1:0").await?;
    matrix(&cloud.ws_url(), &w.cloud).await
}

#[tokio::test]
async fn emergency_rules_are_configurable_per_role_and_room() -> anyhow::Result<()> {
    let w = World::start_with(&[
        ("OUTPOST_POLICY__EMERGENCY_ROLES", "doctor"),
        ("OUTPOST_POLICY__EMERGENCY_ROOMS", "alerts"),
    ])
    .await?;
    let url = w.relay.ws_url();
    let mut worker = signed_in(&url, &w.token("wam", "worker", &["alerts", "ward"]), "w").await?;
    let mut doctor = signed_in(&url, &w.token("dok", "doctor", &["alerts", "ward"]), "d").await?;
    let emergency = |room: &str| {
        let mut m = chat(room, "help");
        m["priority"] = json!("emergency");
        m
    };
    let id = worker.send_msg(emergency("alerts")).await?;
    let refused = worker.answer(&id).await?;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let id = doctor.send_msg(emergency("ward")).await?;
    let refused = doctor.answer(&id).await?;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("alerts")), "{refused}");
    doctor.send_stored(emergency("alerts")).await?;
    // The worker may still send everything else.
    worker.send_stored(chat("ward", "routine")).await?;
    Ok(())
}

fn cli(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = command(program).args(args).output()?;
    anyhow::ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn a_token_revoked_at_the_cloud_is_refused_by_the_hub_even_offline() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let fast = [("OUTPOST_UPLINK__RETRY_INITIAL_MS", "100"), ("OUTPOST_SECURITY__REVOCATION_POLL_MS", "100")];
    let mut relay = relay_dir.start(&fast).await?;
    let url = relay.ws_url();
    let stolen = cloud.token("amina", "worker", &["clinic"], "1h")?;
    let colleague = cloud.token("baraka", "worker", &["clinic"], "1h")?;
    let mut phone = signed_in(&url, &stolen, "amina-phone").await?;
    let mut other = signed_in(&url, &colleague, "baraka-phone").await?;
    phone.send_stored(chat("clinic", "before the theft")).await?;

    // The cloud revokes the token; the hub learns it over the uplink and ends the live
    // session with `unauthenticated` (4001).
    let dir = cloud.dir.display().to_string();
    let said = cli("outpost-cloud", &["revoke", "--dir", &dir, "--token", &stolen, "--reason", "phone stolen"])?;
    assert!(said.contains("revoked token"), "{said}");
    let (code, e) = phone.expect_error().await?;
    assert_eq!(code, "unauthenticated", "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("revoked")), "{e}");
    assert_eq!(phone.expect_close().await?, Some(4001));
    // Other tokens are untouched.
    other.send_stored(chat("clinic", "still here")).await?;

    // With the cloud gone and the hub restarted, the revocation still holds (it is in the
    // hub's database), and a new token for the same user works.
    drop(cloud_proc);
    relay.terminate().await?;
    let relay = relay_dir.start(&fast).await?;
    let url = relay.ws_url();
    let mut again = Device::connect(&url).await?;
    assert!(again.hello(&stolen, "amina-phone", None, None).await.is_err());
    assert_eq!(again.expect_close().await?, Some(4001));
    let fresh = cloud.token("amina", "worker", &["clinic"], "1h")?;
    signed_in(&url, &fresh, "amina-new-phone").await?.send_stored(chat("clinic", "new phone")).await?;
    Ok(())
}

#[tokio::test]
async fn a_hub_revokes_a_user_locally_and_audits_security_events_for_admins() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_SECURITY__REVOCATION_POLL_MS", "100")]).await?;
    let url = w.relay.ws_url();
    let base = url.replace("ws://", "http://").trim_end_matches("/ws").to_owned();
    // Makes `maternity` a room of this hub (so the attempt below is `forbidden`).
    let _midwife = signed_in(&url, &w.token("midwife", "worker", &["maternity"]), "m-1").await?;
    let mut leaver = signed_in(&url, &w.token("kito", "worker", &["clinic"]), "kito-1").await?;
    let mut alarm = chat("clinic", "help");
    alarm["priority"] = json!("emergency");
    let alarm_id = alarm["id"].as_str().unwrap_or_default().to_owned();
    leaver.send_stored(alarm).await?;
    leaver.send_msg(chat("maternity", "not mine")).await?;
    let _ = leaver.expect_error().await?;
    let mut bad = Device::connect(&url).await?;
    assert!(bad.hello("garbage", "intruder", None, None).await.is_err());

    // `outpost-relay revoke --user` on the hub itself ends every session of that user.
    let dir = w.relay_dir.dir.display().to_string();
    let said = cli("outpost-relay", &["revoke", "--dir", &dir, "--user", "kito", "--reason", "left the programme"])?;
    assert!(said.contains("every token issued to kito"), "{said}");
    assert_eq!(leaver.expect_error().await?.0, "unauthenticated");
    assert_eq!(leaver.expect_close().await?, Some(4001));

    // The audit log: admins only.
    let admin = w.token("root", "admin", &[]);
    let worker = w.token("kito2", "worker", &["clinic"]);
    let (status, e) = request(&base, "GET", "/api/audit", None, None).await?;
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthenticated")));
    let (status, e) = request(&base, "GET", "/api/audit", Some(&worker), None).await?;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));
    let (status, page) = request(&base, "GET", "/api/audit?limit=1000", Some(&admin), None).await?;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().cloned().unwrap_or_default();
    let find = |event: &str| events.iter().find(|e| e["event"] == event).cloned();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(find("enrollment").map(|e| e["actor"].clone()), Some(json!("r1")), "{kinds:?}");
    let login = events
        .iter()
        .find(|e| e["event"] == "login" && e["actor"] == "kito")
        .ok_or_else(|| anyhow::anyhow!("no login of kito in {kinds:?}"))?;
    assert_eq!((login["actor"].as_str(), login["device"].as_str()), (Some("kito"), Some("kito-1")));
    assert!(login["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{login}");
    let emergency = find("emergency").ok_or_else(|| anyhow::anyhow!("no emergency in {kinds:?}"))?;
    assert!(emergency["detail"].as_str().is_some_and(|d| d.contains(&alarm_id)), "{emergency}");
    assert_eq!(emergency["room"], "clinic");
    assert_eq!(find("forbidden").map(|e| e["room"].clone()), Some(json!("maternity")), "{kinds:?}");
    assert!(find("login_refused").is_some(), "{kinds:?}");
    assert!(find("revocation").is_some_and(|e| e["detail"].as_str().is_some_and(|d| d.contains("left the programme"))));
    assert!(find("session_revoked").is_some(), "{kinds:?}");
    // Nothing in it is a message body or a token.
    let text = page.to_string();
    assert!(!text.contains("not mine") && !text.contains("eyJ"), "the audit log holds contents: {text}");
    // Sequence numbers only grow; paging continues after `next`.
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
    let (_, rest) = request(&base, "GET", &format!("/api/audit?after={}", page["next"]), Some(&admin), None).await?;
    let rest = rest["events"].as_array().cloned().unwrap_or_default();
    assert!(rest.iter().any(|e| e["event"] == "audit_read" && e["actor"] == "root"), "{rest:?}");

    // The same log from the command line, with the hub running.
    let lines = cli("outpost-relay", &["audit", "--dir", &dir, "--limit", "1000"])?;
    assert!(lines.lines().count() >= events.len(), "{lines}");
    assert!(lines.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    Ok(())
}

#[tokio::test]
async fn the_cloud_audits_tokens_enrollments_relays_and_api_refusals() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud
        .provision_relay_at("village-9", &tmp.path().join("relay"), &proc.quic_addr())?
        .start(&[("OUTPOST_UPLINK__RETRY_INITIAL_MS", "100")])
        .await?;
    // The relay's link is up once a message crosses it.
    let mut worker = signed_in(&relay.ws_url(), &cloud.token("w", "worker", &["clinic"], "1h")?, "w1").await?;
    let mut doctor = signed_in(&proc.ws_url(), &cloud.token("d", "doctor", &["clinic"], "1h")?, "d1").await?;
    worker.send_stored(chat("clinic", "hello")).await?;
    doctor.expect("message").await?;
    let outsider = cloud.token("x", "doctor", &["maternity"], "1h")?;
    let (status, _) = request(&proc.http_base(), "GET", "/api/rooms/clinic/messages", Some(&outsider), None).await?;
    assert_eq!(status, 403);

    let admin = cloud.token("root", "admin", &[], "1h")?;
    let (status, page) = request(&proc.http_base(), "GET", "/api/audit?limit=1000", Some(&admin), None).await?;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().cloned().unwrap_or_default();
    let has = |event: &str, actor: &str| events.iter().any(|e| e["event"] == event && e["actor"] == actor);
    let kinds: Vec<String> = events.iter().map(|e| format!("{}/{}", e["event"], e["actor"])).collect();
    assert!(has("token_issued", "w") && has("token_issued", "root"), "{kinds:?}");
    assert!(has("enrollment", "village-9"), "{kinds:?}");
    assert!(has("relay_connected", "village-9"), "{kinds:?}");
    assert!(has("login", "d"), "{kinds:?}");
    assert!(has("forbidden", "x"), "{kinds:?}");
    Ok(())
}

/// Every byte of the SQLite files of a database (main file and WAL).
fn db_bytes(db: &std::path::Path) -> Vec<u8> {
    let mut all = std::fs::read(db).unwrap_or_default();
    all.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn an_encrypted_room_carries_only_ciphertext_through_hub_and_cloud() -> anyhow::Result<()> {
    use outpost_shared::e2e;
    use outpost_shared::{Body, MessageId, RoomId};
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let toml = cloud.dir.join("cloud.toml");
    let text = std::fs::read_to_string(&toml)?.replace("encrypted_rooms = []", "encrypted_rooms = [\"hiv-clinic\"]");
    std::fs::write(&toml, text)?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-3", &tmp.path().join("relay"), &proc.quic_addr())?;
    let relay = relay_dir
        .start(&[("OUTPOST_UPLINK__RETRY_INITIAL_MS", "100"), ("OUTPOST_POLICY__ENCRYPTED_ROOMS", "hiv-clinic")])
        .await?;
    let rooms = ["hiv-clinic", "clinic"];
    let mut worker = signed_in(&relay.ws_url(), &cloud.token("amina", "worker", &rooms, "1h")?, "a1").await?;
    let mut doctor = signed_in(&proc.ws_url(), &cloud.token("his", "doctor", &rooms, "1h")?, "d1").await?;

    // Plaintext is refused in the encrypted room (and still fine elsewhere).
    let id = worker.send_msg(chat("hiv-clinic", "plaintext result")).await?;
    let refused = worker.answer(&id).await?;
    assert_eq!(refused["code"], "bad_frame", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("end-to-end encrypted")), "{refused}");

    // The key is shared by the people in the room, never by the servers.
    let key = [42u8; 32];
    let room = RoomId::new("hiv-clinic")?;
    let secret = "viral load 40 copies/ml";
    let mid = MessageId(uuid::Uuid::now_v7());
    let plain = Body::from_value(&json!({"text": secret}))?;
    // 12 random bytes (a v4 UUID's randomness comes from the operating system).
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..12]);
    let sealed = e2e::seal(&key, "hiv-2026", iv, &room, mid, &plain)?;
    let body: Value = serde_json::from_str(sealed.as_str())?;
    worker
        .send_stored(
            json!({"id": mid.to_string(), "room": "hiv-clinic", "kind": "chat", "priority": "normal", "body": body}),
        )
        .await?;

    // The doctor on the cloud gets the envelope and opens it with the room key.
    let got = doctor.expect("message").await?;
    assert_eq!(got["msg"]["id"], mid.to_string());
    let carried = Body::from_json(&got["msg"]["body"].to_string())?;
    let opened = e2e::open(&key, &room, mid, &carried)?;
    assert_eq!(serde_json::from_str::<Value>(opened.as_str())?["text"], secret);
    assert!(e2e::open(&[1; 32], &room, mid, &carried).is_err());

    // Neither database ever held the plaintext.
    let hub_db = relay_dir.dir.join("data").join("relay.db");
    let cloud_db = cloud.dir.join("data").join("cloud.db");
    assert!(db_bytes(&hub_db).len() > 1000 && db_bytes(&cloud_db).len() > 1000);
    assert!(!contains(&db_bytes(&hub_db), secret), "the hub stored the plaintext");
    assert!(!contains(&db_bytes(&cloud_db), secret), "the cloud stored the plaintext");
    // The control: an ordinary room's text is in both (so the search above can find text).
    worker.send_stored(chat("clinic", "ordinary words")).await?;
    assert_eq!(doctor.expect("message").await?["msg"]["body"]["text"], "ordinary words");
    assert!(contains(&db_bytes(&hub_db), "ordinary words") && contains(&db_bytes(&cloud_db), "ordinary words"));

    // The cloud's HTTP API applies the same rule.
    let his = cloud.token("his", "doctor", &rooms, "1h")?;
    let post = json!({"body": {"text": "plain over http"}});
    let (status, e) =
        request(&proc.http_base(), "POST", "/api/rooms/hiv-clinic/messages", Some(&his), Some(&post)).await?;
    assert_eq!((status, e["code"].as_str()), (400, Some("bad_frame")));
    Ok(())
}

/// The `jti` claim of a token (the id `revoke --jti` names), read as an operator would
/// from the token's payload.
fn jti_of(token: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).ok_or_else(|| anyhow::anyhow!("not a JWT: {token}"))?;
    let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    claims["jti"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no jti in {claims}"))
}

#[tokio::test]
async fn revoking_one_token_by_its_jti_on_the_hub_leaves_the_users_other_tokens_working() -> anyhow::Result<()> {
    let w = World::start_with(&[("OUTPOST_SECURITY__REVOCATION_POLL_MS", "100")]).await?;
    let url = w.relay.ws_url();
    let lost = w.token("amina", "worker", &["clinic"]);
    let tablet = w.token("amina", "worker", &["clinic"]);
    let jti = jti_of(&lost)?;
    assert_ne!(jti, jti_of(&tablet)?, "each token has its own id");
    let mut phone = signed_in(&url, &lost, "amina-phone").await?;
    phone.send_stored(chat("clinic", "before the phone was lost")).await?;

    let dir = w.relay_dir.dir.display().to_string();
    let said = cli("outpost-relay", &["revoke", "--dir", &dir, "--jti", &jti, "--reason", "phone lost"])?;
    assert!(said.contains(&format!("revoked token {jti}")), "{said}");
    // The live session with that token ends...
    let (code, e) = phone.expect_error().await?;
    assert_eq!(code, "unauthenticated", "{e}");
    assert_eq!(phone.expect_close().await?, Some(4001));
    // ...and it cannot sign in again.
    let mut again = Device::connect(&url).await?;
    assert!(again.hello(&lost, "amina-phone", None, None).await.is_err(), "the revoked token signed in");
    assert_eq!(again.expect_close().await?, Some(4001));
    // The same user's other token is untouched.
    signed_in(&url, &tablet, "amina-tablet").await?.send_stored(chat("clinic", "from the tablet")).await?;
    Ok(())
}

#[tokio::test]
async fn a_flood_of_refusals_fills_the_audit_log_only_at_its_rate_and_says_how_many_were_left_out() -> anyhow::Result<()>
{
    const PER_SEC: u32 = 3;
    let w = World::start_with(&[("OUTPOST_SECURITY__AUDIT_REFUSALS_PER_SEC", &PER_SEC.to_string())]).await?;
    let base = w.relay.http_base();
    let admin = w.token("root", "admin", &[]);
    let refusals = |page: &Value| -> Vec<Value> {
        let events = page["events"].as_array().cloned().unwrap_or_default();
        events.into_iter().filter(|e| e["event"] == "login_refused").collect()
    };
    // Audit rows are written behind the answers. A read of the log is itself recorded and
    // committed, after what was queued before it, before its page is handed out: so the
    // second of two reads holds every refusal answered before the first.
    let audit = || async {
        let mut page = Value::Null;
        for _ in 0..2 {
            let (status, p) = request(&base, "GET", "/api/audit?limit=1000", Some(&admin), None).await?;
            anyhow::ensure!(status == 200, "audit: {status} {p}");
            page = p;
        }
        anyhow::Ok(page)
    };
    let refuse = || async {
        let (status, _) = request(&base, "GET", "/api/audit", Some("not-a-token"), None).await?;
        anyhow::ensure!(status == 401, "a bad token answered {status}");
        anyhow::Ok(())
    };

    // Someone tries bad tokens as fast as the hub answers.
    const FLOOD: usize = 60;
    let started = tokio::time::Instant::now();
    for _ in 0..FLOOD {
        refuse().await?;
    }
    let took = started.elapsed().as_secs_f64();
    let recorded = refusals(&audit().await?).len();
    // A full bucket (one second's worth) plus what it refilled while the flood lasted.
    let allowed = (f64::from(PER_SEC) * (1.0 + took)).floor() as usize;
    assert!(recorded >= 1, "the first refusal is recorded");
    assert!(
        recorded <= allowed && recorded < FLOOD,
        "{recorded} of {FLOOD} refusals in {took:.2} s were recorded; at {PER_SEC}/s at most {allowed}"
    );

    // Once the rate allows again, the next recorded refusal says how many were left out.
    // (The bucket refills with time, so this asks until it has.)
    let mut sent = FLOOD;
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    let rows = loop {
        refuse().await?;
        sent += 1;
        let rows = refusals(&audit().await?);
        if rows.iter().any(|e| e["detail"].as_str().is_some_and(|d| d.contains("earlier refusals not recorded"))) {
            break rows;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no row says refusals were left out: {rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Every refusal of the flood is accounted for: recorded, or counted in the row that
    // says how many were left out. (Rows are written in order; the ones after that row
    // are not needed for the count.)
    let upto = rows.iter().position(|e| e["detail"].as_str().is_some_and(|d| d.contains("not recorded"))).unwrap_or(0);
    let said = rows[upto]["detail"].as_str().unwrap_or_default();
    let left_out: usize = said
        .split_once(" (")
        .and_then(|(_, n)| n.strip_suffix(" earlier refusals not recorded: over the audit rate)")?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no count in {said:?}"))?;
    let accounted = upto + 1 + left_out;
    assert!(
        FLOOD < accounted && accounted <= sent,
        "{} rows and {left_out} left out account for {accounted} of the first {sent} refusals: {rows:?}",
        upto + 1
    );
    Ok(())
}

#[tokio::test]
async fn a_relay_configured_with_another_relays_id_is_refused_and_the_cloud_audits_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &proc.quic_addr())?;
    // Its certificate says village-1; its settings claim village-2 (a copied relay.toml,
    // or a relay posing as another to read that one's rooms).
    let relay = relay_dir
        .start(&[("OUTPOST_IDENTITY__RELAY_ID", "village-2"), ("OUTPOST_UPLINK__RETRY_INITIAL_MS", "100")])
        .await?;

    // The hub's status page shows why its uplink is down.
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    let uplink = loop {
        let (_, s) = request(&relay.http_base(), "GET", "/status.json", None, None).await?;
        let uplink = s["uplink"].clone();
        if uplink["last_error"].as_str().is_some_and(|e| e.contains("identity_mismatch")) {
            break uplink;
        }
        anyhow::ensure!(uplink["connected"] != true, "the cloud accepted the relay under another id: {uplink}");
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the uplink was not refused: {uplink}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(uplink["connected"], false, "{uplink}");

    // The cloud's audit log holds the refusal, naming the id that was claimed.
    let admin = cloud.token("root", "admin", &[], "1h")?;
    let (status, page) = request(&proc.http_base(), "GET", "/api/audit?limit=1000", Some(&admin), None).await?;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<String> = events.iter().map(|e| format!("{}/{}", e["event"], e["actor"])).collect();
    let refused = events
        .iter()
        .find(|e| e["event"] == "relay_refused")
        .ok_or_else(|| anyhow::anyhow!("no relay_refused in {kinds:?}"))?;
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("identity_mismatch") && detail.contains("village-2"), "{refused}");
    assert!(!events.iter().any(|e| e["event"] == "relay_connected"), "{kinds:?}");
    Ok(())
}
