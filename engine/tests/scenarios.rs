//! Scenarios against the engine run in-process: the hub's `run` on a port-0 listener and a
//! temporary directory, real WebSocket clients, and tokio's paused clock, so rules about
//! time (a `hello` deadline, the idle timeout and the pings that keep a device alive) are
//! checked in simulated seconds instead of real minutes. The process tests in `tests/`
//! check the same binaries as users run them; these check the session's rules directly.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use outpost_engine::{Listeners, RelayConfig, RunError};
use outpost_shared::bundle::encode_key;
use outpost_shared::{Claims, Role, RoomId, TokenSigner, UserId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CLOUD: &str = "cloud-scenarios";

/// One hub, in this process.
struct Scenario {
    addr: SocketAddr,
    signer: TokenSigner,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), RunError>>,
    _dir: tempfile::TempDir,
}

impl Scenario {
    async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let signer = TokenSigner::from_seed(&[7; 32], CLOUD);
        let mut config = RelayConfig::default();
        config.identity.relay_id = "hub-scenarios".into();
        config.identity.cloud_id = CLOUD.into();
        config.identity.token_public_key = encode_key(&signer.public_key());
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(outpost_engine::run(
            config,
            dir.path().to_path_buf(),
            Listeners { ws: listener, https: None },
            shutdown.clone(),
            Box::new(move || {
                let _ = ready_tx.send(());
            }),
        ));
        ready.await.unwrap_or_else(|e| panic!("the hub did not start: {e}"));
        Self { addr, signer, shutdown, server, _dir: dir }
    }

    fn token(&self, user: &str) -> String {
        let now = outpost_engine::clock::now_ms() / 1000;
        let claims = Claims {
            sub: UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
            role: Role::Worker,
            rooms: vec![RoomId::new("clinic").unwrap_or_else(|e| panic!("{e}"))],
            exp: now + 3600,
            iat: now,
            iss: CLOUD.into(),
            jti: format!("jti-{user}"),
            lin: None,
            dlg: None,
            org: None,
        };
        self.signer.sign(&claims).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn connect(&self) -> Ws {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr)).await.unwrap_or_else(|e| panic!("{e}"));
        ws
    }

    /// A device signed in as `user`.
    async fn signed_in(&self, user: &str) -> Ws {
        let mut ws = self.connect().await;
        let hello = serde_json::json!({"v":1,"type":"hello","token":self.token(user),"device":format!("{user}-phone"),"cursor":null,"epoch":null});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap_or_else(|e| panic!("{e}"));
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"type\":\"welcome\"") => return ws,
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected welcome, got {other:?}"),
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = self.server.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(result.is_ok(), "the hub stopped cleanly: {result:?}");
    }
}

/// Reads until the server closes the connection, for at most ten simulated minutes;
/// returns the close code (None: no close frame) and when.
async fn closed(ws: &mut Ws) -> (Option<CloseCode>, tokio::time::Instant) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Ok(Message::Close(frame)) = m {
            return (frame.map(|f| f.code), tokio::time::Instant::now());
        }
        if m.is_err() {
            break;
        }
    }
    (None, tokio::time::Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_device_that_never_says_hello_is_closed_with_4008_at_the_deadline() {
    let hub = Scenario::start(|c| c.limits.hello_timeout_secs = 10).await;
    let started = tokio::time::Instant::now();
    let mut ws = hub.connect().await;
    let (code, at) = closed(&mut ws).await;
    assert_eq!(code, Some(CloseCode::from(4008)));
    let waited = at - started;
    assert!(waited >= Duration::from_secs(10), "not before the deadline: {waited:?}");
    assert!(waited < Duration::from_secs(11), "at the deadline: {waited:?}");
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pongs_alone_keep_an_idle_device_and_silence_drops_one_with_4009() {
    let hub = Scenario::start(|c| {
        c.limits.ping_interval_secs = 30;
        c.limits.idle_timeout_secs = 90;
    })
    .await;
    // One phone answers the hub's pings (tungstenite answers them while it reads) and
    // sends nothing else; the other reads nothing, so it answers nothing.
    let mut answering = hub.signed_in("amina").await;
    let mut silent = hub.signed_in("baraka").await;
    let started = tokio::time::Instant::now();
    let five_idle_periods = Duration::from_secs(5 * 90);
    let answering_alive = async {
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(started + five_idle_periods, answering.next()).await {
                Err(_) => return pings,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Text(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("the answering phone was dropped: {other:?}"),
            }
        }
    };
    let silent_dropped = async {
        // Not reading while the hub waits for its pongs; then see how it ended.
        tokio::time::sleep(Duration::from_secs(120)).await;
        closed(&mut silent).await.0
    };
    let (pings, silent_code) = tokio::join!(answering_alive, silent_dropped);
    assert!(pings >= 14, "pinged every 30 s for 450 s, and answered: {pings} pings");
    assert_eq!(silent_code, Some(CloseCode::from(4009)), "no answer for 90 s: dropped as idle");
    hub.stop().await;
}
