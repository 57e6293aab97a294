//! The PostgreSQL backend of the cloud: several stateless nodes on one database.
//!
//! Each node runs what the SQLite store runs (store-sqlite): one writer that commits the
//! node's writes in groups and a pool of readers. What differs is that other nodes write
//! too:
//!
//! - **One order for everyone, commits that overlap.** Cursors come from the single row
//!   of `log_head`. The writer (devices' messages, acks, commands) locks it for its whole
//!   transaction and moves it before committing. Hubs' batches, most of the traffic, go
//!   to the importers ([`import`]): each reserves a range of cursors in a short
//!   transaction, recorded in `open_ranges`, and commits the rows in a second one that
//!   closes the range, on several connections of several nodes at once. Every reader
//!   that resumes "after cursor C" (the tail, a device's replay, a hub's outbound lane,
//!   the events API) reads only up to the stable head ([`STABLE_HEAD`]), below the
//!   lowest range still open, so it never skips an entry that commits late.
//! - **Live delivery across nodes.** A commit also sends `NOTIFY outpost_log`. Each node's
//!   tail ([`tail`]) listens, reads the entries after the last one it published up to the
//!   stable head, and hands them to the node's router in cursor order — its own and other
//!   nodes' alike — so a message a hub delivers to node A reaches a doctor connected to
//!   node B. The node's own commits are published from memory once everything below them
//!   is. A range whose connection died before committing is removed by any node's tail
//!   ([`RECLAIM`]).
//! - **Acknowledged after commit.** A sender, a hub's batch or a command is answered only
//!   after PostgreSQL reported the commit, with `synchronous_commit` at least `on` (the
//!   writer raises `off` to `on` for its own connection).
//!
//! Media is here too, metadata ([`media`]) and bytes ([`bytes`]): a photo a hub sends
//! through one node is downloaded through any other, and an upload begun on one node
//! resumes on another, though each node's directory is only a copy of the others'.
//!
//! What is not here: SQL for anything but storage.

mod bytes;
pub mod from_sqlite;
mod import;
mod media;
mod reader;
pub mod retention;
mod schema;
pub mod security;
mod tail;
#[cfg(feature = "test-cluster")]
pub mod testing;
mod traits;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Cursor, DeviceId, Epoch, MessageId, Priority, RevocationList, RoomId, UserId};
use outpost_storage::{AppendRequest, AuditEvent, Forwarded, PeerState, Publisher, Reply, SessionId, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub use bytes::{PgAppend, PgBytes};
pub use schema::{MIGRATIONS, MigrateError, current_version as schema_version};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database address is not a valid PostgreSQL URL ({0}); expected postgres://USER@HOST:PORT/DB")]
    Url(String),
    #[error(
        "cannot connect to PostgreSQL at {target}: {}; check that the server runs there and accepts this user",
        explain(source)
    )]
    Connect { target: String, source: tokio_postgres::Error },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("cannot read the database: {0}")]
    Read(tokio_postgres::Error),
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Write(StoreError),
}

/// Storage tuning taken from the cloud configuration.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub quota_bytes: u64,
    pub emergency_reserve_bytes: u64,
    /// Most commands in one transaction.
    pub max_batch: usize,
    pub max_receipts_per_ack: usize,
    /// Reads at once per lane (devices; peers), each on a pooled connection.
    pub readers: usize,
    /// How often the tail looks for other nodes' entries when no notification came (a
    /// notification lost while the listening connection was down).
    pub poll_interval: Duration,
    /// Most bytes of a blob or an upload in one row of `blob_chunks` (bytes.rs): what a
    /// chunk being written holds in memory, and what one row read returns.
    pub blob_chunk_bytes: usize,
    /// Connections that commit hubs' batches in parallel (import.rs), each holding one
    /// open transaction at a time. 0: hubs' batches go through the writer with
    /// everything else, one transaction at a time.
    pub import_writers: usize,
    /// Most entries an importer takes into one transaction. Smaller than a whole queue
    /// of hubs' batches, so that the importers share it and their commits overlap;
    /// large enough that a transaction's fixed costs (two round trips, one flush) stay
    /// small against its rows.
    pub import_group_entries: usize,
}

/// [`PgOptions::blob_chunk_bytes`] by default: the web client's upload chunk, so a
/// device's chunk is one row; large enough that a 16 MiB photo is 64 rows, small enough
/// that a node buffers little per upload.
pub const DEFAULT_BLOB_CHUNK_BYTES: usize = 256 << 10;

/// [`PgOptions::import_writers`] by default (BENCHMARKS.md, the cloud's ingest).
pub const DEFAULT_IMPORT_WRITERS: usize = 3;

/// [`PgOptions::import_group_entries`] by default (BENCHMARKS.md, the cloud's ingest).
pub const DEFAULT_IMPORT_GROUP_ENTRIES: usize = 5000;

