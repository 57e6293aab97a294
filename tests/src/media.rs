//! Media for the scenarios: an HTTP/1.1 client for the upload API (binary bodies,
//! headers in and out), a resumable uploader that counts what it sends, and photos made
//! on the spot.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn offset(&self) -> Option<u64> {
        self.header("upload-offset").and_then(|v| v.parse().ok())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The lowercase hex SHA-256 of `bytes` (a blob's name).
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn head_of(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    len: usize,
) -> String {
    let host = base.trim_start_matches("http://");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len}\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// One request on its own connection.
pub async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<Resp> {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting {host}"))?;
    s.write_all(head_of(base, method, path, token, headers, body.len()).as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(crate::EVENT_TIMEOUT, s.read_to_end(&mut raw)).await??;
    parse(&raw, method == "HEAD")
}

/// Sends the headers and only the first `send` bytes of `body`, then drops the
/// connection: a phone whose Wi-Fi went away in the middle of a chunk.
pub async fn call_cut(
    base: &str,
    path: &str,
    token: &str,
    headers: &[(&str, String)],
    body: &[u8],
    send: usize,
) -> anyhow::Result<()> {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(head_of(base, "PATCH", path, Some(token), headers, body.len()).as_bytes()).await?;
    s.write_all(&body[..send.min(body.len())]).await?;
    s.flush().await?;
    drop(s);
    Ok(())
}

fn parse(raw: &[u8], head_only: bool) -> anyhow::Result<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).context("no status")?.parse()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head_only {
        body = dechunk(&body)?;
    }
    Ok(Resp { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..line_end]).trim(), 16)?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("short chunk")?);
        b = b.get(size + 2..).context("short chunk")?;
    }
}

/// A device's upload of one file, counting the bytes it sends.
pub struct Upload<'a> {
    pub base: String,
    pub token: String,
    pub data: &'a [u8],
    pub sha: String,
    /// Bytes of chunks the server acknowledged (204).
    pub acked_bytes: u64,
    /// Bytes put on the wire in PATCH bodies, acknowledged or not.
    pub sent_bytes: u64,
}

