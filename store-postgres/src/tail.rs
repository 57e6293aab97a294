//! The tail: hands every committed entry, this node's and other nodes', to this node's
//! router exactly once and in cursor order.
//!
//! Two things wake it: this node's writer or one of its importers after a commit
//! ([`LocalCommit`], with the entries it wrote, published from memory once everything
//! below them is published) and a notification that another node committed (`LISTEN
//! outpost_log`, see [`listen`]), after which it reads the new entries from the database
//! up to the stable head ([`crate::STABLE_HEAD`]: never past an import still committing).
//! A timer catches anything a notification missed while the listening connection was
//! down, and removes ranges whose node died before committing them. Order is what
//! matters: a phone that got cursor 12 live and then lost its connection resumes after
//! 12, so 11 must never be published after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use outpost_shared::frames::ReceiptState;
use outpost_shared::{Cursor, MessageId, RoomId, UserId};
use outpost_storage::{Audience, LogEntry, Publisher};
use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::reader::{MESSAGE_COLUMNS, message_from_row};
use crate::writer::{message_entry, receipt_entry};
use crate::{Shared, from_sql, to_sql};

/// What the writer hands over after a commit: the head it found (`base`), the head it
/// left (`through`), the entries in between that it wrote, and the answers to their
/// senders, given once all of them are published.
pub(crate) struct LocalCommit {
    pub base: u64,
    pub through: u64,
    pub entries: Vec<LogEntry>,
    pub answer: Box<dyn FnOnce() + Send>,
}

/// Entries read from the database per query while catching up.
const PAGE: i64 = 2000;
/// How often the set of known rooms is read again (rooms named by other nodes' tokens).
const ROOMS_REFRESH: Duration = Duration::from_secs(10);

pub(crate) struct Tail {
    shared: Arc<Shared>,
    publisher: Arc<dyn Publisher>,
    published: u64,
    head_tx: tokio::sync::watch::Sender<u64>,
    /// This node's commits waiting for something below them (another connection's or
    /// node's range) to be published first, by the cursor below each.
    waiting: BTreeMap<u64, LocalCommit>,
}

impl Tail {
    pub fn new(
        shared: Arc<Shared>,
        publisher: Arc<dyn Publisher>,
        head: u64,
        head_tx: tokio::sync::watch::Sender<u64>,
    ) -> Self {
        Self { shared, publisher, published: head, head_tx, waiting: BTreeMap::new() }
    }

    pub async fn run(mut self, mut local: mpsc::Receiver<LocalCommit>, wake: Arc<Notify>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.shared.opts.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rooms_checked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    // The last commits still owe their senders an answer: they are
                    // committed, whether or not the router (stopping too) sees them.
                    while let Ok(c) = local.try_recv() {
                        self.waiting.insert(c.base, c);
                    }
                    self.drain_waiting();
                    for (_, c) in std::mem::take(&mut self.waiting) {
                        (c.answer)();
                    }
                    return;
                }
                c = local.recv() => {
                    let Some(c) = c else { return };
                    self.local(c, &stop).await;
                }
                () = wake.notified() => self.catch_up(&stop).await,
                _ = tick.tick() => {
                    reclaim(&self.shared).await;
                    self.catch_up(&stop).await;
                    if rooms_checked.elapsed() >= ROOMS_REFRESH {
                        rooms_checked = tokio::time::Instant::now();
                        self.refresh_rooms().await;
                    }
                }
            }
        }
    }

    async fn local(&mut self, c: LocalCommit, stop: &CancellationToken) {
        if let Ok(mut f) = self.shared.in_flight.lock() {
            f.remove(&c.base);
        }
        if c.through <= self.published {
            // Read from the database already (another node's notification came first).
            (c.answer)();
            return;
        }
        self.waiting.insert(c.base, c);
        self.catch_up(stop).await;
    }

    /// Publishes the waiting commits that are next, from memory.
    fn drain_waiting(&mut self) {
        while let Some(next) = self.waiting.first_entry() {
            if *next.key() > self.published {
                return;
            }
            let c = next.remove();
            for e in c.entries {
                if e.cursor.0 > self.published {
                    self.publish(e);
                }
            }
            self.advance(c.through);
            (c.answer)();
        }
    }

    /// Publishes everything that can be: waiting commits from memory, the rest from the
    /// database up to the stable head.
    async fn catch_up(&mut self, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            self.drain_waiting();
            let next = self.waiting.first_key_value().map(|(b, _)| *b);
            if let Some(next) = next {
                // One of this node's importers holds a range below: its commit (or its
                // end) is on the way here; asking the database would only read it twice.
                let own_below = self
                    .shared
                    .in_flight
                    .lock()
                    .map(|f| f.range(self.published..next).next().is_some())
                    .unwrap_or(false);
                if own_below {
                    return;
                }
            }
            let Some((stable, _)) = heads(&self.shared).await else { return };
            let target = next.map_or(stable, |n| n.min(stable));
            if target <= self.published {
                return;
            }
            self.publish_from_db(target, stop).await;
            if next.is_none() {
                return;
            }
        }
    }
}

/// The stable head and the head (see [`crate::STABLE_HEAD`]).
async fn heads(shared: &Shared) -> Option<(u64, u64)> {
    let client = match shared.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "no database connection for the tail");
            return None;
        }
    };
    match client.query_one(crate::STABLE_HEAD, &[]).await {
        Ok(row) => Some((from_sql(row.get(0)), from_sql(row.get(1)))),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the log head");
            None
        }
    }
}

