//! LAN certificates for the cloud's hubs, from an ACME CA (Let's Encrypt in production)
//! with DNS-01 challenges: docs/operations.md, "HTTPS on the LAN".
//!
//! A hub is named `<relay id>.<acme.domain>`. It sends a signing request over the link
//! (`outpost_engine::link::certs`); [`AcmeIssuer`] orders a certificate for exactly that
//! name, publishes the challenge's TXT record through the configured DNS provider (only
//! the cloud holds its credentials), finalizes the order with the hub's own request (the
//! hub's key never leaves it) and returns the chain. The CA refuses a request for any
//! other name than the order's, so a hub cannot obtain another hub's name.
//!
//! DNS providers: `exec` runs the operator's hook (`HOOK set NAME VALUE` and `HOOK clear
//! NAME VALUE`: any provider's API or `nsupdate` fits behind it), `challtestsrv` talks to
//! the management API of pebble's test DNS server (tests and staging only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use outpost_engine::link::certs::{CertIssuer, Issuing, Refusal};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::webhooks::client::{Client, Outcome};

/// `[acme]` in cloud.toml. Off while `directory` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The CA's ACME directory, e.g. `https://acme-v02.api.letsencrypt.org/directory`
    /// (Let's Encrypt's staging directory while trying it out). Empty: the cloud gets no
    /// LAN certificates and hubs serve plain HTTP (or an operator's own certificate).
    pub directory: String,
    /// A CA certificate (PEM) to trust for the ACME server's own HTTPS, for a private or
    /// test CA (pebble); relative to the cloud directory. Unset: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_ca: Option<PathBuf>,
    /// The domain hubs are named under: `<relay id>.<domain>`. Its DNS zone must be one
    /// the provider below can write `_acme-challenge` TXT records in.
    pub domain: String,
    /// The ACME account's contact, e.g. `mailto:it@hospital.example.org` (the CA writes
    /// there before certificates expire unrenewed). Empty: none.
    pub contact: String,
    /// How challenge records are published: `exec` (`dns_hook`) or `challtestsrv`.
    pub dns: String,
    /// `dns = "exec"`: a program run as `HOOK set NAME VALUE` to publish the TXT record
    /// NAME (e.g. `_acme-challenge.village-7.hubs.example.org`) with VALUE, and `HOOK
    /// clear NAME VALUE` afterwards; exit status 0 on success. It holds the provider's
    /// credentials; relative to the cloud directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_hook: Option<PathBuf>,
    /// `dns = "challtestsrv"`: the management address of pebble's test DNS server.
    pub challtestsrv_url: String,
    /// Seconds to wait after publishing a record before the CA is asked to look (for
    /// providers whose changes take a while to reach their name servers).
    pub dns_wait_secs: u64,
    /// A hub gets a new certificate at most this often, seconds (a CA's rate limits are
    /// shared by every hub of the domain; a hub that asks too often is refused).
    pub min_reissue_secs: u64,
    /// Longest one issuance may take, seconds.
    pub timeout_secs: u64,
    /// Orders in progress at once, over all hubs.
    pub concurrent: usize,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: String::new(),
            directory_ca: None,
            domain: String::new(),
            contact: String::new(),
            dns: "exec".into(),
            dns_hook: None,
            challtestsrv_url: String::new(),
            dns_wait_secs: 0,
            min_reissue_secs: 86_400,
            timeout_secs: 300,
            concurrent: 2,
        }
    }
}

