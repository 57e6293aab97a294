//! TLS on the LAN listener: a hub given a certificate (issued by an NGO's own CA) serves
//! phones over `wss://` and HTTPS only; clients that do not trust the CA, plain `ws://`
//! and sockets that never handshake are turned away; a half-configured certificate stops
//! the hub with exit code 64 and says what is missing.

use std::path::Path;
use std::time::Duration;

use outpost_tests::client::{chat, tls_connect};
use outpost_tests::proc::{RelayCmd, RelayDir};
use outpost_tests::tls::TestCa;
use outpost_tests::{Cloud, Device, EVENT_TIMEOUT, Relay};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Relative paths: the relay resolves them against its directory.
const TLS_ENV: &[(&str, &str)] =
    &[("OUTPOST_SERVER__TLS_CERT", "tls/hub.crt"), ("OUTPOST_SERVER__TLS_KEY", "tls/hub.key")];

struct Setup {
    _tmp: tempfile::TempDir,
    cloud: Cloud,
    relay_dir: RelayDir,
    ca: TestCa,
}

/// A provisioned hub whose directory holds `tls/hub.crt` and `tls/hub.key` for
/// 127.0.0.1 and localhost, issued by a fresh CA.
fn setup() -> anyhow::Result<Setup> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let relay_dir = cloud.provision_relay("village-7", &tmp.path().join("relay"))?;
    let ca = TestCa::new("Test NGO CA")?;
    let hub = ca.issue(&["127.0.0.1", "localhost"])?;
    write_pair(&relay_dir.dir, &hub.cert_pem, &hub.key_pem)?;
    Ok(Setup { _tmp: tmp, cloud, relay_dir, ca })
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("tls"))?;
    std::fs::write(dir.join("tls/hub.crt"), cert)?;
    std::fs::write(dir.join("tls/hub.key"), key)?;
    Ok(())
}

