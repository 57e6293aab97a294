//! A real ACME CA for the LAN HTTPS scenarios: Debian's `pebble` (RFC 8555 test server)
//! and `pebble-challtestsrv` (its DNS server, whose TXT records the cloud sets through
//! the management API), each a process on free loopback ports. `scripts/test.sh`
//! installs the `pebble` package.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::tls::TestCa;

/// A running pebble with its DNS test server.
pub struct Pebble {
    _dir: tempfile::TempDir,
    _pebble: Child,
    _dns: Child,
    /// The ACME directory URL (`acme.directory`).
    pub directory: String,
    /// The CA that signed pebble's own HTTPS certificate (`acme.directory_ca`).
    pub directory_ca: PathBuf,
    /// challtestsrv's management address (`acme.challtestsrv_url`).
    pub challtestsrv: String,
    ca: TestCa,
    management: String,
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free for both UDP and TCP (a DNS server listens on both).
fn free_dns_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

fn program(name: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(name);
    if !path.exists() {
        bail!("{} is missing: install Debian's `pebble` package (scripts/test.sh does)", path.display());
    }
    Ok(path)
}

impl Pebble {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new("pebble directory test CA")?;
        let issued = ca.issue(&["127.0.0.1", "localhost"])?;
        let (cert, key, ca_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        std::fs::write(&cert, &issued.cert_pem)?;
        std::fs::write(&key, &issued.key_pem)?;
        std::fs::write(&ca_pem, &ca.cert_pem)?;
        let (listen, management, dns_mgmt) = (free_tcp_port()?, free_tcp_port()?, free_tcp_port()?);
        let dns = free_dns_port()?;
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            // Unused (only DNS-01 is answered), but pebble binds nothing for them.
            "httpPort": 5002, "tlsPort": 5001,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string())?;
        let log = |name: &str| -> anyhow::Result<Stdio> {
            Ok(std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join(name))?.into())
        };
        let dns_child = Command::new(program("pebble-challtestsrv")?)
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(log("challtestsrv.log")?)
            .stderr(log("challtestsrv.log")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting pebble-challtestsrv")?;
        let pebble = Command::new(program("pebble")?)
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict=false"])
            // No artificial validation delay, no rejected nonces, a fresh DNS-01
            // challenge for every order (no reused authorizations).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log")?)
            .stderr(log("pebble.log")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting pebble")?;
        let p = Self {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            directory_ca: ca_pem,
            challtestsrv: format!("http://127.0.0.1:{dns_mgmt}"),
            management: format!("127.0.0.1:{management}"),
            ca,
            _dir: dir,
            _pebble: pebble,
            _dns: dns_child,
        };
        for addr in [format!("127.0.0.1:{listen}"), p.management.clone(), format!("127.0.0.1:{dns_mgmt}")] {
            wait_listening(&addr).await.with_context(|| p.logs())?;
        }
        Ok(p)
    }

    /// pebble's and challtestsrv's output so far.
    pub fn logs(&self) -> String {
        ["pebble.log", "challtestsrv.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self._dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root that signs the certificates pebble issues (made fresh at each start).
    pub async fn root_pem(&self) -> anyhow::Result<String> {
        let tcp = tokio::net::TcpStream::connect(&self.management).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        let mut tls = self.ca.connector()?.connect(name, tcp).await?;
        let req = format!("GET /roots/0 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.management);
        tls.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        // pebble closes without a TLS close_notify; what was read is the whole answer.
        let _ = tokio::time::timeout(crate::EVENT_TIMEOUT, tls.read_to_end(&mut raw)).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "pebble /roots/0: {head}");
        let start = body.find("-----BEGIN CERTIFICATE-----").context("no certificate in /roots/0")?;
        let end = body.rfind("-----END CERTIFICATE-----").context("no certificate end")? + 25;
        Ok(format!("{}\n", &body[start..end]))
    }

    /// The `[acme]` section of a cloud that gets its hubs' certificates here.
    pub fn cloud_section(&self, domain: &str, min_reissue_secs: u64) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\ndirectory_ca = \"{}\"\ndomain = \"{domain}\"\ndns = \"challtestsrv\"\n\
             challtestsrv_url = \"{}\"\nmin_reissue_secs = {min_reissue_secs}\n",
            self.directory,
            self.directory_ca.display(),
            self.challtestsrv
        )
    }
}

async fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + crate::EVENT_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        // A process starting up has no event to wait for but its port.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