/// The stable head: the newest cursor below which nothing can commit any more (every
/// cursor up to it is committed or will never be used), and the log head. Readers that
/// resume after a cursor read up to the stable head only, so they never pass an import
/// still committing (import.rs).
pub(crate) const STABLE_HEAD: &str =
    "SELECT coalesce((SELECT min(first) - 1 FROM open_ranges), h.head), h.head FROM log_head h";

/// Removes the ranges whose backend is gone (its node died between reserving and
/// committing): they can never commit. A backend is its pid and start time, since pids
/// are reused. Committed durably, as every end of a range is.
pub(crate) const RECLAIM: &str = "BEGIN;
     SET LOCAL synchronous_commit = on;
     DELETE FROM open_ranges o
      WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = o.pid AND a.backend_start = o.started);
     COMMIT";

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            quota_bytes: u64::MAX,
            emergency_reserve_bytes: 0,
            max_batch: 1024,
            max_receipts_per_ack: 1000,
            readers: 4,
            poll_interval: Duration::from_secs(1),
            blob_chunk_bytes: DEFAULT_BLOB_CHUNK_BYTES,
            import_writers: DEFAULT_IMPORT_WRITERS,
            import_group_entries: DEFAULT_IMPORT_GROUP_ENTRIES,
        }
    }
}

/// A command for the writer.
pub(crate) enum Command {
    Append(AppendRequest, Reply),
    Import { peer: String, entries: Vec<Entry>, peer_hwm: Cursor, reply: oneshot::Sender<Result<usize, StoreError>> },
    PeerAcked { peer: String, sent_hwm: Cursor, forwarded: Vec<Forwarded>, at: u64 },
    PeerHello { peer: String, epoch: String, rooms: Vec<RoomId>, reply: oneshot::Sender<Result<PeerState, StoreError>> },
    PeerRooms { peer: String, rooms: Vec<RoomId>, reply: oneshot::Sender<Result<usize, StoreError>> },
    Ack { device: DeviceId, user: UserId, rooms: Arc<[RoomId]>, cursor: Cursor, at: u64 },
    Read { user: UserId, room: RoomId, id: MessageId, at: u64 },
    Rooms(Vec<RoomId>),
    Audit(AuditEvent, u64),
    Revoke { from: String, entries: Vec<outpost_shared::Revocation>, reply: oneshot::Sender<Result<usize, StoreError>> },
    Ping(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

impl Command {
    fn is_emergency(&self) -> bool {
        matches!(self, Command::Append(r, _) if r.msg.priority == Priority::Emergency)
    }
}

/// What the node's parts share.
pub(crate) struct Shared {
    pub opts: PgOptions,
    pub pool: Pool,
    pub epoch: Epoch,
    /// Rooms known to the database (tokens, messages, peers), as far as this node has seen.
    pub known_rooms: RwLock<HashSet<RoomId>>,
    /// Bytes of the database, media included (refreshed by the writer).
    pub used_bytes: AtomicU64,
    /// Messages this node appended for a live session, by cursor, until published: the
    /// router must not echo them to that session.
    pub excepts: Mutex<HashMap<u64, SessionId>>,
    pub revocations: tokio::sync::watch::Sender<Arc<RevocationList>>,
    pub revocation_mark: AtomicU64,
    pub device_reads: tokio::sync::Semaphore,
    pub peer_reads: tokio::sync::Semaphore,
    /// The hybrid logical clock every writing connection of this node stamps with.
    pub clock: Mutex<outpost_shared::HlcClock>,
    /// Ranges this node's importers reserved whose outcome the tail has not been handed
    /// yet, by the cursor below each: the tail waits for these rather than ask the
    /// database about a gap under its own commits.
    pub in_flight: Mutex<std::collections::BTreeSet<u64>>,
}

/// A cheap, cloneable handle on one node's store.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    /// Hubs' batches, when importers run (`PgOptions::import_writers`).
    imports: Option<mpsc::Sender<import::Batch>>,
    /// The newest cursor published to this node's router (and so readable).
    head_rx: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("epoch", &self.shared.epoch).finish_non_exhaustive()
    }
}

/// Parses `url` (`postgres://USER@HOST:PORT/DB`, or PostgreSQL's key=value form).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, OpenError> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| OpenError::Url(e.to_string()))?;
    cfg.application_name("outpost-cloud");
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    Ok(cfg)
}

/// Where `cfg` points, for messages (never the password).
pub(crate) fn describe(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or(""))
}

/// Opens one connection and drives it on its own task.
pub(crate) async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// A database error as the storage contract names it: a full disk is `storage_full`.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
        return StoreError::StorageFull { used: 0, quota: 0 };
    }
    StoreError::Database(explain(&e))
}

