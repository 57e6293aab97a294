//! Tokens that renew without the hospital: a hub cut off from its cloud renews its
//! devices' tokens under the cloud's delegation, revocation wins over renewal, and every
//! verifier (hub or cloud) accepts a genuine renewal and refuses forged ones with the same
//! code as any bad token. Time moves with `testing.clock_offset_secs`: the hub is
//! restarted "40 s later" (past half of a 60 s token's life) or "70 s later" (past its
//! expiry) instead of waiting.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use outpost_shared::{Claims, TokenSigner};
use outpost_tests::client::{Device, chat};
use outpost_tests::proc::{Cloud, RelayDir, command};
use serde_json::{Value, json};

/// How long a test waits for something the servers do on their own.
const DEADLINE: Duration = outpost_tests::EVENT_TIMEOUT;
const FAST: [(&str, &str); 2] =
    [("OUTPOST_UPLINK__RETRY_INITIAL_MS", "100"), ("OUTPOST_SECURITY__REVOCATION_POLL_MS", "100")];

/// The hub's wall clock moved by `secs` (with the fast uplink and revocation settings).
fn later(secs: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut env = FAST.to_vec();
    env.push(("OUTPOST_TESTING__CLOCK_OFFSET_SECS", secs));
    env
}

fn b64(part: &str) -> anyhow::Result<Vec<u8>> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?)
}

/// A JWT's payload, unverified (what any holder can read).
fn payload(jwt: &str) -> anyhow::Result<Value> {
    let part = jwt.split('.').nth(1).context("not a JWT")?;
    Ok(serde_json::from_slice(&b64(part)?)?)
}

async fn signed_in(url: &str, token: &str, device: &str) -> anyhow::Result<Device> {
    let mut d = Device::connect(url).await?;
    d.hello(token, device, None, None).await?;
    Ok(d)
}

/// Signs in with `token` and returns the refusal's error code (the server then closes).
async fn refused(url: &str, token: &str) -> anyhow::Result<String> {
    let mut d = Device::connect(url).await?;
    d.send_json(&json!({"v":1,"type":"hello","token":token,"device":"probe","cursor":null,"epoch":null})).await?;
    let f = d.next().await?;
    anyhow::ensure!(f["type"] == "error", "expected a refusal, got {f}");
    assert_eq!(d.expect_close().await?, Some(4001), "{f}");
    Ok(f["code"].as_str().unwrap_or_default().to_owned())
}

