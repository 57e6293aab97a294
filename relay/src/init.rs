//! Provisioning: `outpost-relay init --dir DIR --bundle FILE`.
//!
//! Turns an enrollment bundle into a relay directory: the identity files, a `relay.toml`
//! holding the identity and the cloud address with every other setting at its documented
//! default (commented, for the engineer to adjust), and a fresh database with its epoch.
//! Refuses to overwrite an existing relay: its database and identity are precious.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use outpost_shared::bundle::{Bundle, decode_public_key};

use outpost_engine::config::{CONFIG_FILE, RelayConfig};

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
    cfg.uplink.cloud = bundle.cloud_addr.clone();

    // The database first: `relay.toml` appears last and marks a finished provisioning,
    // so an interrupted `init` can simply be run again.
    let db = cfg.db_path(dir);
    outpost_store_sqlite::create(&db)?;
    let event = outpost_store_sqlite::AuditEvent::new(
        outpost_store_sqlite::AuditKind::Enrollment,
        format!("provisioned from a bundle of cloud {} (uplink {})", bundle.cloud_id, bundle.cloud_addr),
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
    out.push_str(&format!(
        "[identity]\nrelay_id = {:?}\ncloud_id = {:?}\ntoken_public_key = {:?}\n\n[uplink]\n# The cloud's QUIC endpoint (its certificate names {server_name}).\ncloud = {:?}\n\n",
        cfg.identity.relay_id, cfg.identity.cloud_id, cfg.identity.token_public_key, cfg.uplink.cloud
    ));
    out.push_str("# Defaults, shown for reference. Uncomment a line to change it.\n");
    let mut section = String::new();
    for line in defaults.lines() {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
        if section == "identity" || section == "uplink" {
            continue;
        }
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
