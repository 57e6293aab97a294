//! The importers: hubs' batches committed on several connections at once.
//!
//! Hubs' batches are most of what a cloud writes, and one connection committing them all
//! is one PostgreSQL backend's speed (BENCHMARKS.md). So each node runs
//! `PgOptions::import_writers` importers, each on its own connection, taking groups of
//! batches from one queue:
//!
//! 1. **Reserve** the group's cursors in a short transaction: move `log_head` by as many
//!    entries as the group holds and record the range in `open_ranges`, with the backend
//!    that will commit it. Its commit need not wait for the disk: the commit in step 2 is
//!    flushed after it, and a reservation lost in a crash was never used.
//! 2. **Commit** the rows with those cursors in a second transaction that also deletes the
//!    range, so the rows and the range's end become visible together. Imports of
//!    different groups, nodes and connections overlap here.
//!
//! Every reader stops at the stable head (`crate::STABLE_HEAD`): below the lowest range
//! still open, where nothing can commit late any more. A group that fails is rolled back
//! and its range deleted (the cursors stay unused, as skipped duplicates' do); a range
//! whose backend died with the node is deleted by any node's tail (`crate::RECLAIM`).
//!
//! **One hub's imports one at a time.** A link applies its hub's batches one after the
//! other, but a batch can outlive its link: when the link ends while the batch waits for
//! an importer (the database was away, say), the batch is still committed later, while
//! the hub, reconnected, sends the same messages again cut into other batches, through
//! another importer or node. Two imports of one hub then overlap, and since an import
//! takes its cursors before it writes and skips the messages already there, the one
//! with the lower range could write the hub's later messages after the other wrote the
//! earlier ones above it: a sender's messages out of the order they were acked in. So
//! each importer holds a session advisory lock per hub of its group (`hub_key`), on
//! every node alike, from before it reserves until its rows are written: the next
//! import of that hub then reserves above it and, for the messages both hold, waits for
//! its commit and skips them (or, should it roll back, writes them itself, above). The
//! locks go with the statement that sends the notification, so they cost no round trip
//! and no idle connection ever holds one past its commit. Normally nobody waits.

use std::sync::Arc;

use outpost_shared::Cursor;
use outpost_shared::uplink::batch::Entry;
use outpost_storage::{Audience, LogEntry, StoreError};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use crate::tail::LocalCommit;
use crate::writer::{State, prepare_session, reconnect};
use crate::{Shared, db};

/// How long an importer's transaction may sit idle before PostgreSQL ends it: a node that
/// hangs mid-commit (not dead, so its backend lives on) would otherwise hold every
/// reader of every node below its range. A healthy importer is never idle in a
/// transaction for more than a round trip.
const STUCK_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(60);

/// The first key of the advisory locks that keep one hub's imports one at a time (the
/// second is [`hub_key`]): any constant of Outpost's own ("oi", outpost import). The
/// two-key space does not overlap the one-key space of the migration lock.
const HUB_LOCK_CLASS: i32 = 0x6f69;

