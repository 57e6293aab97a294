//! Webhooks seen from a hospital system's receiver on a real socket: every message of
//! the endpoint's rooms arrives signed (HMAC-SHA256 of `timestamp.body`), with the
//! message id as its idempotency key, at least once and in cursor order, through a run
//! of failures; a second endpoint that refuses connections does not hold the first back;
//! after a restart delivery resumes where it stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use outpost_tests::http::request;
use outpost_tests::{Cloud, CloudProc, EVENT_TIMEOUT};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SECRET: &str = "his-secret-0123456789";
const POLL: Duration = Duration::from_millis(100);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    cursor: u64,
    id: String,
    room: String,
    /// The signature verified and the timestamp was within five minutes.
    signed: bool,
    /// `Idempotency-Key` and `X-Outpost-Cursor` agree with the body.
    headers_match: bool,
    answered: u16,
}

#[derive(Clone)]
struct Receiver {
    /// Requests still to refuse with 500.
    fail: Arc<Mutex<u32>>,
    seen: mpsc::UnboundedSender<Seen>,
}

fn hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What docs/integration.md tells a receiver to do.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let timestamp = header(headers, "x-outpost-timestamp");
    let Some(tag) = header(headers, "x-outpost-signature").strip_prefix("sha256=").and_then(hex) else {
        return false;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let fresh = timestamp.parse::<u64>().is_ok_and(|t| t.abs_diff(now) <= 300);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signed = [timestamp.as_bytes(), b".", body].concat();
    fresh && ring::hmac::verify(&key, &signed, &tag).is_ok()
}

async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = {
        let mut fail = r.fail.lock().unwrap_or_else(|e| e.into_inner());
        if *fail > 0 {
            *fail -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    };
    let cursor = v["cursor"].as_u64().unwrap_or(0);
    let id = v["msg"]["id"].as_str().unwrap_or("").to_owned();
    let _ = r.seen.send(Seen {
        cursor,
        room: v["msg"]["room"].as_str().unwrap_or("").to_owned(),
        signed: verify(&headers, &body),
        headers_match: header(&headers, "idempotency-key") == id
            && header(&headers, "x-outpost-cursor") == cursor.to_string()
            && header(&headers, "x-outpost-webhook") == "his",
        id,
        answered: status.as_u16(),
    });
    status
}

/// A receiver's URL, how many requests it still refuses, and what it sees.
type Receiving = (String, Arc<Mutex<u32>>, mpsc::UnboundedReceiver<Seen>);

/// Starts a receiver that refuses its first `fail` requests; its URL and what it sees.
async fn receiver(fail: u32) -> anyhow::Result<Receiving> {
    let (tx, rx) = mpsc::unbounded_channel();
    let fail = Arc::new(Mutex::new(fail));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .with_state(Receiver { fail: fail.clone(), seen: tx });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, fail, rx))
}

/// A TLS listener for the receiver: the hospital system's HTTPS endpoint.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else { continue };
            // A client that gives up on the certificate is the test's point, not an error.
            if let Ok(tls) = self.tls.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A receiver over HTTPS with a certificate for `localhost` issued by `ca`.
async fn tls_receiver(ca: &outpost_tests::tls::TestCa) -> anyhow::Result<Receiving> {
    use rustls_pki_types::pem::PemObject as _;
    let issued = ca.issue(&["localhost"])?;
    let certs =
        rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let fail = Arc::new(Mutex::new(0));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .with_state(Receiver { fail: fail.clone(), seen: tx });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://localhost:{}/hook", tcp.local_addr()?.port());
    let listener = TlsListener { tcp, tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, fail, rx))
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> anyhow::Result<Seen> {
    tokio::time::timeout(EVENT_TIMEOUT, seen.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no webhook request in time"))?
        .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))
}

async fn post(base: &str, token: &str, room: &str, n: usize) -> anyhow::Result<(u64, String)> {
    let id = outpost_tests::new_id();
    let body = json!({"id": id, "body": {"text": format!("lab result {n}")}});
    let (status, v) = request(base, "POST", &format!("/api/rooms/{room}/messages"), Some(token), Some(&body)).await?;
    anyhow::ensure!(status == 201, "post: {status} {v}");
    Ok((v["cursor"].as_u64().unwrap_or(0), id))
}

