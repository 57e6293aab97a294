//! The hub's own HTTPS name and certificate on the village network ("HTTPS on the LAN" in
//! docs/operations.md).
//!
//! Phones treat a page as a secure context (service worker, offline outbox, WebCrypto)
//! only over HTTPS with a certificate they already trust, so the hub needs a name under a
//! domain the deployment controls and a certificate for it from a public CA. The cloud
//! tells the hub its name (`LanName` on the link) and has its CA sign the hub's requests
//! (ACME DNS-01: only the cloud holds DNS credentials). The key is made here and never
//! leaves `DIR/lan/`; [`LanCert`] holds the name, the key and certificate in use, the
//! request in flight, and what the status page shows. TLS handshakes read the certificate
//! through [`LanCert::resolver`], so a renewal takes effect on the next connection
//! without a restart.
//!
//! Files, all in `DIR/lan/`: `name` (the name the cloud gave), `hub.key` (0600) and
//! `hub.crt` (the chain, the hub's certificate first), `dnsmasq.conf` (a line that makes
//! the village's dnsmasq answer for the name, see [`LanCert::set_name`]). Not here: the
//! cloud's side ([`crate::link::certs`] and the cloud crate's ACME client).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::sync::watch;

/// Why a certificate (from the cloud or from the disk) was not taken into use.
#[derive(Debug, thiserror::Error)]
pub enum LanCertError {
    #[error("the certificate chain is not valid PEM or holds no certificate: {0}")]
    Chain(String),
    #[error("the certificate cannot be read: {0}")]
    Parse(String),
    #[error("the certificate is for {got:?}, not for this hub's name {want}")]
    WrongName { want: String, got: Vec<String> },
    #[error("the certificate does not belong to this hub's key: {0}")]
    WrongKey(String),
    #[error("a certificate arrived that was not asked for (no request in flight)")]
    Unasked,
    #[error("{0:?} is not a DNS name this hub can take (letters, digits, '-' and '.', at most 253 characters)")]
    BadName(String),
    #[error("cannot make a key or request: {0}")]
    Key(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What the status page shows about the hub's LAN certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LanStatus {
    /// The hub's name, once the cloud gave it.
    pub name: Option<String>,
    /// `none` (no certificate for the name yet), `valid`, or `expired` (or not yet
    /// valid): with anything but `valid` the hub serves plain HTTP without redirecting.
    pub state: &'static str,
    /// The certificate's last moment of validity (Unix seconds).
    pub not_after: Option<u64>,
    /// When the certificate in use was installed (Unix seconds).
    pub last_renewal: Option<u64>,
    /// Why the last request failed, until one succeeds.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Held {
    names: Vec<String>,
    not_before: u64,
    not_after: u64,
    serial: String,
}

struct Pending {
    name: String,
    key: rcgen::KeyPair,
    /// The request as sent, sent again on a new link (the answer to it may have been
    /// lost with the old one; the cloud answers a repeated request from its cache).
    csr: Vec<u8>,
}

#[derive(Default)]
struct State {
    name: Option<String>,
    held: Option<Held>,
    pending: Option<Pending>,
    /// No new request before this (Unix seconds): a request waits this long for its
    /// answer, and a refusal is not retried at once.
    next_try: u64,
    last_renewal: Option<u64>,
    last_error: Option<String>,
}

/// The hub's LAN name and certificate (see the module documentation).
pub struct LanCert {
    dir: PathBuf,
    interface: String,
    renew_before_secs: u64,
    retry_secs: u64,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for LanCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanCert").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The settings [`LanCert::open`] needs (from `[lan_https]`).
#[derive(Debug, Clone)]
pub struct LanCertSettings {
    /// `DIR/lan`.
    pub dir: PathBuf,
    /// The network interface the name resolves to on the village network (dnsmasq's
    /// `interface-name`).
    pub interface: String,
    /// Ask for a new certificate this long before the current one expires.
    pub renew_before_secs: u64,
    /// Ask again after this long without an answer, or after a refusal.
    pub retry_secs: u64,
}

impl LanCert {
    /// Loads what `settings.dir` holds. Unreadable or mismatched files are reported and
    /// left out (the hub asks for a new certificate): a broken file must never keep the
    /// village from being served.
    pub fn open(settings: LanCertSettings) -> Arc<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (tx, _) = watch::channel(0);
        let lan = Self {
            dir: settings.dir,
            interface: settings.interface,
            renew_before_secs: settings.renew_before_secs,
            retry_secs: settings.retry_secs.max(1),
            provider,
            current: RwLock::new(None),
            state: Mutex::new(State::default()),
            changed: tx,
        };
        let name = std::fs::read_to_string(lan.dir.join("name")).ok().map(|s| s.trim().to_owned());
        let name = name.filter(|n| valid_name(n));
        if let Ok(mut s) = lan.state.lock() {
            s.name = name.clone();
        }
        let (crt, key) = (lan.dir.join("hub.crt"), lan.dir.join("hub.key"));
        if let (Ok(chain), Ok(key_pem)) = (std::fs::read(&crt), std::fs::read(&key)) {
            let loaded = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| LanCertError::Key(e.to_string()))
                .and_then(|k| lan.certified(&chain, k, name.as_deref()));
            match loaded {
                Ok((certified, held)) => {
                    let installed = std::fs::metadata(&crt)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                    tracing::info!(names = ?held.names, not_after = held.not_after, "LAN certificate loaded");
                    lan.put(certified, held, installed);
                }
                Err(e) => {
                    tracing::warn!(file = %crt.display(), error = %e, "LAN certificate not used; asking for a new one")
                }
            }
        }
        Arc::new(lan)
    }

