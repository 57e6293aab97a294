//! The SQLite backend: one database, one writer thread, a pool of readers. It is the
//! hub's store and the cloud's embedded default; the types it answers with are
//! `outpost-storage`'s.
//!
//! All writes go through a bounded channel to a single writer thread that commits them in
//! groups (many messages per transaction, `synchronous=FULL`), so a message's sender is
//! told `stored` only after the transaction holding it is on disk, and the fsync cost is
//! shared by everyone who sent during it. Emergency messages in a group are committed in
//! their own transaction first and published first. After each commit the writer hands
//! the new log entries to a [`Publisher`] (the live router). Reads (replay, history) use
//! separate connections on blocking threads; WAL lets them run beside the writer.
//!
//! This module does not know about WebSockets or sessions beyond an opaque [`SessionId`]
//! used to avoid echoing a message to the connection that sent it.

mod files;
mod hook;
mod media;
mod reader;
mod retention;
mod schema;
pub mod security;
mod traits;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use outpost_shared::frames::{HistoryPage, Positioned};
use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Cursor, DeviceId, Epoch, MessageId, Priority, RoomId, UserId};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

pub use files::{FileAppend, FileBytes};
pub use outpost_storage::{
    AppendRequest, Appended, Audience, AuditEvent, AuditKind, AuditRecord, Backlog, Forwarded, HookStore, LinkStore,
    LogEntry, LogStore, Outbound, OutboundQuery, PeerState, Publisher, Replay, ReplayQuery, Reply, SecurityStore,
    SessionId, StoreError,
};
pub use retention::{EraseError, PruneReason, Pruned, RetentionPolicy, delete_offline, hold_offline};
pub use schema::{MIGRATIONS, MigrateError, current_version as schema_version};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

