//! The cloud's ingest on PostgreSQL (`--phases cloud`): hubs' batches committed per
//! second by one node and by two on one database, against the SQLite cloud and against
//! the same rows written straight into PostgreSQL by batched INSERTs (the raw baseline),
//! all in the same run on the same private cluster; and the delay from a hub's batch
//! reaching node A to its messages being published to a doctor's router on node B, at a
//! steady 10,000 messages/s.
//!
//! What is measured is the storage path of the ingest: `LinkStore::import` called by
//! 1,000 simulated hubs (one task each, batches of a hub's realistic log from
//! `outpost_tests::corpus`, each batch awaited before the next as the link does), the
//! node's group commit, and each node's tail publishing every entry. The nodes run in
//! this process (two nodes = two stores, each with its own connections, writer and
//! tail). QUIC and zstd are left out: they cost the same on either backend and are
//! measured by the uplink phase.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_shared::uplink::batch::Entry;
use outpost_shared::{Cursor, MessageId};
use outpost_storage::{LinkStore, LogEntry, LogStore, Publisher};
use outpost_store_postgres::testing::TestCluster;
use outpost_store_postgres::{PgOptions, PgStore};
use outpost_tests::corpus::Corpus;
use tokio::time::Instant;

use crate::Args;
use crate::goals::{self, Row};
use crate::procfs::{MachineInfo, MachineTimes, ProcTimes};
use crate::stats::{self, Latency, Summary};

/// What one ingest measurement writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The same rows by batched INSERT on 8 connections, `RAW_GROUP` hub batches per
    /// statement and transaction: PostgreSQL's bulk-load speed for these rows, with none
    /// of a node's work (order, dedupe answers, publication).
    Raw,
    /// The SQLite cloud's store.
    Sqlite,
    /// One PostgreSQL node with every write on its one writer connection
    /// (`import_writers = 0`): what the importers are measured against.
    Pg1Serial,
    /// One PostgreSQL node.
    Pg1,
    /// Two PostgreSQL nodes on one database, half of the hubs on each.
    Pg2,
}

impl Variant {
    const ALL: [Variant; 5] = [Variant::Raw, Variant::Sqlite, Variant::Pg1Serial, Variant::Pg1, Variant::Pg2];

    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw PostgreSQL (batched INSERT)",
            Variant::Sqlite => "SQLite cloud (one node)",
            Variant::Pg1Serial => "PostgreSQL, one node, hubs' batches on the one writer",
            Variant::Pg1 => "PostgreSQL, one node",
            Variant::Pg2 => "PostgreSQL, two nodes",
        }
    }
}

/// The load.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub hubs: usize,
    /// Entries per batch (messages and receipts, as a hub's log holds them).
    pub batch: usize,
    /// Batches each hub sends.
    pub batches: usize,
    /// Messages/s of the latency measurement, and for how long.
    pub rate: f64,
    pub latency_secs: f64,
}

/// One ingest measurement.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub variant: Variant,
    pub messages: usize,
    pub entries: usize,
    pub secs: f64,
    /// This process (the nodes and the simulated hubs), % of one core.
    pub process_pct: f64,
    /// The PostgreSQL server's processes, % of one core.
    pub postgres_pct: f64,
    pub machine_busy_pct: f64,
    pub machine_iowait_pct: f64,
    /// Everything else on the machine (another user's build on a shared box), % of one core.
    pub others_pct: f64,
}

impl Ingest {
    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// The delivery delay across nodes at a steady rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    pub other_node: Latency,
    pub same_node: Latency,
    pub sent: usize,
    pub achieved_rate: f64,
}

pub struct CloudRun {
    pub spec: Spec,
    pub ingests: Vec<Ingest>,
    pub delivery: Vec<Delivery>,
    pub postgres: String,
    pub elapsed: Duration,
}

/// Publishes nowhere, counting (a node's router with nobody connected).
#[derive(Default)]
struct Count(AtomicU64);

