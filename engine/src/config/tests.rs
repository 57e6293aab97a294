use super::*;

fn with_identity(text: &str) -> String {
    format!(
        "[identity]\nrelay_id = \"r1\"\ncloud_id = \"c1\"\ntoken_public_key = \"{}\"\n{text}",
        outpost_shared::bundle::encode_key(&[1; 32])
    )
}

#[test]
fn defaults_plus_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(CONFIG_FILE), with_identity("[limits]\nmax_body_bytes = 1000\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = RelayConfig::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.max_body_bytes, 1000);
    assert_eq!(cfg.limits.max_frame_bytes, 256 << 10);
    assert!(!cfg.server.conformance_echo, "the test-only echo route is off by default");
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join(CONFIG_FILE),
        "[server]\nlisten = \"nowhere\"\n[limits]\nmax_devices = 0\nrate_per_sec = 0\n[bogus]\nx = 1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = RelayConfig::load(dir.path()).err().map(|e| e.problems).unwrap_or_default();
    let all = err.join("\n");
    for needle in ["server.listen", "max_devices", "rate_per_sec", "bogus", "identity is not set"] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
}

#[test]
fn a_tls_certificate_needs_its_key_and_readable_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join(CONFIG_FILE);
    std::fs::write(&file, with_identity("[server]\ntls_cert = \"tls/hub.crt\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let all = RelayConfig::load(dir.path()).err().map(|e| e.problems.join("\n")).unwrap_or_default();
    assert!(all.contains("but server.tls_key is not"), "{all}");

    std::fs::write(&file, with_identity("[server]\ntls_cert = \"tls/hub.crt\"\ntls_key = \"tls/hub.key\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let all = RelayConfig::load(dir.path()).err().map(|e| e.problems.join("\n")).unwrap_or_default();
    let cert = dir.path().join("tls/hub.crt");
    assert!(all.contains(&format!("server.tls_cert = {}: cannot read it", cert.display())), "{all}");
}

#[test]
fn session_threads_leave_the_store_writer_a_core() {
    let auto = ServerConfig::default();
    let picked: Vec<usize> = [1, 2, 4, 8].iter().map(|&c| auto.effective_worker_threads(c)).collect();
    assert_eq!(picked, [1, 1, 3, 7]);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join(CONFIG_FILE);
    std::fs::write(&file, with_identity("[server]\nworker_threads = 2\n")).unwrap_or_else(|e| panic!("{e}"));
    let cfg = RelayConfig::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.effective_worker_threads(1), 2, "a configured number is taken as given");

    std::fs::write(&file, with_identity("[server]\nworker_threads = 100000\n")).unwrap_or_else(|e| panic!("{e}"));
    let all = RelayConfig::load(dir.path()).err().map(|e| e.problems.join("\n")).unwrap_or_default();
    assert!(all.contains("server.worker_threads = 100000 is more than 256"), "{all}");
}

fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
}

#[test]
fn the_environment_overrides_the_file_and_a_misspelt_variable_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(CONFIG_FILE), with_identity("[limits]\nmax_body_bytes = 1000\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let vars = env(&[
        ("OUTPOST_LIMITS__MAX_BODY_BYTES", "2000"),
        ("OUTPOST_POLICY__EMERGENCY_ROLES", "doctor,supervisor"),
        ("PATH", "/usr/bin"),
    ]);
    let cfg = RelayConfig::load_from(dir.path(), vars, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.max_body_bytes, 2000);
    assert_eq!(cfg.policy.emergency_roles, [outpost_shared::Role::Doctor, outpost_shared::Role::Supervisor]);

    let vars = env(&[("OUTPOST_LIMITS__MAX_BODDY_BYTES", "5"), ("OUTPOST_LOGGING__LEVEL", "debug")]);
    let all = RelayConfig::load_from(dir.path(), vars, |_| {}).err().map(|e| e.problems.join("\n"));
    let all = all.unwrap_or_default();
    assert!(all.contains("max_boddy_bytes") && all.contains("unknown section `logging`"), "{all}");
}

#[test]
fn variables_not_shaped_as_settings_are_left_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(CONFIG_FILE), with_identity("")).unwrap_or_else(|e| panic!("{e}"));
    // An operator's shell or a wrapper script may hold OUTPOST_ names of its own: without
    // the SECTION__KEY shape they are not settings, and the hub starts.
    let vars = env(&[("OUTPOST_BIN_DIR", "/opt/outpost/bin"), ("OUTPOST_LOG", "debug"), ("OUTPOST_", "x")]);
    let cfg = RelayConfig::load_from(dir.path(), vars, |_| {});
    assert!(cfg.is_ok(), "{:?}", cfg.err().map(|e| e.problems));
}

#[test]
fn the_hub_leaves_the_clouds_variables_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(CONFIG_FILE), with_identity("")).unwrap_or_else(|e| panic!("{e}"));
    // Set beside the hub's own in one environment (a test machine, a container
    // running both): neither a section of the hub's nor a problem.
    let vars = env(&[
        ("OUTPOST_CLOUD_STORAGE__QUOTA_BYTES", "1"),
        ("outpost_cloud_media__bogus", "x"),
        ("OUTPOST_STORAGE__QUOTA_BYTES", "2147483648"),
    ]);
    let cfg = RelayConfig::load_from(dir.path(), vars, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.storage.quota_bytes, 2 << 30);
}