/// The driver's error with what caused it: its own text is often only "db error" or
/// "error connecting to server", and the cause (the server's message, "connection
/// refused") is what an operator needs.
pub(crate) fn explain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Brings the database at `url` to this build's schema (what `outpost-cloud migrate`
/// and every node's start do); returns its epoch.
pub async fn create(url: &str) -> Result<Epoch, OpenError> {
    let cfg = parse_url(url)?;
    let mut client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: describe(&cfg), source })?;
    schema::migrate(&mut client, &uuid::Uuid::new_v4().to_string()).await?;
    let row = client.query_one("SELECT value FROM meta WHERE key = 'epoch'", &[]).await.map_err(OpenError::Read)?;
    Ok(Epoch(row.get(0)))
}

impl PgStore {
    /// Connects to the database at `url`, migrates it if needed (safe when several nodes
    /// start at once), and starts this node's writer, tail and listener.
    pub async fn open(url: &str, opts: PgOptions, publisher: Arc<dyn Publisher>) -> Result<Self, OpenError> {
        let cfg = parse_url(url)?;
        let target = describe(&cfg);
        let mut client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: target.clone(), source })?;
        schema::migrate(&mut client, &uuid::Uuid::new_v4().to_string()).await?;
        let epoch: String =
            client.query_one("SELECT value FROM meta WHERE key = 'epoch'", &[]).await.map_err(OpenError::Read)?.get(0);
        // Where this node's tail starts: imports still committing are published when they
        // commit.
        let head: i64 = client.query_one(STABLE_HEAD, &[]).await.map_err(OpenError::Read)?.get(0);
        let last_hlc: i64 =
            client.query_one("SELECT coalesce(max(hlc), 0) FROM messages", &[]).await.map_err(OpenError::Read)?.get(0);
        let rooms = reader::load_rooms(&client).await.map_err(OpenError::Read)?;
        let (mark, list) = reader::load_revocations(&client).await.map_err(OpenError::Read)?;

        let readers = opts.readers.max(1);
        let manager =
            Manager::from_config(cfg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool =
            Pool::builder(manager).max_size(2 * readers + 2).build().map_err(|e| OpenError::Pool(e.to_string()))?;
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            pool,
            epoch: Epoch(epoch),
            known_rooms: RwLock::new(rooms),
            used_bytes: AtomicU64::new(0),
            excepts: Mutex::new(HashMap::new()),
            revocations: tokio::sync::watch::Sender::new(Arc::new(list)),
            revocation_mark: AtomicU64::new(mark),
            device_reads: tokio::sync::Semaphore::new(readers),
            peer_reads: tokio::sync::Semaphore::new(readers),
            clock: Mutex::new(outpost_shared::HlcClock::starting_after(outpost_shared::Hlc(from_sql(last_hlc)))),
            in_flight: Mutex::new(std::collections::BTreeSet::new()),
        });
        let stop = CancellationToken::new();
        let head = from_sql(head);
        let (head_tx, head_rx) = tokio::sync::watch::channel(head);
        let (local_tx, local_rx) = mpsc::channel(64);
        let wake = Arc::new(tokio::sync::Notify::new());
        let (tx, rx) = mpsc::channel(opts.max_batch);
        let tail = tail::Tail::new(shared.clone(), publisher, head, head_tx);
        let mut tasks = vec![
            tokio::spawn(tail.run(local_rx, wake.clone(), stop.clone())),
            tokio::spawn(tail::listen(cfg.clone(), wake.clone(), stop.clone())),
        ];
        let imports = if opts.import_writers == 0 {
            None
        } else {
            let (itx, irx) = mpsc::channel(opts.max_batch);
            let queue: import::Queue = Arc::new(tokio::sync::Mutex::new(irx));
            for _ in 0..opts.import_writers {
                let c = connect(&cfg).await.map_err(|source| OpenError::Connect { target: target.clone(), source })?;
                let importer = import::Importer::new(
                    cfg.clone(),
                    c,
                    shared.clone(),
                    queue.clone(),
                    local_tx.clone(),
                    wake.clone(),
                );
                tasks.push(tokio::spawn(importer.run(stop.clone())));
            }
            Some(itx)
        };
        tasks.push(tokio::spawn(writer::Writer::new(cfg, client, shared.clone(), rx, local_tx).run()));
        tracing::info!(database = %target, epoch = %shared.epoch, head, "PostgreSQL store open");
        Ok(Self { shared, tx, imports, head_rx, stop, tasks: Arc::new(Mutex::new(tasks)) })
    }

    /// Sends a command to the writer; false when it has stopped.
    async fn send(&self, c: Command) -> bool {
        self.tx.send(c).await.is_ok()
    }

    /// Sends a command that answers on `rx`.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(make(reply)).await {
            return Err(StoreError::Closed);
        }
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    fn used_bytes(&self) -> u64 {
        self.shared.used_bytes.load(Ordering::Relaxed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Ping(tx)).await {
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)
    }

    async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).await {
            let _ = rx.await;
        }
        self.stop.cancel();
        let tasks: Vec<_> = self.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        self.shared.pool.close();
    }
}