impl AcmeConfig {
    pub fn enabled(&self) -> bool {
        !self.directory.is_empty()
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled() {
            return p;
        }
        if !self.directory.starts_with("https://") {
            p.push(format!("acme.directory = {:?} must be an https:// URL (the CA's ACME directory)", self.directory));
        }
        if !outpost_engine::lan_cert::valid_name(&format!("hub.{}", self.domain)) {
            p.push(format!(
                "acme.domain = {:?} is not a DNS domain like hubs.example.org (hubs are named <relay id>.<domain>)",
                self.domain
            ));
        }
        match self.dns.as_str() {
            "exec" if self.dns_hook.is_none() => {
                p.push("acme.dns = \"exec\" needs acme.dns_hook: the program that publishes TXT records".into())
            }
            "exec" => {}
            "challtestsrv" if !self.challtestsrv_url.starts_with("http://") => p.push(format!(
                "acme.challtestsrv_url = {:?} must be the http:// management address of pebble-challtestsrv",
                self.challtestsrv_url
            )),
            "challtestsrv" => {}
            other => p.push(format!("acme.dns = {other:?} is not a DNS provider; use \"exec\" or \"challtestsrv\"")),
        }
        if self.timeout_secs == 0 || self.concurrent == 0 {
            p.push("acme.timeout_secs and acme.concurrent must be at least 1".into());
        }
        p
    }
}

/// How challenge records get published.
#[derive(Debug)]
enum Dns {
    Exec(PathBuf),
    /// challtestsrv's `/set-txt` and `/clear-txt` (the webhooks' JSON client: timeouts).
    ChallTestSrv {
        set: Box<Client>,
        clear: Box<Client>,
    },
}

/// How long challtestsrv has to answer.
const CHALLTESTSRV_TIMEOUT: Duration = Duration::from_secs(10);

impl Dns {
    async fn set(&self, name: &str, value: &str) -> Result<(), String> {
        match self {
            Self::Exec(hook) => run_hook(hook, "set", name, value).await,
            Self::ChallTestSrv { set, .. } => {
                post(set, &serde_json::json!({ "host": format!("{name}."), "value": value })).await
            }
        }
    }

    async fn clear(&self, name: &str, value: &str) -> Result<(), String> {
        match self {
            Self::Exec(hook) => run_hook(hook, "clear", name, value).await,
            Self::ChallTestSrv { clear, .. } => post(clear, &serde_json::json!({ "host": format!("{name}.") })).await,
        }
    }
}

async fn run_hook(hook: &Path, verb: &str, name: &str, value: &str) -> Result<(), String> {
    let out = tokio::process::Command::new(hook)
        .args([verb, name, value])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run the DNS hook {}: {e}", hook.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("the DNS hook {} {verb} failed ({}): {}", hook.display(), out.status, err.trim()))
    }
}

async fn post(client: &Client, body: &serde_json::Value) -> Result<(), String> {
    match client.post(&[], Bytes::from(body.to_string())).await {
        Outcome::Delivered(_) => Ok(()),
        other => Err(format!("challtestsrv: {other}")),
    }
}

/// The last certificate a hub got: a repeated request (the answer was lost with a link)
/// is answered from here, and `min_reissue_secs` counts from `at`.
#[derive(Debug, Default)]
struct Last {
    csr: [u8; 32],
    chain: String,
    at: u64,
}

/// The cloud's [`CertIssuer`]: one ACME account (kept in `DIR/keys/acme-account.json`),
/// a bounded number of orders at once, one per hub.
pub struct AcmeIssuer {
    cfg: AcmeConfig,
    /// `directory_ca`, resolved against the cloud directory.
    directory_ca: Option<PathBuf>,
    account_file: PathBuf,
    account: tokio::sync::Mutex<Option<Account>>,
    dns: Dns,
    slots: Semaphore,
    hubs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Last>>>>>,
}

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("directory", &self.cfg.directory)
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

