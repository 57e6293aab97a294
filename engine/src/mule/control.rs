//! How the `export` and `import` commands reach a running server: a Unix socket in its
//! data directory (`control.sock`, readable by the server's own user only), so a stick is
//! handled by the process that owns the database while it keeps serving. With no server
//! running, the command opens the database itself; the data directory's lock
//! (`outpost.lock`) keeps a server from starting on it meanwhile, and keeps two servers
//! from ever sharing one database.
//!
//! One request per connection: a JSON line ([`Request`]) and the file's bytes; one
//! answer: a JSON line ([`Answer`]) and the answer file's bytes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{MuleError, Summary};

/// The socket's file name in a server's data directory.
pub const SOCKET: &str = "control.sock";
/// The lock's file name in a server's data directory.
pub const LOCK: &str = "outpost.lock";
/// Largest file carried through the socket (a stick file is bounded by `--max-mb`).
const MAX_FILE_BYTES: u64 = 8 << 30;
/// Longest request or answer line.
const MAX_LINE: usize = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A hub's file for the cloud (hub), or the cloud's answer for `relay` (cloud).
    Export,
    /// The other side's file applied; the cloud answers with its own.
    Import,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    pub max_bytes: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub summary: Summary,
    #[serde(default)]
    pub len: u64,
}

/// What the server does with a request: its file in, an answer file (maybe empty) out.
pub type Handler = Arc<
    dyn Fn(Request, Vec<u8>) -> Pin<Box<dyn Future<Output = Result<(Summary, Vec<u8>), MuleError>> + Send>>
        + Send
        + Sync,
>;

/// Holds a data directory for one process (released when dropped or at exit).
#[derive(Debug)]
pub struct DataLock(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

impl DataLock {
    /// Takes `dir`'s lock, or says which process class holds it.
    pub fn take(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another Outpost process is using {} (a running server, or an export or import); wait for it or \
                 stop it",
                dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// Serves `handler` on `dir/control.sock` until `stop`.
pub async fn serve(dir: PathBuf, handler: Handler, stop: CancellationToken) {
    let path = dir.join(SOCKET);
    // A socket left by a server killed earlier: this process holds the lock now.
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no control socket: stick export and import will wait for a stopped server");
            stop.cancelled().await;
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handler).await {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let (req, body): (Request, _) = read_message(&mut BufReader::new(read), |r: &Request| r.len).await?;
    let (answer, bytes) = match handler(req, body).await {
        Ok((summary, bytes)) => {
            (Answer { ok: true, code: None, message: None, summary, len: bytes.len() as u64 }, bytes)
        }
        Err(e) => (
            Answer {
                ok: false,
                code: Some(e.code().into()),
                message: Some(e.to_string()),
                summary: Summary::default(),
                len: 0,
            },
            Vec::new(),
        ),
    };
    write_message(&mut write, &answer, &bytes).await?;
    write.shutdown().await
}

/// A JSON line and the `len(line)` bytes after it.
async fn read_message<T: serde::de::DeserializeOwned, R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    len: impl FnOnce(&T) -> u64,
) -> std::io::Result<(T, Vec<u8>)> {
    let head: T = serde_json::from_str(&read_line(r).await?).map_err(std::io::Error::other)?;
    let n = len(&head);
    if n > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("a file of {n} bytes is more than this server takes")));
    }
    let mut body = vec![0u8; usize::try_from(n).map_err(std::io::Error::other)?];
    r.read_exact(&mut body).await?;
    Ok((head, body))
}

async fn write_message<T: Serialize, W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    head: &T,
    body: &[u8],
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(head).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.write_all(body).await
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *r).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(std::io::Error::other("no complete line"));
    }
    String::from_utf8(line).map_err(std::io::Error::other)
}

/// Sends `req` and `body` to the server running on `dir`; `None` if none runs there.
pub async fn call(dir: &Path, mut req: Request, body: &[u8]) -> std::io::Result<Option<(Answer, Vec<u8>)>> {
    let stream = match UnixStream::connect(dir.join(SOCKET)).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    req.len = body.len() as u64;
    let (read, mut write) = stream.into_split();
    write_message(&mut write, &req, body).await?;
    read_message(&mut BufReader::new(read), |a: &Answer| a.len).await.map(Some)
}

/// Writes `bytes` to `path` so that a reader finds the old file or the new one, never a
/// part (a stick pulled out mid-write, a kill -9): a temporary file, synced, renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable once the directory is synced (some stick file systems
    // cannot sync a directory; the file's own sync stands then).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
