//! The WebSocket upgrade as every route takes it (`/ws`, and `/echo` in tests): the
//! state handlers share, the refusal of a connection over its limits, the frame caps.
//! One place, so the conformance suite tests exactly what devices get. It owns no
//! connection; sessions (`session`) and the echo route (`echo`) use it.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;
use crate::hub::{Hub, Refusal};

/// What the WebSocket and status routes share: the hub, and the tracker that owns every
/// session task.
pub(crate) type AppState<S> = (Arc<Hub<S>>, TaskTracker);

/// The HTTP answer to a connection [`ConnTracker::acquire`] refused (`limits.max_devices`,
/// `limits.max_connections_per_ip`). Every WebSocket route takes its slot from the same
/// tracker and refuses with this, so they share one count and one answer.
pub(crate) fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::HubFull => (
            StatusCode::SERVICE_UNAVAILABLE,
            "hub_full: this hub serves its maximum number of devices; try again later\n",
        )
            .into_response(),
        Refusal::TooManyFromAddress => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited: too many connections from this address\n").into_response()
        }
    }
}

/// The WebSocket settings of every route (`/ws`, and `/echo` in tests): one place, so the
/// conformance suite tests exactly what devices get.
pub(crate) fn configure(upgrade: WebSocketUpgrade, limits: &LimitsConfig) -> WebSocketUpgrade {
    // Frames a little over the limit are read and refused with `too_large` while the
    // connection stays open; tungstenite's hard cap sits at twice the limit.
    let hard_cap = limits.max_frame_bytes.saturating_mul(2);
    upgrade
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(limits.read_buffer_bytes)
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
}

/// Whether a read failed because a message or frame was over the cap [`configure`] sets:
/// tungstenite's `CapacityError::MessageTooLong`, which axum passes on only as text. Only
/// that: a control frame over 125 bytes ("Control frame too big") is a protocol error,
/// not a size refusal, and must not be answered with 1009 (Autobahn 2.5, 7.3.6).
pub(crate) fn over_hard_cap(e: &axum::Error) -> bool {
    e.to_string().contains("Message too long")
}
