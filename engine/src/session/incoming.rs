//! What a session does with what the device sends: each frame decoded, checked against
//! the room rules and acted on (`send` through the one submission path, `ack`, `read`,
//! `typing`, `presence`, `history`, `join`/`leave`), and the token re-checked when the
//! revocation list changes. The loop that calls it is the parent module's.

use super::*;

impl<S: Storage> Session<S> {
    pub(super) async fn incoming(&mut self, msg: Option<Result<Message, axum::Error>>) -> Step {
        let msg = match msg {
            None => return Err(End::Closed),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // tungstenite refuses a message past its hard cap; the stream cannot continue.
                let text = e.to_string();
                if crate::ws::over_hard_cap(&e) {
                    self.feed(error_frame(ErrorCode::TooLarge, "the frame is far over the size limit", None)).await?;
                    self.flush().await?;
                    close_with(&mut self.ws, close::TOO_BIG, "frame too large").await;
                }
                return Err(End::Socket(text));
            }
        };
        self.last_heard = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return self
                    .feed(error_frame(ErrorCode::BadFrame, "binary frames are reserved for media chunks", None))
                    .await;
            }
            Message::Close(_) => {
                // tungstenite queued the close reply; flush so the peer sees a clean close.
                let _ = self.ws.flush().await;
                return Err(End::Closed);
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if self.claims.exp <= now_ms() / 1000 {
            let _ = self
                .feed(error_frame(ErrorCode::TokenExpired, "the token expired during the session; sign in again", None))
                .await;
            let _ = self.flush().await;
            close_with(&mut self.ws, close::UNAUTHENTICATED, "token_expired").await;
            return Err(End::Closed);
        }
        let max = self.hub.config.limits.max_frame_bytes;
        if text.len() > max {
            let m = format!("the frame is {} bytes; the limit is {max}", text.len());
            return self.feed(error_frame(ErrorCode::TooLarge, m, None)).await;
        }
        match ClientFrame::decode(text.as_str()) {
            Ok(frame) => self.handle(frame).await,
            Err(e) => self.feed(error_frame(e.code, e.message, e.id)).await,
        }
    }

    /// A new revocation list arrived: a session whose token it names ends now.
    pub(super) async fn recheck_token(&mut self) -> Step {
        let revoked = self.hub.store.revocations().borrow().revokes(&self.claims).map(|r| r.reason.clone());
        let Some(reason) = revoked else { return Ok(()) };
        tracing::info!("token revoked; closing the session");
        self.hub
            .store
            .audit(
                AuditEvent::new(AuditKind::SessionRevoked, format!("token {}: {reason}", self.claims.jti))
                    .by(&self.claims)
                    .device(self.link.device.as_str())
                    .peer(self.peer),
            )
            .await;
        self.feed(error_frame(ErrorCode::Unauthenticated, REVOKED, None)).await?;
        self.flush().await?;
        close_with(&mut self.ws, close::UNAUTHENTICATED, "unauthenticated").await;
        Err(End::Closed)
    }

    /// Membership and role rules (see `outpost_shared::policy`); refusals are audited.
    async fn check_room(&mut self, action: Action<'_>) -> Result<(), (ErrorCode, String)> {
        let result = self.hub.authorize(&self.claims, action);
        if let Err((code, m)) = &result
            && *code == ErrorCode::Forbidden
        {
            let event = AuditEvent::new(AuditKind::Forbidden, m.clone())
                .by(&self.claims)
                .device(self.link.device.as_str())
                .peer(self.peer)
                .room(action.room().as_str());
            self.hub.audit_refusal(event).await;
        }
        result
    }

    /// Relays a call step to the callee's devices on this server (docs/protocol.md,
    /// "Calls"). Nothing of a call is stored: a missed call is a message its caller sends.
    async fn call(&mut self, c: outpost_shared::frames::Call) -> Step {
        use outpost_shared::frames::{CallEvent, CallSignal};
        // Refusals carry the call's id, so a client tells which call they are about.
        let id = Some(c.call);
        if let Err((code, m)) = self.check_room(Action::Participate { room: &c.room }).await {
            return self.feed(error_frame(code, m, id)).await;
        }
        if c.to == self.claims.sub || c.signal == CallSignal::Unavailable {
            let m = "a call goes to another person, and `unavailable` is the server's to send";
            return self.feed(error_frame(ErrorCode::BadFrame, m, id)).await;
        }
        // Calls share the device's message allowance. A refused step is said, not dropped:
        // a lost ICE candidate or hang-up would leave the other side waiting.
        if !self.bucket.try_take(self.started.elapsed()) {
            let m = "too many frames; slow down and send this call step again";
            return self.feed(error_frame(ErrorCode::RateLimited, m, id)).await;
        }
        let event = CallEvent {
            call: c.call,
            room: c.room.clone(),
            from: self.claims.sub.clone(),
            from_device: Some(self.link.device.clone()),
            signal: c.signal,
            video: c.video,
            sdp: c.sdp,
            candidate: c.candidate,
        };
        let text = Utf8Bytes::from(ServerFrame::Call(event).encode());
        let router = &self.hub.router;
        // The sender's own other devices learn it was answered or declined here, and stop
        // ringing.
        if matches!(c.signal, CallSignal::Accept | CallSignal::Decline) {
            router.to_call_party(&self.claims.sub, &c.room, None, self.link.id, text.clone());
        }
        let reached = router.to_call_party(&c.to, &c.room, c.device.as_ref(), self.link.id, text);
        if reached > 0 || c.signal != CallSignal::Invite {
            return Ok(());
        }
        // Nobody to ring here: the caller hears so at once instead of ringing into nothing.
        let none = CallEvent {
            call: c.call,
            room: c.room,
            from: c.to,
            from_device: None,
            signal: CallSignal::Unavailable,
            video: c.video,
            sdp: None,
            candidate: None,
        };
        self.feed(Utf8Bytes::from(ServerFrame::Call(none).encode())).await
    }

    async fn handle(&mut self, frame: ClientFrame) -> Step {
        match frame {
            ClientFrame::Send(s) => self.send(s.msg).await,
            ClientFrame::Ack(a) => {
                // Only what was written in order counts as held: an emergency sent ahead
                // does not vouch for the messages it overtook.
                let cursor = self.delivery.clamp_ack(a.cursor);
                let h = &self.hub;
                h.store
                    .ack(self.link.device.clone(), self.claims.sub.clone(), self.rooms.clone(), cursor, now_ms())
                    .await;
                Ok(())
            }
            ClientFrame::Read(r) => match self.check_room(Action::Participate { room: &r.room }).await {
                Err((code, m)) => self.feed(error_frame(code, m, Some(r.id))).await,
                Ok(()) => {
                    let h = &self.hub;
                    h.store.read(self.claims.sub.clone(), r.room.clone(), r.id, now_ms()).await;
                    // The user's other devices clear their unread count for the room too.
                    if let Ok(Some(cursor)) = h.store.message_cursor(r.room.clone(), r.id).await {
                        let f = ServerFrame::ReadMark(outpost_shared::frames::ReadMark { room: r.room, cursor });
                        h.router.to_user(&self.claims.sub, self.link.id, Utf8Bytes::from(f.encode()));
                    }
                    Ok(())
                }
            },
            ClientFrame::Typing(t) => match self.check_room(Action::Participate { room: &t.room }).await {
                Err((code, m)) => self.feed(error_frame(code, m, None)).await,
                // Typing shares the device's message allowance; excess is dropped quietly
                // (it is ephemeral and the next keystroke repeats it).
                Ok(()) if !self.bucket.try_take(self.started.elapsed()) => Ok(()),
                Ok(()) => {
                    let f = ServerFrame::Typing(TypingEvent {
                        room: t.room.clone(),
                        user: self.claims.sub.clone(),
                        active: t.active,
                    });
                    self.hub.router.to_room(&t.room, self.link.id, Utf8Bytes::from(f.encode()));
                    Ok(())
                }
            },
            ClientFrame::Call(c) => self.call(c).await,
            ClientFrame::Presence(p) => {
                if self.hub.presence_allowed(&self.claims.sub) {
                    let frame = presence(&self.claims, p.status, None);
                    self.hub.router.to_co_members(&self.claims.sub, &self.rooms, frame);
                }
                Ok(())
            }
            ClientFrame::History(h) => match self.check_room(Action::History { room: &h.room }).await {
                Err((code, m)) => self.feed(error_frame(code, m, None)).await,
                Ok(()) => {
                    let limit = h.limit.unwrap_or(HISTORY_DEFAULT_LIMIT).clamp(1, HISTORY_MAX_LIMIT);
                    let pruned = match super::history::may_ask_cloud(&self.hub, &h.room).await {
                        Ok(p) => p,
                        Err(e) => return self.feed(error_frame(e.code(), e.to_string(), None)).await,
                    };
                    let page = move |hub: Arc<crate::hub::Hub<S>>| async move {
                        match super::history::device_page(&hub, h.room, h.before, h.before_hlc, limit, pruned).await {
                            Ok(page) => Utf8Bytes::from(ServerFrame::History(page).encode()),
                            Err(e) => error_frame(e.code(), e.to_string(), None),
                        }
                    };
                    // A page of a room retention pruned may wait for the cloud (up to
                    // `history::ANSWER_TIMEOUT`): it is made off this loop and queued as
                    // a direct answer, so the device's sends and live messages do not wait.
                    match pruned.then(|| self.mailbox.try_reserve()).flatten() {
                        Some(permit) => {
                            let hub = self.hub.clone();
                            tokio::spawn(async move { permit.send(page(hub).await) });
                            Ok(())
                        }
                        None => {
                            let text = page(self.hub.clone()).await;
                            self.feed(text).await
                        }
                    }
                }
            },
            ClientFrame::Join(r) => self.live_room(&r.room, true).await,
            ClientFrame::Leave(r) => self.live_room(&r.room, false).await,
            ClientFrame::Ping => self.feed(Utf8Bytes::from(ServerFrame::Pong.encode())).await,
            ClientFrame::Hello(_) => {
                self.feed(error_frame(ErrorCode::BadFrame, "already signed in on this connection", None)).await
            }
        }
    }

    /// `join`/`leave`: live delivery of one of the token's rooms on this connection.
    async fn live_room(&mut self, room: &RoomId, live: bool) -> Step {
        match self.check_room(Action::Participate { room }).await {
            Err((code, m)) => self.feed(error_frame(code, m, None)).await,
            Ok(()) => {
                self.hub.router.set_room(&self.link, room, live);
                Ok(())
            }
        }
    }

    async fn send(&mut self, msg: outpost_shared::OutgoingMsg) -> Step {
        let id = Some(msg.id);
        let within_rate = self.bucket.try_take(self.started.elapsed());
        let sender =
            Sender { claims: &self.claims, device: &self.link.device, peer: self.peer, origin: Some(self.link.id) };
        let req = match submit::check(&self.hub, &sender, within_rate, msg).await {
            Ok(req) => req,
            Err((code, m)) => return self.feed(error_frame(code, m, id)).await,
        };
        // Capacity was checked before this frame was read and only this task reserves.
        let Some(permit) = self.mailbox.try_reserve() else {
            return self
                .feed(error_frame(ErrorCode::RateLimited, "too many messages awaiting storage; resend", id))
                .await;
        };
        self.hub
            .store
            .append(
                req,
                Box::new(move |result| {
                    let frame = match result {
                        Ok(a) => ServerFrame::Stored(Stored {
                            id: a.id,
                            cursor: a.cursor,
                            hlc: Some(a.hlc),
                            duplicate: a.duplicate,
                        }),
                        Err(e) => ServerFrame::Error(ErrorFrame::new(e.code(), e.to_string()).with_id(id)),
                    };
                    permit.send(Utf8Bytes::from(frame.encode()));
                }),
            )
            .await;
        Ok(())
    }
}
