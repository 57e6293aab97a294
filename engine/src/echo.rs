//! `/echo`: a WebSocket echo for the conformance suite (`tests/conformance/run.sh`), served
//! only when the test-only `server.conformance_echo` switch is on.
//!
//! It exists so the Autobahn cases can exercise the hub's WebSocket layer (framing,
//! fragmentation, UTF-8, control frames, closing, size limits) without speaking protocol
//! v1. It is admitted and configured by the same functions as `/ws`
//! ([`ConnTracker`], [`crate::ws::refused`], [`crate::ws::configure`]), so what passes here is what
//! devices get. It owns nothing beyond its socket; no token is asked, no state is kept.

use outpost_storage::Storage;
use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::SinkExt as _;

use crate::hub::ConnTracker;
use crate::session::close;
use crate::ws::{AppState, configure, over_hard_cap, refused};

pub(crate) async fn upgrade<S: Storage>(
    State((hub, tracker)): State<AppState<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match ConnTracker::acquire(&hub, peer.ip()) {
        Ok(s) => s,
        Err(r) => return refused(r),
    };
    let stop = hub.shutdown.clone();
    configure(upgrade, &hub.config.limits).on_upgrade(move |socket| {
        tracker.track_future(async move {
            echo(socket, stop).await;
            drop(slot);
        })
    })
}

async fn echo(mut ws: WebSocket, stop: tokio_util::sync::CancellationToken) {
    loop {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => {
                let _ = ws.send(close_frame(close::GOING_AWAY, "hub shutting down")).await;
                return;
            }
            m = ws.recv() => m,
        };
        let reply = match msg {
            None => return,
            Some(Err(e)) => {
                // As on `/ws`: a message past the hard cap ends the connection with 1009.
                // Other protocol errors (bad UTF-8, reserved bits, ...) drop it, as there.
                if over_hard_cap(&e) {
                    let _ = ws.send(close_frame(close::TOO_BIG, "frame too large")).await;
                }
                tracing::debug!(error = %e, "echo connection failed");
                return;
            }
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            // tungstenite answers pings itself and queues the reply to a close; flushing
            // sends either.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                if ws.flush().await.is_err() {
                    return;
                }
                continue;
            }
            Some(Ok(Message::Close(_))) => {
                let _ = ws.flush().await;
                return;
            }
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))
}
