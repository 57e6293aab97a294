//! One device connection: handshake, replay, live traffic, keep-alive.
//!
//! A session is one task that owns its socket. It answers `hello` (token checked offline),
//! replays what the device missed straight from the log a chunk at a time, and serves in
//! strict priority: emergency lane, `stored` answers, everything else — reading and acting
//! on the device's frames between replay chunks too — and reads the
//! socket only while it has room for another send in flight, which is how a fast sender
//! feels back-pressure instead of growing the hub's memory.
//!
//! Delivery bookkeeping (what was written in order, what went ahead, what an `ack` may
//! count) is `outpost_shared::delivery`, a state machine this only feeds. When the router
//! reports that live entries were dropped (slow reader), the session re-reads the log from
//! its watermark.

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use outpost_shared::delivery::{self, Delivery};
use outpost_shared::frames::{
    ErrorFrame, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, Hello, PresenceEvent, PresenceStatus, Resync, Stored,
    TokenRenewed, TypingEvent, Welcome,
};
use outpost_shared::{Action, Claims, ClientFrame, Cursor, ErrorCode, RoomId, ServerFrame};
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::hub::{Hub, REVOKED};
use crate::mailbox::Live;
use crate::mailbox::{Item, Mailbox};
use crate::ratelimit::TokenBucket;
use crate::router::SessionLink;
use crate::submit::{self, Sender};
use outpost_storage::{AuditEvent, AuditKind, ReplayQuery};

/// WebSocket close codes used by the hub.
mod history;
mod incoming;

pub(crate) mod close {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const UNAUTHENTICATED: u16 = 4001;
    pub(crate) const HELLO_TIMEOUT: u16 = 4008;
    pub(crate) const IDLE: u16 = 4009;
}

/// Entries read from the log per replay page.
const REPLAY_PAGE: usize = 512;
/// Frames written before forcing a flush even if more are ready.
const FLUSH_EVERY: usize = 64;

/// Why a session ended (for logs).
#[derive(Debug)]
enum End {
    Closed,
    Socket(String),
}

type Step = Result<(), End>;

fn socket_err(e: impl std::fmt::Display) -> End {
    End::Socket(e.to_string())
}

fn error_frame(code: ErrorCode, message: impl Into<String>, id: Option<outpost_shared::MessageId>) -> Utf8Bytes {
    Utf8Bytes::from(ServerFrame::Error(ErrorFrame::new(code, message).with_id(id)).encode())
}

async fn close_with(ws: &mut WebSocket, code: u16, reason: &str) {
    let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason.to_owned()) }))).await;
}

/// Serves one upgraded connection until it ends or the hub shuts down.
///
/// The returned future and the session it serves are what a connected phone costs while
/// idle (BENCHMARKS.md, memory), so neither keeps room for anything else: the handshake
/// (waiting for `hello`, checking the token, the welcome) runs in its own allocation,
/// freed when it ends — inline, its largest state (the socket beside the hello timeout
/// and the token check) would stay reserved for the life of the connection — and the
/// session comes back boxed, since a session moved out of the handshake's result into
/// the future serving it would be reserved in the future twice.
pub(crate) fn serve<S: Storage>(
    hub: Arc<Hub<S>>,
    ws: WebSocket,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    let handshake = Box::pin(handshake(hub, ws, peer));
    async move {
        if let Some((session, span)) = handshake.await {
            tracing::trace!(bytes = std::mem::size_of_val(&*session), "session");
            tracing::Instrument::instrument(session.serve(), span).await;
        }
    }
}