    /// What rustls asks for the certificate on each handshake.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }

    /// Wakes on every change (a name, an installed certificate, a refusal).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the cloud has named the hub (now or on an earlier run).
    pub fn has_name(&self) -> bool {
        self.lock().name.is_some()
    }

    /// Takes the name the cloud gave: kept in `DIR/lan/name`, with the dnsmasq line
    /// `interface-name=<name>,<interface>` in `DIR/lan/dnsmasq.conf` (dnsmasq then answers
    /// for the name with the interface's own address, whatever DHCP gave it).
    pub fn set_name(&self, name: &str) -> Result<(), LanCertError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !valid_name(&name) {
            return Err(LanCertError::BadName(name));
        }
        let fresh = {
            let mut s = self.lock();
            let fresh = s.name.as_deref() != Some(&name);
            if fresh {
                s.name = Some(name.clone());
                s.next_try = 0;
            }
            fresh
        };
        self.write_file("name", format!("{name}\n").as_bytes())?;
        let dnsmasq = format!(
            "# Written by outpost-relay: the hub's name on the village network (docs/operations.md).\n\
             interface-name={name},{}\n",
            self.interface
        );
        self.write_file("dnsmasq.conf", dnsmasq.as_bytes())?;
        if fresh {
            tracing::info!(%name, "the hub's LAN name");
            self.notify();
        }
        Ok(())
    }

    fn write_file(&self, file: &str, bytes: &[u8]) -> Result<(), LanCertError> {
        let path = self.dir.join(file);
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{file}.new"));
        let done = crate::private::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        done.map_err(|source| LanCertError::Write { path, source })
    }

    /// A new request for the hub's name, when one is due at `now`: no certificate for the
    /// name, or one within `renew_before` of its expiry, and no request waiting for its
    /// answer. Makes a fresh key (kept in memory until the certificate arrives) and
    /// returns the CSR (DER).
    pub fn request_if_due(&self, now: u64) -> Result<Option<Vec<u8>>, LanCertError> {
        let mut s = self.lock();
        let Some(name) = s.name.clone() else { return Ok(None) };
        if now < s.next_try || !self.due(&s, &name, now) {
            return Ok(None);
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| LanCertError::Key(e.to_string()))?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.clone()]).map_err(|e| LanCertError::Key(e.to_string()))?;
        // The subject names the hub, not rcgen's placeholder: a public CA checks that every
        // name in the request (the common name too) is one it was asked to certify.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name.clone());
        let csr = params.serialize_request(&key).map_err(|e| LanCertError::Key(e.to_string()))?.der().to_vec();
        s.pending = Some(Pending { name, key, csr: csr.clone() });
        s.next_try = now.saturating_add(self.retry_secs);
        Ok(Some(csr))
    }

    /// The request still waiting for its answer, if any, to be sent again at `now` (on a
    /// new link): it waits `retry_secs` again before a new request replaces it, so the
    /// answer to it still finds its key.
    pub fn resend_pending(&self, now: u64) -> Option<Vec<u8>> {
        let mut s = self.lock();
        let csr = s.pending.as_ref().map(|p| p.csr.clone())?;
        s.next_try = now.saturating_add(self.retry_secs);
        Some(csr)
    }

    fn due(&self, s: &State, name: &str, now: u64) -> bool {
        match &s.held {
            Some(h) if h.names.iter().any(|n| n == name) => now.saturating_add(self.renew_before_secs) >= h.not_after,
            _ => true,
        }
    }

    /// Seconds from `now` until a request may be due (the link's wake-up; changes wake
    /// it earlier). Without a name nothing is due until the cloud gives one.
    pub fn next_check(&self, now: u64) -> u64 {
        const IDLE: u64 = 86_400;
        let s = self.lock();
        let Some(name) = &s.name else { return IDLE };
        let retry = s.next_try.saturating_sub(now);
        let renew = match &s.held {
            Some(h) if h.names.contains(name) => h.not_after.saturating_sub(self.renew_before_secs).saturating_sub(now),
            _ => 0,
        };
        retry.max(renew).clamp(1, IDLE)
    }

    /// The cloud's answer to the request in flight: checked (the hub's name, the key made
    /// for the request), written to disk, and served from the next handshake on.
    pub fn install(&self, chain_pem: &str, now: u64) -> Result<(), LanCertError> {
        let pending = self.lock().pending.take().ok_or(LanCertError::Unasked)?;
        let key = PrivateKeyDer::try_from(pending.key.serialize_der()).map_err(|e| LanCertError::Key(e.into()))?;
        let (certified, held) = self.certified(chain_pem.as_bytes(), key, Some(&pending.name))?;
        // The key first: a crash between the two renames leaves a new key beside the old
        // certificate, which the next start reports as a mismatch and asks again.
        self.write_file("hub.key", pending.key.serialize_pem().as_bytes())?;
        self.write_file("hub.crt", chain_pem.as_bytes())?;
        tracing::info!(name = %pending.name, serial = %held.serial, not_after = held.not_after, "LAN certificate installed");
        self.put(certified, held, Some(now));
        {
            let mut s = self.lock();
            s.last_error = None;
            s.next_try = 0;
        }
        self.notify();
        Ok(())
    }

    /// The cloud could not serve the request now: the hub keeps what it has and asks
    /// again after `retry_secs`.
    pub fn refused(&self, code: &str, message: &str) {
        tracing::warn!(code, message, "the cloud could not get a LAN certificate now; asking again later");
        {
            let mut s = self.lock();
            s.pending = None;
            s.last_error = Some(format!("{code}: {message}"));
        }
        self.notify();
    }

    fn certified(
        &self,
        chain_pem: &[u8],
        key: PrivateKeyDer<'static>,
        name: Option<&str>,
    ) -> Result<(Arc<CertifiedKey>, Held), LanCertError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| LanCertError::Chain(e.to_string()))?;
        let leaf = chain.first().ok_or_else(|| LanCertError::Chain("no certificate".into()))?;
        let held = describe(leaf)?;
        if let Some(name) = name
            && !held.names.iter().any(|n| n == name)
        {
            return Err(LanCertError::WrongName { want: name.to_owned(), got: held.names });
        }
        let certified =
            CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| LanCertError::WrongKey(e.to_string()))?;
        Ok((Arc::new(certified), held))
    }

    fn put(&self, certified: Arc<CertifiedKey>, held: Held, installed: Option<u64>) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(certified);
        }
        let mut s = self.lock();
        s.held = Some(held);
        s.last_renewal = installed;
    }

    /// The name to redirect plain HTTP to: the hub's name while its certificate for it is
    /// valid at `now`. After months offline an expired certificate stops the redirect,
    /// so phones fall back to plain HTTP (with the page's warning) instead of an error.
    pub fn redirect_name(&self, now: u64) -> Option<String> {
        let s = self.lock();
        let (name, h) = (s.name.as_ref()?, s.held.as_ref()?);
        (h.names.contains(name) && h.not_before <= now && now < h.not_after).then(|| name.clone())
    }

    pub fn status(&self, now: u64) -> LanStatus {
        let s = self.lock();
        let for_name = s.held.as_ref().filter(|h| s.name.as_ref().is_none_or(|n| h.names.contains(n)));
        let state = match for_name {
            None => "none",
            Some(h) if h.not_before <= now && now < h.not_after => "valid",
            Some(_) => "expired",
        };
        LanStatus {
            name: s.name.clone(),
            state,
            not_after: for_name.map(|h| h.not_after),
            last_renewal: s.last_renewal,
            last_error: s.last_error.clone(),
        }
    }
}