impl Publisher for Count {
    fn publish(&self, _: LogEntry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records when each message id was published.
#[derive(Default)]
struct Stamps(Mutex<HashMap<String, Instant>>);

impl Publisher for Stamps {
    fn publish(&self, e: LogEntry) {
        let at = Instant::now();
        // The frame's first "id" is the message's (receipts are not timed).
        if e.frame.contains("\"type\":\"message\"")
            && let Some(i) = e.frame.find("\"id\":\"")
            && let Some(id) = e.frame.get(i + 6..i + 42)
            && let Ok(mut m) = self.0.lock()
        {
            m.insert(id.to_owned(), at);
        }
    }
}

/// Each hub's batches, generated once (cloned for each measurement).
fn corpus(spec: &Spec, rep: usize) -> Vec<Vec<Vec<Entry>>> {
    (0..spec.hubs)
        .map(|h| {
            let mut c = Corpus::new(0x5eed_0000 + (rep * 100_000 + h) as u64);
            (0..spec.batches).map(|_| c.take(spec.batch)).collect()
        })
        .collect()
}

fn messages_in(hubs: &[Vec<Vec<Entry>>]) -> (usize, usize) {
    let entries: usize = hubs.iter().flatten().map(Vec::len).sum();
    let messages = hubs.iter().flatten().flatten().filter(|e| matches!(e, Entry::Message(_))).count();
    (messages, entries)
}

/// Entries a store holds once all of `hubs` is imported: a hub's log repeats some
/// receipts (a message read twice), which are stored once.
fn distinct_entries(hubs: &[Vec<Vec<Entry>>]) -> usize {
    let mut seen = std::collections::HashSet::new();
    hubs.iter()
        .flatten()
        .flatten()
        .filter(|e| {
            seen.insert(match e {
                Entry::Message(m) => (m.id, String::new(), String::new()),
                Entry::Receipt(r) => {
                    (r.id, r.state.as_str().to_owned(), r.by.as_ref().map_or(String::new(), |b| b.as_str().to_owned()))
                }
            })
        })
        .count()
}

fn pg_options() -> PgOptions {
    let hub = outpost_engine::config::StorageConfig::default();
    PgOptions { max_batch: hub.max_batch, readers: hub.readers, ..PgOptions::default() }
}

/// CPU of the cluster's server processes (the postmaster and its children), by pid.
fn postgres_times(cluster: &TestCluster) -> HashMap<u32, ProcTimes> {
    let Some(master) = cluster.server_pid() else { return HashMap::new() };
    let mut pids = vec![master];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // Field 4 (after the parenthesised name) is the parent.
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
    }
    pids.into_iter().map(|p| (p, ProcTimes::read(&p.to_string()))).collect()
}

/// CPU the server processes used between two samples. Every connection is opened before
/// the first and closed after the second, so no backend's work falls between them.
fn cpu_ns(now: &HashMap<u32, ProcTimes>, before: &HashMap<u32, ProcTimes>) -> u64 {
    let zero = ProcTimes::default();
    now.iter().map(|(pid, n)| n.cpu_since(before.get(pid).unwrap_or(&zero), None)).sum()
}

/// Runs every hub's batches through `import` of the node it is assigned to; returns how
/// many entries the nodes said were new.
async fn drive<S: LinkStore>(nodes: &[S], hubs: Vec<Vec<Vec<Entry>>>) -> anyhow::Result<usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for (h, batches) in hubs.into_iter().enumerate() {
        let node = nodes[h % nodes.len()].clone();
        tasks.spawn(async move {
            let peer = format!("hub-{h:04}");
            let mut fresh = 0;
            for b in batches {
                let hwm = b.last().map_or(Cursor(0), Entry::cursor);
                fresh += node.import(&peer, b, hwm).await?;
            }
            anyhow::Ok(fresh)
        });
    }
    let mut fresh = 0;
    while let Some(r) = tasks.join_next().await {
        fresh += r??;
    }
    Ok(fresh)
}

