//! The link over TCP when UDP does not pass: QUIC's own datagrams, carried in a TLS 1.3
//! stream (docs/uplink.md, "When UDP is blocked").
//!
//! Many cellular, satellite and hospital networks drop or throttle UDP. Rather than a
//! second implementation of the link, the hub and the cloud run the very same QUIC
//! connection (the same mutual-TLS identities, batches, lanes, priorities and
//! exactly-once rules) over a [`TunnelSocket`]: a quinn socket whose datagrams travel as
//! length-prefixed frames (2-byte big-endian length) in a TLS stream on TCP. QUIC's
//! stream priorities interleave frames, so an emergency never waits behind a whole bulk
//! transfer, only behind the few datagrams already queued ([`QUEUE`]).
//!
//! The outer TLS (ALPN [`TCP_ALPN`], the same certificates as QUIC, client certificate
//! required) makes the stream look like any HTTPS connection to middleboxes and keeps
//! unauthenticated peers from reaching the QUIC endpoint at all. A datagram that does not
//! fit the per-connection queue is dropped, as a full router queue would: QUIC sees the
//! loss and slows down, which keeps the queue (and an emergency's wait) short instead of
//! letting TCP's buffers grow.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// ALPN of the outer TLS stream.
pub const TCP_ALPN: &[u8] = b"outpost-tcp/1";
/// Datagrams queued for one TCP connection at most; more are dropped (see the module
/// documentation). 32 full-size datagrams are ~40 KiB: a quarter of a second on 3G.
pub const QUEUE: usize = 32;
/// Datagrams received and not yet taken by QUIC, over all connections of a socket.
const INCOMING: usize = 1024;
/// The kernel's send buffer for a tunnel's TCP socket: small, so that queued data waits
/// where QUIC's priorities still apply rather than in the kernel.
pub const SEND_BUFFER: u32 = 64 * 1024;

/// A quinn socket over TLS/TCP streams: one stream per peer, each peer known by its
/// address (the cloud's TCP address on a hub; each hub's TCP address on the cloud).
pub struct TunnelSocket {
    local: SocketAddr,
    peers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    incoming_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    incoming: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
}

impl fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers = self.peers.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("TunnelSocket").field("local", &self.local).field("peers", &peers).finish()
    }
}

impl TunnelSocket {
    /// A socket that reports `local` as its address (the TCP side's, for logs).
    pub fn new(local: SocketAddr) -> Arc<Self> {
        let (incoming_tx, incoming) = mpsc::channel(INCOMING);
        Arc::new(Self { local, peers: Mutex::new(HashMap::new()), incoming_tx, incoming: Mutex::new(incoming) })
    }