/// The names, validity and serial of a certificate.
fn describe(leaf: &CertificateDer<'_>) -> Result<Held, LanCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| LanCertError::Parse(e.to_string()))?;
    let validity = cert.validity();
    let secs = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Held {
        names,
        not_before: secs(&validity.not_before),
        not_after: secs(&validity.not_after),
        serial: cert.raw_serial_as_string(),
    })
}

/// A DNS name of letters, digits and hyphens in dot-separated labels (no wildcard).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[derive(Debug)]
struct Resolver(Arc<LanCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None (no certificate yet) fails the handshake: the phone stays on plain HTTP.
        self.0.current.read().ok()?.clone()
    }
}

/// The hub's LAN HTTPS as the HTTP side sees it: the certificate and the port it is
/// served on.
#[derive(Debug, Clone)]
pub struct LanHttps {
    pub cert: Arc<LanCert>,
    /// The HTTPS listener's port (the configured one until it is bound).
    pub port: Arc<std::sync::atomic::AtomicU16>,
}

impl LanHttps {
    /// The HTTPS address phones are sent to while the certificate is valid at `now`.
    pub fn origin(&self, now: u64) -> Option<String> {
        let name = self.cert.redirect_name(now)?;
        let port = self.port.load(std::sync::atomic::Ordering::Relaxed);
        Some(if port == 443 { format!("https://{name}") } else { format!("https://{name}:{port}") })
    }
}