/// Rows in the messages and receipts tables at `url`.
async fn rows_in(url: &str) -> anyhow::Result<usize> {
    let cfg = outpost_store_postgres::parse_url(url)?;
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let n: i64 =
        client.query_one("SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM receipts)", &[]).await?.get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A batch's messages as the raw baseline's array parameters.
#[derive(Default)]
struct MessageColumns {
    cursor: Vec<i64>,
    id: Vec<Vec<u8>>,
    room: Vec<String>,
    kind: Vec<String>,
    priority: Vec<i16>,
    body: Vec<String>,
    seq: Vec<i64>,
    sender: Vec<String>,
    device: Vec<String>,
    hlc: Vec<i64>,
    at: Vec<i64>,
}

impl MessageColumns {
    fn push(&mut self, cursor: i64, w: &outpost_shared::uplink::batch::WireMessage) {
        self.cursor.push(cursor);
        self.id.push(w.id.as_bytes().to_vec());
        self.room.push(w.room.as_str().to_owned());
        self.kind.push(w.kind.as_str().to_owned());
        self.priority.push(i16::from(w.priority.as_u8()));
        self.body.push(w.body.clone());
        self.seq.push(w.seq.0 as i64);
        self.sender.push(w.from.as_str().to_owned());
        self.device.push(w.device.as_str().to_owned());
        self.hlc.push(w.hlc.0 as i64);
        self.at.push(w.at as i64);
    }
}

/// A batch's receipts as the raw baseline's array parameters.
#[derive(Default)]
struct ReceiptColumns {
    cursor: Vec<i64>,
    id: Vec<Vec<u8>>,
    state: Vec<String>,
    by: Vec<String>,
    target: Vec<String>,
    room: Vec<String>,
    at: Vec<i64>,
}

impl ReceiptColumns {
    fn push(&mut self, cursor: i64, w: &outpost_shared::uplink::batch::WireReceipt) {
        self.cursor.push(cursor);
        self.id.push(w.id.as_bytes().to_vec());
        self.state.push(w.state.as_str().to_owned());
        self.by.push(w.by.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_default());
        self.target.push(w.target.as_str().to_owned());
        self.room.push(w.room.as_str().to_owned());
        self.at.push(w.at as i64);
    }
}

/// Hub batches per transaction of the raw baseline.
const RAW_GROUP: usize = 20;

/// One connection of the raw baseline, with its two statements.
struct RawConn {
    client: tokio_postgres::Client,
    messages: tokio_postgres::Statement,
    receipts: tokio_postgres::Statement,
}

/// The raw baseline's connections, opened before the measurement starts.
async fn open_raw(url: &str) -> anyhow::Result<Vec<RawConn>> {
    const CONNECTIONS: usize = 8;
    let cfg = outpost_store_postgres::parse_url(url)?;
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let messages = client
            .prepare(
                "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, sender, device, hlc, at, origin_peer)
                 SELECT c, i, r, k, p, b, s, se, d, h, a, 'raw'
                   FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::smallint[], $6::text[],
                               $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[])
                        AS u(c, i, r, k, p, b, s, se, d, h, a)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let receipts = client
            .prepare(
                "INSERT INTO receipts (cursor, msg_id, state, by_user, target, room, at, origin_peer)
                 SELECT c, i, s, b, t, r, a, 'raw'
                   FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                        AS u(c, i, s, b, t, r, a)
                 ON CONFLICT (msg_id, state, by_user) DO NOTHING",
            )
            .await?;
        conns.push(RawConn { client, messages, receipts });
    }
    Ok(conns)
}

