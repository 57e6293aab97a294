//! A small HTTP proxy that only tunnels (`CONNECT`), as sites with a proxy-only way out
//! have: it checks `Proxy-Authorization: Basic` when given credentials (407 otherwise),
//! and records the targets it was asked for.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub struct ConnectProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// `CONNECT` targets served, in order.
    pub tunnels: Arc<Mutex<Vec<String>>>,
    /// Requests refused for missing or wrong credentials.
    pub refused: Arc<Mutex<u64>>,
}

impl ConnectProxy {
    /// A proxy on a free loopback port; with `credentials` (`user:password`) it requires them.
    pub async fn start(credentials: Option<&str>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let want = credentials.map(|c| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c)));
        let (tunnels, refused) = (Arc::<Mutex<Vec<String>>>::default(), Arc::<Mutex<u64>>::default());
        let (t, r) = (tunnels.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (want, t, r) = (want.clone(), t.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(client, want, t, r).await;
                });
            }
        });
        Ok(Self { addr, task, tunnels, refused })
    }

    /// `http://[credentials@]127.0.0.1:PORT`, for `uplink.proxy`.
    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    want: Option<String>,
    tunnels: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u64>>,
) -> anyhow::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 8192, "request head too long");
        head.push(client.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let target = match first.split(' ').collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_owned(),
        _ => {
            client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await?;
            return Ok(());
        }
    };
    let auth = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("proxy-authorization").then(|| v.trim().to_owned())
    });
    if want.is_some() && auth != want {
        *refused.lock().map_err(|_| anyhow::anyhow!("poisoned"))? += 1;
        client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n").await?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(&target).await?;
    tunnels.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(target);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