/// Plain-HTTP requests a browser navigates to or loads the app from (everything but the
/// endpoints machines and the already-open pages call: `/ws`, `/api/`, `/healthz`,
/// `/status.json`, `/metrics`) are redirected (307) to the hub's name over HTTPS while its
/// certificate is valid. With no valid certificate they are served as they are, and the
/// page itself warns that it is not a secure context. Temporary (307), never permanent:
/// browsers keep a 308 forever, and a phone must still reach the plain address after the
/// certificate expired offline.
pub async fn redirect(
    axum::extract::State(lan): axum::extract::State<LanHttps>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode, header};
    use axum::response::IntoResponse as _;
    let path = req.uri().path();
    let machine = path == "/ws"
        || path.starts_with("/api/")
        || matches!(path, "/healthz" | "/status.json" | "/metrics" | "/echo");
    if machine || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let Some(origin) = lan.origin(crate::clock::now_secs()) else { return next.run(req).await };
    let rest = req.uri().path_and_query().map_or("/", |p| p.as_str());
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, format!("{origin}{rest}"))]).into_response()
}

/// `DIR/lan`.
pub fn dir(relay_dir: &Path) -> PathBuf {
    relay_dir.join("lan")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lan(dir: &Path, renew_before_secs: u64) -> Arc<LanCert> {
        LanCert::open(LanCertSettings {
            dir: dir.to_path_buf(),
            interface: "wlan0".into(),
            renew_before_secs,
            retry_secs: 60,
        })
    }

    /// Signs the request in flight for `names` with a throwaway CA, valid for `days` from
    /// 2027-01-01; returns the chain and that day in Unix seconds.
    fn sign(l: &LanCert, names: &[&str], days: i64) -> (String, u64) {
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        params.not_before = rcgen::date_time_ymd(2027, 1, 1);
        params.not_after = params.not_before + time_days(days);
        let s = l.lock();
        let key = &s.pending.as_ref().unwrap_or_else(|| panic!("no request in flight")).key;
        let pem = params.signed_by(key, &issuer).unwrap_or_else(|e| panic!("{e}")).pem();
        (pem, u64::try_from(params.not_before.unix_timestamp()).unwrap_or(0))
    }

    fn time_days(days: i64) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(days).unwrap_or(0) * DAY)
    }

    /// 2027-01-02.
    const NOW: u64 = 1_798_848_000;
    const DAY: u64 = 86_400;

    #[test]
    fn a_certificate_for_the_name_is_installed_kept_and_renewed_when_due() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = lan(tmp.path(), 30 * DAY);
        assert_eq!(l.request_if_due(NOW).ok().flatten(), None, "no name, no request");
        l.set_name("Village-7.hubs.example.org.").unwrap_or_else(|e| panic!("{e}"));
        let conf = std::fs::read_to_string(tmp.path().join("dnsmasq.conf")).unwrap_or_default();
        assert!(conf.contains("interface-name=village-7.hubs.example.org,wlan0\n"), "{conf}");
        let csr = l.request_if_due(NOW).unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        // The request names the hub and nothing else, subject included (a public CA refuses
        // a name it was not asked for).
        let (_, req) = <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&csr)
            .unwrap_or_else(|e| panic!("{e}"));
        let cn: Vec<String> = req
            .certification_request_info
            .subject
            .iter_common_name()
            .filter_map(|c| c.as_str().ok().map(str::to_owned))
            .collect();
        assert_eq!(cn, vec!["village-7.hubs.example.org".to_owned()]);
        assert!(l.request_if_due(NOW + 1).ok().flatten().is_none(), "one request at a time");
        // A new link hours later sends the same request again; it is not replaced by a new
        // one (whose key the answer to the first would not fit).
        assert_eq!(l.resend_pending(NOW + 7200), Some(csr.clone()));
        assert!(l.request_if_due(NOW + 7201).ok().flatten().is_none());
        let (chain, start) = sign(&l, &["village-7.hubs.example.org"], 90);
        assert_eq!(start + DAY, NOW);
        l.install(&chain, NOW).unwrap_or_else(|e| panic!("{e}"));
        let st = l.status(NOW);
        assert_eq!((st.state, st.last_renewal), ("valid", Some(NOW)));
        assert_eq!(l.redirect_name(NOW).as_deref(), Some("village-7.hubs.example.org"));
        assert!(l.request_if_due(NOW).ok().flatten().is_none(), "89 days left: not due");

        // Another start reads it back; 30 days before expiry a renewal is due.
        let again = lan(tmp.path(), 30 * DAY);
        assert_eq!(again.status(NOW).state, "valid");
        assert!(again.request_if_due(NOW + 58 * DAY).ok().flatten().is_none(), "31 days left");
        assert!(again.request_if_due(NOW + 59 * DAY).ok().flatten().is_some(), "30 days left: due");
        // Expired: kept and reported, but plain HTTP is no longer redirected.
        assert_eq!(again.status(NOW + 90 * DAY).state, "expired");
        assert_eq!(again.redirect_name(NOW + 90 * DAY), None);
    }

    #[test]
    fn a_certificate_for_another_name_or_key_is_refused_and_nothing_changes() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = lan(tmp.path(), DAY);
        l.set_name("village-7.hubs.example.org").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(l.install("x", NOW), Err(LanCertError::Unasked)));
        // A chain for another hub's name, and one for another key.
        assert!(l.request_if_due(NOW).ok().flatten().is_some());
        let (theirs, _) = sign(&l, &["village-8.hubs.example.org"], 90);
        let err = l.install(&theirs, NOW);
        assert!(matches!(err, Err(LanCertError::WrongName { .. })), "{err:?}");
        let other = lan(&tmp.path().join("other"), DAY);
        other.set_name("village-7.hubs.example.org").unwrap_or_else(|e| panic!("{e}"));
        assert!(other.request_if_due(NOW).ok().flatten().is_some());
        let (other_key, _) = sign(&other, &["village-7.hubs.example.org"], 90);
        assert!(l.request_if_due(NOW + 61).ok().flatten().is_some(), "asked again after retry_secs");
        let err = l.install(&other_key, NOW);
        assert!(matches!(err, Err(LanCertError::WrongKey(_))), "{err:?}");
        assert_eq!(l.status(NOW).state, "none");
        assert!(!tmp.path().join("hub.crt").exists());
        assert!(l.set_name("*.hubs.example.org").is_err());
        assert!(l.set_name("localhost").is_err());
    }
}