/// A counter from the cloud's `/metrics`, for the line whose labels contain `labels`.
async fn counter(proc: &CloudProc, name: &str, labels: &str) -> anyhow::Result<f64> {
    let r = outpost_tests::media::call(&proc.http_base(), "GET", "/metrics", None, &[], &[]).await?;
    Ok(String::from_utf8_lossy(&r.body)
        .lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test]
async fn every_event_arrives_signed_in_order_through_failures_and_a_dead_endpoint_costs_nothing() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    // The first three requests fail with 500.
    let (url, fail, mut seen) = receiver(3).await?;
    // A port nothing listens on: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // The dead endpoint waits 30 to 60 s after each failure: were the endpoints served
    // one after the other, the live one would wait as long, past the test's timeout.
    cloud.configure(&format!(
        "[[webhooks]]\nname = \"his\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nrooms = [\"ward-a\", \"ward-b\"]\n\
         initial_backoff_ms = 50\nmax_backoff_ms = 200\n\n\
         [[webhooks]]\nname = \"dead\"\nurl = \"http://{dead}/hook\"\nsecret = \"dead-secret-0123456789\"\n\
         initial_backoff_ms = 60000\nmax_backoff_ms = 60000\n"
    ))?;
    let mut proc = cloud.start("127.0.0.1:0").await?;
    let base = proc.http_base();
    let lab = cloud.token("lab", "doctor", &["ward-a", "ward-b", "pharmacy"], "1h")?;

    let mut expected = Vec::new();
    for (n, room) in ["ward-a", "pharmacy", "ward-b", "ward-a", "pharmacy", "ward-b", "ward-b"].iter().enumerate() {
        let (cursor, id) = post(&base, &lab, room, n).await?;
        if *room != "pharmacy" {
            expected.push((cursor, id));
        }
    }

    let mut requests = Vec::new();
    let mut delivered: Vec<(u64, String)> = Vec::new();
    while delivered.len() < expected.len() {
        let s = next(&mut seen).await?;
        assert!(s.signed, "the signature verifies: {s:?}");
        assert!(s.headers_match, "the idempotency key is the message id: {s:?}");
        assert!(s.room == "ward-a" || s.room == "ward-b", "only the endpoint's rooms: {s:?}");
        if s.answered == 204 && !delivered.iter().any(|(_, id)| *id == s.id) {
            delivered.push((s.cursor, s.id.clone()));
        }
        requests.push(s);
    }
    assert_eq!(delivered, expected, "every event, in cursor order");
    let refused: Vec<u64> = requests.iter().filter(|s| s.answered == 500).map(|s| s.cursor).collect();
    assert_eq!(refused, vec![expected[0].0; 3], "the first event was retried until it was taken");
    let cursors: Vec<u64> = requests.iter().map(|s| s.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] <= w[1]), "nothing is sent before what precedes it: {cursors:?}");

    // The dead endpoint was tried (and refused) all along.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while counter(&proc, "outpost_webhook_failures_total", "webhook=\"dead\"").await? < 1.0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the dead endpoint was never tried");
        tokio::time::sleep(POLL).await;
    }
    assert!(cloud.log().contains("Connection refused"), "{}", cloud.log());

    // A restart resumes after the last delivered event: the next request is the next
    // message, not the first one again.
    assert_eq!(proc.terminate().await?, Some(0));
    *fail.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    proc = cloud.start("127.0.0.1:0").await?;
    let (cursor, id) = post(&proc.http_base(), &lab, "ward-b", 99).await?;
    let s = next(&mut seen).await?;
    assert_eq!((s.cursor, s.id, s.answered), (cursor, id, 204), "resumed where it stopped");
    Ok(())
}

/// An HTTPS endpoint whose certificate comes from the hospital's own CA: trusted through
/// `ca_file`, and refused (nothing delivered, the failure counted) without it.
#[tokio::test]
async fn an_https_endpoint_is_trusted_through_its_ca_file_and_only_so() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let ca = outpost_tests::tls::TestCa::new("St Mary's IT")?;
    std::fs::write(cloud.dir.join("hospital-ca.pem"), &ca.cert_pem)?;
    let (url, _, mut seen) = tls_receiver(&ca).await?;
    let (other_url, _, mut other_seen) = tls_receiver(&ca).await?;
    cloud.configure(&format!(
        "[[webhooks]]\nname = \"his\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nca_file = \"hospital-ca.pem\"\n\n\
         [[webhooks]]\nname = \"untrusted\"\nurl = \"{other_url}\"\nsecret = \"{SECRET}\"\n\
         initial_backoff_ms = 60000\nmax_backoff_ms = 60000\n"
    ))?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let lab = cloud.token("lab", "doctor", &["ward-a"], "1h")?;
    let (cursor, id) = post(&proc.http_base(), &lab, "ward-a", 1).await?;
    let s = next(&mut seen).await?;
    assert_eq!((s.cursor, s.id.as_str(), s.answered, s.signed), (cursor, id.as_str(), 204, true), "{s:?}");

    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while counter(&proc, "outpost_webhook_failures_total", "webhook=\"untrusted\"").await? < 1.0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the untrusted endpoint was never tried");
        tokio::time::sleep(POLL).await;
    }
    assert!(other_seen.try_recv().is_err(), "nothing reached an endpoint whose certificate is not trusted");
    assert!(cloud.log().contains("invalid peer certificate"), "{}", cloud.log());
    Ok(())
}
