//! The HTTP API for hospital systems: post a message to a room, read a room since a
//! cursor, read every room the token may read in one feed (the events API). Same tokens
//! as devices (`Authorization: Bearer TOKEN`), same room rules; a
//! post goes through the same checks as a device's `send` (`outpost_engine::submit`),
//! with the send rate limit (`limits.rate_per_sec`, `limits.rate_burst`) counted per user
//! across all of their API calls.
//!
//! ```text
//! POST /api/rooms/{room}/messages   {"id"?, "kind"?, "priority"?, "body", "reply_to"?, "seq"?}
//!      → 201 {"id", "cursor", "duplicate"}     (200 with duplicate: true for a re-post)
//! GET  /api/rooms/{room}/messages?after=CURSOR&limit=N   (limit ≤ 500, default 100)
//!      → 200 {"room", "messages": [{"cursor", "msg"}...], "next": CURSOR, "more": bool}
//! GET  /api/events?after=CURSOR&limit=N                  (limit ≤ 500, default 100)
//!      → 200 {"events": [{"cursor", "msg"}...], "next": CURSOR, "more": bool}
//! ```
//! The events API is the per-room GET over every room of the token that it may read
//! (membership and the role rule for history, as for one room), in one cursor order:
//! resuming with `after = next` misses nothing and repeats nothing.
//! Errors are `{"code", "message"}` with the protocol's codes: 400 `bad_frame`,
//! 401 `unauthenticated`/`token_expired`, 403 `forbidden`, 404 `unknown_room`,
//! 413 `too_large`, 422 `invalid_event`, 429 `rate_limited`, 507 `storage_full`, 500 `internal`.

use outpost_storage::Storage;
use std::sync::Arc;

use axum::Json;
use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_engine::api::{ApiError, bearer, err};
use outpost_engine::clock::now_ms;
use outpost_engine::hub::Hub;
use outpost_engine::submit::{self, Sender};
use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{
    Action, Body, Claims, Cursor, DeviceId, ErrorCode, MessageId, MessageKind, Priority, RoomId, Seq,
};
use serde::Deserialize;
use serde_json::json;

/// Most messages one GET returns: a page of 500 bodies of up to 64 KiB each is the
/// most one request holds in memory (about 32 MiB at worst, far less in practice).
pub const MAX_PAGE: u32 = 500;

/// Messages one GET returns when it names no `limit`.
pub const DEFAULT_PAGE: u32 = 100;

pub fn routes<S: Storage>(hub: Arc<Hub<S>>) -> axum::Router {
    axum::Router::new()
        .route("/api/rooms/{room}/messages", get(read).post(post))
        .route("/api/events", get(events))
        .with_state(hub)
}

/// Verifies the bearer token (as devices' tokens are verified) and the caller's right to
/// `action` in `room`.
async fn authorize<S: Storage>(
    hub: &Hub<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
    room: &str,
    action: impl for<'r> FnOnce(&'r RoomId) -> Action<'r>,
) -> Result<(Claims, RoomId), ApiError> {
    let claims = bearer(hub, headers, peer).await?;
    let room = RoomId::new(room).map_err(|e| err(ErrorCode::BadFrame, e.to_string()))?;
    outpost_engine::api::authorize(hub, &claims, action(&room), peer).await?;
    Ok((claims, room))
}

#[derive(Deserialize)]
struct Since {
    after: Option<u64>,
    limit: Option<u32>,
}

/// A query string that does not parse (`after=yesterday`) is the caller's to fix, told
/// in the API's own error shape rather than axum's plain text.
fn bad_query(e: &QueryRejection) -> ApiError {
    err(
        ErrorCode::BadFrame,
        format!("{}; after is a cursor (a number), limit a number up to {MAX_PAGE}", e.body_text()),
    )
}

async fn read<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
    q: Result<Query<Since>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e).into_response(),
    };
    let (_, room) = match authorize(&hub, &headers, peer, &room, |room| Action::History { room }).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let after = Cursor(q.after.unwrap_or(0));
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    match hub.store.room_since(room.clone(), after, limit).await {
        Ok((messages, more)) => {
            let next = messages.last().map_or(after, |m| m.cursor);
            Json(json!({"room": room, "messages": messages, "next": next, "more": more})).into_response()
        }
        Err(e) => err(e.code(), e.to_string()).into_response(),
    }
}

