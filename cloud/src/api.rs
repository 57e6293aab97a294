//! The HTTP API for hospital systems: post a message to a room, read a room since a
//! cursor. Same tokens as devices (`Authorization: Bearer TOKEN`), same room rules.
//!
//! ```text
//! POST /api/rooms/{room}/messages   {"id"?, "kind"?, "priority"?, "body", "reply_to"?, "seq"?}
//!      → 201 {"id", "cursor", "duplicate"}     (200 with duplicate: true for a re-post)
//! GET  /api/rooms/{room}/messages?after=CURSOR&limit=N   (limit ≤ 500, default 100)
//!      → 200 {"room", "messages": [{"cursor", "msg"}...], "next": CURSOR, "more": bool}
//! ```
//! Errors are `{"code", "message"}` with the protocol's codes: 400 `bad_frame`,
//! 401 `unauthenticated`/`token_expired`, 403 `forbidden`, 404 `unknown_room`,
//! 413 `too_large`, 507 `storage_full`, 500 `internal`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_relay::hub::{Hub, now_ms};
use outpost_relay::store::AppendRequest;
use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{
    Body, Claims, Cursor, DeviceId, ErrorCode, MessageId, MessageKind, Priority, RoomId, Seq, TokenError,
};
use serde::Deserialize;
use serde_json::json;

/// Most messages one GET returns.
const MAX_PAGE: u32 = 500;

pub fn routes(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new().route("/api/rooms/{room}/messages", get(read).post(post)).with_state(hub)
}

struct ApiError(StatusCode, ErrorCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"code": self.1, "message": self.2}))).into_response()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    let status = match code {
        ErrorCode::BadFrame | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::UnknownRoom => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, code, message.into())
}

/// Verifies the bearer token and the caller's membership of `room`.
fn authorize(hub: &Hub, headers: &HeaderMap, room: &str) -> Result<(Claims, RoomId), ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| err(ErrorCode::Unauthenticated, "send Authorization: Bearer <token>"))?;
    let claims = hub.verifier.verify(token.trim(), now_ms() / 1000).map_err(|e| match e {
        TokenError::Expired { .. } => err(ErrorCode::TokenExpired, e.to_string()),
        _ => err(ErrorCode::Unauthenticated, e.to_string()),
    })?;
    let room = RoomId::new(room).map_err(|e| err(ErrorCode::BadFrame, e.to_string()))?;
    if !claims.may_use_room(&room) {
        return Err(if hub.store.room_known(&room) {
            err(ErrorCode::Forbidden, format!("the token does not give access to room {room}"))
        } else {
            err(ErrorCode::UnknownRoom, format!("no room named {room}"))
        });
    }
    Ok((claims, room))
}

#[derive(Deserialize)]
struct Since {
    after: Option<u64>,
    limit: Option<u32>,
}

async fn read(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    let (_, room) = match authorize(&hub, &headers, &room) {
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

async fn post(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (claims, room) = match authorize(&hub, &headers, &room) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let limits = &hub.config.limits;
    if body.len() > limits.max_frame_bytes {
        return err(ErrorCode::TooLarge, format!("the request is over {} bytes", limits.max_frame_bytes))
            .into_response();
    }
    let p: PostBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return err(ErrorCode::BadFrame, format!("bad message: {e}")).into_response(),
    };
    let body = match Body::from_json(p.body.get()) {
        Ok(b) if b.len() <= limits.max_body_bytes => b,
        Ok(_) => {
            return err(ErrorCode::TooLarge, format!("the body is over {} bytes", limits.max_body_bytes))
                .into_response();
        }
        Err(e) => return err(ErrorCode::BadFrame, e.to_string()).into_response(),
    };
    let at = now_ms();
    let msg = OutgoingMsg {
        id: p.id.unwrap_or_else(|| MessageId(uuid::Uuid::now_v7())),
        room,
        kind: match p.kind.map_or_else(|| MessageKind::new("chat"), Ok) {
            Ok(k) => k,
            Err(e) => return err(ErrorCode::Internal, e.to_string()).into_response(),
        },
        priority: p.priority.unwrap_or(Priority::Normal),
        body,
        // Systems posting over HTTP have no device counter; the time keeps their order.
        seq: Seq(p.seq.unwrap_or(at)),
        reply_to: p.reply_to,
    };
    // One "device" per API user: the HTTP API as such.
    let device = match DeviceId::new("api") {
        Ok(d) => d,
        Err(e) => return err(ErrorCode::Internal, e.to_string()).into_response(),
    };
    let req = AppendRequest { msg, from: claims.sub, device, at, origin: None };
    match hub.store.append_wait(req).await {
        Ok(a) => {
            let status = if a.duplicate { StatusCode::OK } else { StatusCode::CREATED };
            (status, Json(json!({"id": a.id, "cursor": a.cursor, "duplicate": a.duplicate}))).into_response()
        }
        Err(e) => err(e.code(), e.to_string()).into_response(),
    }
}
