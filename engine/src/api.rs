//! HTTP API pieces shared by the hub and the cloud: bearer-token checks with the same
//! rules as the WebSocket (signature, expiry, revocation, role), JSON errors with the
//! protocol's codes, the audit log, and the doctors' queues derived from a room.
//!
//! ```text
//! GET /api/audit?after=SEQ&limit=N      (admin tokens; limit ≤ 1000, default 100)
//!     → 200 {"events": [{"seq", "at", "event", "actor", "role", "device", "peer", "room", "detail"}...],
//!            "next": SEQ, "more": bool}
//!
//! GET /api/rooms/{room}/queues          (tokens that may read the room)
//!     → 200 {"room", "queues": [{"queue", "entries": [...]}], "finished": [...]}
//!       (docs/workflows.md, "Reading a queue")
//!
//! GET /api/rooms/{room}/records/{patient}   (tokens that may read the room)
//!     → 200 {"patient", "fields": [{"field", "value", "version", ..., "conflict", "base"}], "history": [...]}
//!       (docs/workflows.md, "Reading a record")
//! ```
//! Errors are `{"code", "message"}`: 401 `unauthenticated`/`token_expired`,
//! 403 `forbidden`, 404 `unknown_room`, 400 `bad_frame`, 413 `too_large`, 422 `invalid_event`,
//! 429 `rate_limited`, 507 `storage_full`, 500 `internal`.

use outpost_storage::Storage;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use outpost_shared::{Action, Claims, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use crate::hub::Hub;
use outpost_storage::{AuditEvent, AuditKind};

/// Most audit events one GET returns.
const MAX_AUDIT_PAGE: u32 = 1000;

/// An error answer: HTTP status from the protocol code, `{"code", "message"}` body.
#[derive(Debug)]
pub struct ApiError(pub ErrorCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            ErrorCode::BadFrame | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::UnknownRoom => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidEvent => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"code": self.0, "message": self.1}))).into_response()
    }
}

pub fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(code, message.into())
}

/// Verifies `Authorization: Bearer TOKEN` (signature, issuer, expiry, revocation).
/// Refusals are audited (throttled).
pub async fn bearer<S: Storage>(hub: &Hub<S>, headers: &HeaderMap, peer: SocketAddr) -> Result<Claims, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| err(ErrorCode::Unauthenticated, "send Authorization: Bearer <token>"))?;
    let refusal = AuditEvent::new(AuditKind::LoginRefused, "HTTP API: ").peer(peer);
    hub.verify_token(token.trim(), refusal).await.map_err(|(code, m)| err(code, m))
}

/// Membership and role rules for an API call; a `forbidden` is audited (throttled).
pub async fn authorize<S: Storage>(
    hub: &Hub<S>,
    claims: &Claims,
    action: Action<'_>,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    let Err((code, m)) = hub.authorize(claims, action) else { return Ok(()) };
    if code == ErrorCode::Forbidden {
        let event = AuditEvent::new(AuditKind::Forbidden, format!("HTTP API: {m}"))
            .by(claims)
            .peer(peer)
            .room(action.room().as_str());
        hub.audit_refusal(event).await;
    }
    Err(err(code, m))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    pub after: Option<u64>,
    pub limit: Option<u32>,
}

/// `GET /api/audit`: the audit log, for tokens whose role may read it (admin).
pub async fn audit<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let claims = match bearer(&hub, &headers, peer).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !hub.config.policy.may_read_audit(&claims) {
        let m = format!("a token with role {} may not read the audit log; use an admin token", claims.role.as_str());
        let event = AuditEvent::new(AuditKind::Forbidden, m.clone()).by(&claims).peer(peer);
        hub.audit_refusal(event).await;
        return err(ErrorCode::Forbidden, m).into_response();
    }
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
    let page = hub.store.audit_page(after, limit).await;
    // Reading the log is itself an event, on disk before the page is handed out.
    let event = AuditEvent::new(AuditKind::AuditRead, format!("after {after}, limit {limit}")).by(&claims).peer(peer);
    if let Err(e) = hub.store.audit_committed(event).await {
        return err(e.code(), e.to_string()).into_response();
    }
    match page {
        Ok((events, more)) => {
            let next = events.last().map_or(after, |e| e.seq);
            Json(json!({"events": events, "next": next, "more": more})).into_response()
        }
        Err(e) => err(e.code(), e.to_string()).into_response(),
    }
}