impl<'a> Upload<'a> {
    pub fn new(base: &str, token: &str, data: &'a [u8]) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            data,
            sha: sha256_hex(data),
            acked_bytes: 0,
            sent_bytes: 0,
        }
    }

    /// `POST /api/media`: returns the answer (201 or 200 with Upload-Offset).
    pub async fn create(&self) -> anyhow::Result<Resp> {
        let h = [("Upload-Length", self.data.len().to_string()), ("Upload-Sha256", self.sha.clone())];
        call(&self.base, "POST", "/api/media", Some(&self.token), &h, &[]).await
    }

    /// Asks `HEAD` until the offset differs from `from` (a cut request is finished by the
    /// server after the client has gone); fails after [`crate::EVENT_TIMEOUT`].
    pub async fn offset_after(&self, from: u64) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + crate::EVENT_TIMEOUT;
        loop {
            let at = self.offset().await?;
            if at != from || tokio::time::Instant::now() > deadline {
                return Ok(at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `HEAD`: the server's offset.
    pub async fn offset(&self) -> anyhow::Result<u64> {
        let r = call(&self.base, "HEAD", &format!("/api/media/{}", self.sha), Some(&self.token), &[], &[]).await?;
        if r.status != 200 {
            bail!("HEAD answered {}", r.status);
        }
        r.offset().context("no Upload-Offset")
    }

    fn patch_headers(&self, offset: u64, chunk: &[u8], checksum: bool) -> Vec<(&'static str, String)> {
        use base64::Engine as _;
        let mut h =
            vec![("Upload-Offset", offset.to_string()), ("Content-Type", "application/offset+octet-stream".into())];
        if checksum {
            let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(chunk));
            h.push(("Upload-Checksum", format!("sha256 {digest}")));
        }
        h
    }

    /// One `PATCH` of `len` bytes from `offset`.
    pub async fn patch(&mut self, offset: u64, len: usize) -> anyhow::Result<Resp> {
        let start = usize::try_from(offset)?;
        let chunk = &self.data[start..(start + len).min(self.data.len())];
        let h = self.patch_headers(offset, chunk, true);
        self.sent_bytes += chunk.len() as u64;
        let r = call(&self.base, "PATCH", &format!("/api/media/{}", self.sha), Some(&self.token), &h, chunk).await?;
        if r.status == 204 {
            self.acked_bytes += chunk.len() as u64;
        }
        Ok(r)
    }

    /// A `PATCH` cut off after `send` of the chunk's bytes (`checksum`: with
    /// `Upload-Checksum`, so the server can only drop the cut chunk).
    pub async fn patch_cut(&mut self, offset: u64, len: usize, send: usize, checksum: bool) -> anyhow::Result<()> {
        let start = usize::try_from(offset)?;
        let chunk = &self.data[start..(start + len).min(self.data.len())];
        let h = self.patch_headers(offset, chunk, checksum);
        self.sent_bytes += send.min(chunk.len()) as u64;
        call_cut(&self.base, &format!("/api/media/{}", self.sha), &self.token, &h, chunk, send).await
    }

    /// Sends `chunk`-sized PATCHes from the server's offset until `stop_after` bytes are
    /// acknowledged in this call (or the blob is complete). Returns the final offset.
    pub async fn run(&mut self, chunk: usize, stop_after: Option<u64>) -> anyhow::Result<u64> {
        let mut at = self.offset().await?;
        let mut this_call = 0;
        while at < self.data.len() as u64 && stop_after.is_none_or(|s| this_call < s) {
            let r = self.patch(at, chunk).await?;
            match r.status {
                204 => {
                    let next = r.offset().context("204 without Upload-Offset")?;
                    this_call += next - at;
                    at = next;
                }
                409 => at = r.offset().context("409 without Upload-Offset")?,
                s => bail!("PATCH answered {s}: {}", String::from_utf8_lossy(&r.body)),
            }
        }
        Ok(at)
    }

    /// The `send` frame's message for this upload, in `room`.
    pub fn message(&self, room: &str, caption: &str, name: &str) -> Value {
        serde_json::json!({
            "id": crate::new_id(), "room": room, "kind": "media", "priority": "normal", "seq": 1,
            "body": {"text": caption, "media": {"sha256": self.sha, "type": "image/jpeg", "name": name}},
        })
    }
}

/// `GET /api/media/HEX/info` as JSON (Null on a refusal).
pub async fn info(base: &str, token: &str, sha: &str) -> anyhow::Result<(u16, Value)> {
    let r = call(base, "GET", &format!("/api/media/{sha}/info"), Some(token), &[], &[]).await?;
    Ok((r.status, r.json()))
}

/// Polls `/info` until `done` holds for it; the server has no push for blob arrival, so
/// the client (like the web client) asks. `every` bounds how stale the answer may be.
pub async fn info_until(
    base: &str,
    token: &str,
    sha: &str,
    every: Duration,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, v) = info(base, token, sha).await?;
        if status == 200 && done(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("blob {sha} not as expected within {limit:?}; last /info: {status} {v}");
        }
        tokio::time::sleep(every).await;
    }
}

/// `GET /api/media/HEX`: the bytes.
pub async fn download(base: &str, token: &str, sha: &str) -> anyhow::Result<Resp> {
    call(base, "GET", &format!("/api/media/{sha}"), Some(token), &[], &[]).await
}

/// A JPEG photo of at least `min_bytes`: smooth shapes under fine grain, like a camera
/// picture (the grain makes it big at full size and vanishes in the preview).
pub fn photo(min_bytes: usize, seed: u32) -> Vec<u8> {
    let mut side = ((min_bytes as f64 / 1.2).sqrt() as u32).max(64);
    loop {
        let mut s = seed | 1;
        let img = image::RgbImage::from_fn(side * 4 / 3, side, |x, y| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let grain = (s % 48) as i32 - 24;
            let base = [(x * 255 / (side * 4 / 3)) as i32, (y * 255 / side) as i32, (((x + y) / 7) % 200) as i32];
            image::Rgb(base.map(|c| (c + grain).clamp(0, 255) as u8))
        });
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92);
        if img.write_with_encoder(enc).is_err() {
            return out;
        }
        if out.len() >= min_bytes {
            return out;
        }
        let grow = (min_bytes as f64 / out.len().max(1) as f64).sqrt() * 1.05;
        side = ((f64::from(side) * grow) as u32).max(side + 16);
    }
}