#[test]
fn unknown_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(CONFIG_FILE), with_identity("[limits]\nmax_bodyy_bytes = 5\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = RelayConfig::load(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("max_bodyy_bytes"), "{err}");
}

fn uplink_with(dir: &Path, uplink: &str, vars: &[(&str, &str)], flags: &[&str]) -> Result<RelayConfig, String> {
    std::fs::write(dir.join(CONFIG_FILE), with_identity(&format!("[uplink]\n{uplink}\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    RelayConfig::load_from(dir, env(vars), |c| c.uplink.override_clouds(flags)).map_err(|e| e.to_string())
}

fn clouds(cfg: Result<RelayConfig, String>) -> Vec<String> {
    cfg.unwrap_or_else(|e| panic!("{e}")).uplink.cloud
}

#[test]
fn the_cloud_is_one_address_as_before_or_a_list() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // What `init` has always written, and what deployed hubs have.
    let one = uplink_with(d, "cloud = \"cloud.example.org:4433\"", &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.uplink.cloud, ["cloud.example.org:4433"]);
    assert_eq!(one.uplink.idle_timeout(), std::time::Duration::from_secs(30), "one address keeps the old timeout");
    let several = uplink_with(d, "cloud = [\"a.example.org:4433\", \"10.0.0.2:4433\"]", &[], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(several.uplink.cloud, ["a.example.org:4433", "10.0.0.2:4433"], "in the order given");
    assert_eq!(several.uplink.idle_timeout(), std::time::Duration::from_secs(6));
    assert_eq!(several.uplink.primary_retry_secs, 300);
    assert!(clouds(uplink_with(d, "cloud = \"\"", &[], &[])).is_empty(), "empty is no uplink, as before");
    assert!(clouds(uplink_with(d, "", &[], &[])).is_empty());
    // The environment: one address, a comma-separated list, or nothing.
    let vars = [("OUTPOST_UPLINK__CLOUD", "c.example.org:4433")];
    assert_eq!(clouds(uplink_with(d, "cloud = [\"a:1\", \"b:2\"]", &vars, &[])), ["c.example.org:4433"]);
    let vars = [("OUTPOST_UPLINK__CLOUD", "c:1,d:2")];
    assert_eq!(clouds(uplink_with(d, "cloud = \"a:1\"", &vars, &[])), ["c:1", "d:2"]);
    let vars = [("OUTPOST_UPLINK__CLOUD", "")];
    assert!(clouds(uplink_with(d, "cloud = \"a:1\"", &vars, &[])).is_empty());
    // A number where an address belongs says what it wants.
    let err = uplink_with(d, "cloud = 4433", &[], &[]).err().unwrap_or_default();
    assert!(err.contains("[uplink]") && err.contains("an address \"HOST:PORT\" or a list of them"), "{err}");
}

#[test]
fn cloud_flags_replace_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let file = "cloud = [\"a:1\", \"b:2\"]";
    let vars = [("OUTPOST_UPLINK__CLOUD", "c:3")];
    assert_eq!(clouds(uplink_with(d, file, &vars, &["x:7", "y:8"])), ["x:7", "y:8"]);
    assert_eq!(clouds(uplink_with(d, file, &[], &["x:7"])), ["x:7"]);
    assert_eq!(clouds(uplink_with(d, file, &vars, &[])), ["c:3"], "no flag: the layers below stand");
    assert!(clouds(uplink_with(d, file, &[], &[""])).is_empty(), "--cloud \"\" turns the uplink off");
    // A flag corrects a bad address from the file before values are checked.
    assert_eq!(clouds(uplink_with(d, "cloud = \"nowhere\"", &[], &["x:7"])), ["x:7"]);
    let err = uplink_with(d, file, &[], &["x:7", "bad"]).err().unwrap_or_default();
    assert!(err.contains("uplink.cloud = \"bad\" must be HOST:PORT"), "{err}");
}

#[test]
fn every_bad_uplink_value_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = "cloud = [\"a:1\", \"nowhere\", \"b:99999\", \"a:1\"]\nprimary_retry_secs = 0\nidle_timeout_secs = 0";
    let err = uplink_with(dir.path(), text, &[], &[]).err().unwrap_or_default();
    for needle in [
        "uplink.cloud = \"nowhere\" must be HOST:PORT",
        "uplink.cloud = \"b:99999\" must be HOST:PORT",
        "uplink.cloud lists \"a:1\" twice",
        "uplink.primary_retry_secs must be greater than 0",
        "uplink.idle_timeout_secs must be greater than 0",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    let set = uplink_with(dir.path(), "cloud = \"a:1\"\nidle_timeout_secs = 12\nprimary_retry_secs = 5", &[], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.uplink.idle_timeout(), std::time::Duration::from_secs(12), "a set timeout wins");
    assert_eq!(set.uplink.primary_retry_secs, 5);
}