/// `GET /api/rooms/{room}/queues`: the room's doctors' queues, derived from its queue
/// messages of the last `limits.queue_days` days (docs/workflows.md).
pub async fn queues<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(room): axum::extract::Path<String>,
) -> Response {
    let (room, _claims) = match room_reader(&hub, &headers, peer, room).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let limits = &hub.config.limits;
    let since_ms = crate::clock::now_ms().saturating_sub(u64::from(limits.queue_days) * 86_400_000);
    let since = outpost_shared::Hlc::new(since_ms, 0);
    let read = workflow_events(&hub, &room, outpost_storage::Workflow::Queue, since, limits.queue_max_events, || {
        format!(
            "the room holds more than {} queue messages in the last {} days; lower limits.queue_days or raise limits.queue_max_events",
            limits.queue_max_events, limits.queue_days
        )
    });
    let events = match read.await {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    let events: Vec<outpost_shared::queue::QueueEvent<'_>> = events
        .iter()
        .map(|p| outpost_shared::queue::QueueEvent {
            id: p.msg.id,
            hlc: p.msg.hlc.0,
            from: p.msg.from.as_str(),
            kind: p.msg.kind.as_str(),
            body: p.msg.body.as_str(),
        })
        .collect();
    let q = outpost_shared::queue::derive(&events);
    Json(json!({"room": room, "queues": q.queues, "finished": q.finished})).into_response()
}

/// `GET /api/rooms/{room}/records/{patient}`: a patient's shared record, merged from every
/// `record.edit` of the room naming them (docs/workflows.md).
pub async fn record<S: Storage>(
    State(hub): State<Arc<Hub<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path((room, patient)): axum::extract::Path<(String, String)>,
) -> Response {
    let (room, _claims) = match room_reader(&hub, &headers, peer, room).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !outpost_shared::clinical::is_patient_id(&patient) {
        let m = format!("{patient:?} is not a patient id ({})", outpost_shared::clinical::PATIENT_ID);
        return err(ErrorCode::BadFrame, m).into_response();
    }
    let limit = hub.config.limits.record_max_events;
    let read = workflow_events(&hub, &room, outpost_storage::Workflow::Record, outpost_shared::Hlc(0), limit, || {
        format!(
            "the room holds more than {limit} record edits; raise limits.record_max_events or keep patients' records in more rooms"
        )
    });
    let events = match read.await {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    let edits = outpost_shared::record::Edits::new(events.iter().filter_map(|p| {
        outpost_shared::record::Edit::from_message(
            p.msg.id,
            p.msg.hlc.0,
            p.msg.from.as_str(),
            p.msg.kind.as_str(),
            p.msg.body.as_str(),
        )
    }));
    Json(edits.view(&patient, &hub.config.policy.record_doctor_fields)).into_response()
}

/// Every message of `room` feeding `workflow` from `since` on, or `too_large` (saying
/// `too_many()`) when there are more than `limit`: a workflow is derived from all of them
/// or not shown.
async fn workflow_events<S: Storage>(
    hub: &Hub<S>,
    room: &outpost_shared::RoomId,
    workflow: outpost_storage::Workflow,
    since: outpost_shared::Hlc,
    limit: u32,
    too_many: impl FnOnce() -> String,
) -> Result<Vec<outpost_shared::frames::Positioned>, ApiError> {
    match hub.store.workflow_events(room.clone(), workflow, since, limit).await {
        Ok((events, false)) => Ok(events),
        Ok((_, true)) => Err(err(ErrorCode::TooLarge, too_many())),
        Err(e) => Err(err(e.code(), e.to_string())),
    }
}

/// The bearer token's claims and the room, if that token may read the room.
async fn room_reader<S: Storage>(
    hub: &Hub<S>,
    headers: &HeaderMap,
    peer: SocketAddr,
    room: String,
) -> Result<(outpost_shared::RoomId, Claims), ApiError> {
    let claims = bearer(hub, headers, peer).await?;
    let room = outpost_shared::RoomId::new(room).map_err(|e| err(ErrorCode::BadFrame, e.to_string()))?;
    authorize(hub, &claims, Action::History { room: &room }, peer).await?;
    Ok((room, claims))
}
