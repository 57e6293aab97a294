//! HTTPS on the village network under the hub's own name, against a real ACME CA
//! (Debian's pebble with its DNS test server): the cloud names the hub and gets its
//! certificate with a DNS-01 challenge; the hub serves it by name, sends plain-HTTP pages
//! there, renews while running, and after its certificate expired with the uplink cut it
//! keeps serving the village over plain HTTP (docs/operations.md, "HTTPS on the LAN").

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use outpost_tests::acme::Pebble;
use outpost_tests::http::{get_text, request};
use outpost_tests::proc::{Cloud, Relay, free_udp_addr};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NAME: &str = "village-7.hubs.test";

fn free_tcp_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// The hub's `lan_https` status once `done` holds (ACME orders take seconds).
async fn lan_status(relay: &Relay, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, status) = request(&relay.http_base(), "GET", "/status.json", None, None).await?;
        let lan = status["lan_https"].clone();
        if done(&lan) {
            return Ok(lan);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("lan_https never reached the expected state: {lan}");
        }
        // The status is polled the way an operator's monitoring would.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` over HTTPS to `addr` by the hub's name, trusting only `root`: the body and
/// the certificate the hub presented.
async fn https_get(addr: &str, root: &str, path: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(root.as_bytes())?)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(NAME)?, tcp)
        .await
        .context("TLS handshake by the hub's name")?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(outpost_tests::EVENT_TIMEOUT, tls.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((body, leaf))
}

/// A plain-HTTP `GET path`: the status and the `Location` header.
async fn plain_get(base: &str, path: &str) -> anyhow::Result<(u16, Option<String>)> {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(outpost_tests::EVENT_TIMEOUT, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split_once("\r\n\r\n").map_or(text.as_ref(), |(h, _)| h);
    let status = head.split(' ').nth(1).context("no status")?.parse()?;
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .map(str::to_owned);
    Ok((status, location))
}

/// Starts dnsmasq with only `conf` (no upstream servers, no /etc/hosts) on a free port
/// and asks it for `name`'s IPv4 address.
async fn resolve_with_dnsmasq(conf: &std::path::Path, name: &str) -> anyhow::Result<Option<std::net::Ipv4Addr>> {
    let program = std::path::Path::new("/usr/sbin/dnsmasq");
    if !program.exists() {
        bail!("/usr/sbin/dnsmasq is missing: install Debian's dnsmasq-base (scripts/test.sh does)");
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut dnsmasq = tokio::process::Command::new(program)
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", conf.display()))
        .args(["--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--pid-file="])
        .arg(format!("--port={port}"))
        .kill_on_drop(true)
        .spawn()?;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let query = dns_query(0x0a17, name);
    // dnsmasq is ready when it answers; ask again until then.
    let mut answer = [0u8; 512];
    let deadline = tokio::time::Instant::now() + outpost_tests::EVENT_TIMEOUT;
    let n = loop {
        socket.send_to(&query, ("127.0.0.1", port)).await?;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut answer)).await {
            break r?;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("dnsmasq did not answer");
        }
    };
    dnsmasq.kill().await?;
    Ok(first_a_record(&answer[..n]))
}

