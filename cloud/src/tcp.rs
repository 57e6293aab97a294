//! The relays' TCP path: where a hub whose network drops UDP reaches the cloud
//! (docs/uplink.md, "When UDP is blocked").
//!
//! Each TCP connection is a TLS 1.3 stream (client certificate required under the relay
//! CA, as on QUIC) carrying QUIC datagrams (`outpost_engine::link::tunnel`). All of them
//! feed one QUIC endpoint of their own, whose relay connections are served exactly as the
//! UDP endpoint's ([`crate::relays::accept`]): same handshake, same links, and a relay
//! that reconnects over either path replaces its older connection.

use std::sync::Arc;
use std::time::Duration;

use outpost_engine::link::tunnel::{SEND_BUFFER, TunnelSocket};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// TCP connections carried at once at most (handshaking or established); past it new ones
/// wait in the kernel's backlog. Far above the number of hubs one cloud serves.
pub const MAX_TUNNELS: usize = 4096;
/// How long a new connection has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections on `listener` and attaches each, once its TLS handshake is
/// done, to `socket` (the TCP path's QUIC endpoint), until `stop`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    socket: Arc<TunnelSocket>,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_TUNNELS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Per-connection errors (a reset before accept) and EMFILE alike: a
                    // short pause, then accept again.
                    tracing::debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, socket, stop) = (acceptor.clone(), socket.clone(), stop.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TCP path: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TCP path: TLS handshake timed out");
                    return;
                }
            };
            tracing::info!(%peer, "relay connected over the TCP path");
            let ended = socket.attach(peer, stream, stop);
            ended.cancelled().await;
            drop(slot);
        });
    }
}

/// Binds the TCP path's listener. Its kernel send buffer is kept small (accepted
/// connections inherit it), so queued data waits where QUIC's priorities still apply
/// (see `outpost_engine::link::tunnel::SEND_BUFFER`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