pub(crate) enum Command {
    Append(AppendRequest, Reply),
    Import {
        peer: String,
        entries: Vec<Entry>,
        peer_hwm: Cursor,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    PeerAcked {
        peer: String,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
    },
    PeerHello {
        peer: String,
        epoch: String,
        rooms: Vec<RoomId>,
        reply: oneshot::Sender<Result<PeerState, StoreError>>,
    },
    PeerRooms {
        peer: String,
        rooms: Vec<RoomId>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Ack {
        device: DeviceId,
        user: UserId,
        rooms: Arc<[RoomId]>,
        cursor: Cursor,
        at: u64,
    },
    Read {
        user: UserId,
        room: RoomId,
        id: MessageId,
        at: u64,
    },
    Rooms(Vec<RoomId>),
    /// A security event for the audit log (committed with the next group).
    Audit(AuditEvent, u64),
    /// Revocation entries (from `from`: the cloud, or a command); answers how many were new.
    Revoke {
        from: String,
        entries: Vec<outpost_shared::Revocation>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Work of another module (media metadata) run inside the writer's transaction;
    /// answered after the commit.
    Exec(ExecFn, oneshot::Sender<Result<ExecValue, StoreError>>),
    /// Sets the retention policy (see `retention`).
    Retention(RetentionPolicy),
    /// Removes those of `candidates` (cursors) that may go, received before `cutoff`;
    /// answers how many went.
    Prune {
        cutoff: u64,
        candidates: Vec<i64>,
        at: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// One batch of quota pruning (the writer queues it for itself).
    QuotaPrune,
    /// Answered after the next commit: proves the writer is alive (watchdog).
    Ping(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

/// What [`Command::Exec`] runs and returns.
pub(crate) type ExecValue = Box<dyn std::any::Any + Send>;
pub(crate) type ExecFn = Box<dyn FnOnce(&rusqlite::Connection) -> Result<ExecValue, StoreError> + Send>;

/// An answer owed once the transaction's fate is known.
pub(crate) enum Pending {
    Exec(oneshot::Sender<Result<ExecValue, StoreError>>, ExecValue),
    Append(Reply, Result<Appended, StoreError>),
    Import(oneshot::Sender<Result<usize, StoreError>>, usize),
    Hello(oneshot::Sender<Result<PeerState, StoreError>>, PeerState),
    Ping(oneshot::Sender<()>),
}

impl Pending {
    /// Answers; `failed` is the transaction's error if it was rolled back.
    pub(crate) fn finish(self, failed: Option<&StoreError>) {
        match (self, failed) {
            (Pending::Append(reply, answer), None) => reply(answer),
            (Pending::Append(reply, _), Some(e)) => reply(Err(e.clone())),
            (Pending::Import(tx, n), None) => drop(tx.send(Ok(n))),
            (Pending::Import(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Pending::Hello(tx, s), None) => drop(tx.send(Ok(s))),
            (Pending::Hello(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Pending::Exec(tx, v), None) => drop(tx.send(Ok(v))),
            (Pending::Exec(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            // A failed transaction still shows the writer is alive.
            (Pending::Ping(tx), _) => drop(tx.send(())),
        }
    }
}

impl Command {
    fn is_emergency(&self) -> bool {
        matches!(self, Command::Append(r, _) if r.msg.priority == Priority::Emergency)
    }
}

/// Figures the writer publishes for everyone to read without asking it.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Newest committed cursor.
    pub head: AtomicU64,
    /// Bytes of database pages in use (what the quota counts, with `blob_bytes`).
    pub used_bytes: AtomicU64,
    /// Bytes of media files beside the database (complete and partial), kept by the
    /// media module.
    pub blob_bytes: AtomicU64,
    /// Retention's totals (see `retention`), loaded at start and moved after commits.
    pub pruned_age: AtomicU64,
    pub pruned_quota: AtomicU64,
    pub last_prune: AtomicU64,
    pub pruned_through: AtomicU64,
    /// Receive time of the oldest message held (0: none).
    pub oldest_at: AtomicU64,
}

/// Storage tuning taken from the relay configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub quota_bytes: u64,
    pub emergency_reserve_bytes: u64,
    pub max_batch: usize,
    pub max_receipts_per_ack: usize,
    /// Database reads run at once per lane (see [`ReadLane`]); each holds a reader
    /// connection and its page cache while it runs.
    pub readers: usize,
}

/// Who a read is for. Each lane has its own permits, so a village of phones replaying at
/// once never queues the uplink's next batch (and the emergency in it) behind them.
#[derive(Debug, Clone, Copy)]
enum ReadLane {
    /// Sessions: replay, history, room pages; tools and status.
    Devices,
    /// Peer links: what to send next and what is waiting.
    Peers,
}

/// A cheap, cloneable handle on the store.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    readers: Arc<reader::Readers>,
    /// Permits for reads at once, per lane. Without them a storm of reconnecting phones
    /// opened a connection per replay (hundreds, each with its own page cache: the hub
    /// grew to 300+ MiB); with them the storm queues in order, at the disk's pace.
    device_reads: Arc<tokio::sync::Semaphore>,
    peer_reads: Arc<tokio::sync::Semaphore>,
    epoch: Epoch,
    gauges: Arc<Gauges>,
    head_rx: tokio::sync::watch::Receiver<u64>,
    known_rooms: Arc<RwLock<HashSet<RoomId>>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// The revocation list as last loaded, and the table mark it was loaded at.
    revocations: Arc<tokio::sync::watch::Sender<Arc<outpost_shared::RevocationList>>>,
    revocation_mark: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// How long a connection waits for another's lock before it reports "database is locked".
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a connection with the pragmas every connection needs.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(path, flags)?;
    // First, so that the pragmas below wait for another process's transaction too.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer and commits append sequentially, which suits
    // SD cards. FULL: the WAL is fsynced at every commit, so an ack survives power loss.
    use_wal(&conn)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Switches the database to WAL (a no-op once it is). A new database starts in rollback
/// mode, and SQLite fails the switch at once, without the busy handler, if another
/// connection has the file open then: commands creating the database side by side (a
/// script issuing tokens) saw "database is locked". Meanwhile the other connection
/// finishes its own switch or lets go, so this retries for as long as the busy timeout.
// The other connection is in another process and signals nothing when it lets go: as
// SQLite's own busy handler does, the only way to wait for a file lock is to try again
// after a pause. Opening a database blocks anyway; the pause happens only in this race.
#[allow(clippy::disallowed_methods)]
fn use_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy && tokio::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path` and starts the
    /// writer thread.
    pub fn open(path: &Path, opts: StoreOptions, publisher: Arc<dyn Publisher>) -> Result<Self, OpenError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| OpenError::Dir { path: parent.to_path_buf(), source })?;
        }
        let open_err = |source| OpenError::Open { path: path.to_path_buf(), source };
        let mut conn = connect(path, OpenFlags::default()).map_err(open_err)?;
        schema::migrate(&mut conn, &new_epoch())?;
        let state = writer::State::load(&conn).map_err(open_err)?;
        let (mark, list) = security::load_revocations(&conn).map_err(open_err)?;
        let epoch = Epoch(state.epoch.clone());
        let gauges =
            Arc::new(Gauges { head: AtomicU64::new(state.next_cursor.saturating_sub(1)), ..Gauges::default() });
        let known_rooms = Arc::new(RwLock::new(state.rooms.clone()));
        let (tx, rx) = mpsc::channel(opts.max_batch);
        let readers = opts.readers.max(1);
        let (head_tx, head_rx) = tokio::sync::watch::channel(gauges.head.load(Ordering::Acquire));
        let w = writer::Writer::new(conn, rx, publisher, state, opts, gauges.clone(), head_tx, known_rooms.clone());
        let handle = std::thread::Builder::new()
            .name("outpost-store".into())
            .spawn(move || w.run())
            .map_err(OpenError::Thread)?;
        Ok(Self {
            tx,
            readers: Arc::new(reader::Readers::new(path.to_path_buf(), 2 * readers)),
            device_reads: Arc::new(tokio::sync::Semaphore::new(readers)),
            peer_reads: Arc::new(tokio::sync::Semaphore::new(readers)),
            epoch,
            gauges,
            head_rx,
            known_rooms,
            writer: Arc::new(Mutex::new(Some(handle))),
            revocations: Arc::new(tokio::sync::watch::Sender::new(Arc::new(list))),
            revocation_mark: Arc::new(AtomicU64::new(mark)),
        })
    }

    /// Records a security event (committed with the next group; never blocks a commit).
    pub async fn audit(&self, event: AuditEvent) {
        let _ = self.tx.send(Command::Audit(event, writer::now_ms())).await;
    }

    /// Records a security event and waits until it is committed (the writer answers a
    /// ping only after the transaction holding everything queued before it).
    pub async fn audit_committed(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.audit(event).await;
        self.ping().await
    }

    /// Records revocation entries received from `from`; answers after the commit with how
    /// many were new. Sessions see them at the next [`Self::watch_revocations`] poll.
    pub async fn apply_revocations(
        &self,
        from: &str,
        entries: Vec<outpost_shared::Revocation>,
    ) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Revoke { from: from.to_owned(), entries, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Keeps the cloud's delegation to this hub's renewal key (replacing the last one).
    pub async fn save_delegation(&self, token: String) -> Result<(), StoreError> {
        let at = writer::now_ms();
        self.exec(move |c| {
            c.prepare_cached("INSERT OR REPLACE INTO delegation (id, token, at) VALUES (1, ?1, ?2)")
                .and_then(|mut s| s.execute(rusqlite::params![token, i64::try_from(at).unwrap_or(i64::MAX)]))
                .map(drop)
                .map_err(StoreError::from)
        })
        .await
    }

    /// The delegation kept by [`Store::save_delegation`], if any.
    pub async fn delegation(&self) -> Result<Option<String>, StoreError> {
        self.read_with(|c| {
            use rusqlite::OptionalExtension as _;
            c.query_row("SELECT token FROM delegation WHERE id = 1", [], |r| r.get(0)).optional()
        })
        .await
    }

    /// Whether the current revocation list names these claims.
    pub fn is_revoked(&self, claims: &outpost_shared::Claims) -> bool {
        self.revocations.borrow().revokes(claims).is_some()
    }

    /// The current revocation list; `changed()` fires when a new one is loaded.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<Arc<outpost_shared::RevocationList>> {
        self.revocations.subscribe()
    }

    /// Reloads the revocation list whenever its table changed — written by this process's
    /// writer or by a command such as `outpost-cloud revoke` — checking every `every`.
    pub async fn watch_revocations(self, every: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let known = self.revocation_mark.load(Ordering::Acquire);
            // The peers' lane: a replay storm must not delay a revocation taking effect.
            let loaded = self
                .on_reader(ReadLane::Peers, move |r| {
                    r.with(|c| {
                        if security::revocation_mark(c)? == known {
                            Ok(None)
                        } else {
                            security::load_revocations(c).map(Some)
                        }
                    })
                })
                .await;
            match loaded {
                Ok(Some((mark, list))) => {
                    tracing::info!(entries = list.len(), "revocation list changed");
                    self.revocation_mark.store(mark, Ordering::Release);
                    self.revocations.send_replace(Arc::new(list));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the revocation list"),
            }
        }
    }

    /// A page of the audit log after `after`, oldest first, and whether more follow.
    pub async fn audit_page(&self, after: u64, limit: u32) -> Result<(Vec<AuditRecord>, bool), StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.with(|c| security::audit_page(c, after, limit))).await
    }

    /// Runs `f` on a blocking thread once `lane` has a permit; the permit goes with the
    /// thread, so a caller that gives up (a phone that left) still frees it only when
    /// the query is done and its connection is back in the pool.
    async fn on_reader<T: Send + 'static>(
        &self,
        lane: ReadLane,
        f: impl FnOnce(&reader::Readers) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permits = match lane {
            ReadLane::Devices => &self.device_reads,
            ReadLane::Peers => &self.peer_reads,
        };
        let permit = permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let out = f(&readers);
            drop(permit);
            out
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Database(e.to_string())))
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// The newest committed cursor.
    pub fn head(&self) -> Cursor {
        Cursor(self.gauges.head.load(Ordering::Acquire))
    }

    /// Whether any token or message has named this room on this hub.
    pub fn room_known(&self, room: &RoomId) -> bool {
        self.known_rooms.read().map(|r| r.contains(room)).unwrap_or(false)
    }

    /// Queues a message for the next group commit; `reply` runs after it committed.
    pub async fn append(&self, req: AppendRequest, reply: Reply) {
        if let Err(mpsc::error::SendError(Command::Append(_, reply))) = self.tx.send(Command::Append(req, reply)).await
        {
            reply(Err(StoreError::Closed));
        }
    }

    /// Appends and waits for the commit (for tools and tests).
    pub async fn append_wait(&self, req: AppendRequest) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.append(req, Box::new(move |r| drop(tx.send(r)))).await;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Records that `device` holds everything up to `cursor` and emits `delivered` receipts.
    pub async fn ack(&self, device: DeviceId, user: UserId, rooms: Arc<[RoomId]>, cursor: Cursor, at: u64) {
        let _ = self.tx.send(Command::Ack { device, user, rooms, cursor, at }).await;
    }

    /// Records that `user` read `room` up to message `id` and emits `read` receipts.
    pub async fn read(&self, user: UserId, room: RoomId, id: MessageId, at: u64) {
        let _ = self.tx.send(Command::Read { user, room, id, at }).await;
    }

    /// Remembers rooms named by a token, so they count as known.
    pub async fn note_rooms(&self, rooms: &[RoomId]) {
        let fresh: Vec<RoomId> = match self.known_rooms.read() {
            Ok(known) => rooms.iter().filter(|r| !known.contains(*r)).cloned().collect(),
            Err(_) => return,
        };
        if !fresh.is_empty() {
            let _ = self.tx.send(Command::Rooms(fresh)).await;
        }
    }

    /// Reads the next page of what a session should replay (see [`Replay`]).
    pub async fn replay(&self, q: ReplayQuery) -> Result<Replay, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.replay(&q)).await
    }

    /// One page of a room's history, newest last.
    /// How far `user` has read each room.
    pub async fn read_marks(&self, user: UserId) -> Result<Vec<(RoomId, Cursor)>, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.read_marks(&user)).await
    }

    /// The cursor below `room`'s `keep` latest messages.
    pub async fn room_floor(&self, room: RoomId, keep: u32) -> Result<Cursor, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.room_floor(&room, keep)).await
    }

    /// This store's cursor of message `id` in `room`.
    pub async fn message_cursor(&self, room: RoomId, id: MessageId) -> Result<Option<Cursor>, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.message_cursor(&room, id)).await
    }

    pub async fn history(&self, room: RoomId, before: Option<Cursor>, limit: u32) -> Result<HistoryPage, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.history(room, before, limit)).await
    }

    /// The messages of `room` feeding `workflow` from `since_hlc` on, in stamp order.
    pub async fn workflow_events(
        &self,
        room: RoomId,
        workflow: outpost_storage::Workflow,
        since_hlc: outpost_shared::Hlc,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.workflow_events(&room, workflow, since_hlc, limit)).await
    }

    /// Messages of `room` after `after`, oldest first, and whether there are more.
    pub async fn room_since(
        &self,
        room: RoomId,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.room_since(&room, after, limit)).await
    }

    /// Messages after `after` in `rooms` (all rooms when `None`), in cursor order, and
    /// whether there are more (see [`Readers::events`](reader::Readers) for the plan).
    pub async fn events(
        &self,
        rooms: Option<Arc<[RoomId]>>,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.events(rooms.as_deref(), after, limit)).await
    }

    /// Resolves once the writer thread has completed a transaction (watchdog).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Ping(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Bytes counted against the quota: database pages in use and media files.
    pub fn used_bytes(&self) -> u64 {
        self.gauges.used_bytes.load(Ordering::Relaxed) + self.gauges.blob_bytes.load(Ordering::Relaxed)
    }

    /// Adds (or with a negative `delta`, removes) media bytes from the quota count.
    pub fn add_blob_bytes(&self, delta: i64) {
        let g = &self.gauges.blob_bytes;
        if delta >= 0 {
            g.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            let _ =
                g.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(delta.unsigned_abs())));
        }
    }

    /// Runs `f` on the writer's connection inside its next transaction and answers after
    /// the commit: other modules' writes keep the one-writer rule (and its group commit).
    pub async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let f: ExecFn = Box::new(move |c| f(c).map(|v| Box::new(v) as ExecValue));
        self.tx.send(Command::Exec(f, tx)).await.map_err(|_| StoreError::Closed)?;
        let v = rx.await.unwrap_or(Err(StoreError::Closed))?;
        v.downcast::<T>().map(|b| *b).map_err(|_| StoreError::Database("exec returned another type".into()))
    }

    /// Runs a read-only query on a pooled reader connection (a blocking thread).
    pub async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.with(f)).await
    }

    /// What waits to go to `peer` (messages and receipts our log holds beyond the peer's
    /// acknowledged mark).
    pub async fn backlog(&self, peer: &str) -> Result<Backlog, StoreError> {
        let peer = peer.to_owned();
        self.on_reader(ReadLane::Peers, move |r| r.backlog(&peer)).await
    }

    /// A receiver that changes after every commit (link senders wait on it).
    pub fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head_rx.clone()
    }

    /// Applies a batch from `peer` idempotently; answers after the commit with the number
    /// of entries that were new.
    pub async fn import(&self, peer: &str, entries: Vec<Entry>, peer_hwm: Cursor) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Import { peer: peer.to_owned(), entries, peer_hwm, reply };
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Records that `peer` holds our log up to `sent_hwm` and tells the senders of
    /// `forwarded` that their messages reached it.
    pub async fn peer_acked(&self, peer: &str, sent_hwm: Cursor, forwarded: Vec<Forwarded>, at: u64) {
        let _ = self.tx.send(Command::PeerAcked { peer: peer.to_owned(), sent_hwm, forwarded, at }).await;
    }

    /// Records a peer's handshake (epoch, rooms) and returns where the link resumes.
    pub async fn peer_hello(&self, peer: &str, epoch: &str, rooms: Vec<RoomId>) -> Result<PeerState, StoreError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::PeerHello { peer: peer.to_owned(), epoch: epoch.to_owned(), rooms, reply };
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Adds rooms a peer serves; returns how many were new (then what the peer holds of
    /// our log is reset to the start, see the writer).
    pub async fn peer_rooms(&self, peer: &str, rooms: Vec<RoomId>) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::PeerRooms { peer: peer.to_owned(), rooms, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Known rooms of this server (from tokens and messages).
    pub fn rooms(&self) -> Vec<RoomId> {
        self.known_rooms.read().map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    /// The next page of entries to send to a peer (see [`OutboundQuery`]).
    pub async fn outbound(&self, q: OutboundQuery) -> Result<Outbound, StoreError> {
        self.on_reader(ReadLane::Peers, move |r| r.outbound(&q)).await
    }

    /// Commits everything queued, checkpoints the WAL and stops the writer thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests;

/// Creates and migrates the database at `path` without starting a writer (provisioning).
pub fn create(path: &Path) -> Result<Epoch, OpenError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| OpenError::Dir { path: parent.to_path_buf(), source })?;
    }
    let mut conn =
        connect(path, OpenFlags::default()).map_err(|source| OpenError::Open { path: path.to_path_buf(), source })?;
    schema::migrate(&mut conn, &new_epoch())?;
    let epoch: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0))
        .map_err(|source| OpenError::Open { path: path.to_path_buf(), source })?;
    Ok(Epoch(epoch))
}