/// A DNS query (RFC 1035) for the A record of `name`, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The first A record of a DNS answer to a one-question query.
fn first_a_record(msg: &[u8]) -> Option<std::net::Ipv4Addr> {
    let answers = u16::from_be_bytes([*msg.get(6)?, *msg.get(7)?]);
    // Skip the header and the question (its name, type and class).
    let mut at = 12;
    while *msg.get(at)? != 0 {
        at += usize::from(*msg.get(at)?) + 1;
    }
    at += 5;
    for _ in 0..answers {
        // A compressed name (a pointer) or labels, then type, class, TTL, length.
        if msg.get(at)? & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while *msg.get(at)? != 0 {
                at += usize::from(*msg.get(at)?) + 1;
            }
            at += 1;
        }
        let kind = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]));
        at += 10;
        if kind == 1 && len == 4 {
            return Some(std::net::Ipv4Addr::new(msg[at], msg[at + 1], msg[at + 2], msg[at + 3]));
        }
        at += len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_is_certified_for_its_name_renews_while_running_and_falls_back_to_http_when_expired() -> anyhow::Result<()>
{
    let pebble = Pebble::start().await?;
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    // A hub gets a new certificate at most once an hour: what ends the renewal below.
    cloud.configure(&pebble.cloud_section("hubs.test", 3600))?;
    let quic = free_udp_addr()?;
    let mut cloud_proc = cloud.start(&quic).await?;
    let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &quic)?;
    let https = free_tcp_addr()?;
    let port = https.rsplit(':').next().unwrap_or_default().to_owned();
    // The name resolves to the loopback interface's address here (wlan0 on a Pi).
    let env = [("OUTPOST_LAN_HTTPS__LISTEN", https.as_str()), ("OUTPOST_LAN_HTTPS__INTERFACE", "lo")];
    let mut relay = relay_dir.start(&env).await?;

    // Connected once, the hub is named and certified.
    let lan = lan_status(&relay, |l| l["state"] == "valid").await.with_context(|| pebble.logs())?;
    assert_eq!(lan["name"], NAME);
    assert_eq!(lan["url"], format!("https://{NAME}:{port}"));
    let not_after = lan["not_after"].as_u64().context("not_after")?;
    let root = pebble.root_pem().await?;
    let (body, first) = https_get(&https, &root, "/healthz").await?;
    assert_eq!(body.trim(), "ok");
    // Pages opened by address are sent to the name; machines' endpoints are not.
    let (status, location) = plain_get(&relay.http_base(), "/").await?;
    assert_eq!((status, location.as_deref()), (307, Some(format!("https://{NAME}:{port}/").as_str())));
    assert_eq!(plain_get(&relay.http_base(), "/healthz").await?.0, 200);
    // So is the status page, for people: it shows the name and the certificate.
    assert_eq!(plain_get(&relay.http_base(), "/status").await?.0, 307);
    let (page, _) = https_get(&https, &root, "/status").await?;
    assert!(page.contains(NAME) && page.contains("valid"), "{page}");
    // The name resolves on the village network: Debian's dnsmasq, given the hub's line
    // and no upstream, answers for it with the interface's address.
    let conf = relay_dir.dir.join("lan/dnsmasq.conf");
    let line = std::fs::read_to_string(&conf)?;
    assert!(line.contains(&format!("interface-name={NAME},lo\n")), "{line}");
    assert_eq!(resolve_with_dnsmasq(&conf, NAME).await?, Some(std::net::Ipv4Addr::LOCALHOST));
    relay.terminate().await?;

    // Months without uplink: the certificate expires. The village keeps being served,
    // over plain HTTP, and the status page says why.
    cloud_proc.terminate().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let expired = (not_after - now + 86_400).to_string();
    let mut later = env.to_vec();
    later.push(("OUTPOST_TESTING__CLOCK_OFFSET_SECS", expired.as_str()));
    let mut relay = relay_dir.start(&later).await?;
    let lan = lan_status(&relay, |l| l["state"] != Value::Null).await?;
    assert_eq!(lan["state"], "expired");
    assert_eq!(lan["url"], Value::Null);
    let (status, _) = plain_get(&relay.http_base(), "/").await?;
    assert_eq!(status, 200, "with an expired certificate the app is served over plain HTTP");
    let (_, page) = get_text(&relay.http_base(), "/status").await?;
    assert!(page.contains("expired"), "{page}");
    relay.terminate().await?;

    // Back in reach of the cloud, ten days before expiry (inside the 30-day renewal
    // window): the hub renews while it runs and serves the new certificate on the next
    // connection, without a restart.
    let _cloud_proc = cloud.start(&quic).await?;
    let due = (not_after - now - 10 * 86_400).to_string();
    let mut soon = env.to_vec();
    soon.push(("OUTPOST_TESTING__CLOCK_OFFSET_SECS", due.as_str()));
    let relay = relay_dir.start(&soon).await?;
    let renewed = lan_status(&relay, |l| l["not_after"].as_u64().is_some_and(|t| t > not_after)).await?;
    assert_eq!(renewed["state"], "valid");
    let (body, second) = https_get(&https, &root, "/healthz").await?;
    assert_eq!(body.trim(), "ok");
    assert_ne!(first, second, "the renewed certificate is served");
    assert!(relay_dir.log().matches("LAN certificate installed").count() >= 1);
    Ok(())
}
