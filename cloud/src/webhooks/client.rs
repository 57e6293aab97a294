//! The HTTP client of one webhook endpoint: hyper's HTTP/1.1 client (hyper-util) with
//! rustls for `https://`, a connect timeout and a timeout on the whole attempt. It only
//! sends one request and says how it went; retrying is the delivery loop's business.
//!
//! The client keeps at most one idle connection (an endpoint gets one request at a time);
//! the tasks driving its connections are the client's own and end with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Bytes of a response body read (for the log when it is a refusal); the rest is
/// dropped with the connection. Receivers answer with a status, not a document.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Characters of a refusal's body shown in the log.
const SNIPPET_CHARS: usize = 200;
/// An idle connection is closed after this long: deliveries in a burst reuse it, and a
/// quiet endpoint holds no socket.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How one attempt went.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer: the event is delivered.
    Delivered(StatusCode),
    /// Any other answer, with the start of its body.
    Refused(StatusCode, String),
    /// No answer: the connection, TLS or the timeout failed.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delivered(s) => write!(f, "delivered ({s})"),
            Self::Refused(s, body) if body.is_empty() => write!(f, "answered {s}"),
            Self::Refused(s, body) => write!(f, "answered {s}: {body}"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

/// The CA certificates of `path` (PEM) as the only roots an endpoint trusts.
pub fn load_ca(path: &Path) -> Result<RootCertStore, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("ca_file = {}: cannot read it: {e}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(&e))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("ca_file = {}: holds no usable CA certificate (PEM)", path.display()));
    }
    Ok(roots)
}

/// The system's trusted roots (the operating system's certificate store).
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping a system certificate");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        tracing::warn!("no trusted root certificates found on this system: https webhooks will fail; set ca_file");
    }
    roots
}

/// The whole error chain in one line ("client error (Connect): tcp connect error:
/// Connection refused"): hyper's outer error alone says only what stage failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[derive(Debug, Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    timeout: Duration,
}

impl Client {
    /// A client for `uri`; `ca` (a PEM file) replaces the system's roots for `https://`.
    pub fn new(uri: Uri, ca: Option<&Path>, connect_timeout: Duration, timeout: Duration) -> Result<Self, String> {
        let roots = match ca {
            Some(path) => load_ca(path)?,
            None if uri.scheme_str() == Some("https") => system_roots(),
            None => RootCertStore::empty(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        // The HTTPS connector wraps this one: it must accept `https://` too.
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1)
            .build(https);
        Ok(Self { inner, uri, timeout })
    }

    /// POSTs `body` (JSON) with `headers`; gives up after the attempt's timeout.
    pub async fn post(&self, headers: &[(HeaderName, HeaderValue)], body: Bytes) -> Outcome {
        let mut req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("outpost-cloud/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("cannot build the request: {e}")),
        };
        let attempt = async {
            let resp = self.inner.request(req).await.map_err(|e| chain(&e))?;
            let status = resp.status();
            // A body past the limit (or cut off) is dropped with its connection: the
            // status alone decides.
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Outcome::Failed(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Outcome::Failed(e),
            Ok(Ok((status, _))) if status.is_success() => Outcome::Delivered(status),
            Ok(Ok((status, body))) => {
                let text: String = String::from_utf8_lossy(&body).chars().take(SNIPPET_CHARS).collect();
                Outcome::Refused(status, text.trim().to_owned())
            }
        }
    }
}