/// `hello` (within `limits.hello_timeout_secs`), the token check, then the session opens
/// (welcome, presence). None when the connection ended or was refused.
async fn handshake<S: Storage>(
    hub: Arc<Hub<S>>,
    mut ws: WebSocket,
    peer: SocketAddr,
) -> Option<(Box<Session<S>>, tracing::Span)> {
    let hello_timeout = Duration::from_secs(hub.config.limits.hello_timeout_secs);
    let hello = tokio::select! {
        biased;
        () = hub.shutdown.cancelled() => { close_with(&mut ws, close::GOING_AWAY, "hub shutting down").await; return None; }
        r = tokio::time::timeout(hello_timeout, wait_hello(&hub, &mut ws)) => r,
    };
    let hello = match hello {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(_) => {
            tracing::debug!(%peer, "no hello in time");
            let reason = format!("send hello within {} s of connecting", hello_timeout.as_secs());
            close_with(&mut ws, close::HELLO_TIMEOUT, &reason).await;
            return None;
        }
    };
    let claims = match admit(&hub, &hello, peer).await {
        Ok(c) => c,
        Err((code, reason)) => {
            let _ = ws.send(Message::Text(error_frame(code, reason, None))).await;
            close_with(&mut ws, close::UNAUTHENTICATED, code.as_str()).await;
            return None;
        }
    };
    let span = tracing::info_span!("session", user = %claims.sub, device = %hello.device, %peer);
    let session = tracing::Instrument::instrument(Session::open(hub, ws, claims, hello, peer), span.clone()).await;
    Some((Box::new(session), span))
}

/// Checks a `hello`'s token (see [`Hub::verify_token`]); every sign-in is audited.
async fn admit<S: Storage>(hub: &Hub<S>, hello: &Hello, peer: SocketAddr) -> Result<Claims, (ErrorCode, String)> {
    let refusal = AuditEvent::new(AuditKind::LoginRefused, "").device(hello.device.as_str()).peer(peer);
    let claims = hub.verify_token(&hello.token, refusal).await.inspect_err(|(_, reason)| {
        tracing::info!(%peer, device = %hello.device, error = %reason, "hello refused");
    })?;
    let login =
        AuditEvent::new(AuditKind::Login, format!("token {}", claims.jti)).by(&claims).device(hello.device.as_str());
    hub.store.audit(login.peer(peer)).await;
    Ok(claims)
}

/// Reads frames until a `hello`. Bad frames get an error and the wait goes on; any other
/// frame means the client skipped the handshake and is closed with 4001.
async fn wait_hello<S: Storage>(hub: &Hub<S>, ws: &mut WebSocket) -> Option<Hello> {
    loop {
        let msg = ws.recv().await?.ok()?;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => {
                let _ = ws.flush().await;
                return None;
            }
            Message::Binary(_) => {
                let _ = ws.send(Message::Text(error_frame(ErrorCode::BadFrame, "send a JSON hello first", None))).await;
                continue;
            }
            _ => continue,
        };
        if text.len() > hub.config.limits.max_frame_bytes {
            let _ =
                ws.send(Message::Text(error_frame(ErrorCode::TooLarge, "the hello frame is too large", None))).await;
            continue;
        }
        match ClientFrame::decode(text.as_str()) {
            Ok(ClientFrame::Hello(h)) => return Some(h),
            Ok(ClientFrame::Ping) => {
                let _ = ws.send(Message::Text(Utf8Bytes::from(ServerFrame::Pong.encode()))).await;
            }
            Ok(other) => {
                let msg = format!("send hello before {}", other.type_name());
                let _ = ws.send(Message::Text(error_frame(ErrorCode::Unauthenticated, msg, None))).await;
                close_with(ws, close::UNAUTHENTICATED, "unauthenticated").await;
                return None;
            }
            Err(e) => {
                let _ = ws.send(Message::Text(error_frame(e.code, e.message, e.id))).await;
            }
        }
    }
}

