//! LAN certificates over the link (version 3): the cloud names the hub (`LanName`), the
//! hub sends a signing request when it needs a certificate (`CertRequest`), the cloud has
//! its CA issue one and sends it down (`CertIssued`) or says why not (`CertRefused`).
//!
//! The hub's side keeps its key and certificate in [`LanCert`]; the cloud's side is a
//! [`CertIssuer`] (the cloud crate's ACME client), so the engine knows nothing of ACME or
//! DNS providers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outpost_shared::uplink::control::{Control, MAX_CSR_LEN};
use tokio::sync::mpsc;

use super::LinkError;
use crate::clock::now_secs;
use crate::lan_cert::LanCert;

/// Why the cloud did not issue: a stable code and a sentence for the hub's status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}

/// What a future of [`CertIssuer::issue`] is.
pub type Issuing = Pin<Box<dyn Future<Output = Result<String, Refusal>> + Send>>;

/// The cloud's certificate authority for its hubs' LAN names.
pub trait CertIssuer: Send + Sync + std::fmt::Debug + 'static {
    /// The LAN name of `relay`, or `None` when it cannot have one (its id is not a DNS
    /// label).
    fn name_for(&self, relay: &str) -> Option<String>;
    /// A certificate chain (PEM) for `relay`'s signing request (DER). The request must ask
    /// for exactly `name_for(relay)`; the CA refuses anything else.
    fn issue(self: Arc<Self>, relay: String, csr: Vec<u8>) -> Issuing;
}

/// The certificate side of one link.
#[derive(Debug, Clone)]
pub(super) enum Certs {
    /// A hub that serves HTTPS under the name its cloud gives.
    Hub(Arc<LanCert>),
    /// A cloud that issues (`busy`: this link's request is being served).
    Cloud {
        issuer: Arc<dyn CertIssuer>,
        busy: Arc<AtomicBool>,
    },
    None,
}

impl Certs {
    pub(super) fn new(lan: Option<Arc<LanCert>>, issuer: Option<Arc<dyn CertIssuer>>) -> Self {
        match (lan, issuer) {
            (Some(lan), _) => Self::Hub(lan),
            (None, Some(issuer)) => Self::Cloud { issuer, busy: Arc::new(AtomicBool::new(false)) },
            (None, None) => Self::None,
        }
    }

    /// Cloud: the frame that names the hub, sent after the handshake.
    pub(super) fn name_frame(&self, relay: &str) -> Option<Control> {
        match self {
            Self::Cloud { issuer, .. } => issuer.name_for(relay).map(|name| Control::LanName { name }),
            _ => None,
        }
    }

    /// Handles one certificate frame from the peer. `hub_peer`: the peer is a hub (we
    /// are the cloud); `relay` names it.
    pub(super) fn on_frame(
        &self,
        frame: Control,
        hub_peer: bool,
        relay: &str,
        ctl: &mpsc::Sender<Control>,
    ) -> Result<(), LinkError> {
        match (frame, hub_peer, self) {
            (Control::CertRequest { csr }, true, cloud) => {
                cloud.request(relay, csr, ctl);
                Ok(())
            }
            (Control::CertRequest { .. }, false, _) => {
                Err(LinkError::Protocol("a cloud does not ask a hub for certificates".into()))
            }
            (_, true, _) => Err(LinkError::Protocol("a hub does not send names or certificates".into())),
            (Control::LanName { name }, false, Self::Hub(lan)) => {
                if let Err(e) = lan.set_name(&name) {
                    tracing::warn!(error = %e, "the LAN name from the cloud is not used");
                }
                Ok(())
            }
            (Control::CertIssued { chain_pem }, false, Self::Hub(lan)) => {
                match lan.install(&chain_pem, now_secs()) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the LAN certificate from the cloud is not used");
                        lan.refused("bad_certificate", &e.to_string());
                    }
                }
                Ok(())
            }
            (Control::CertRefused { code, message }, false, Self::Hub(lan)) => {
                lan.refused(&code, &message);
                Ok(())
            }
            // A hub with LAN HTTPS off ignores what its cloud offers.
            (_, false, _) => Ok(()),
        }
    }

    /// Cloud: serves a hub's request in a task of its own (an ACME order takes seconds to
    /// minutes), one per link at a time; the answer goes down the control stream.
    fn request(&self, relay: &str, csr: Vec<u8>, ctl: &mpsc::Sender<Control>) {
        let refuse = |code: &str, message: String| {
            let _ = ctl.try_send(Control::CertRefused { code: code.into(), message });
        };
        let Self::Cloud { issuer, busy } = self else {
            return refuse(
                "not_configured",
                "this cloud issues no LAN certificates (no [acme] section); the hub serves plain HTTP".into(),
            );
        };
        if csr.len() > MAX_CSR_LEN {
            return refuse("bad_request", format!("a signing request of {} bytes; at most {MAX_CSR_LEN}", csr.len()));
        }
        if busy.swap(true, Ordering::AcqRel) {
            // The answer to the request in progress serves this one too.
            tracing::debug!(relay, "a LAN certificate request while one is in progress; ignored");
            return;
        }
        let (issuer, busy, ctl, relay) = (issuer.clone(), busy.clone(), ctl.clone(), relay.to_owned());
        // Not tied to the link: an order cut short would leave its DNS record behind.
        tokio::spawn(async move {
            tracing::info!(%relay, "LAN certificate requested");
            let answer = match issuer.issue(relay.clone(), csr).await {
                Ok(chain_pem) => {
                    tracing::info!(%relay, "LAN certificate issued");
                    Control::CertIssued { chain_pem }
                }
                Err(Refusal { code, message }) => {
                    tracing::warn!(%relay, %code, %message, "LAN certificate not issued");
                    Control::CertRefused { code, message }
                }
            };
            busy.store(false, Ordering::Release);
            if ctl.send(answer).await.is_err() {
                tracing::info!(%relay, "the link closed before the certificate answer; the hub asks again");
            }
        });
    }
}

/// Hub: sends the request a previous link left unanswered, then a new one whenever one
/// is due (no certificate for the name, renewal time, retry after a refusal).
pub(super) async fn ask(lan: Arc<LanCert>, ctl: mpsc::Sender<Control>) -> LinkError {
    let mut changed = lan.subscribe();
    if let Some(csr) = lan.resend_pending(now_secs())
        && ctl.send(Control::CertRequest { csr }).await.is_err()
    {
        return LinkError::Shutdown;
    }
    loop {
        changed.borrow_and_update();
        match lan.request_if_due(now_secs()) {
            Ok(Some(csr)) => {
                tracing::info!("asking the cloud for a LAN certificate");
                if ctl.send(Control::CertRequest { csr }).await.is_err() {
                    return LinkError::Shutdown;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot make a LAN certificate request"),
        }
        let wait = Duration::from_secs(lan.next_check(now_secs()));
        tokio::select! {
            r = changed.changed() => if r.is_err() { return LinkError::Shutdown },
            () = tokio::time::sleep(wait) => {}
        }
    }
}
