//! A scripted device: protocol v1 over a real WebSocket, speaking raw JSON so tests see
//! exactly what a phone would.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::EVENT_TIMEOUT;

/// A received server frame, as JSON.
pub type Frame = Value;

/// What a device's WebSocket runs over: plain TCP, or TLS (`wss://`).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

pub struct Device {
    ws: WebSocketStream<Box<dyn Transport>>,
    /// The welcome frame of the last handshake.
    pub welcome: Value,
    /// Frames received while waiting for something else, in arrival order.
    backlog: std::collections::VecDeque<Value>,
    /// Close code received, if the server closed the connection.
    pub closed: Option<u16>,
    seq: u64,
}

/// A chat message body for `room`, with a fresh id.
pub fn chat(room: &str, text: &str) -> Value {
    json!({"id": crate::new_id(), "room": room, "kind": "chat", "priority": "normal", "body": {"text": text}})
}

impl Device {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(host_port(url)).await.with_context(|| format!("connecting {url}"))?;
        Self::handshake(url, Box::new(tcp)).await
    }

    /// Connects to a `wss://` URL, verifying the server with `tls` (which names the CAs
    /// it trusts).
    pub async fn connect_with(url: &str, tls: tokio_rustls::TlsConnector) -> anyhow::Result<Self> {
        let stream = tls_connect(url, tls).await?;
        Self::handshake(url, Box::new(stream)).await
    }

    async fn handshake(url: &str, stream: Box<dyn Transport>) -> anyhow::Result<Self> {
        let (ws, _) =
            tokio_tungstenite::client_async(url, stream).await.with_context(|| format!("connecting {url}"))?;
        Ok(Self { ws, welcome: Value::Null, backlog: Default::default(), closed: None, seq: 0 })
    }

    /// Connects from a given local address (e.g. 127.0.0.2), as a second phone would.
    pub async fn connect_from(url: &str, source: std::net::IpAddr) -> anyhow::Result<Self> {
        let host = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
        let addr: std::net::SocketAddr = host.parse()?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        let stream: Box<dyn Transport> = Box::new(stream);
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .with_context(|| format!("connecting {url} from {source}"))?;
        Ok(Self { ws, welcome: Value::Null, backlog: Default::default(), closed: None, seq: 0 })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    pub async fn send_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.send_text(v.to_string()).await
    }

    /// Writes `frames` back to back and flushes once, so they reach the server together
    /// (as a phone's queued frames do when it reconnects).
    pub async fn send_together(&mut self, frames: &[Value]) -> anyhow::Result<()> {
        for f in frames {
            self.ws.feed(Message::Text(f.to_string().into())).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Sends `hello` and waits for `welcome` (returned). Errors if the server refuses.
    pub async fn hello(
        &mut self,
        token: &str,
        device: &str,
        cursor: Option<u64>,
        epoch: Option<&str>,
    ) -> anyhow::Result<Value> {
        self.send_json(&json!({"v":1,"type":"hello","token":token,"device":device,"cursor":cursor,"epoch":epoch}))
            .await?;
        let f = self.next().await?;
        if f["type"] != "welcome" {
            bail!("expected welcome, got {f}");
        }
        self.welcome = f.clone();
        Ok(f)
    }

    /// Next frame (from the backlog first), skipping server pings.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        if let Some(f) = self.backlog.pop_front() {
            return Ok(f);
        }
        self.next_wire(EVENT_TIMEOUT).await?.ok_or_else(|| anyhow!("no frame within {EVENT_TIMEOUT:?}"))
    }

    /// Next frame off the socket within `wait`, or None if nothing arrived.
    pub async fn next_wire(&mut self, wait: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("connection closed (close code {:?})", self.closed),
                Ok(Some(m)) => m?,
            };
            match msg {
                Message::Text(t) => return Ok(Some(serde_json::from_str(t.as_str())?)),
                Message::Close(c) => {
                    self.closed = c.map(|c| u16::from(c.code));
                    bail!("connection closed (close code {:?})", self.closed);
                }
                _ => continue,
            }
        }
    }

    /// Waits for the first frame of `ty` (others are kept for later `next` calls).
    pub async fn expect(&mut self, ty: &str) -> anyhow::Result<Value> {
        if let Some(pos) = self.backlog.iter().position(|f| f["type"] == ty) {
            return self.backlog.remove(pos).ok_or_else(|| anyhow!("backlog"));
        }
        loop {
            let f = self
                .next_wire(EVENT_TIMEOUT)
                .await?
                .ok_or_else(|| anyhow!("no {ty} frame within {EVENT_TIMEOUT:?}"))?;
            if f["type"] == ty {
                return Ok(f);
            }
            self.backlog.push_back(f);
        }
    }

    /// Waits for the `error` frame and returns its code.
    pub async fn expect_error(&mut self) -> anyhow::Result<(String, Value)> {
        let f = self.expect("error").await?;
        Ok((f["code"].as_str().unwrap_or_default().to_owned(), f))
    }

    /// Sends `msg` (an object like [`chat`]) with the next seq; returns its id.
    pub async fn send_msg(&mut self, mut msg: Value) -> anyhow::Result<String> {
        self.seq += 1;
        if msg.get("seq").is_none() {
            msg["seq"] = json!(self.seq);
        }
        let id = msg["id"].as_str().unwrap_or_default().to_owned();
        self.send_json(&json!({"v":1,"type":"send","msg":msg})).await?;
        Ok(id)
    }

    /// Sends and waits for its `stored` frame.
    pub async fn send_stored(&mut self, msg: Value) -> anyhow::Result<Value> {
        let id = self.send_msg(msg).await?;
        self.expect_stored(&id).await
    }

    /// Waits for the server's answer to `send` of message `id`: its `stored` or `error`.
    pub async fn answer(&mut self, id: &str) -> anyhow::Result<Value> {
        let matches = |f: &Value| (f["type"] == "stored" || f["type"] == "error") && f["id"] == id;
        if let Some(pos) = self.backlog.iter().position(matches) {
            return self.backlog.remove(pos).ok_or_else(|| anyhow!("backlog"));
        }
        loop {
            let f = self.next_wire(EVENT_TIMEOUT).await?.ok_or_else(|| anyhow!("no answer for {id}"))?;
            if matches(&f) {
                return Ok(f);
            }
            self.backlog.push_back(f);
        }
    }

    /// Waits for the `stored` frame of message `id` (or fails on its `error`).
    pub async fn expect_stored(&mut self, id: &str) -> anyhow::Result<Value> {
        let f = self.answer(id).await?;
        if f["type"] == "error" {
            bail!("send {id} refused: {f}");
        }
        Ok(f)
    }

    /// Sends `n` chat messages (`"{what} {i}"`) to `room`, pipelined as an outbox flush,
    /// and waits until each is stored; their ids, in order.
    pub async fn send_chats(&mut self, room: &str, n: usize, what: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(self.send_msg(chat(room, &format!("{what} {i}"))).await?);
        }
        for id in &ids {
            self.expect_stored(id).await?;
        }
        Ok(ids)
    }

    /// Collects `n` `message` frames.
    pub async fn messages(&mut self, n: usize) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.expect("message").await.with_context(|| format!("after {} of {n} messages", out.len()))?);
        }
        Ok(out)
    }

    /// Asserts no frame of `ty` arrives within `wait` (used only to prove an absence).
    pub async fn no_frame_of(&mut self, ty: &str, wait: Duration) -> anyhow::Result<()> {
        if let Some(f) = self.backlog.iter().find(|f| f["type"] == ty) {
            bail!("unexpected {ty}: {f}");
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(f) = self.next_wire(deadline.saturating_duration_since(tokio::time::Instant::now())).await? {
            if f["type"] == ty {
                bail!("unexpected {ty}: {f}");
            }
            self.backlog.push_back(f);
        }
        Ok(())
    }

    /// A round trip through the server: everything sent before is processed after this.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        self.send_json(&json!({"v":1,"type":"ping"})).await?;
        self.expect("pong").await.map(|_| ())
    }

    /// Takes every frame of `ty` received so far (call after [`Device::sync`]).
    pub fn take(&mut self, ty: &str) -> Vec<Value> {
        let (hit, keep): (Vec<Value>, Vec<Value>) = self.backlog.drain(..).partition(|f| f["type"] == ty);
        self.backlog = keep.into();
        hit
    }

    /// Takes every frame received so far, of any type (call after [`Device::sync`]).
    pub fn take_all(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// Everything the server sends up to now: replay and live frames of `ty` that arrived
    /// before a ping round trip.
    pub async fn settle(&mut self, ty: &str) -> anyhow::Result<Vec<Value>> {
        self.sync().await?;
        Ok(self.take(ty))
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self) -> anyhow::Result<Option<u16>> {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await {
                Err(_) => bail!("the server did not close the connection"),
                Ok(None) => return Ok(self.closed),
                Ok(Some(Err(_))) => return Ok(self.closed),
                Ok(Some(Ok(Message::Close(c)))) => {
                    self.closed = c.map(|c| u16::from(c.code));
                    return Ok(self.closed);
                }
                Ok(Some(Ok(Message::Text(t)))) => self.backlog.push_back(serde_json::from_str(t.as_str())?),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Closes and waits until the server has answered the close (its session is over).
    pub async fn close_and_wait(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        while let Ok(Some(m)) = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await {
            if m.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// `host:port` of a `ws://`, `wss://`, `http://` or `https://` URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default()
}

/// TCP to `url`'s host, then a TLS handshake that checks the server's certificate for
/// that host (an IP address or a DNS name).
pub async fn tls_connect(
    url: &str,
    tls: tokio_rustls::TlsConnector,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let addr = host_port(url);
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connecting {addr}"))?;
    Ok(tls.connect(name, tcp).await?)
}