struct Session<S: Storage> {
    hub: Arc<Hub<S>>,
    ws: WebSocket,
    claims: Claims,
    peer: SocketAddr,
    rooms: Arc<[RoomId]>,
    link: Arc<SessionLink>,
    /// What waits to be written to this device (shared with the router via `link`).
    mailbox: Arc<Mailbox>,
    /// What has been written to this device in order, and ahead of it.
    delivery: Delivery,
    own_visible_until: Cursor,
    bucket: TokenBucket,
    started: Instant,
    last_heard: Instant,
    unflushed: usize,
    /// The log replay in progress, if any (boxed: a caught-up phone pays one pointer).
    replay: Option<Box<Replaying>>,
    /// A new device's window for its first replay: each room from its floor (None: all).
    floors: Option<Arc<[(RoomId, Cursor)]>>,
    /// Set while a device's frame is handled during a replay: what the session writes in
    /// answer is held until the replay ends.
    holding: bool,
    /// The token the device signed in with and the moment it passes half its life, until
    /// the session has tried to renew it (once per session); None where this server
    /// cannot renew. Boxed: in the session, one pointer.
    renewal: Option<Box<PendingRenewal>>,
}

/// A renewal the session will try when `at` comes.
struct PendingRenewal {
    token: String,
    at: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// A replay page being read from the log (boxed: the session holds it between polls).
type PageRead =
    std::pin::Pin<Box<dyn Future<Output = Result<outpost_storage::Replay, outpost_storage::StoreError>> + Send>>;

/// A replay interleaved with the session's other work: between chunks of frames the
/// session reads the device's frames (an emergency it sends reaches the room and the
/// uplink at once) and writes emergencies for it ahead, instead of making both wait for a
/// week of missed messages.
#[derive(Default)]
struct Replaying {
    /// The page being read from the log.
    page: Option<PageRead>,
    /// Frames of the last page not yet written, in cursor order.
    frames: std::collections::VecDeque<(Cursor, String)>,
    /// Where the last page's scan ended: the watermark once its frames are all written.
    scanned_to: Cursor,
    /// The last page was short: once its frames are written the replay has caught up.
    done: bool,
    /// Answers to the device's frames (`pong`, errors, history) written after the replay.
    held: std::collections::VecDeque<Message>,
}

/// What the session's wait may take this time round.
#[derive(Clone, Copy)]
struct Wait {
    /// Whether there is room to act on another of the device's frames.
    can_read: bool,
    /// A replay runs: only signals and emergencies come from the mailbox.
    replaying: bool,
    /// Replayed frames wait to be written.
    frames_ready: bool,
}

/// What the session's wait ended with, most urgent first (see [`Session::poll_event`]).
enum Event {
    Mail(Item),
    Frame(Option<Result<Message, axum::Error>>),
    ReplayChunk,
    Page(Result<outpost_storage::Replay, outpost_storage::StoreError>),
    Renew,
    Tick,
}

impl<S: Storage> Session<S> {
    async fn open(hub: Arc<Hub<S>>, ws: WebSocket, claims: Claims, hello: Hello, peer: SocketAddr) -> Self {
        // A role that may neither take part in nor read rooms (admin, by default) is
        // subscribed to none of them: it receives no health data, live or replayed.
        let rooms: Arc<[RoomId]> =
            if hub.config.policy.may_receive(&claims) { Arc::from(claims.rooms.clone()) } else { Arc::from([]) };
        hub.store.note_rooms(&rooms).await;
        let limits = &hub.config.limits;
        let mailbox = Mailbox::new(limits.outbound_queue, limits.max_inflight_per_device);
        let (link, came_online) =
            hub.router.register(claims.sub.clone(), hello.device.clone(), rooms.clone(), mailbox.clone());
        // The hub-wide signals reach registered sessions only: one raised while this
        // device was signing in would be missed, so look once now.
        if hub.shutdown.is_cancelled() {
            mailbox.close();
        }
        if hub.store.is_revoked(&claims) {
            mailbox.recheck();
        }
        let head = hub.store.head();
        let epoch = hub.store.epoch().clone();
        // Decide where replay starts: a foreign epoch or a cursor from the future means the
        // device's copy belongs to another database: full replay after `resync`.
        let (resync, watermark, own_visible_until) = match (&hello.epoch, hello.cursor) {
            (Some(e), _) if *e != epoch => (true, Cursor(0), head),
            (_, Some(c)) if c > head => (true, Cursor(0), head),
            (_, Some(c)) => (false, c, Cursor(0)),
            (_, None) => (false, Cursor(0), head),
        };
        let now = Instant::now();
        let bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst, Duration::ZERO);
        // Renewal is checked at sign-in (a token already past half its life: the timer
        // fires at once) and at the half-life instant, not polled.
        let renewal = hub.renewal.enabled().then(|| {
            let wait = claims.half_life().saturating_sub(now_ms() / 1000);
            Box::new(PendingRenewal {
                token: hello.token.clone(),
                at: Box::pin(tokio::time::sleep_until(now + Duration::from_secs(wait))),
            })
        });
        let mut s = Self {
            rooms,
            link,
            mailbox,
            delivery: Delivery::new(watermark),
            own_visible_until,
            bucket,
            started: now,
            last_heard: now,
            unflushed: 0,
            replay: Some(Box::default()),
            floors: None,
            holding: false,
            renewal,
            peer,
            ws,
            claims,
            hub,
        };
        let welcome = ServerFrame::Welcome(Welcome {
            epoch: epoch.clone(),
            cursor: head,
            user: s.claims.sub.clone(),
            rooms: s.rooms.to_vec(),
            role: Some(s.claims.role),
            encrypted: s.rooms.iter().filter(|r| s.hub.config.policy.is_encrypted(r)).cloned().collect(),
            pruned_through: s.hub.store.retention().await.map(|r| Cursor(r.pruned_through)).filter(|c| c.0 > 0),
        });
        s.feed(Utf8Bytes::from(welcome.encode())).await.ok();
        if resync {
            tracing::info!(cursor = ?hello.cursor, epoch = ?hello.epoch, "device state is foreign; resync");
            s.feed(Utf8Bytes::from(ServerFrame::Resync(Resync { epoch, cursor: head }).encode())).await.ok();
        }
        // How far this person has read each room, on whichever device.
        let marks = match s.hub.store.read_marks(s.claims.sub.clone()).await {
            Ok(marks) => marks.into_iter().filter(|(r, _)| s.rooms.contains(r)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the user's read marks; unread counts start from this device's own");
                Vec::new()
            }
        };
        for (room, cursor) in &marks {
            let f = ServerFrame::ReadMark(outpost_shared::frames::ReadMark { room: room.clone(), cursor: *cursor });
            s.feed(Utf8Bytes::from(f.encode())).await.ok();
        }
        // A new device gets a window of each room, not its whole history.
        if hello.cursor.is_none() && !resync {
            s.floors = window(&s.hub, &s.rooms, &marks).await;
        }
        if came_online {
            let frame = presence(&s.claims, PresenceStatus::Online, None);
            s.hub.router.to_co_members(&s.claims.sub, &s.rooms, frame);
        }
        for other in s.hub.router.online_in(&s.claims.sub, &s.rooms) {
            let f =
                ServerFrame::Presence(PresenceEvent { user: other, status: PresenceStatus::Online, last_seen: None });
            s.feed(Utf8Bytes::from(f.encode())).await.ok();
        }
        s
    }

