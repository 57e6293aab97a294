//! The command lines users and scripts depend on: provisioning, configuration errors
//! (exit 64, every problem listed), environment overrides, graceful shutdown.

use outpost_tests::client::chat;
use outpost_tests::{Cloud, World, command};

fn relay(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = command("outpost-relay");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("spawn: {e}"))
}

#[test]
fn token_and_enrollment_commands_write_what_they_promise() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("c"))?;
    let again = command("outpost-cloud").args(["init", "--dir"]).arg(&cloud.dir).output()?;
    assert!(!again.status.success(), "init refuses to overwrite a cloud");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    let tok = cloud.token("amina", "worker", &["clinic", "maternity"], "30d")?;
    assert_eq!(tok.split('.').count(), 3, "a JWT: {tok}");
    let bad_role = command("outpost-cloud")
        .args(["token", "--dir"])
        .arg(&cloud.dir)
        .args(["--user", "x", "--role", "wizard", "--room", "r"])
        .output()?;
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("worker"), "the error names the valid roles");

    let dir = tmp.path().join("relay");
    let r = cloud.provision_relay("hub-7", &dir)?;
    let cfg = std::fs::read_to_string(dir.join("relay.toml"))?;
    assert!(cfg.contains("relay_id = \"hub-7\"") && cfg.contains("127.0.0.1:4433"));
    assert!(dir.join("identity/relay.key").exists() && r.db().exists());
    let bundle = cloud.dir.join("hub-7.bundle.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // In octal, as `ls -l` and `chmod` speak of modes.
        let mode = |p: &std::path::Path| -> anyhow::Result<String> {
            Ok(format!("{:o}", std::fs::metadata(p)?.permissions().mode() & 0o777))
        };
        // Private keys and the enrollment bundle (which holds the relay's key) are for
        // their owner's eyes only; anyone else on the machine could sign tokens or pose
        // as the cloud or the relay.
        let keys = cloud.dir.join("keys");
        for private in
            [dir.join("identity/relay.key"), keys.join("token.key"), keys.join("relay-ca.key"), keys.join("server.key")]
        {
            assert_eq!(mode(&private)?, "600", "{}", private.display());
        }
        assert_eq!(mode(&bundle)?, "600", "{}", bundle.display());
        // A file already where the bundle goes (an older one, one made by hand) does not
        // pass its wider mode on to the new key.
        let stale = cloud.dir.join("hub-8.bundle.json");
        std::fs::write(&stale, "an older bundle")?;
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(cloud.enroll_relay("hub-8", "127.0.0.1:4433")?, stale);
        assert!(std::fs::read_to_string(&stale)?.contains("hub-8"), "the bundle was written over the old file");
        assert_eq!(mode(&stale)?, "600", "a bundle written over a 0644 file");
    }
    let out = relay(
        &["init", "--dir", dir.to_str().unwrap_or_default(), "--bundle", bundle.to_str().unwrap_or_default()],
        &[],
    );
    assert_eq!(out.status.code(), Some(64), "a second init refuses");
    std::fs::write(tmp.path().join("junk.json"), "{\"v\": 1}")?;
    let other = tmp.path().join("relay2");
    let out = relay(
        &[
            "init",
            "--dir",
            other.to_str().unwrap_or_default(),
            "--bundle",
            tmp.path().join("junk.json").to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an Outpost enrollment bundle"));
    Ok(())
}

#[test]
fn bad_configuration_exits_64_listing_every_problem() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("c"))?;
    let r = cloud.provision_relay("r1", &tmp.path().join("relay"))?;
    let path = r.dir.join("relay.toml");
    let mut cfg = std::fs::read_to_string(&path)?;
    cfg.push_str("\n[limits]\nmax_devices = 0\nidle_timeout_secs = 5\nping_interval_secs = 10\n[storage]\nquota_bytes = 10\nemergency_reserve_bytes = 20\n");
    std::fs::write(&path, cfg)?;
    let dir = r.dir.to_str().unwrap_or_default();
    let out = relay(&["run", "--dir", dir, "--ws", "127.0.0.1:0"], &[("OUTPOST_LIMITS__RATE_PER_SEC", "0")]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["max_devices", "idle_timeout_secs", "emergency_reserve_bytes", "rate_per_sec"] {
        assert!(err.contains(needle), "{needle} not reported in:\n{err}");
    }
    // A misspelt variable is an error, not silently ignored.
    let fresh = cloud.provision_relay("r2", &tmp.path().join("relay2"))?;
    let out = relay(
        &["run", "--dir", fresh.dir.to_str().unwrap_or_default(), "--ws", "127.0.0.1:0"],
        &[("OUTPOST_LIMITS__MAX_BODDY_BYTES", "5")],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_boddy_bytes"));
    // An unprovisioned directory says what to do.
    let out = relay(&["run", "--dir", tmp.path().join("nothing").to_str().unwrap_or_default()], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outpost-relay init"));
    Ok(())
}

#[tokio::test]
async fn environment_overrides_the_file_and_flags_override_both() -> anyhow::Result<()> {
    // The listen address from the environment is nonsense, but --ws (set by the harness)
    // replaces it before values are checked.
    let w = World::start_with(&[
        ("OUTPOST_LIMITS__MAX_BODY_BYTES", "100"),
        ("OUTPOST_SERVER__LISTEN", "nowhere"),
        ("OUTPOST_SERVER__WORKER_THREADS", "3"),
    ])
    .await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    a.send_stored(chat("clinic", "short")).await?;
    a.send_msg(chat("clinic", &"long ".repeat(40))).await?;
    assert_eq!(a.expect_error().await?.0, "too_large");
    // The session threads are taken as set, whatever the machine's core count.
    let log = w.relay_dir.log();
    assert!(log.contains("runtime started workers=3 cores="), "{log}");
    Ok(())
}

#[tokio::test]
async fn the_hub_leaves_the_clouds_variables_to_the_cloud() -> anyhow::Result<()> {
    // Every other OUTPOST_ variable is the hub's; OUTPOST_CLOUD_ ones, even misspelt
    // ones, are the cloud's, and a hub in the same environment starts and serves.
    let w = World::start_with(&[
        ("OUTPOST_CLOUD_STORAGE__QUOTA_BYTES", "1"),
        ("OUTPOST_CLOUD_BOGUS__KEY", "x"),
        ("OUTPOST_LIMITS__MAX_BODY_BYTES", "100"),
    ])
    .await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    a.send_stored(chat("clinic", "short")).await?;
    a.send_msg(chat("clinic", &"long ".repeat(40))).await?;
    assert_eq!(a.expect_error().await?.0, "too_large", "the hub's own variable is in force");
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_0_keeping_data() -> anyhow::Result<()> {
    let mut w = World::start().await?;
    let mut a = w.device("amina", "a", &["clinic"]).await;
    let s = a.send_stored(chat("clinic", "before the stop")).await?;
    assert_eq!(w.relay.terminate().await?, Some(0));
    assert_eq!(a.expect_close().await?, Some(1001));
    w.restart_relay().await?;
    let mut b = w.device("baraka", "b", &["clinic"]).await;
    let got = b.settle("message").await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["cursor"], s["cursor"]);
    assert!(w.relay_dir.log().contains("hub stopped"), "the log records an orderly stop");
    Ok(())
}