/// Removes open ranges whose backend is gone, when there are any: a node that died
/// between reserving and committing must not hold back every node's readers.
async fn reclaim(shared: &Shared) {
    let Some((stable, head)) = heads(shared).await else { return };
    if stable >= head {
        return;
    }
    let Ok(client) = shared.pool.get().await else { return };
    if let Err(e) = client.batch_execute(crate::RECLAIM).await {
        tracing::debug!(error = %e, "cannot reclaim ranges of dead connections");
    }
}

impl Tail {
    /// Reads and publishes the entries after `published` up to `through`, retrying while
    /// the database is unreachable (nothing may be published out of order meanwhile).
    async fn publish_from_db(&mut self, through: u64, stop: &CancellationToken) {
        let mut wait = Duration::from_millis(50);
        while self.published < through {
            match read_page(&self.shared, self.published, through).await {
                Ok((entries, to)) => {
                    for e in entries {
                        self.publish(e);
                    }
                    self.advance(to);
                    wait = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read new entries; live delivery waits");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn publish(&mut self, mut e: LogEntry) {
        if let Audience::Room { room, except } = &mut e.audience {
            let origin = self.shared.excepts.lock().ok().and_then(|mut m| m.remove(&e.cursor.0));
            if origin.is_some() {
                *except = origin;
            }
            let known = self.shared.known_rooms.read().map(|k| k.contains(room)).unwrap_or(true);
            if !known && let Ok(mut k) = self.shared.known_rooms.write() {
                k.insert(room.clone());
            }
        }
        self.publisher.publish(e);
    }

    fn advance(&mut self, to: u64) {
        if to > self.published {
            self.published = to;
            let _ = self.head_tx.send(to);
        }
    }

    async fn refresh_rooms(&mut self) {
        let Ok(client) = self.shared.pool.get().await else { return };
        match crate::reader::load_rooms(&**client).await {
            Ok(rooms) => {
                if let Ok(mut known) = self.shared.known_rooms.write() {
                    known.extend(rooms);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the known rooms"),
        }
    }
}

/// Keeps a connection that listens for other nodes' commits and wakes the tail for each,
/// reconnecting with backoff when the database goes away (and waking the tail once after
/// reconnecting, for what was missed meanwhile).
pub(crate) async fn listen(cfg: tokio_postgres::Config, wake: Arc<Notify>, stop: CancellationToken) {
    let mut wait = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = cfg.connect(NoTls) => c,
        };
        let (client, mut conn) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot connect the listener; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        wait = Duration::from_millis(100);
        let (ntx, mut nrx) = mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => {
                        if ntx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "listener connection ended");
                        return;
                    }
                }
            }
        });
        if let Err(e) = client.batch_execute("LISTEN outpost_log").await {
            tracing::debug!(error = %e, "cannot LISTEN; retrying");
            driver.abort();
            continue;
        }
        wake.notify_one();
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    driver.abort();
                    return;
                }
                n = nrx.recv() => match n {
                    Some(()) => wake.notify_one(),
                    None => break,
                },
            }
        }
        tracing::info!("lost the database notification connection; reconnecting");
    }
}

/// One page of entries in (published, through], and how far it reaches.
async fn read_page(shared: &Shared, published: u64, through: u64) -> Result<(Vec<LogEntry>, u64), String> {
    let client = shared.pool.get().await.map_err(|e| e.to_string())?;
    let sql = format!(
        "SELECT 0, {MESSAGE_COLUMNS}, NULL, NULL FROM messages WHERE cursor > $1 AND cursor <= $2
             UNION ALL
             SELECT 1, cursor, msg_id, room, NULL, NULL, NULL, NULL, NULL, by_user, NULL, NULL, at, state, target
               FROM receipts WHERE cursor > $1 AND cursor <= $2
             ORDER BY 2 LIMIT $3"
    );
    let stmt = client.prepare_cached(&sql).await.map_err(|e| e.to_string())?;
    let rows = client.query(&stmt, &[&to_sql(published), &to_sql(through), &PAGE]).await.map_err(|e| e.to_string())?;
    let full = rows.len() as i64 >= PAGE;
    let mut out = Vec::with_capacity(rows.len());
    let mut last = published;
    for r in &rows {
        let kind: i32 = r.get(0);
        let cursor = from_sql(r.get(1));
        last = cursor;
        if kind == 0 {
            match message_from_row(r, 1) {
                Ok(p) => out.push(message_entry(p.cursor, p.msg)),
                Err(e) => tracing::error!(cursor, error = %e, "a stored message does not decode; not published"),
            }
        } else {
            let decoded = (|| {
                let id = MessageId::from_bytes(<[u8; 16]>::try_from(r.get::<_, &[u8]>(2)).ok()?);
                let state = ReceiptState::parse(r.get::<_, &str>(13))?;
                let by = UserId::new(r.get::<_, String>(9)).ok();
                let target = UserId::new(r.get::<_, String>(14)).ok()?;
                let room = RoomId::new(r.get::<_, String>(3)).ok()?;
                Some(receipt_entry(Cursor(cursor), id, state, by, target, room, from_sql(r.get(12))))
            })();
            match decoded {
                Some(e) => out.push(e),
                None => tracing::error!(cursor, "a stored receipt does not decode; not published"),
            }
        }
    }
    Ok((out, if full { last } else { through }))
}