impl AcmeIssuer {
    /// The issuer of `cfg` (which must be enabled and valid), for the cloud in `dir`.
    pub fn new(cfg: &AcmeConfig, dir: &Path, account_file: PathBuf) -> Result<Arc<Self>, String> {
        let dns = match cfg.dns.as_str() {
            "challtestsrv" => {
                let base = cfg.challtestsrv_url.trim_end_matches('/');
                let client = |path: &str| {
                    let uri = format!("{base}/{path}")
                        .parse()
                        .map_err(|e| format!("acme.challtestsrv_url = {:?}: {e}", cfg.challtestsrv_url))?;
                    Client::new(uri, None, CHALLTESTSRV_TIMEOUT, CHALLTESTSRV_TIMEOUT)
                };
                Dns::ChallTestSrv { set: Box::new(client("set-txt")?), clear: Box::new(client("clear-txt")?) }
            }
            _ => Dns::Exec(dir.join(cfg.dns_hook.clone().unwrap_or_default())),
        };
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            directory_ca: cfg.directory_ca.as_ref().map(|p| dir.join(p)),
            account_file,
            account: tokio::sync::Mutex::new(None),
            dns,
            slots: Semaphore::new(cfg.concurrent.max(1)),
            hubs: Mutex::new(HashMap::new()),
        }))
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, String> {
        match &self.directory_ca {
            Some(ca) => Account::builder_with_root(ca).map_err(|e| format!("acme.directory_ca {}: {e}", ca.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        }
    }

    /// The ACME account: loaded from its file, or registered once and saved (0600).
    async fn account(&self) -> Result<Account, String> {
        let mut held = self.account.lock().await;
        if let Some(a) = held.as_ref() {
            return Ok(a.clone());
        }
        let account = match std::fs::read(&self.account_file) {
            Ok(bytes) => {
                let creds: AccountCredentials = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not ACME account credentials: {e}", self.account_file.display()))?;
                self.builder()?.from_credentials(creds).await.map_err(|e| format!("the ACME account: {e}"))?
            }
            Err(_) => {
                let contact: Vec<&str> =
                    if self.cfg.contact.is_empty() { Vec::new() } else { vec![self.cfg.contact.as_str()] };
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, creds) = self
                    .builder()?
                    .create(&new, self.cfg.directory.clone(), None)
                    .await
                    .map_err(|e| format!("cannot register with the ACME CA at {}: {e}", self.cfg.directory))?;
                let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
                outpost_engine::private::write(&self.account_file, &json)
                    .map_err(|e| format!("cannot save {}: {e}", self.account_file.display()))?;
                tracing::info!(directory = %self.cfg.directory, id = account.id(), "ACME account registered");
                account
            }
        };
        *held = Some(account.clone());
        Ok(account)
    }

    async fn issue_for(&self, relay: String, csr: Vec<u8>) -> Result<String, Refusal> {
        let name = self.name_for(&relay).ok_or_else(|| {
            Refusal::new("bad_name", format!("relay id {relay:?} is not a DNS label; it cannot be named"))
        })?;
        let hash: [u8; 32] = Sha256::digest(&csr).into();
        let slot = {
            let mut hubs = self.hubs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            hubs.entry(relay.clone()).or_default().clone()
        };
        // One order per hub at a time; a repeat of the same request waits for the first.
        let mut last = slot.lock().await;
        let now = outpost_engine::clock::now_secs();
        if let Some(l) = last.as_ref() {
            if l.csr == hash {
                return Ok(l.chain.clone());
            }
            let next = l.at.saturating_add(self.cfg.min_reissue_secs);
            if now < next {
                return Err(Refusal::new(
                    "too_soon",
                    format!(
                        "this hub got a certificate {} s ago; the next after {} s more (acme.min_reissue_secs)",
                        now - l.at,
                        next - now
                    ),
                ));
            }
        }
        let _running =
            self.slots.acquire().await.map_err(|_| Refusal::new("shutting_down", "the cloud is stopping"))?;
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let chain = match tokio::time::timeout(timeout, self.order(&name, &csr)).await {
            Ok(Ok(chain)) => chain,
            Ok(Err(e)) => return Err(Refusal::new("acme_failed", e)),
            Err(_) => {
                return Err(Refusal::new("acme_timeout", format!("no certificate within {} s", self.cfg.timeout_secs)));
            }
        };
        *last = Some(Last { csr: hash, chain: chain.clone(), at: now });
        Ok(chain)
    }

    /// One ACME order for `name`, finalized with the hub's `csr`. The challenge records
    /// are removed whatever the outcome.
    async fn order(&self, name: &str, csr: &[u8]) -> Result<String, String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_owned())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("new order: {e}"))?;
        let mut published = Vec::new();
        let result = async {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| format!("authorization: {e}"))?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("authorization for {name} is {other:?}")),
                }
                let mut ch = a
                    .challenge(ChallengeType::Dns01)
                    .ok_or_else(|| format!("the CA offers no dns-01 challenge for {name}"))?;
                let record = format!("_acme-challenge.{}", ch.identifier());
                let value = ch.key_authorization().dns_value();
                self.dns.set(&record, &value).await?;
                published.push((record, value));
                if self.cfg.dns_wait_secs > 0 {
                    tokio::time::sleep(Duration::from_secs(self.cfg.dns_wait_secs)).await;
                }
                ch.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(self.cfg.timeout_secs));
            let status = order.poll_ready(&retry).await.map_err(|e| format!("order: {e}"))?;
            if status != OrderStatus::Ready {
                return Err(format!("the CA did not validate {name}: order {status:?}"));
            }
            order
                .finalize_csr(csr)
                .await
                .map_err(|e| format!("finalize (the hub's request must name exactly {name}): {e}"))?;
            order.poll_certificate(&retry).await.map_err(|e| format!("certificate: {e}"))
        }
        .await;
        for (record, value) in published {
            if let Err(e) = self.dns.clear(&record, &value).await {
                tracing::warn!(%record, error = %e, "cannot remove the challenge record");
            }
        }
        result
    }
}

