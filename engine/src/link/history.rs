//! History the hub no longer holds, asked of the cloud over the link.
//!
//! Retention removes confirmed messages from the hub; a device paging back through a
//! room must still reach them. The hub's sessions ask [`CloudHistory::fetch`]; while a
//! link of version 2 or later is up, that sends a `HistoryRequest` on its control stream
//! and waits (at most [`ANSWER_TIMEOUT`]) for the `HistoryAnswer` with the same id. With
//! no such link, or no answer in time, the caller is told the history is unavailable and
//! says so to the device (`history_in_cloud`), never a silent short page. The cloud's
//! side, [`answer`], serves only rooms the hub serves.
//!
//! This module does not check a device's rights (the session did, as for local history).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outpost_shared::frames::Positioned;
use outpost_shared::uplink::batch::WireMessage;
use outpost_shared::uplink::control::{Control, HISTORY_ANSWER_BODY_BYTES, HISTORY_REQUEST_MAX};
use outpost_shared::{Cursor, Hlc, RoomId};
use outpost_storage::LogStore;
use tokio::sync::{mpsc, oneshot};

/// How long a device's history request waits for the cloud: a page over a slow uplink
/// takes a second or two; past this the device is better told to try later.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting for the cloud at once; more are answered "unavailable" at once (a
/// village of phones scrolling back must not queue without bound).
pub const MAX_PENDING: usize = 64;

/// Why the cloud's part of a page is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no link to the cloud that can answer history requests")]
    NoLink,
    #[error("too many history requests wait for the cloud")]
    Busy,
    #[error("the cloud did not answer in time")]
    TimedOut,
    #[error("the cloud refused: {0}")]
    Refused(String),
}

type Answer = Result<(Vec<WireMessage>, bool), String>;

#[derive(Default)]
struct State {
    link: Option<mpsc::Sender<Control>>,
    pending: HashMap<u64, oneshot::Sender<Answer>>,
}

/// The hub's handle on the cloud's history (one per hub; the uplink attaches its link).
#[derive(Default)]
pub struct CloudHistory {
    state: Mutex<State>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for CloudHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudHistory").finish_non_exhaustive()
    }
}

impl CloudHistory {
    /// A link that can carry history requests is up: they go on `ctl`.
    pub fn attach(&self, ctl: mpsc::Sender<Control>) {
        if let Ok(mut s) = self.state.lock() {
            s.link = Some(ctl);
        }
    }

    /// The link ended: requests waiting on it are answered "unavailable" (their senders
    /// are dropped).
    pub fn detach(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.link = None;
            s.pending.clear();
        }
    }

    /// Whether a request could be sent now.
    pub fn attached(&self) -> bool {
        self.state.lock().map(|s| s.link.is_some()).unwrap_or(false)
    }

    /// The cloud's messages of `room` stamped before `before_hlc`, oldest first, and
    /// whether older ones remain.
    pub async fn fetch(
        &self,
        room: RoomId,
        before_hlc: Hlc,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), Unavailable> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let ctl = {
            let mut s = self.state.lock().map_err(|_| Unavailable::NoLink)?;
            let Some(ctl) = s.link.clone() else { return Err(Unavailable::NoLink) };
            if s.pending.len() >= MAX_PENDING {
                return Err(Unavailable::Busy);
            }
            s.pending.insert(id, tx);
            ctl
        };
        let limit = limit.clamp(1, HISTORY_REQUEST_MAX);
        // Never waits: a control queue that is full means a link in trouble.
        let answer = if ctl.try_send(Control::HistoryRequest { id, room, before_hlc, limit }).is_ok() {
            tokio::time::timeout(ANSWER_TIMEOUT, rx).await.map_err(|_| Unavailable::TimedOut)
        } else {
            Err(Unavailable::NoLink)
        };
        if let Ok(mut s) = self.state.lock() {
            s.pending.remove(&id);
        }
        match answer? {
            // The link ended while waiting.
            Err(_) => Err(Unavailable::NoLink),
            Ok(Err(code)) => Err(Unavailable::Refused(code)),
            Ok(Ok((messages, more))) => {
                let mut out = Vec::with_capacity(messages.len());
                for m in messages {
                    // Not a position in this hub's log: the device pages on by stamp.
                    if let Ok(msg) = m.into_stored() {
                        out.push(Positioned { cursor: Cursor(0), msg });
                    }
                }
                Ok((out, more))
            }
        }
    }

    /// The cloud answered request `id` (an unknown id, one that timed out, is dropped).
    pub fn answered(&self, id: u64, answer: Answer) {
        let tx = self.state.lock().ok().and_then(|mut s| s.pending.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(answer);
        }
    }
}

/// The cloud's side: answers a hub's `HistoryRequest` from `store`, for a room the hub
/// serves (`allowed`), bounded in messages and bytes.
pub async fn answer<S: LogStore>(
    store: &S,
    allowed: bool,
    id: u64,
    room: RoomId,
    before_hlc: Hlc,
    limit: u32,
) -> Control {
    if !allowed {
        return Control::HistoryAnswer { id, messages: Vec::new(), more: false, error: Some("forbidden".into()) };
    }
    let limit = limit.clamp(1, HISTORY_REQUEST_MAX);
    match store.history_before_hlc(room, before_hlc, limit, HISTORY_ANSWER_BODY_BYTES).await {
        Ok((page, more)) => {
            let messages = page.into_iter().map(|p| WireMessage::from_stored(p.cursor, p.msg)).collect();
            Control::HistoryAnswer { id, messages, more, error: None }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read history for a hub");
            Control::HistoryAnswer { id, messages: Vec::new(), more: false, error: Some("internal".into()) }
        }
    }
}