/// `GET path` over TLS; returns the whole response.
async fn https_get(relay: &Relay, tls: tokio_rustls::TlsConnector, path: &str) -> anyhow::Result<String> {
    let mut s = tls_connect(&relay.ws_url(), tls).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", relay.addr());
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // A server may end TLS without close_notify after `Connection: close`; what was read counts.
    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut raw)).await?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sends_over_wss_and_the_hub_serves_https_only() -> anyhow::Result<()> {
    let s = setup()?;
    let mut relay = s.relay_dir.start(TLS_ENV).await?;
    let url = relay.ws_url();
    assert!(url.starts_with("wss://127.0.0.1:"), "the hub announces wss://: {url}");

    let tok = s.cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = Device::connect_with(&url, s.ca.connector()?).await?;
    amina.hello(&tok, "amina-phone", None, None).await?;
    let stored = amina.send_stored(chat("clinic", "fever in house 12")).await?;
    assert_eq!(stored["type"], "stored", "{stored}");

    // The same name a phone would use when the certificate names the hub's hostname.
    let localhost = url.replace("127.0.0.1", "localhost");
    let mut bashir = Device::connect_with(&localhost, s.ca.connector()?).await?;
    bashir.hello(&s.cloud.token("bashir", "worker", &["clinic"], "1h")?, "bashir-phone", Some(0), None).await?;
    let got = bashir.messages(1).await?;
    assert_eq!(got[0]["msg"]["body"]["text"], "fever in house 12");

    // The web client, status page and health check come over HTTPS unchanged.
    let health = https_get(&relay, s.ca.connector()?, "/healthz").await?;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");
    let page = https_get(&relay, s.ca.connector()?, "/").await?;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<html"), "{}", &page[..page.len().min(300)]);

    // Plain ws:// to the TLS port is not served.
    let plain = format!("ws://{}/ws", relay.addr());
    assert!(Device::connect(&plain).await.is_err(), "plain ws:// must not be served on a TLS listener");

    // A client that does not trust the NGO's CA refuses the hub's certificate.
    let stranger = TestCa::new("Some other CA")?;
    let refused = Device::connect_with(&url, stranger.connector()?).await;
    let err = format!("{:#}", refused.err().ok_or_else(|| anyhow::anyhow!("an untrusted hub was accepted"))?);
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");

    // Graceful shutdown over TLS: sessions are closed with 1001, the hub exits 0.
    assert_eq!(relay.terminate().await?, Some(0));
    assert_eq!(amina.expect_close().await?, Some(1001));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_handshakes_is_dropped_after_the_timeout() -> anyhow::Result<()> {
    let s = setup()?;
    let env = [TLS_ENV, &[("OUTPOST_LIMITS__TLS_HANDSHAKE_TIMEOUT_SECS", "1")]].concat();
    let relay = s.relay_dir.start(&env).await?;

    let started = tokio::time::Instant::now();
    let mut idle = tokio::net::TcpStream::connect(relay.addr()).await?;
    // While it idles, others are served: handshakes do not wait for each other.
    let tok = s.cloud.token("amina", "worker", &["clinic"], "1h")?;
    let mut amina = Device::connect_with(&relay.ws_url(), s.ca.connector()?).await?;
    amina.hello(&tok, "amina-phone", None, None).await?;

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(EVENT_TIMEOUT, idle.read(&mut buf)).await?;
    // EOF, or a reset: either way the hub let go of it.
    assert!(matches!(read, Ok(0) | Err(_)), "expected the hub to close the idle socket, got {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());

    // The session that did handshake is unaffected.
    amina.sync().await?;
    Ok(())
}

/// Runs `outpost-relay run` to completion with `env`; returns (exit code, stderr).
fn run_to_exit(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let mut cmd = RelayCmd::native().command();
    cmd.arg("run").arg("--dir").arg(dir).args(["--ws", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_setting_stops_the_hub_with_64_and_says_what_to_do() -> anyhow::Result<()> {
    let s = setup()?;
    let dir = &s.relay_dir.dir;

    let (code, err) = run_to_exit(dir, &TLS_ENV[..1])?;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("server.tls_key is not") && err.contains("set both"), "{err}");

    // A key from another certificate.
    let other = s.ca.issue(&["127.0.0.1"])?;
    std::fs::write(dir.join("tls/other.key"), &other.key_pem)?;
    let (code, err) =
        run_to_exit(dir, &[TLS_ENV[0], ("OUTPOST_SERVER__TLS_KEY", dir.join("tls/other.key").to_str().unwrap_or(""))])?;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("does not belong to the certificate") && err.contains("other.key"), "{err}");

    // Certificate and key swapped.
    let (code, err) =
        run_to_exit(dir, &[("OUTPOST_SERVER__TLS_CERT", "tls/hub.key"), ("OUTPOST_SERVER__TLS_KEY", "tls/hub.crt")])?;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("tls/hub.key: no certificate in it"), "{err}");

    // A file that is not there.
    let (code, err) = run_to_exit(dir, &[("OUTPOST_SERVER__TLS_CERT", "tls/missing.crt"), TLS_ENV[1]])?;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("missing.crt: cannot read it"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_serves_doctors_over_wss_with_a_certificate() -> anyhow::Result<()> {
    let s = setup()?;
    let (cert, key) = (s.relay_dir.dir.join("tls/hub.crt"), s.relay_dir.dir.join("tls/hub.key"));
    let (cert, key) = (cert.to_str().unwrap_or(""), key.to_str().unwrap_or(""));
    let cloud = s.cloud.start_with_args("127.0.0.1:0", &["--tls-cert", cert, "--tls-key", key]).await?;
    let url = cloud.ws_url();
    assert!(url.starts_with("wss://"), "{url}");

    let tok = s.cloud.token("dr-okafor", "doctor", &["clinic"], "1h")?;
    let mut doctor = Device::connect_with(&url, s.ca.connector()?).await?;
    doctor.hello(&tok, "okafor-laptop", None, None).await?;
    doctor.send_stored(chat("clinic", "send the patient in")).await?;

    // Half a setting is refused before anything binds.
    let out = outpost_tests::command("outpost-cloud")
        .arg("run")
        .arg("--dir")
        .arg(&s.cloud.dir)
        .args(["--ws", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--tls-cert", cert])
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    Ok(())
}