impl CertIssuer for AcmeIssuer {
    fn name_for(&self, relay: &str) -> Option<String> {
        let name = format!("{}.{}", relay.to_ascii_lowercase(), self.cfg.domain);
        // One label: a relay id with dots would claim a deeper name.
        (!relay.contains('.') && outpost_engine::lan_cert::valid_name(&name)).then_some(name)
    }

    fn issue(self: Arc<Self>, relay: String, csr: Vec<u8>) -> Issuing {
        Box::pin(async move { self.issue_for(relay, csr).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> AcmeConfig {
        AcmeConfig {
            directory: "https://acme.example.org/dir".into(),
            domain: "hubs.example.org".into(),
            dns_hook: Some("dns-hook".into()),
            ..AcmeConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_every_missing_piece_is_named() {
        assert!(!AcmeConfig::default().enabled());
        assert!(AcmeConfig::default().problems().is_empty());
        assert!(enabled().problems().is_empty(), "{:?}", enabled().problems());
        let bad = AcmeConfig {
            directory: "http://acme.example.org/dir".into(),
            domain: "not a domain".into(),
            dns_hook: None,
            ..AcmeConfig::default()
        };
        let p = bad.problems().join("\n");
        for expected in ["must be an https:// URL", "is not a DNS domain", "needs acme.dns_hook"] {
            assert!(p.contains(expected), "{p}");
        }
        let other = AcmeConfig { dns: "route53".into(), ..enabled() };
        assert!(other.problems().join("").contains("is not a DNS provider"));
    }

    #[test]
    fn a_hub_is_named_under_the_domain_only_when_its_id_is_one_dns_label() {
        let issuer = AcmeIssuer::new(&enabled(), Path::new("/tmp"), PathBuf::from("/tmp/account.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(issuer.name_for("village-7").as_deref(), Some("village-7.hubs.example.org"));
        assert_eq!(issuer.name_for("a.b"), None, "a dot would claim a deeper name");
        assert_eq!(issuer.name_for("Village 7"), None);
        assert_eq!(issuer.name_for("-x"), None);
    }
}
