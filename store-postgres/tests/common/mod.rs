//! What the PostgreSQL store's test files share.

use std::time::Duration;

use outpost_storage::{LogEntry, Publisher};

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
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