/// The raw baseline: the same entries by batched INSERT into the same tables, each
/// connection taking the next group of batches. Gives the connections back.
async fn drive_raw(conns: Vec<RawConn>, hubs: Vec<Vec<Vec<Entry>>>) -> anyhow::Result<Vec<RawConn>> {
    let batches: Vec<Vec<Entry>> = hubs.into_iter().flatten().collect();
    let groups: Vec<Vec<Entry>> = batches.chunks(RAW_GROUP).map(|c| c.concat()).rev().collect();
    let queue: Arc<Mutex<Vec<Vec<Entry>>>> = Arc::new(Mutex::new(groups));
    let next_cursor = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let (queue, next_cursor) = (queue.clone(), next_cursor.clone());
        tasks.spawn(async move {
            while let Some(batch) = queue.lock().ok().and_then(|mut q| q.pop()) {
                let first = next_cursor.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let (mut m, mut r) = (MessageColumns::default(), ReceiptColumns::default());
                for (i, e) in batch.iter().enumerate() {
                    let cursor = (first + i as u64) as i64;
                    match e {
                        Entry::Message(w) => m.push(cursor, w),
                        Entry::Receipt(w) => r.push(cursor, w),
                    }
                }
                let tx = c.client.transaction().await?;
                tx.execute(
                    &c.messages,
                    &[
                        &m.cursor,
                        &m.id,
                        &m.room,
                        &m.kind,
                        &m.priority,
                        &m.body,
                        &m.seq,
                        &m.sender,
                        &m.device,
                        &m.hlc,
                        &m.at,
                    ],
                )
                .await?;
                tx.execute(&c.receipts, &[&r.cursor, &r.id, &r.state, &r.by, &r.target, &r.room, &r.at]).await?;
                tx.commit().await?;
            }
            anyhow::Ok(c)
        });
    }
    let mut back = Vec::new();
    while let Some(r) = tasks.join_next().await {
        back.push(r??);
    }
    Ok(back)
}

