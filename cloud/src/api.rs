//! The HTTP API for hospital systems: post a message to a room, read a room since a
//! cursor. Same tokens as devices (`Authorization: Bearer TOKEN`), same room rules; a
//! post goes through the same checks as a device's `send` (`outpost_engine::submit`),
//! with the send rate limit (`limits.rate_per_sec`, `limits.rate_burst`) counted per user
//! across all of their API calls.
//!
//! ```text
//! POST /api/rooms/{room}/messages   {"id"?, "kind"?, "priority"?, "body", "reply_to"?, "seq"?}
//!      → 201 {"id", "cursor", "duplicate"}     (200 with duplicate: true for a re-post)
//! GET  /api/rooms/{room}/messages?after=CURSOR&limit=N   (limit ≤ 500, default 100)
//!      → 200 {"room", "messages": [{"cursor", "msg"}...], "next": CURSOR, "more": bool}
//! ```
//! Errors are `{"code", "message"}` with the protocol's codes: 400 `bad_frame`,
//! 401 `unauthenticated`/`token_expired`, 403 `forbidden`, 404 `unknown_room`,
//! 413 `too_large`, 429 `rate_limited`, 507 `storage_full`, 500 `internal`.

use outpost_storage::Storage;
use std::sync::Arc;

use axum::Json;
use std::net::SocketAddr;

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

/// Most messages one GET returns.
const MAX_PAGE: u32 = 500;

pub fn routes<S: Storage>(hub: Arc<Hub<S>>) -> axum::Router {
    axum::Router::new().route("/api/rooms/{room}/messages", get(read).post(post)).with_state(hub)
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

async fn read<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    let (_, room) = match authorize(&hub, &headers, peer, &room, |room| Action::History { room }).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let after = Cursor(q.after.unwrap_or(0));
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    match hub.store.room_since(room.clone(), after, limit).await {
        Ok((messages, more)) => {
            let next = messages.last().map_or(after, |m| m.cursor);
            Json(json!({"room": room, "messages": messages, "next": next, "more": more})).into_response()
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
