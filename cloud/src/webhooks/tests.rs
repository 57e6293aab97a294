//! Delivery by two servers sharing one database (two tasks with their own holder names on
//! one SQLite store), to a receiver on a real socket, with a short lease so takeovers
//! happen in well under a second.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{Body, DeviceId, MessageId, MessageKind, Priority, Seq, UserId};
use outpost_storage::AppendRequest;
use outpost_store_sqlite::{Store, StoreOptions};
use tokio::sync::mpsc;

use super::*;

const WAIT: Duration = Duration::from_secs(20);

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

struct Nobody;
impl outpost_storage::Publisher for Nobody {
    fn publish(&self, _: outpost_storage::LogEntry) {}
}

fn store(dir: &Path) -> Store {
    let opts = StoreOptions {
        quota_bytes: 1 << 30,
        emergency_reserve_bytes: 1 << 20,
        max_batch: 1024,
        max_receipts_per_ack: 100,
        readers: 2,
    };
    ok(Store::open(&dir.join("cloud.db"), opts, Arc::new(Nobody)))
}

async fn append(store: &Store, n: u64) -> Cursor {
    let msg = OutgoingMsg {
        id: MessageId(uuid::Uuid::now_v7()),
        room: ok(RoomId::new("ward")),
        kind: ok(MessageKind::new("chat")),
        priority: Priority::Normal,
        body: ok(Body::from_json(&format!("{{\"n\":{n}}}"))),
        seq: Seq(n),
        reply_to: None,
    };
    let req = AppendRequest {
        msg,
        from: ok(UserId::new("amina")),
        device: ok(DeviceId::new("phone")),
        at: 1_700_000_000_000 + n,
        origin: None,
    };
    ok(store.append_wait(req).await).cursor
}

/// A receiver that takes every request and reports its cursor.
async fn receiver() -> (String, mpsc::UnboundedReceiver<u64>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let tx = tx.clone();
            async move {
                let cursor = headers.get(CURSOR_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
                let _ = tx.send(cursor);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let url = format!("http://{}/hook", ok(listener.local_addr()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn endpoint(url: &str) -> Endpoint {
    let cfg = WebhookConfig {
        name: "his".into(),
        url: url.into(),
        secret: Some(crate::config::Secret("0123456789abcdef-secret".into())),
        request_timeout_ms: 100,
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        ..WebhookConfig::default()
    };
    let mut hook = ok(Endpoint::from_config(&cfg, Path::new(".")));
    hook.lease_min = Duration::from_millis(300);
    hook
}

async fn next(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    ok(tokio::time::timeout(WAIT, rx.recv()).await.map_err(|_| "no delivery in time")).unwrap_or(0)
}

async fn holder_in_db(store: &Store) -> String {
    ok(store.read_with(|c| c.query_row("SELECT holder FROM hooks WHERE name = 'his'", [], |r| r.get(0))).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_at_a_time_delivers_and_another_takes_over_when_it_stops_or_dies() {
    let dir = ok(tempfile::tempdir());
    let store = store(dir.path());
    let (url, mut got) = receiver().await;
    let mut cursors = Vec::new();
    for n in 0..5 {
        cursors.push(append(&store, n).await);
    }

    let stop_a = CancellationToken::new();
    let a = tokio::spawn(deliver(store.clone(), endpoint(&url), Arc::from("node-a"), stop_a.clone()));
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut got).await);
    }
    assert_eq!(seen.iter().map(|c| Cursor(*c)).collect::<Vec<_>>(), cursors, "in cursor order");

    // A second server starts: the lease is held, so it delivers nothing while the first
    // goes on (a second delivery of anything would show up as a repeated cursor).
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(deliver(store.clone(), endpoint(&url), Arc::from("node-b"), stop_b.clone()));
    let mut last = 0;
    for n in 5..8 {
        let c = append(&store, n).await;
        assert_eq!(next(&mut got).await, c.0);
        last = c.0;
    }
    assert_eq!(holder_in_db(&store).await, "node-a");

    // The first stops cleanly: it stores its position and lets go; the second goes on
    // from there. At most the event whose answer was in flight when the first stopped
    // comes again (the receiver had it, the first had not seen the 2xx yet: at least
    // once); nothing older does.
    stop_a.cancel();
    ok(a.await);
    // Where the first stopped: no one delivers anything before it again.
    let stored_at_stop = ok(store.hook_position("his").await).0;
    assert!(stored_at_stop + 1 >= last, "the first stored its position when it stopped: {stored_at_stop}");
    let eighth = append(&store, 8).await;
    let mut first = next(&mut got).await;
    if first == last {
        first = next(&mut got).await;
    }
    assert_eq!(first, eighth.0, "the second server delivers the next event, and only it");
    assert_eq!(holder_in_db(&store).await, "node-b");

    // The second dies without a word: a third takes over once its lease expired, from
    // the stored position (at least once: what the dead one had not stored comes again,
    // which can reach back to the event in flight when the first stopped if the second
    // died before storing any progress of its own).
    b.abort();
    let _ = b.await;
    let stop_c = CancellationToken::new();
    let third = tokio::spawn(deliver(store.clone(), endpoint(&url), Arc::from("node-c"), stop_c.clone()));
    let c = append(&store, 9).await;
    loop {
        let cursor = next(&mut got).await;
        // The dead server may not have stored its deliveries yet.
        assert!(cursor > stored_at_stop, "nothing from before the stored position {stored_at_stop}: {cursor}");
        if cursor == c.0 {
            break;
        }
    }
    assert_eq!(holder_in_db(&store).await, "node-c");
    stop_b.cancel();
    stop_c.cancel();
    ok(third.await);
    assert!(got.try_recv().is_err(), "nothing more was sent");
    store.shutdown().await;
}

#[test]
fn headers_name_the_event_and_sign_the_body_at_the_time() {
    let hook = endpoint("http://127.0.0.1:9/hook");
    let event = Positioned {
        cursor: Cursor(42),
        msg: outpost_shared::frames::MessageBody {
            id: MessageId(uuid::Uuid::nil()),
            room: ok(RoomId::new("ward")),
            kind: ok(MessageKind::new("chat")),
            priority: Priority::Normal,
            body: ok(Body::from_json("{}")),
            seq: Seq(1),
            reply_to: None,
            from: ok(UserId::new("amina")),
            device: ok(DeviceId::new("phone")),
            hlc: outpost_shared::Hlc(0),
            at: 0,
        },
    };
    let headers = ok(hook.headers(&event, b"{}", 1_700_000_000));
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("idempotency-key"), "00000000-0000-0000-0000-000000000000");
    assert_eq!(get("x-outpost-cursor"), "42");
    assert_eq!(get("x-outpost-webhook"), "his");
    assert_eq!(get("x-outpost-timestamp"), "1700000000");
    assert_eq!(get("x-outpost-signature"), sign::signature(b"0123456789abcdef-secret", 1_700_000_000, b"{}"));
    assert_eq!(hook.lease(), Duration::from_millis(300), "three attempts of 100 ms fit in the shortest lease");
}