/// Waits until the hub's database holds a delegation from the cloud.
async fn delegation_kept(relay: &RelayDir) -> anyhow::Result<String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if relay.db().exists() {
            let conn = rusqlite::Connection::open(relay.db())?;
            let row: Option<String> = conn.query_row("SELECT token FROM delegation", [], |r| r.get(0)).ok();
            if let Some(d) = row {
                return Ok(d);
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < until, "no delegation reached the hub:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the hub's database holds `n` revocation entries.
async fn revocations_kept(relay: &RelayDir, n: i64) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let conn = rusqlite::Connection::open(relay.db())?;
        let rows: i64 = conn.query_row("SELECT count(*) FROM revocations", [], |r| r.get(0))?;
        if rows >= n {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < until, "the revocation did not reach the hub");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cli(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = command(program).args(args).output()?;
    anyhow::ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Receives the `token` frame and checks what the renewal kept and changed.
async fn renewed(phone: &mut Device, original: &str) -> anyhow::Result<String> {
    let f = phone.expect("token").await?;
    let token = f["token"].as_str().context("token frame without a token")?.to_owned();
    let (old, new) = (payload(original)?, payload(&token)?);
    assert_eq!(f["expires_at"], new["exp"], "expires_at is the new token's exp, in seconds");
    for same in ["sub", "role", "rooms", "iss"] {
        assert_eq!(new[same], old[same], "a renewal keeps {same}");
    }
    assert_ne!(new["jti"], old["jti"], "a renewal has its own id");
    assert_eq!(new["lin"]["jti"], old["jti"], "and names the token its line started from");
    let lifetime = |c: &Value| c["exp"].as_u64().unwrap_or(0).saturating_sub(c["iat"].as_u64().unwrap_or(0));
    assert_eq!(lifetime(&new), lifetime(&old), "the same lifetime");
    assert!(new["iat"].as_u64() > old["iat"].as_u64(), "issued now, later than the original");
    Ok(token)
}

#[tokio::test]
async fn a_hub_cut_off_from_the_cloud_renews_a_token_that_then_outlives_the_original() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let mut cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let mut relay = relay_dir.start(&FAST).await?;
    // One contact with the cloud delivers the delegation; then the uplink is cut.
    let delegation = delegation_kept(&relay_dir).await?;
    assert_eq!(payload(&delegation)?["relay"], "village-1");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(relay_dir.dir.join("identity/renewal.key"))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the hub's renewal key is readable by its owner only");
    }
    let token = cloud.token("amina", "worker", &["clinic"], "60s")?;
    cloud_proc.terminate().await?;
    relay.terminate().await?;

    // 40 s later (past half of its life), the hub renews the token at sign-in.
    let mut relay = relay_dir.start(&later("40")).await?;
    let mut phone = signed_in(&relay.ws_url(), &token, "amina-phone").await?;
    let fresh = renewed(&mut phone, &token).await?;
    assert_eq!(payload(&fresh)?["dlg"], json!(delegation), "signed under the cloud's delegation");
    phone.send_stored(chat("clinic", "renewed while cut off")).await?;
    drop(phone);
    relay.terminate().await?;

    // 70 s later the original has expired and is refused; the renewed one opens a session.
    let relay = relay_dir.start(&later("70")).await?;
    assert_eq!(refused(&relay.ws_url(), &token).await?, "token_expired");
    let mut phone = signed_in(&relay.ws_url(), &fresh, "amina-phone").await?;
    phone.send_stored(chat("clinic", "still signed in")).await?;
    Ok(())
}

#[tokio::test]
async fn revocation_wins_over_renewal_on_the_hub() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let mut cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    let mut relay = relay_dir.start(&FAST).await?;
    delegation_kept(&relay_dir).await?;
    let amina = cloud.token("amina", "worker", &["clinic"], "60s")?;
    let baraka = cloud.token("baraka", "worker", &["clinic"], "60s")?;

    // Baraka leaves the programme; the hub hears it before its uplink is cut.
    let dir = cloud.dir.display().to_string();
    cli("outpost-cloud", &["revoke", "--dir", &dir, "--user", "baraka", "--reason", "left"])?;
    revocations_kept(&relay_dir, 1).await?;
    cloud_proc.terminate().await?;
    relay.terminate().await?;

    // Past half-life: the revoked user gets no renewal (nor a session); amina does.
    let mut relay = relay_dir.start(&later("40")).await?;
    let url = relay.ws_url();
    assert_eq!(refused(&url, &baraka).await?, "unauthenticated");
    let mut phone = signed_in(&url, &amina, "amina-phone").await?;
    let fresh = renewed(&mut phone, &amina).await?;

    // Amina's phone is stolen: the hub revokes the token she signed in with. Its renewal,
    // made before, is revoked with it: the session running under it ends, and it no
    // longer signs in, also after a restart.
    let relay_path = relay_dir.dir.display().to_string();
    let said = cli("outpost-relay", &["revoke", "--dir", &relay_path, "--token", &amina, "--reason", "stolen"])?;
    assert!(said.contains("revoked token"), "{said}");
    let (code, e) = phone.expect_error().await?;
    assert_eq!(code, "unauthenticated", "{e}");
    assert_eq!(phone.expect_close().await?, Some(4001));
    assert_eq!(refused(&url, &fresh).await?, "unauthenticated");
    relay.terminate().await?;
    let relay = relay_dir.start(&later("70")).await?;
    assert_eq!(refused(&relay.ws_url(), &fresh).await?, "unauthenticated");
    Ok(())
}