/// A hub's lock key: FNV-1a of its name, the same on every node and every build (a
/// collision only makes two hubs wait for each other now and then).
fn hub_key(peer: &str) -> i32 {
    let hash = peer.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// One hub's batch, as `LinkStore::import` hands it over.
pub(crate) struct Batch {
    pub peer: String,
    pub entries: Vec<Entry>,
    pub peer_hwm: Cursor,
    pub reply: oneshot::Sender<Result<usize, StoreError>>,
}

/// The importers' shared queue: whichever is free takes the next group.
pub(crate) type Queue = Arc<Mutex<mpsc::Receiver<Batch>>>;

pub(crate) struct Importer {
    cfg: tokio_postgres::Config,
    client: Client,
    queue: Queue,
    local: mpsc::Sender<LocalCommit>,
    /// Wakes the tail when a range's fate is left to the database (see `commit`).
    wake: Arc<Notify>,
    st: State,
}

/// Where a group's transaction failed.
enum Fail {
    Before(StoreError),
    Commit(tokio_postgres::Error),
}

/// How a group ended, for the tail and the senders.
enum Outcome {
    /// Committed: these entries were new, and each batch had this many of them.
    Committed(Vec<LogEntry>, Vec<usize>, Vec<outpost_shared::RoomId>),
    /// Rolled back and the range deleted: nothing will ever be in it.
    Abandoned(StoreError),
    /// The connection died while committing: only the database knows whether the rows
    /// are there, and its range is reclaimed once the backend is gone.
    Unknown(StoreError),
}

impl Importer {
    pub fn new(
        cfg: tokio_postgres::Config,
        client: Client,
        shared: Arc<Shared>,
        queue: Queue,
        local: mpsc::Sender<LocalCommit>,
        wake: Arc<Notify>,
    ) -> Self {
        Self { cfg, client, queue, local, wake, st: State::new(shared) }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        if let Err(e) = self.prepare().await {
            tracing::warn!(error = %e, "cannot set up an importer's database session");
        }
        loop {
            let group = {
                let mut rx = self.queue.lock().await;
                let first = tokio::select! {
                    () = stop.cancelled() => None,
                    b = rx.recv() => b,
                };
                let Some(first) = first else { break };
                let limit = self.st.shared.opts.import_group_entries;
                let mut entries = first.entries.len();
                let mut group = vec![first];
                while group.len() < self.st.shared.opts.max_batch && entries < limit {
                    match rx.try_recv() {
                        Ok(b) => {
                            entries += b.entries.len();
                            group.push(b);
                        }
                        Err(_) => break,
                    }
                }
                group
            };
            self.commit(group).await;
        }
    }

    /// The session every importer connection runs: durable commits, and a transaction
    /// left open by a hung node ends rather than holding back every reader.
    async fn prepare(&self) -> Result<(), tokio_postgres::Error> {
        prepare_session(&self.client).await?;
        let secs = STUCK_TRANSACTION.as_secs();
        self.client.batch_execute(&format!("SET idle_in_transaction_session_timeout = '{secs}s'")).await
    }

    async fn commit(&mut self, group: Vec<Batch>) {
        if self.client.is_closed() {
            self.client = reconnect(&self.cfg, "importer").await;
            self.st.stmts.clear();
            if let Err(e) = self.prepare().await {
                tracing::warn!(error = %e, "cannot set up an importer's database session");
            }
        }
        let started = tokio::time::Instant::now();
        let count: usize = group.iter().map(|b| b.entries.len()).sum();
        let (mut batches, mut replies) = (Vec::with_capacity(group.len()), Vec::with_capacity(group.len()));
        let mut hubs = Vec::with_capacity(group.len());
        for b in group {
            hubs.push(hub_key(&b.peer));
            batches.push((b.peer, b.entries, b.peer_hwm));
            replies.push(b.reply);
        }
        // Ascending, so that two importers waiting for each other's hubs cannot deadlock.
        hubs.sort_unstable();
        hubs.dedup();
        let first = match self.reserve(count.max(1), &hubs).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot reserve cursors for hubs' batches; they are told to retry");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
                // The reservation's transaction may be left open and failed, holding locks.
                self.release("ROLLBACK; SELECT pg_advisory_unlock_all()").await;
                return;
            }
        };
        let (base, through) = (first - 1, first - 1 + count.max(1) as u64);
        self.insert_in_flight(base);
        let outcome = self.write(first, batches).await;
        // Rolled back before the locks went with the notification (a rollback keeps
        // session locks): given up once the senders are answered. After an unknown
        // outcome the connection is gone, and its locks with its backend.
        let locked = !matches!(outcome, Outcome::Committed(..));
        let (entries, answers) = match outcome {
            Outcome::Committed(entries, counts, rooms) => {
                if !rooms.is_empty()
                    && let Ok(mut known) = self.st.shared.known_rooms.write()
                {
                    known.extend(rooms);
                }
                metrics::counter!("outpost_messages_stored_total")
                    .increment(entries.iter().filter(|e| matches!(e.audience, Audience::Room { .. })).count() as u64);
                metrics::histogram!("outpost_commit_seconds").record(started.elapsed().as_secs_f64());
                (entries, counts.into_iter().map(Ok).collect::<Vec<_>>())
            }
            Outcome::Abandoned(e) => {
                tracing::error!(error = %e, "hubs' batches were rolled back; they are told to retry");
                metrics::counter!("outpost_commits_failed_total").increment(1);
                (Vec::new(), vec![Err(e); replies.len()])
            }
            Outcome::Unknown(e) => {
                tracing::error!(error = %e, "lost the database while committing hubs' batches; they are told to retry");
                metrics::counter!("outpost_commits_failed_total").increment(1);
                // Whether the rows are there only the database can tell: the tail reads
                // them (or finds the range reclaimed) rather than waiting for this.
                self.remove_in_flight(base);
                self.wake.notify_one();
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
                self.release("SELECT pg_advisory_unlock_all()").await;
                return;
            }
        };
        let answer: Box<dyn FnOnce() + Send> = Box::new(move || {
            for (r, a) in replies.into_iter().zip(answers) {
                let _ = r.send(a);
            }
        });
        // Answered once published (see the writer): the tail publishes this range after
        // everything below it.
        let commit = LocalCommit { base, through, entries, answer };
        if let Err(mpsc::error::SendError(c)) = self.local.send(commit).await {
            (c.answer)();
        }
        if locked {
            self.release("SELECT pg_advisory_unlock_all()").await;
        }
    }

    /// Step 1: takes the locks of `hubs` (see the module documentation), then reserves
    /// `n` cursors; returns the first. One round trip, and a wait only while another
    /// import of one of these hubs is under way.
    async fn reserve(&self, n: usize, hubs: &[i32]) -> Result<u64, StoreError> {
        // Each in a statement of its own, so that they are taken in this order.
        let locks: String = hubs.iter().map(|h| format!("SELECT pg_advisory_lock({HUB_LOCK_CLASS}, {h});\n")).collect();
        let sql = format!(
            "{locks}BEGIN;
             SET LOCAL synchronous_commit = off;
             WITH h AS (UPDATE log_head SET head = head + {n} RETURNING head)
             INSERT INTO open_ranges (first, last, pid, started)
               SELECT head - {n} + 1, head, pg_backend_pid(),
                      (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
                 FROM h
               RETURNING first;
             COMMIT"
        );
        let out = self.client.simple_query(&sql).await.map_err(db)?;
        // The range is the last row (the locks' rows come first).
        out.iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .last()
            .and_then(|r| r.get(0).and_then(|v| v.parse::<u64>().ok()))
            .ok_or_else(|| StoreError::Database("reserving cursors returned no range".into()))
    }

    /// Gives up this connection's hub locks with `sql`. Should that fail on a connection
    /// still open, the connection is replaced: ending its backend is what frees them.
    async fn release(&mut self, sql: &str) {
        if self.client.is_closed() {
            return;
        }
        if let Err(e) = self.client.batch_execute(sql).await {
            tracing::warn!(error = %e, "cannot release an importer's hub locks; reconnecting");
            self.client = reconnect(&self.cfg, "importer").await;
            self.st.stmts.clear();
            if let Err(e) = self.prepare().await {
                tracing::warn!(error = %e, "cannot set up an importer's database session");
            }
        }
    }

    /// Step 2: the rows and the end of the range, in one transaction.
    async fn write(&mut self, first: u64, batches: Vec<(String, Vec<Entry>, Cursor)>) -> Outcome {
        let mut entries = Vec::new();
        let mut rooms = Vec::new();
        let (client, st) = (&mut self.client, &mut self.st);
        let body = async {
            let tx = client.transaction().await.map_err(|e| Fail::Before(db(e)))?;
            st.next_cursor = first;
            let counts = st.import(&tx, batches, &mut entries, &mut rooms).await.map_err(Fail::Before)?;
            tx.execute("DELETE FROM open_ranges WHERE first = $1", &[&crate::to_sql(first)])
                .await
                .map_err(|e| Fail::Before(db(e)))?;
            // Delivered to the listening nodes when (and only if) this commits. The rows
            // are written: the hubs' next imports may reserve (see the module docs).
            tx.execute("SELECT pg_notify('outpost_log', $1), pg_advisory_unlock_all()", &[&first.to_string()])
                .await
                .map_err(|e| Fail::Before(db(e)))?;
            tx.commit().await.map_err(Fail::Commit)?;
            Ok(counts)
        };
        match body.await {
            Ok(counts) => {
                entries.sort_by_key(|e| e.cursor);
                Outcome::Committed(entries, counts, rooms)
            }
            // A failure before the commit rolled the transaction back (dropping it sent
            // the rollback); so did an error the server answered the commit with.
            Err(Fail::Before(e)) => abandon(&self.client, first, e).await,
            Err(Fail::Commit(e)) if e.as_db_error().is_some() && !self.client.is_closed() => {
                abandon(&self.client, first, db(e)).await
            }
            // No answer to the commit (the connection closed): only the database knows.
            Err(Fail::Commit(e)) => Outcome::Unknown(db(e)),
        }
    }

    fn insert_in_flight(&self, base: u64) {
        if let Ok(mut f) = self.st.shared.in_flight.lock() {
            f.insert(base);
        }
    }

    fn remove_in_flight(&self, base: u64) {
        if let Ok(mut f) = self.st.shared.in_flight.lock() {
            f.remove(&base);
        }
    }
}

/// Ends a range whose transaction was rolled back: the rollback runs before this on
/// the same connection. When even that fails the outcome is left to the database.
async fn abandon(client: &Client, first: u64, e: StoreError) -> Outcome {
    match client.execute("DELETE FROM open_ranges WHERE first = $1", &[&crate::to_sql(first)]).await {
        Ok(_) => Outcome::Abandoned(e),
        Err(_) => Outcome::Unknown(e),
    }
}