async fn ingest_once(
    variant: Variant,
    cluster: &TestCluster,
    tmp: &Path,
    name: &str,
    hubs: Vec<Vec<Vec<Entry>>>,
) -> anyhow::Result<Ingest> {
    let (messages, entries) = messages_in(&hubs);
    let distinct = distinct_entries(&hubs);
    let url = || cluster.create_database(name).map_err(anyhow::Error::msg);
    let publisher = || Arc::new(Count::default()) as Arc<dyn Publisher>;
    // Open first (connections, migrations), then measure only the ingest.
    enum Open {
        Raw(Vec<RawConn>),
        Lite(outpost_store_sqlite::Store),
        Pg(Vec<PgStore>),
    }
    let mut db_url = None;
    let open = match variant {
        Variant::Raw => {
            let u = url()?;
            db_url = Some(u.clone());
            outpost_store_postgres::create(&u).await?;
            Open::Raw(open_raw(&u).await?)
        }
        Variant::Sqlite => {
            let hub = outpost_engine::config::StorageConfig::default();
            let opts = outpost_store_sqlite::StoreOptions {
                quota_bytes: u64::MAX,
                emergency_reserve_bytes: 0,
                max_batch: hub.max_batch,
                max_receipts_per_ack: 1000,
                readers: hub.readers,
            };
            Open::Lite(outpost_store_sqlite::Store::open(&tmp.join(format!("{name}.db")), opts, publisher())?)
        }
        Variant::Pg1Serial | Variant::Pg1 | Variant::Pg2 => {
            let u = url()?;
            db_url = Some(u.clone());
            let n = if variant == Variant::Pg2 { 2 } else { 1 };
            let opts = match variant {
                Variant::Pg1Serial => PgOptions { import_writers: 0, ..pg_options() },
                _ => pg_options(),
            };
            let mut nodes = Vec::new();
            for _ in 0..n {
                nodes.push(PgStore::open(&u, opts.clone(), publisher()).await?);
            }
            Open::Pg(nodes)
        }
    };
    let (me, pg, machine) = (ProcTimes::read("self"), postgres_times(cluster), MachineTimes::read());
    let started = Instant::now();
    let (open, fresh) = match open {
        Open::Raw(conns) => (Open::Raw(drive_raw(conns, hubs).await?), distinct),
        Open::Lite(s) => {
            let fresh = drive(std::slice::from_ref(&s), hubs).await?;
            (Open::Lite(s), fresh)
        }
        Open::Pg(nodes) => {
            let fresh = drive(&nodes, hubs).await?;
            (Open::Pg(nodes), fresh)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    // A figure only counts if every entry is there, once.
    anyhow::ensure!(fresh == distinct, "{}: the nodes took {fresh} of {distinct} entries as new", variant.name());
    if let Some(u) = &db_url {
        let rows = rows_in(u).await?;
        anyhow::ensure!(rows == distinct, "{}: {rows} rows for {distinct} distinct entries", variant.name());
    }
    let (me2, pg2, machine2) = (ProcTimes::read("self"), postgres_times(cluster), MachineTimes::read());
    match open {
        Open::Raw(_) => {}
        Open::Lite(s) => s.shutdown().await,
        Open::Pg(nodes) => {
            for n in nodes {
                LogStore::shutdown(&n).await;
            }
        }
    }
    let pct = |ns: u64| ns as f64 / 1e9 / secs * 100.0;
    let (busy, iowait) = machine2.busy_iowait_since(&machine);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (process_pct, postgres_pct) = (pct(me2.cpu_since(&me, None)), pct(cpu_ns(&pg2, &pg)));
    Ok(Ingest {
        others_pct: (busy * cores - process_pct - postgres_pct).max(0.0),
        variant,
        messages,
        entries,
        secs,
        process_pct,
        postgres_pct,
        machine_busy_pct: busy,
        machine_iowait_pct: iowait,
    })
}

/// Node A takes hubs' batches at `spec.rate` messages/s; both nodes' routers stamp each
/// message when it is published.
async fn delivery_once(cluster: &TestCluster, name: &str, spec: &Spec, rep: usize) -> anyhow::Result<Delivery> {
    let url = cluster.create_database(name).map_err(anyhow::Error::msg)?;
    let (on_a, on_b) = (Arc::new(Stamps::default()), Arc::new(Stamps::default()));
    let a = PgStore::open(&url, pg_options(), on_a.clone()).await?;
    let b = PgStore::open(&url, pg_options(), on_b.clone()).await?;
    // Small batches from many hubs, as a district's hubs trickle in live traffic.
    const BATCH: usize = 20;
    let mut corpus = Corpus::new(0xde11_0000 + rep as u64);
    let total_msgs = (spec.rate * spec.latency_secs) as usize;
    let sent: Arc<Mutex<Vec<(MessageId, Instant)>>> = Arc::default();
    let tick = Duration::from_millis(10);
    let per_tick = spec.rate * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut sent_msgs = 0usize;
    let mut hub = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut next = started;
    while sent_msgs < total_msgs {
        next += tick;
        tokio::time::sleep_until(next).await;
        owed += per_tick;
        while owed >= 1.0 {
            let batch = corpus.take(BATCH);
            let ids: Vec<MessageId> = batch
                .iter()
                .filter_map(|e| match e {
                    Entry::Message(m) => Some(m.id),
                    Entry::Receipt(_) => None,
                })
                .collect();
            owed -= ids.len() as f64;
            sent_msgs += ids.len();
            hub = (hub + 1) % spec.hubs;
            let (node, sent) = (a.clone(), sent.clone());
            tasks.spawn(async move {
                let at = Instant::now();
                if let Ok(mut s) = sent.lock() {
                    s.extend(ids.iter().map(|id| (*id, at)));
                }
                let hwm = batch.last().map_or(Cursor(0), Entry::cursor);
                node.import(&format!("hub-{hub:04}"), batch, hwm).await
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let achieved_rate = sent_msgs as f64 / started.elapsed().as_secs_f64();
    // Everything committed is published on B within a few polls at most.
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = sent.lock().map(|s| s.len()).unwrap_or(0);
    while on_b.0.lock().map(|m| m.len()).unwrap_or(0) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut other, mut same) = (stats::new_hist(), stats::new_hist());
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let (pa, pb) =
        (on_a.0.lock().map(|m| m.clone()).unwrap_or_default(), on_b.0.lock().map(|m| m.clone()).unwrap_or_default());
    for (id, at) in &sent {
        let key = id.to_string();
        for (map, hist) in [(&pb, &mut other), (&pa, &mut same)] {
            // A message never published counts as the longest delay there is.
            let us = map.get(&key).map_or(u64::MAX, |p| p.saturating_duration_since(*at).as_micros() as u64);
            stats::record(hist, us);
        }
    }
    LogStore::shutdown(&a).await;
    LogStore::shutdown(&b).await;
    Ok(Delivery { other_node: Latency::of(&other), same_node: Latency::of(&same), sent: sent.len(), achieved_rate })
}

pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<CloudRun> {
    let started = Instant::now();
    let spec = Spec {
        hubs: args.cloud_hubs,
        batch: args.cloud_batch,
        batches: args.cloud_batches.unwrap_or(if args.quick { 1 } else { 4 }),
        rate: args.rate,
        latency_secs: if args.quick { 3.0 } else { 10.0 },
    };
    eprintln!("starting a private PostgreSQL cluster…");
    let cluster = TestCluster::start().map_err(anyhow::Error::msg)?;
    let postgres = cluster.version().unwrap_or_default();
    let mut ingests = Vec::new();
    let mut delivery = Vec::new();
    for rep in 0..args.reps() {
        let hubs = corpus(&spec, rep);
        // Alternate the order so that drift on a shared machine does not favour one.
        let mut order = Variant::ALL.to_vec();
        if rep % 2 == 1 {
            order.reverse();
        }
        for v in order {
            eprintln!("cloud ingest, repetition {} of {}: {}", rep + 1, args.reps(), v.name());
            let name = format!("ingest_{rep}_{v:?}").to_lowercase();
            let r = ingest_once(v, &cluster, tmp, &name, hubs.clone()).await?;
            eprintln!("  {:.0} messages/s", r.per_sec());
            ingests.push(r);
        }
        eprintln!("cloud delivery across nodes at {} messages/s, repetition {}", spec.rate, rep + 1);
        let d = delivery_once(&cluster, &format!("delivery_{rep}"), &spec, rep).await?;
        eprintln!("  p99 {:.1} ms on the other node", d.other_node.p99_ms);
        delivery.push(d);
    }
    Ok(CloudRun { spec, ingests, delivery, postgres, elapsed: started.elapsed() })
}

pub fn markdown(args: &Args, command: &str, machine: &MachineInfo, run: &CloudRun) -> goals::Section {
    let mut o = String::new();
    let s = &run.spec;
    let _ = writeln!(o, "## Cloud on PostgreSQL: ingest from {} hubs and delivery across nodes\n", s.hubs);
    let _ = writeln!(
        o,
        "Machine: {} CPUs ({}), {} RAM, {}. {}. Command `{command}`, commit `{}`, {} repetitions, {:.0} min.\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        run.postgres,
        machine.commit,
        args.reps(),
        run.elapsed.as_secs_f64() / 60.0
    );
    let _ = writeln!(
        o,
        "Each repetition: {} simulated hubs, each sending {} batches of {} entries of a hub's log \
         (messages and receipts), each batch awaited before the next; every variant gets the same \
         entries, in alternating order. Messages/s counts committed messages (receipts excluded). \
         CPU is % of one core (200 % = both cores): this process holds the simulated hubs and the \
         node(s); PostgreSQL is the postmaster and its backends; others is the rest of the machine.\n",
        s.hubs, s.batches, s.batch
    );
    let per = |v: Variant| -> Vec<f64> { run.ingests.iter().filter(|i| i.variant == v).map(Ingest::per_sec).collect() };
    let med = |v: Variant| Summary::of(&per(v)).median;
    let _ = writeln!(
        o,
        "| variant | messages/s: median (min–max) | entries/s | this process CPU % | PostgreSQL CPU % | others CPU % | machine busy % | iowait % |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for v in Variant::ALL {
        let rows: Vec<&Ingest> = run.ingests.iter().filter(|i| i.variant == v).collect();
        let m = |f: fn(&Ingest) -> f64| Summary::of(&rows.iter().map(|i| f(i)).collect::<Vec<_>>()).median;
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            v.name(),
            Summary::of(&per(v)).show_int(),
            m(|i| i.entries as f64 / i.secs),
            m(|i| i.process_pct),
            m(|i| i.postgres_pct),
            m(|i| i.others_pct),
            m(|i| i.machine_busy_pct),
            m(|i| i.machine_iowait_pct),
        );
    }
    let _ = writeln!(o);
    let other: Vec<f64> = run.delivery.iter().map(|d| d.other_node.p99_ms).collect();
    let same: Vec<f64> = run.delivery.iter().map(|d| d.same_node.p99_ms).collect();
    let rate: Vec<f64> = run.delivery.iter().map(|d| d.achieved_rate).collect();
    let _ = writeln!(
        o,
        "Delivery across nodes: node A imports batches of 20 entries at {} messages/s (achieved {}, {} messages per repetition) for {:.0} s; \
         the delay is from the batch's import call on A to the message's publication to node B's router \
         (p50 {} ms, p99 {} ms, max {} ms), against node A's own router (p99 {} ms).\n",
        s.rate,
        Summary::of(&rate).show_int(),
        run.delivery.first().map_or(0, |d| d.sent),
        s.latency_secs,
        Summary::of(&run.delivery.iter().map(|d| d.other_node.p50_ms).collect::<Vec<_>>()).show(1),
        Summary::of(&other).show(1),
        Summary::of(&run.delivery.iter().map(|d| d.other_node.max_ms).collect::<Vec<_>>()).show(1),
        Summary::of(&same).show(1),
    );
    let (raw, lite, one, two) = (med(Variant::Raw), med(Variant::Sqlite), med(Variant::Pg1), med(Variant::Pg2));
    let rows = vec![
        Row::goal(
            "cloud ingest, PostgreSQL one node (messages/s)",
            Summary::of(&per(Variant::Pg1)).show_int(),
            format!("raw {raw:.0}"),
            format!("{:.2}×", one / raw),
            "≥ 50,000/s and ≥ 0.5× raw",
            one >= 50_000.0 && one >= 0.5 * raw,
        ),
        Row::info(
            format!("cloud ingest, PostgreSQL one node, {} importers (messages/s)", pg_options().import_writers),
            Summary::of(&per(Variant::Pg1)).show_int(),
            format!("one writer {:.0}", med(Variant::Pg1Serial)),
            format!("{:.2}×", one / med(Variant::Pg1Serial)),
            "hubs' batches committed on several connections at once",
        ),
        Row::info(
            "cloud ingest, PostgreSQL two nodes (messages/s)",
            Summary::of(&per(Variant::Pg2)).show_int(),
            format!("one node {one:.0}"),
            format!("{:.2}×", two / one),
            "same machine: the nodes share its 2 cores with PostgreSQL",
        ),
        Row::info(
            "cloud ingest, SQLite (messages/s)",
            Summary::of(&per(Variant::Sqlite)).show_int(),
            format!("PostgreSQL one node {one:.0}"),
            format!("{:.2}×", lite / one),
            "the embedded default",
        ),
        Row::goal(
            format!("doctor on another node, delivery p99 at {} msg/s (ms)", s.rate),
            Summary::of(&other).show(1),
            format!("same node {:.1}", Summary::of(&same).median),
            "",
            "< 1,000 ms",
            Summary::of(&other).median < 1000.0,
        ),
    ];
    goals::table(&mut o, &rows);
    goals::Section { text: o, rows }
}
