//! What the PostgreSQL store's test files share.

use std::time::Duration;

use outpost_shared::frames::OutgoingMsg;
use outpost_shared::{Body, DeviceId, MessageId, MessageKind, Priority, RoomId, Seq, UserId};
use outpost_storage::{AppendRequest, LogEntry, Publisher};

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A chat message `text` from `user` on `device` to `room`, as a device's `send` is
/// handed to the store (`n` is its seq, and its time past a fixed start).
pub fn chat_from(user: &str, device: &str, room: &RoomId, text: &str, n: u64) -> AppendRequest {
    AppendRequest {
        msg: OutgoingMsg {
            id: MessageId(uuid::Uuid::now_v7()),
            room: room.clone(),
            kind: ok(MessageKind::new("chat")),
            priority: Priority::Normal,
            // `{:?}` quotes and escapes the plain texts the tests use as JSON would.
            body: ok(Body::from_json(&format!("{{\"text\":{text:?}}}"))),
            seq: Seq(n),
            reply_to: None,
        },
        from: ok(UserId::new(user)),
        device: ok(DeviceId::new(device)),
        at: 1_700_000_000_000 + n,
        origin: None,
    }
}

/// What a node's router got, in order; wakes whoever waits for a cursor.
#[derive(Default)]
pub struct Seen {
    entries: std::sync::Mutex<Vec<LogEntry>>,
    changed: tokio::sync::Notify,
}

impl Publisher for Seen {
    fn publish(&self, entry: LogEntry) {
        if let Ok(mut v) = self.entries.lock() {
            v.push(entry);
        }
        self.changed.notify_waiters();
    }
}

impl Seen {
    pub fn cursors(&self) -> Vec<u64> {
        self.entries.lock().map(|v| v.iter().map(|e| e.cursor.0).collect()).unwrap_or_default()
    }

    #[allow(dead_code, reason = "not every test file looks for a text")]
    pub fn has_text(&self, text: &str) -> bool {
        self.entries.lock().map(|v| v.iter().any(|e| e.frame.contains(text))).unwrap_or(false)
    }

    /// Waits (at most 20 s) until `cursor` was published.
    pub async fn until(&self, cursor: u64) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.cursors().contains(&cursor) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(20), wait).await.is_err() {
            panic!("cursor {cursor} was not published within 20 s; the last published: {:?}", self.cursors().last());
        }
    }
}
