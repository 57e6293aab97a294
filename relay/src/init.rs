//! Provisioning: `outpost-relay init --dir DIR --bundle FILE`.
//!
//! Turns an enrollment bundle into a relay directory: the identity files, a `relay.toml`
//! holding the identity and the cloud's addresses with every other setting at its
//! documented default (commented, for the engineer to adjust), and a fresh database with
//! its epoch.
//! Refuses to overwrite an existing relay: its database and identity are precious.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use outpost_shared::bundle::{Bundle, decode_public_key};

use outpost_engine::config::{
    CONFIG_FILE, IDLE_TIMEOUT_ONE_ADDRESS_SECS, IDLE_TIMEOUT_SEVERAL_ADDRESSES_SECS, RelayConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read the bundle {path}: {source}")]
    ReadBundle { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an Outpost enrollment bundle: {reason}")]
    BadBundle { path: PathBuf, reason: String },
    #[error("{path} already exists: this directory already holds a relay (remove it first to re-provision)")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] outpost_store_sqlite::OpenError),
}

/// Files the identity is written to, inside the relay directory.
pub const IDENTITY_DIR: &str = "identity";

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), InitError> {
    let err = |source| InitError::Write { path: path.to_path_buf(), source };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Health data: the database and its folder are readable by the hub's user only.
fn restrict(path: &Path) -> Result<(), InitError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| InitError::Write { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// Reads and checks a bundle file.
pub fn read_bundle(path: &Path) -> Result<Bundle, InitError> {
    let text = fs::read_to_string(path).map_err(|source| InitError::ReadBundle { path: path.to_path_buf(), source })?;
    let bad = |reason: String| InitError::BadBundle { path: path.to_path_buf(), reason };
    let bundle: Bundle = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    // The version, and that the addresses are usable and agree with it.
    bundle.addresses().map_err(bad)?;
    decode_public_key(&bundle.token_public_key).map_err(|e| bad(format!("token_public_key: {e}")))?;
    for (name, pem) in [("ca_cert_pem", &bundle.ca_cert_pem), ("relay_cert_pem", &bundle.relay_cert_pem)] {
        if !pem.contains("BEGIN CERTIFICATE") {
            return Err(bad(format!("{name} is not a PEM certificate")));
        }
    }
    if !bundle.relay_key_pem.contains("PRIVATE KEY") {
        return Err(bad("relay_key_pem is not a PEM private key".into()));
    }
    Ok(bundle)
}

/// Provisions `dir` from `bundle_path`. Returns the relay id.
pub fn init(dir: &Path, bundle_path: &Path) -> Result<String, InitError> {
    let bundle = read_bundle(bundle_path)?;
    let addrs =
        bundle.addresses().map_err(|reason| InitError::BadBundle { path: bundle_path.to_path_buf(), reason })?;
    let cfg_path = dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        return Err(InitError::Exists { path: cfg_path });
    }
    let ident = dir.join(IDENTITY_DIR);
    fs::create_dir_all(&ident).map_err(|source| InitError::Write { path: ident.clone(), source })?;
    write_file(&ident.join("ca.crt"), &bundle.ca_cert_pem, false)?;
    write_file(&ident.join("relay.crt"), &bundle.relay_cert_pem, false)?;
    write_file(&ident.join("relay.key"), &bundle.relay_key_pem, true)?;

    let mut cfg = RelayConfig::default();
    cfg.identity.relay_id = bundle.relay_id.to_string();
    cfg.identity.cloud_id = bundle.cloud_id.clone();
    cfg.identity.token_public_key = bundle.token_public_key.clone();
    cfg.uplink.cloud = addrs;

    // The database first: `relay.toml` appears last and marks a finished provisioning,
    // so an interrupted `init` can simply be run again.
    let db = cfg.db_path(dir);
    outpost_store_sqlite::create(&db)?;
    let event = outpost_store_sqlite::AuditEvent::new(
        outpost_store_sqlite::AuditKind::Enrollment,
        format!("provisioned from a bundle of cloud {} (uplink {})", bundle.cloud_id, cfg.uplink.cloud.join(", ")),
    )
    .actor(bundle.relay_id.to_string());
    outpost_store_sqlite::security::record_offline(&db, &[], &[event], "cli", outpost_engine::clock::now_ms())?;
    restrict(&db)?;
    if let Some(parent) = db.parent() {
        restrict(parent)?;
    }
    write_file(&cfg_path, &render_config(&cfg, &bundle.cloud_server_name), false)?;
    Ok(bundle.relay_id.to_string())
}

/// The provisioned `relay.toml`: identity and uplink set, every other setting shown
/// commented out at its default.
fn render_config(cfg: &RelayConfig, server_name: &str) -> String {
    let defaults = toml::to_string(&RelayConfig::default()).unwrap_or_default();
    let mut out = String::from(
        "# Outpost relay configuration, written by `outpost-relay init`.\n\
         # Environment variables OUTPOST_<SECTION>__<KEY> override this file.\n\n",
    );
    // One address as a plain string, as `init` always wrote it; several as a list, in
    // the order the hub tries them.
    let cloud = match cfg.uplink.cloud.as_slice() {
        [one] => format!("{one:?}"),
        several => format!("[{}]", several.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")),
    };
    let about = if cfg.uplink.cloud.len() > 1 {
        format!(
            "The cloud's QUIC endpoints (each node's certificate names {server_name}), tried in this order;\n# the hub fails over between them and returns to the first."
        )
    } else {
        format!("The cloud's QUIC endpoint (its certificate names {server_name}).")
    };
    out.push_str(&format!(
        "[identity]\nrelay_id = {:?}\ncloud_id = {:?}\ntoken_public_key = {:?}\n\n[uplink]\n# {about}\ncloud = {cloud}\n",
        cfg.identity.relay_id, cfg.identity.cloud_id, cfg.identity.token_public_key
    ));
    out.push_str("# Defaults, shown for reference. Uncomment a line to change it.\n");
    // The rest of [uplink] first, under the section's one header.
    for line in defaults.lines().skip_while(|l| *l != "[uplink]").skip(1).take_while(|l| !l.starts_with('[')) {
        if line.is_empty() {
            // Not set by default: its default depends on the number of addresses.
            let (one, several) = (IDLE_TIMEOUT_ONE_ADDRESS_SECS, IDLE_TIMEOUT_SEVERAL_ADDRESSES_SECS);
            out.push_str(&format!(
                "# idle_timeout_secs = {one}  # not set: {one} with one address, {several} with several\n"
            ));
        }
        if !line.starts_with("cloud ") {
            commented(&mut out, line);
        }
    }
    let mut section = String::new();
    for line in defaults.lines() {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
        if section == "identity" || section == "uplink" {
            continue;
        }
        commented(&mut out, line);
    }
    out
}

/// `line` as a comment (blank lines stay blank).
fn commented(out: &mut String, line: &str) {
    if !line.is_empty() {
        out.push_str("# ");
        out.push_str(line);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::bundle::encode_key;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n";

    fn bundle(addrs: &[&str]) -> Bundle {
        let mut b = Bundle {
            v: 0,
            cloud_id: "cloud-1".into(),
            relay_id: "village-7".parse().unwrap_or_else(|e| panic!("{e}")),
            cloud_addr: String::new(),
            cloud_addrs: Vec::new(),
            cloud_server_name: "outpost-cloud".into(),
            token_public_key: encode_key(&[7; 32]),
            ca_cert_pem: CERT.into(),
            relay_cert_pem: CERT.into(),
            relay_key_pem: KEY.into(),
        };
        b.set_cloud_addrs(&addrs.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        b
    }

    /// Provisions a fresh directory from `json`; its `relay.toml` and loaded settings.
    fn provision(json: &str) -> Result<(String, RelayConfig), InitError> {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("bundle.json");
        fs::write(&path, json).unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("relay");
        init(&dir, &path)?;
        let text = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let cfg = RelayConfig::load(&dir).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Ok((text, cfg))
    }

    #[test]
    fn a_bundle_with_several_addresses_provisions_them_all_in_order() {
        let json =
            serde_json::to_string(&bundle(&["node-a.example.org:4433", "node-b.example.org:4433"])).unwrap_or_default();
        let (text, cfg) = provision(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.uplink.cloud, ["node-a.example.org:4433", "node-b.example.org:4433"]);
        assert!(text.contains("cloud = [\"node-a.example.org:4433\", \"node-b.example.org:4433\"]"), "{text}");
        // The rest of [uplink] is there to be uncommented, under the one header.
        assert!(text.contains("# primary_retry_secs = 300"), "{text}");
        assert_eq!(text.matches("[uplink]").count(), 1, "{text}");
    }

    #[test]
    fn a_bundle_from_before_several_addresses_provisions_as_it_always_did() {
        let json = format!(
            r#"{{"v": 1, "cloud_id": "cloud-1", "relay_id": "village-7", "cloud_addr": "cloud.example.org:4433",
               "cloud_server_name": "outpost-cloud", "token_public_key": "{}",
               "ca_cert_pem": {CERT:?}, "relay_cert_pem": {CERT:?}, "relay_key_pem": {KEY:?}}}"#,
            encode_key(&[7; 32])
        );
        let (text, cfg) = provision(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.uplink.cloud, ["cloud.example.org:4433"]);
        assert!(text.contains("\ncloud = \"cloud.example.org:4433\"\n"), "one address as a plain string:\n{text}");
    }

    #[test]
    fn a_bundle_whose_addresses_disagree_is_refused() {
        let mut b = bundle(&["a.example.org:4433", "b.example.org:4433"]);
        b.cloud_addr = "c.example.org:4433".into();
        let err = provision(&serde_json::to_string(&b).unwrap_or_default()).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("not an Outpost enrollment bundle") && err.contains("first of cloud_addrs"), "{err}");
    }
}