    /// Runs the session to its end, then leaves the router.
    async fn serve(mut self: Box<Self>) {
        // Measured on a future made only to be measured (an async fn does nothing until
        // polled): binding the awaited future to a name would reserve it twice here.
        tracing::trace!(bytes = std::mem::size_of_val(&self.run()), "session run future");
        let end = self.run().await;
        Box::pin(self.finish(end)).await;
    }

    async fn run(&mut self) -> End {
        // An idle phone costs this future, so it holds no future per source: the wait is
        // `poll_event` over the mailbox (which also carries the hub's close and recheck
        // signals), the socket, the replay and the keep-alive timer. The rarely taken,
        // deep paths (a replay chunk, handling a frame, a revocation) are boxed: an async
        // fn is as large as its largest await point (BENCHMARKS.md, memory).
        let limits = &self.hub.config.limits;
        let idle = Duration::from_secs(limits.idle_timeout_secs);
        let mut ping = tokio::time::interval(Duration::from_secs(limits.ping_interval_secs));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            // Taken only between replays: entries dropped while a replay runs may be newer
            // than its last page, so the flag stays up for the replay after it.
            if self.replay.is_none() && self.link.take_lagged() {
                self.replay = Some(Box::default());
            }
            if let Some(held) = self.next_replay_step() {
                for m in held {
                    if let Err(e) = self.feed_msg(m).await {
                        return e;
                    }
                }
            }
            if self.unflushed > 0
                && (self.unflushed >= FLUSH_EVERY || (self.mailbox.is_empty() && !self.has_replay_frames()))
                && let Err(e) = self.flush().await
            {
                return e;
            }
            // Held answers count against the same bound as queued ones.
            let held = self.replay.as_ref().map_or(0, |r| r.held.len());
            let can_read = held < self.hub.config.limits.max_inflight_per_device && self.mailbox.has_direct_room();
            let replaying = self.replay.is_some();
            let wait = Wait { can_read, replaying, frames_ready: self.has_replay_frames() };
            let event = std::future::poll_fn(|cx| self.poll_event(cx, &mut ping, wait)).await;
            let step = match event {
                Event::Mail(Item::Close) => {
                    let _ = self.flush().await;
                    close_with(&mut self.ws, close::GOING_AWAY, "hub shutting down").await;
                    return End::Closed;
                }
                Event::Mail(Item::Recheck) => Box::pin(self.recheck_token()).await,
                Event::Mail(Item::Urgent(live)) => self.live(live, true).await,
                Event::Mail(Item::Direct(text)) => self.feed(text).await,
                Event::Mail(Item::Normal(live)) => self.live(live, false).await,
                Event::Frame(msg) => {
                    self.holding = replaying;
                    let step = Box::pin(self.incoming(msg)).await;
                    self.holding = false;
                    step
                }
                Event::ReplayChunk => Box::pin(self.replay_chunk()).await,
                Event::Page(page) => Box::pin(self.replay_page(page)).await,
                Event::Renew => Box::pin(self.renew()).await,
                Event::Tick => {
                    if self.last_heard.elapsed() > idle {
                        close_with(&mut self.ws, close::IDLE, "no traffic for too long").await;
                        return End::Closed;
                    }
                    self.feed_msg(Message::Ping(Default::default())).await
                }
            };
            if let Err(e) = step {
                return e;
            }
        }
    }

    /// The session's wait, biased in this order: the mailbox (close, recheck, then
    /// emergencies, answers, live traffic), the device's frames, the replay's next chunk
    /// and page, keep-alive. While a replay runs the mailbox gives only signals and
    /// emergencies (sent ahead); answers (`stored`, `pong`, errors) and live traffic wait
    /// for the replay to end, so the device still sees welcome, the replay, then the
    /// rest, as the protocol says. Its frames are read and acted on meanwhile: an
    /// emergency it sends is stored and fanned out at once.
    fn poll_event(&mut self, cx: &mut Context<'_>, ping: &mut tokio::time::Interval, wait: Wait) -> Poll<Event> {
        if let Poll::Ready(item) = self.mailbox.poll_next(cx, wait.replaying) {
            return Poll::Ready(Event::Mail(item));
        }
        if wait.can_read
            && let Poll::Ready(msg) = self.ws.poll_next_unpin(cx)
        {
            return Poll::Ready(Event::Frame(msg));
        }
        if wait.frames_ready {
            return Poll::Ready(Event::ReplayChunk);
        }
        if let Some(page) = self.replay.as_mut().and_then(|r| r.page.as_mut())
            && let Poll::Ready(p) = page.as_mut().poll(cx)
        {
            return Poll::Ready(Event::Page(p));
        }
        if let Some(r) = self.renewal.as_mut()
            && r.at.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Renew);
        }
        if ping.poll_tick(cx).is_ready() {
            return Poll::Ready(Event::Tick);
        }
        Poll::Pending
    }

    /// The token passed half its life: send the device a renewed one (if this server can
    /// make one and the token is not revoked) and carry on under it. Tried once.
    async fn renew(&mut self) -> Step {
        let Some(pending) = self.renewal.take() else { return Ok(()) };
        let device = self.link.device.clone();
        let Some(r) = self.hub.renew_token(&pending.token, &self.claims, device.as_str()).await else {
            tracing::debug!("token past half its life; no renewal here");
            return Ok(());
        };
        tracing::info!(jti = %r.claims.jti, exp = r.claims.exp, "token renewed");
        let frame = ServerFrame::Token(TokenRenewed { token: r.token, expires_at: r.claims.exp });
        self.claims = r.claims;
        self.feed(Utf8Bytes::from(frame.encode())).await
    }

    fn has_replay_frames(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| !r.frames.is_empty())
    }

    /// Between chunks: once a page's frames are written, the watermark moves to where its
    /// scan ended, and either the next page is read or the replay is over (then the
    /// answers it held are returned, to be written before anything else).
    fn next_replay_step(&mut self) -> Option<std::collections::VecDeque<Message>> {
        let r = self.replay.as_mut()?;
        if !r.frames.is_empty() || r.page.is_some() {
            return None;
        }
        self.delivery.page_written(r.scanned_to);
        if r.done {
            let held = std::mem::take(&mut r.held);
            self.replay = None;
            self.floors = None;
            self.delivery.caught_up();
            return Some(held);
        }
        let q = ReplayQuery {
            after: self.delivery.watermark(),
            rooms: self.rooms.clone(),
            user: self.claims.sub.clone(),
            own_device: self.link.device.clone(),
            own_visible_until: self.own_visible_until,
            limit: REPLAY_PAGE,
            max_bytes: self.hub.config.limits.replay_page_bytes,
            floors: self.floors.clone(),
        };
        let store = self.hub.store.clone();
        r.page = Some(Box::pin(async move { store.replay(q).await }));
        None
    }

    /// A page arrived from the log: its frames wait to be written, a chunk at a time.
    async fn replay_page(&mut self, page: Result<outpost_storage::Replay, outpost_storage::StoreError>) -> Step {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "replay failed");
                self.feed(error_frame(ErrorCode::Internal, "replay failed; reconnect to resume", None)).await?;
                self.flush().await?;
                return Err(End::Socket(e.to_string()));
            }
        };
        if let Some(r) = self.replay.as_mut() {
            r.page = None;
            r.frames = page.frames.into();
            r.scanned_to = page.scanned_to;
            r.done = page.done;
        }
        Ok(())
    }

    /// Writes up to [`FLUSH_EVERY`] replayed frames, skipping those already sent ahead.
    async fn replay_chunk(&mut self) -> Step {
        for _ in 0..FLUSH_EVERY {
            let Some((cursor, frame)) = self.replay.as_mut().and_then(|r| r.frames.pop_front()) else { break };
            // Written in order: everything up to here that this device may see is on its
            // way, so an `ack` may count up to it.
            if self.delivery.replayed(cursor) {
                self.feed(Utf8Bytes::from(frame)).await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self, end: End) {
        match &end {
            End::Closed => tracing::debug!("session closed"),
            End::Socket(e) => tracing::debug!(error = %e, "session ended"),
        }
        let now = now_ms();
        if self.hub.router.unregister(&self.link, now) {
            self.hub.forget_presence(&self.claims.sub);
            let frame = presence(&self.claims, PresenceStatus::Offline, Some(now));
            self.hub.router.to_co_members(&self.claims.sub, &self.rooms, frame);
        }
    }

    async fn feed_msg(&mut self, m: Message) -> Step {
        if self.holding
            && let Some(r) = self.replay.as_mut()
        {
            r.held.push_back(m);
            return Ok(());
        }
        self.ws.feed(m).await.map_err(socket_err)?;
        self.unflushed += 1;
        Ok(())
    }

    async fn feed(&mut self, text: Utf8Bytes) -> Step {
        self.feed_msg(Message::Text(text)).await
    }

    async fn flush(&mut self) -> Step {
        // Only a frame that ends the connection flushes while answers are held: the device
        // should see why it is being closed, so what was held goes out first.
        if std::mem::take(&mut self.holding)
            && let Some(r) = self.replay.as_mut()
        {
            for m in std::mem::take(&mut r.held) {
                self.ws.feed(m).await.map_err(socket_err)?;
            }
        }
        self.unflushed = 0;
        self.ws.flush().await.map_err(socket_err)
    }

    async fn live(&mut self, live: Live, urgent: bool) -> Step {
        match live {
            Live::Ephemeral(text) => self.feed(text).await,
            Live::Log { cursor, text } => {
                // An emergency overtakes only when older entries are still queued for this
                // device; then it is marked `"ahead": true` so the device does not resume
                // from its cursor, and the ordered stream skips it later.
                // (Only asked for emergencies: the mailbox check takes its lock.)
                let behind =
                    urgent && (self.replay.is_some() || self.mailbox.normal_waiting() || self.link.is_lagged());
                match self.delivery.live(cursor, urgent, behind) {
                    delivery::Live::Skip => Ok(()),
                    delivery::Live::Ahead => self.feed(Utf8Bytes::from(mark_ahead(text.as_str()))).await,
                    delivery::Live::InOrder => self.feed(text).await,
                }
            }
        }
    }
}

/// A new device's window: for each room, the floor below its latest
/// `limits.signin_recent_per_room` messages, reaching further back to the user's read mark
/// (what they have not read yet) by at most `limits.signin_unread_per_room`. `None`
/// (every message) when the window is off or the store cannot say.
async fn window<S: Storage>(
    hub: &Hub<S>,
    rooms: &[RoomId],
    marks: &[(RoomId, Cursor)],
) -> Option<Arc<[(RoomId, Cursor)]>> {
    let limits = &hub.config.limits;
    if limits.signin_recent_per_room == 0 || rooms.is_empty() {
        return None;
    }
    let mut floors = Vec::with_capacity(rooms.len());
    for room in rooms {
        let recent = hub.store.room_floor(room.clone(), limits.signin_recent_per_room).await;
        let floor = match (recent, marks.iter().find(|(r, _)| r == room)) {
            (Err(e), _) => {
                tracing::warn!(error = %e, "cannot find a room's window; sending the whole room");
                return None;
            }
            (Ok(recent), Some((_, mark))) if *mark < recent => {
                match hub.store.room_floor(room.clone(), limits.signin_unread_per_room).await {
                    Ok(reach) => recent.min((*mark).max(reach)),
                    Err(_) => recent,
                }
            }
            (Ok(recent), _) => recent,
        };
        floors.push((room.clone(), floor));
    }
    Some(Arc::from(floors))
}

/// Adds `"ahead":true` to an encoded frame (`{"v":1,...}`).
fn mark_ahead(frame: &str) -> String {
    match frame.strip_prefix('{') {
        Some(rest) => format!("{{\"ahead\":true,{rest}"),
        None => frame.to_owned(),
    }
}

fn presence(claims: &Claims, status: PresenceStatus, last_seen: Option<u64>) -> Utf8Bytes {
    Utf8Bytes::from(ServerFrame::Presence(PresenceEvent { user: claims.sub.clone(), status, last_seen }).encode())
}