/// `GET /api/events`: every message of the rooms the token may read, in cursor order.
async fn events<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<Since>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e).into_response(),
    };
    let claims = match bearer(&hub, &headers, peer).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // The per-room GET's rule, room by room: a token reads the rooms it is a member of
    // if its role may read history. A role that may read none of them is refused (and
    // audited) as the per-room GET refuses it.
    let mut rooms = Vec::with_capacity(claims.rooms.len());
    let mut refused = None;
    for room in &claims.rooms {
        match hub.authorize(&claims, Action::History { room }) {
            Ok(()) => rooms.push(room.clone()),
            Err(_) => refused = refused.or(Some(room)),
        }
    }
    if rooms.is_empty()
        && let Some(room) = refused
        && let Err(e) = outpost_engine::api::authorize(&hub, &claims, Action::History { room }, peer).await
    {
        return e.into_response();
    }
    let after = Cursor(q.after.unwrap_or(0));
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    match hub.store.events(Some(Arc::from(rooms)), after, limit).await {
        Ok((events, more)) => {
            let next = events.last().map_or(after, |m| m.cursor);
            Json(json!({"events": events, "next": next, "more": more})).into_response()
        }
        Err(e) => err(e.code(), e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct PostBody {
    id: Option<MessageId>,
    kind: Option<MessageKind>,
    priority: Option<Priority>,
    body: Box<serde_json::value::RawValue>,
    reply_to: Option<MessageId>,
    seq: Option<u64>,
}

async fn post<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let limits = &hub.config.limits;
    if body.len() > limits.max_frame_bytes {
        return err(ErrorCode::TooLarge, format!("the request is over {} bytes", limits.max_frame_bytes))
            .into_response();
    }
    let claims = match bearer(&hub, &headers, peer).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let p: PostBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return err(ErrorCode::BadFrame, format!("bad message: {e}")).into_response(),
    };
    let room = match RoomId::new(room) {
        Ok(r) => r,
        Err(e) => return err(ErrorCode::BadFrame, e.to_string()).into_response(),
    };
    let body = match Body::from_json(p.body.get()) {
        Ok(b) => b,
        Err(e) => return err(ErrorCode::BadFrame, e.to_string()).into_response(),
    };
    let kind = match p.kind.map_or_else(|| MessageKind::new("chat"), Ok) {
        Ok(k) => k,
        Err(e) => return err(ErrorCode::Internal, e.to_string()).into_response(),
    };
    let msg = OutgoingMsg {
        id: p.id.unwrap_or_else(|| MessageId(uuid::Uuid::now_v7())),
        room,
        kind,
        priority: p.priority.unwrap_or(Priority::Normal),
        body,
        // Systems posting over HTTP have no device counter; the time keeps their order.
        seq: Seq(p.seq.unwrap_or_else(now_ms)),
        reply_to: p.reply_to,
    };
    // One "device" per API user: the HTTP API as such.
    let device = match DeviceId::new("api") {
        Ok(d) => d,
        Err(e) => return err(ErrorCode::Internal, e.to_string()).into_response(),
    };
    // The same checks and rate limit as a device's `send` (outpost_engine::submit).
    let sender = Sender { claims: &claims, device: &device, peer, origin: None };
    let req = match submit::check(&hub, &sender, hub.api_send_allowed(&claims.sub), msg).await {
        Ok(req) => req,
        Err((code, m)) => return err(code, m).into_response(),
    };
    match hub.store.append_wait(req).await {
        Ok(a) => {
            let status = if a.duplicate { StatusCode::OK } else { StatusCode::CREATED };
            (status, Json(json!({"id": a.id, "cursor": a.cursor, "duplicate": a.duplicate}))).into_response()
        }
        Err(e) => err(e.code(), e.to_string()).into_response(),
    }
}
