//! A minimal HTTP/1.1 client for the API tests (one request per connection).

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends `method path` to `base` (`http://host:port`) and returns (status, JSON body).
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting {host}"))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(crate::EVENT_TIMEOUT, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head.split(' ').nth(1).context("no status")?.parse()?;
    // Bodies are small JSON; chunked encoding is undone crudely.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.lines().filter(|l| l.starts_with('{') || l.starts_with('[')).collect::<String>()
    } else {
        body.to_owned()
    };
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// `GET path` with the body as text (for pages that are not JSON): (status, body).
pub async fn get_text(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting {host}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(crate::EVENT_TIMEOUT, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    anyhow::ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked body: {head}");
    let status: u16 = head.split(' ').nth(1).context("no status")?.parse()?;
    Ok((status, body.to_owned()))
}

/// Posts a message to `room` over the HTTP API; returns its (cursor, id).
pub async fn post_message(base: &str, token: &str, room: &str, text: &str) -> anyhow::Result<(u64, String)> {
    let id = crate::new_id();
    let body = json!({"id": id, "body": {"text": text}});
    let (status, created) =
        request(base, "POST", &format!("/api/rooms/{room}/messages"), Some(token), Some(&body)).await?;
    anyhow::ensure!(status == 201, "post to {room}: {status} {created}");
    let cursor = created["cursor"].as_u64().ok_or_else(|| anyhow::anyhow!("no cursor in {created}"))?;
    Ok((cursor, id))
}

/// One page of events after `after`: ((cursor, id, room) of each, next, more).
pub async fn events_page(
    base: &str,
    token: &str,
    after: u64,
    limit: u32,
) -> anyhow::Result<(Vec<(u64, String, String)>, u64, bool)> {
    let (status, v) =
        request(base, "GET", &format!("/api/events?after={after}&limit={limit}"), Some(token), None).await?;
    anyhow::ensure!(status == 200, "events after {after}: {status} {v}");
    let events = v["events"].as_array().ok_or_else(|| anyhow::anyhow!("no events in {v}"))?;
    let got = events
        .iter()
        .map(|e| {
            let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
            (e["cursor"].as_u64().unwrap_or(0), s(&e["msg"]["id"]), s(&e["msg"]["room"]))
        })
        .collect();
    let next = v["next"].as_u64().ok_or_else(|| anyhow::anyhow!("no next in {v}"))?;
    let more = v["more"].as_bool().ok_or_else(|| anyhow::anyhow!("no more in {v}"))?;
    Ok((got, next, more))
}