    /// Carries `peer`'s datagrams over `stream` (TLS already established) until either
    /// side closes it or `stop` fires. The returned token is cancelled when the stream
    /// has ended.
    pub fn attach<S>(self: &Arc<Self>, peer: SocketAddr, stream: S, stop: CancellationToken) -> CancellationToken
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Ok(mut p) = self.peers.lock() {
            p.insert(peer, tx.clone());
        }
        let ended = CancellationToken::new();
        let (reader, writer) = tokio::io::split(stream);
        let this = self.clone();
        let done = ended.clone();
        tokio::spawn(async move {
            let why = tokio::select! {
                r = read_frames(reader, peer, this.incoming_tx.clone()) => r,
                r = write_frames(writer, rx) => r,
                () = stop.cancelled() => Ok(()),
            };
            tracing::debug!(%peer, reason = ?why, "TCP tunnel closed");
            if let Ok(mut p) = this.peers.lock()
                && p.get(&peer).is_some_and(|t| t.same_channel(&tx))
            {
                p.remove(&peer);
            }
            done.cancel();
        });
        ended
    }
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut r: R,
    peer: SocketAddr,
    to: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) -> io::Result<()> {
    let mut len = [0u8; 2];
    loop {
        r.read_exact(&mut len).await?;
        let mut datagram = vec![0u8; usize::from(u16::from_be_bytes(len))];
        r.read_exact(&mut datagram).await?;
        if to.send((peer, datagram)).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(w: W, mut from: mpsc::Receiver<Vec<u8>>) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(16 * 1024, w);
    while let Some(d) = from.recv().await {
        write_frame(&mut w, &d).await?;
        // Everything queued goes in one flush (fewer TLS records), then the stream waits.
        while let Ok(d) = from.try_recv() {
            write_frame(&mut w, &d).await?;
        }
        w.flush().await?;
    }
    w.shutdown().await
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, d: &[u8]) -> io::Result<()> {
    let len = u16::try_from(d.len()).map_err(|_| io::Error::other("a datagram over 64 KiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(d).await
}

/// Sends never block (a full queue drops), so the socket is always writable.
#[derive(Debug)]
struct Writable;

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(tx) = self.peers.lock().ok().and_then(|p| p.get(&transmit.destination).cloned()) else {
            // No stream to that peer (any more): lost, as UDP to nowhere is.
            return Ok(());
        };
        // One datagram per transmit (max_transmit_segments is 1); a full queue drops it.
        let _ = tx.try_send(transmit.contents.to_vec());
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Ok(mut incoming) = self.incoming.lock() else {
            return Poll::Ready(Err(io::Error::other("tunnel socket poisoned")));
        };
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else { return Poll::Ready(Ok(0)) };
        match incoming.poll_recv(cx) {
            Poll::Ready(Some((addr, datagram))) => {
                let len = datagram.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram[..len]);
                *m = RecvMeta { addr, len, stride: len, ecn: None, dst_ip: None };
                Poll::Ready(Ok(1))
            }
            // The socket holds a sender itself, so the channel never closes.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// A quinn endpoint on `socket` (client only when `server` is `None`).
pub fn endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    socket: Arc<TunnelSocket>,
) -> io::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime for the endpoint"))?;
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// Opens the TCP connection for a tunnel to `addr`, directly or through an HTTP proxy
/// (`CONNECT`), with the kernel send buffer kept small.
pub async fn connect_tcp(
    addr: SocketAddr,
    host_port: &str,
    proxy: Option<&Proxy>,
) -> io::Result<tokio::net::TcpStream> {
    let Some(proxy) = proxy else { return open(addr).await };
    let via = tokio::net::lookup_host(&proxy.host_port)
        .await?
        .next()
        .ok_or_else(|| io::Error::other(format!("the proxy {} has no address", proxy.host_port)))?;
    let mut s = open(via).await?;
    let mut req = format!("CONNECT {host_port} HTTP/1.1\r\nHost: {host_port}\r\n");
    if let Some(auth) = &proxy.basic_auth {
        req.push_str(&format!("Proxy-Authorization: Basic {auth}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // The answer's head, byte by byte: nothing after it may be consumed (the TLS
    // handshake follows on the same stream).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(io::Error::other("the proxy's answer to CONNECT is too long"));
        }
        head.push(s.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        let line = head.lines().next().unwrap_or_default();
        return Err(io::Error::other(format!("the proxy {} refused CONNECT {host_port}: {line}", proxy.host_port)));
    }
    Ok(s)
}

async fn open(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// An HTTP proxy for the TCP path (`uplink.proxy`, or `HTTPS_PROXY`).
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `HOST:PORT` of the proxy.
    pub host_port: String,
    /// `user:password`, base64, for `Proxy-Authorization: Basic`.
    pub basic_auth: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials stay out of logs.
        f.debug_struct("Proxy").field("host_port", &self.host_port).finish_non_exhaustive()
    }
}

impl Proxy {
    /// Parses `http://[user:password@]host:port[/]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: a proxy is given as http://[user:password@]host:port"))?;
        let rest = rest.trim_end_matches('/');
        let (auth, host_port) = match rest.rsplit_once('@') {
            Some((auth, hp)) => {
                let auth: Vec<u8> = percent_encoding::percent_decode_str(auth).collect();
                (Some(base64::engine::general_purpose::STANDARD.encode(auth)), hp)
            }
            None => (None, rest),
        };
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("{url:?}: the proxy needs a host and a port (http://proxy.example.org:3128)")),
        }
        Ok(Self { host_port: host_port.to_owned(), basic_auth: auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_with_and_without_credentials() {
        let p = Proxy::parse("http://proxy.example.org:3128/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.host_port.as_str(), p.basic_auth), ("proxy.example.org:3128", None));
        let p = Proxy::parse("http://amina:p%40ss@10.0.0.1:8080").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.host_port, "10.0.0.1:8080");
        assert_eq!(p.basic_auth.as_deref(), Some("YW1pbmE6cEBzcw==")); // amina:p@ss
        assert!(format!("{p:?}").contains("10.0.0.1") && !format!("{p:?}").contains("YW1p"));
        assert!(Proxy::parse("https://proxy:3128").is_err());
        assert!(Proxy::parse("http://proxy").is_err());
    }

    /// Two sockets joined by an in-memory stream pass datagrams both ways, each tagged
    /// with the other's address; a dropped stream removes the peer.
    #[tokio::test]
    async fn datagrams_cross_a_stream_in_both_directions() {
        let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}")),
            "127.0.0.1:2".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let (a, b) = (TunnelSocket::new(a_addr), TunnelSocket::new(b_addr));
        let (sa, sb) = tokio::io::duplex(4096);
        let ended_a = a.attach(b_addr, sa, CancellationToken::new());
        let _ended_b = b.attach(a_addr, sb, CancellationToken::new());
        let send = |s: &TunnelSocket, to: SocketAddr, data: &[u8]| {
            let t = Transmit { destination: to, ecn: None, contents: data, segment_size: None, src_ip: None };
            s.try_send(&t)
        };
        send(&a, b_addr, b"hello").unwrap_or_else(|e| panic!("{e}"));
        send(&b, a_addr, b"back").unwrap_or_else(|e| panic!("{e}"));
        for (s, from, want) in [(&b, a_addr, &b"hello"[..]), (&a, b_addr, &b"back"[..])] {
            let mut buf = [0u8; 64];
            let mut meta = [RecvMeta::default()];
            let n = std::future::poll_fn(|cx| s.poll_recv(cx, &mut [IoSliceMut::new(&mut buf)], &mut meta)).await;
            assert_eq!(n.unwrap_or_else(|e| panic!("{e}")), 1);
            assert_eq!((meta[0].addr, &buf[..meta[0].len]), (from, want));
        }
        // A stream that closes ends its peer: the token fires and sends to it go nowhere.
        let c_addr: SocketAddr = "127.0.0.1:3".parse().unwrap_or_else(|e| panic!("{e}"));
        let (sc, sd) = tokio::io::duplex(4096);
        let ended_c = a.attach(c_addr, sc, CancellationToken::new());
        assert!(a.peers.lock().is_ok_and(|p| p.contains_key(&c_addr)));
        drop(sd);
        ended_c.cancelled().await;
        assert!(a.peers.lock().is_ok_and(|p| !p.contains_key(&c_addr) && p.contains_key(&b_addr)));
        send(&a, c_addr, b"nowhere").unwrap_or_else(|e| panic!("{e}"));
        assert!(!ended_a.is_cancelled());
    }
}
