//! One path for a new message, whoever sends it: a device's `send` on the WebSocket, or a
//! hospital system's `POST /api/rooms/{room}/messages` on the cloud. Both run the same
//! checks in the same order (docs/protocol.md, "send"), take from a rate-limit bucket, and
//! end in the same append request; before this, the HTTP copy had drifted (it skipped the
//! rate limit).
//!
//! What differs stays with the caller: how the message is framed and answered (an `error`
//! frame with the message id, or an HTTP status), and whose bucket is charged (a device
//! connection's own, or the API caller's, one per user).

use outpost_storage::Storage;
use std::net::SocketAddr;

use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{Action, Claims, DeviceId, ErrorCode};
use outpost_storage::{AppendRequest, AuditEvent, AuditKind, SessionId};

use crate::clock::now_ms;
use crate::hub::Hub;

/// Who sends, as the checks and the audit log need it.
#[derive(Debug)]
pub struct Sender<'a> {
    pub claims: &'a Claims,
    /// The device (`api` for the HTTP API, which has none).
    pub device: &'a DeviceId,
    pub peer: SocketAddr,
    /// The connection it came on, so the router does not echo it back there.
    pub origin: Option<SessionId>,
}

/// A refusal: the stable code and a sentence saying what to do.
pub type Refusal = (ErrorCode, String);

/// Checks `msg` from `sender`, in order: the rate limit (`within_rate`: the caller took a
/// token from its bucket), the body's size, the room rules (a `forbidden` is audited), the
/// body's shape (nesting depth, encrypted envelope), then any media it names. Returns what
/// to append.
pub async fn check<S: Storage>(
    hub: &Hub<S>,
    sender: &Sender<'_>,
    within_rate: bool,
    mut msg: OutgoingMsg,
) -> Result<AppendRequest, Refusal> {
    let limits = &hub.config.limits;
    if !within_rate {
        return Err((
            ErrorCode::RateLimited,
            format!(
                "more than {} messages/s (burst {}); slow down and resend this message",
                limits.rate_per_sec, limits.rate_burst
            ),
        ));
    }
    let max_body = limits.max_body_bytes;
    if msg.body.len() > max_body {
        return Err((
            ErrorCode::TooLarge,
            format!("the body is {} bytes; the limit is {max_body}; send media as an attachment", msg.body.len()),
        ));
    }
    if let Err((code, m)) = hub.authorize(sender.claims, Action::Send { room: &msg.room, priority: msg.priority }) {
        if code == ErrorCode::Forbidden {
            return Err(forbidden(hub, sender, &msg.room, m).await);
        }
        return Err((code, m));
    }
    hub.check_body(&msg.room, &msg.body)?;
    // A clinical event must match its kind's schema. In an end-to-end encrypted room the
    // body is a sealed envelope: only the sending client can check it.
    if !hub.config.policy.is_encrypted(&msg.room)
        && let Err(e) = outpost_shared::clinical::validate(msg.kind.as_str(), msg.priority, msg.body.as_str(), now_ms())
    {
        return Err((ErrorCode::InvalidEvent, e.to_string()));
    }
    // A record edit carries its author's role, which decides a conflict in a doctor's
    // field (outpost_shared::record): it must be the role this sender's token has.
    if let Some(role) = outpost_shared::record::claimed_role(msg.kind.as_str(), msg.body.as_str())
        && role != sender.claims.role.as_str()
    {
        return Err((
            ErrorCode::InvalidEvent,
            format!(
                "record.edit: field `role` must be the sender's role, {} (got {role})",
                sender.claims.role.as_str()
            ),
        ));
    }
    // A queue's entries are its doctor's to change; the booker may only cancel, which is
    // judged against the booking when the queue is derived (outpost_shared::queue).
    if let Some(queue) = outpost_shared::queue::owner_required(msg.kind.as_str(), msg.body.as_str())
        && queue != sender.claims.sub.as_str()
    {
        let m = format!("only {queue} changes entries of the queue {queue}; whoever booked an entry may cancel it");
        return Err(forbidden(hub, sender, &msg.room, m).await);
    }
    msg.body = hub.attach_media(sender.claims, msg.body).await?;
    Ok(AppendRequest {
        msg,
        from: sender.claims.sub.clone(),
        device: sender.device.clone(),
        at: now_ms(),
        origin: sender.origin,
    })
}

/// A `forbidden` refusal of `sender`'s send in `room`, audited (throttled) first.
async fn forbidden<S: Storage>(
    hub: &Hub<S>,
    sender: &Sender<'_>,
    room: &outpost_shared::RoomId,
    m: String,
) -> (ErrorCode, String) {
    let event = AuditEvent::new(AuditKind::Forbidden, m.clone())
        .by(sender.claims)
        .device(sender.device.as_str())
        .peer(sender.peer)
        .room(room.as_str());
    hub.audit_refusal(event).await;
    (ErrorCode::Forbidden, m)
}