/// The hub's renewal key, as a thief who copied the hub's files would hold it.
fn hub_key(relay: &Path, issuer: &str) -> anyhow::Result<TokenSigner> {
    let seed: [u8; 32] = std::fs::read(relay.join("identity/renewal.key"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("the renewal key is not 32 bytes"))?;
    Ok(TokenSigner::from_seed(&seed, issuer))
}

#[tokio::test]
async fn every_verifier_accepts_a_hub_renewed_token_and_refuses_forged_ones_alike() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let cloud_proc = cloud.start("127.0.0.1:0").await?;
    let relay_dir = cloud.provision_relay_at("village-1", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
    // The hub runs 40 s ahead from the start: a fresh 60 s token is renewed at sign-in.
    let relay = relay_dir.start(&later("40")).await?;
    delegation_kept(&relay_dir).await?;
    let token = cloud.token("amina", "worker", &["clinic"], "60s")?;
    let mut phone = signed_in(&relay.ws_url(), &token, "amina-phone").await?;
    let fresh = renewed(&mut phone, &token).await?;

    // The cloud's doctors' listener takes the hub's renewal: the same user and rooms.
    let mut on_cloud = signed_in(&cloud_proc.ws_url(), &fresh, "amina-laptop").await?;
    assert_eq!(on_cloud.welcome["user"], "amina");
    assert_eq!(on_cloud.welcome["rooms"], json!(["clinic"]));

    // Forgeries, made with the hub's own renewal key where that helps the forger.
    let claims: Claims = serde_json::from_value(payload(&fresh)?)?;
    let thief = hub_key(&relay_dir.dir, &claims.iss)?;
    // 1. The delegation's expiry pushed out a year (its signature no longer matches).
    let dlg = claims.dlg.clone().context("a hub's renewal carries its delegation")?;
    let mut parts: Vec<String> = dlg.split('.').map(str::to_owned).collect();
    let mut d = payload(&dlg)?;
    d["exp"] = json!(d["exp"].as_u64().unwrap_or(0) + 365 * 86_400);
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&d)?);
    let mut tampered = claims.clone();
    tampered.dlg = Some(parts.join("."));
    let tampered = thief.sign(&tampered)?;
    // 2. A key the cloud never delegated to, with the genuine delegation attached.
    let stranger = TokenSigner::from_seed(&[7; 32], claims.iss.clone()).sign(&claims)?;
    // 3. The hub's key signing a token that names no delegation at all.
    let mut bare = claims.clone();
    (bare.dlg, bare.org) = (None, None);
    let bare = thief.sign(&bare)?;
    // 4. The hub's key widening the renewal to another room.
    let mut wider = claims.clone();
    wider.rooms.push(outpost_shared::RoomId::new("maternity")?);
    let wider = thief.sign(&wider)?;
    for url in [relay.ws_url(), cloud_proc.ws_url()] {
        let baseline = refused(&url, "not-a-token").await?;
        assert_eq!(baseline, "unauthenticated");
        for (what, forged) in [
            ("tampered delegation", &tampered),
            ("undelegated key", &stranger),
            ("no delegation", &bare),
            ("wider rooms", &wider),
        ] {
            assert_eq!(refused(&url, forged).await?, baseline, "{what} at {url}");
        }
        // The genuine renewal still works there.
        signed_in(&url, &fresh, "amina-again").await?;
    }
    on_cloud.send_stored(chat("clinic", "from the cloud")).await?;

    // The hub is stolen: revoking the relay voids what it renewed, at the cloud and (over
    // the uplink) at the hub; the sessions running under the renewal end there and then.
    let dir = cloud.dir.display().to_string();
    let said = cli("outpost-cloud", &["revoke", "--dir", &dir, "--relay", "village-1", "--reason", "hub stolen"])?;
    assert!(said.contains("relay village-1"), "{said}");
    for session in [&mut on_cloud, &mut phone] {
        let (code, e) = session.expect_error().await?;
        assert_eq!(code, "unauthenticated", "{e}");
    }
    for url in [relay.ws_url(), cloud_proc.ws_url()] {
        assert_eq!(refused(&url, &fresh).await?, "unauthenticated", "{url}");
    }
    // Tokens the cloud signed itself are not touched.
    signed_in(&cloud_proc.ws_url(), &token, "amina-laptop").await?;
    Ok(())
}

#[tokio::test]
async fn the_cloud_renews_a_doctors_token_with_its_own_key() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let token = cloud.token("dr-neema", "doctor", &["clinic"], "60s")?;
    let proc = cloud.start_with_env("127.0.0.1:0", &[("OUTPOST_CLOUD_TESTING__CLOCK_OFFSET_SECS", "40")]).await?;
    let mut laptop = signed_in(&proc.ws_url(), &token, "neema-laptop").await?;
    let fresh = renewed(&mut laptop, &token).await?;
    let claims = payload(&fresh)?;
    assert!(claims.get("dlg").is_none() && claims.get("org").is_none(), "signed by the cloud itself: {claims}");
    signed_in(&proc.ws_url(), &fresh, "neema-laptop").await?.send_stored(chat("clinic", "renewed")).await?;
    Ok(())
}
