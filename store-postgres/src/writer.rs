//! The node's writer: group commit, dedupe, cursors, receipts — the SQLite writer's rules
//! (store-sqlite/src/writer.rs) on a PostgreSQL connection shared with other nodes.
//!
//! It drains what is queued (up to `max_batch` commands), commits emergencies in a
//! transaction of their own first, then the rest. Each transaction begins by locking
//! `log_head` (its cursors are the ones after the head, see the crate documentation) and
//! ends by moving the head and notifying the other nodes. Hubs' batches go to the
//! importers (import.rs) instead, unless `import_writers` is 0. Only after the commit, and
//! after the tail has handed the new entries to the router, are the senders answered. A
//! failed transaction is rolled back and everyone in it told so; a lost connection
//! (PostgreSQL restarting) is re-opened with backoff while senders wait in the channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use outpost_shared::frames::{MessageBody, Positioned, Receipt, ReceiptState};
use outpost_shared::uplink::batch::{Entry, WireMessage, WireReceipt};
use outpost_shared::{Cursor, DeviceId, Hlc, HlcClock, MessageId, Priority, RoomId, ServerFrame, UserId};
use outpost_storage::{
    AppendRequest, Appended, Audience, AuditEvent, Forwarded, LogEntry, PeerState, Reply, StoreError,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};

use crate::tail::LocalCommit;
use crate::{Command, Shared, db, from_sql, now_ms, to_sql};

/// An answer owed once the transaction's fate is known.
enum Pending {
    Append(Reply, Result<Appended, StoreError>),
    Count(oneshot::Sender<Result<usize, StoreError>>, usize),
    Hello(oneshot::Sender<Result<PeerState, StoreError>>, PeerState),
    Ping(oneshot::Sender<()>),
}

impl Pending {
    fn finish(self, failed: Option<&StoreError>) {
        match (self, failed) {
            (Pending::Append(reply, answer), None) => reply(answer),
            (Pending::Append(reply, _), Some(e)) => reply(Err(e.clone())),
            (Pending::Count(tx, n), None) => drop(tx.send(Ok(n))),
            (Pending::Count(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Pending::Hello(tx, s), None) => drop(tx.send(Ok(s))),
            (Pending::Hello(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Pending::Ping(tx), _) => drop(tx.send(())),
        }
    }
}

/// How long the writer waits between attempts to reach a database that went away.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How often the database's size (what the quota counts) is read again.
const SIZE_REFRESH: Duration = Duration::from_secs(5);

pub(crate) struct Writer {
    cfg: tokio_postgres::Config,
    client: Client,
    rx: mpsc::Receiver<Command>,
    local: mpsc::Sender<LocalCommit>,
    st: State,
}

/// Everything but the connection, so a transaction on it can be open while this changes.
/// The importers (import.rs) keep one each too.
pub(crate) struct State {
    pub shared: Arc<Shared>,
    /// Prepared on this connection; cleared when it is opened again.
    pub stmts: HashMap<&'static str, Statement>,
    /// The next cursor to hand out in the open transaction.
    pub next_cursor: u64,
    /// Last seq seen per (user, device) on this node, to report gaps.
    last_seq: HashMap<(UserId, DeviceId), u64>,
    size_checked: Option<tokio::time::Instant>,
}

/// A message a receipt is about.
struct Target {
    id: MessageId,
    sender: UserId,
    room: RoomId,
    cursor: u64,
    peer: Option<String>,
}

impl Writer {
    pub fn new(
        cfg: tokio_postgres::Config,
        client: Client,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        local: mpsc::Sender<LocalCommit>,
    ) -> Self {
        Self { cfg, client, rx, local, st: State::new(shared) }
    }

    pub async fn run(mut self) {
        if let Err(e) = prepare_session(&self.client).await {
            tracing::warn!(error = %e, "cannot set up the writer's database session");
        }
        let mut stop = None;
        while stop.is_none() {
            let Some(first) = self.rx.recv().await else { break };
            let mut batch = vec![first];
            while batch.len() < self.st.shared.opts.max_batch {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if let Some(pos) = batch.iter().position(|c| matches!(c, Command::Stop(_))) {
                for c in batch.split_off(pos) {
                    match c {
                        Command::Stop(tx) => stop = Some(tx),
                        Command::Append(_, reply) => reply(Err(StoreError::Closed)),
                        _ => {}
                    }
                }
            }
            let (urgent, rest): (Vec<_>, Vec<_>) = batch.into_iter().partition(Command::is_emergency);
            if !urgent.is_empty() {
                self.commit_group(urgent).await;
            }
            if !rest.is_empty() {
                self.commit_group(rest).await;
            }
        }
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Command::Append(_, reply) = c {
                reply(Err(StoreError::Closed));
            }
        }
        tracing::info!("store writer stopped");
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
    }

    /// Re-opens the connection after it was lost, waiting with backoff.
    async fn reconnect(&mut self) {
        self.client = reconnect(&self.cfg, "store writer").await;
        self.st.stmts.clear();
    }

    async fn commit_group(&mut self, cmds: Vec<Command>) {
        if self.client.is_closed() {
            self.reconnect().await;
        }
        let started = tokio::time::Instant::now();
        let n = cmds.len();
        let mut pending: Vec<Pending> = Vec::new();
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut new_rooms: Vec<RoomId> = Vec::new();
        let mut excepts: Vec<u64> = Vec::new();
        let mut imports: Vec<(String, Vec<Entry>, Cursor)> = Vec::new();
        let mut import_replies: Vec<oneshot::Sender<Result<usize, StoreError>>> = Vec::new();
        let st = &mut self.st;
        let outcome: Result<(u64, u64), StoreError> = async {
            let tx = self.client.transaction().await.map_err(db)?;
            let head: i64 = tx.query_one("SELECT head FROM log_head FOR UPDATE", &[]).await.map_err(db)?.get(0);
            let base = from_sql(head);
            st.next_cursor = base + 1;
            for cmd in cmds {
                match cmd {
                    Command::Append(req, reply) => {
                        let origin = req.origin;
                        match st.append(&tx, req, &mut entries, &mut new_rooms).await {
                            Ok(answer) => {
                                if let (Ok(a), Some(s)) = (&answer, origin)
                                    && !a.duplicate
                                {
                                    excepts.push(a.cursor.0);
                                    if let Ok(mut m) = st.shared.excepts.lock() {
                                        m.insert(a.cursor.0, s);
                                    }
                                }
                                pending.push(Pending::Append(reply, answer));
                            }
                            Err(e) => {
                                pending.push(Pending::Append(reply, Err(e.clone())));
                                return Err(e);
                            }
                        }
                    }
                    Command::Ack { device, user, rooms, cursor, at } => {
                        st.ack(&tx, &device, &user, &rooms, cursor, at, &mut entries).await?;
                    }
                    Command::Read { user, room, id, at } => st.read(&tx, &user, &room, id, at, &mut entries).await?,
                    Command::Rooms(rooms) => {
                        for r in rooms {
                            st.note_room(&tx, &r, &mut new_rooms).await?;
                        }
                    }
                    // Hubs' batches are applied together after the rest (see `import`).
                    Command::Import { peer, entries: batch, peer_hwm, reply } => {
                        imports.push((peer, batch, peer_hwm));
                        import_replies.push(reply);
                    }
                    Command::PeerAcked { peer, sent_hwm, forwarded, at } => {
                        st.peer_acked(&tx, &peer, sent_hwm, forwarded, at, &mut entries).await?;
                    }
                    Command::PeerHello { peer, epoch, rooms, reply } => {
                        match st.peer_hello(&tx, &peer, &epoch, &rooms).await {
                            Ok(s) => pending.push(Pending::Hello(reply, s)),
                            Err(e) => {
                                pending.push(Pending::Hello(reply, PeerState::default()));
                                return Err(e);
                            }
                        }
                    }
                    Command::PeerRooms { peer, rooms, reply } => match st.note_peer_rooms(&tx, &peer, &rooms).await {
                        Ok(n) => pending.push(Pending::Count(reply, n)),
                        Err(e) => {
                            pending.push(Pending::Count(reply, 0));
                            return Err(e);
                        }
                    },
                    Command::Audit(event, at) => st.insert_audit(&tx, at, &event).await?,
                    Command::Revoke { from, entries: list, reply } => {
                        let mut fresh = 0;
                        for r in &list {
                            if st.upsert_revocation(&tx, r).await? {
                                fresh += 1;
                                st.insert_audit(&tx, now_ms(), &AuditEvent::revocation(r, &from)).await?;
                            }
                        }
                        pending.push(Pending::Count(reply, fresh));
                    }
                    Command::Ping(tx) => pending.push(Pending::Ping(tx)),
                    Command::Stop(_) => {}
                }
            }
            if !imports.is_empty() {
                match st.import(&tx, std::mem::take(&mut imports), &mut entries, &mut new_rooms).await {
                    Ok(fresh) => {
                        for (reply, n) in import_replies.drain(..).zip(fresh) {
                            pending.push(Pending::Count(reply, n));
                        }
                    }
                    Err(e) => {
                        pending.extend(import_replies.drain(..).map(|r| Pending::Count(r, 0)));
                        return Err(e);
                    }
                }
            }
            let through = st.next_cursor - 1;
            if through > base {
                tx.execute("UPDATE log_head SET head = $1", &[&to_sql(through)]).await.map_err(db)?;
                // Delivered to the listening nodes when (and only if) this commits.
                tx.execute("SELECT pg_notify('outpost_log', $1)", &[&through.to_string()]).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok((base, through))
        }
        .await;

        match outcome {
            Ok((base, through)) => {
                if !new_rooms.is_empty()
                    && let Ok(mut known) = self.st.shared.known_rooms.write()
                {
                    known.extend(new_rooms);
                }
                let stored = pending.iter().filter(|p| matches!(p, Pending::Append(_, Ok(a)) if !a.duplicate)).count();
                let answer: Box<dyn FnOnce() + Send> = Box::new(move || {
                    for p in pending {
                        p.finish(None);
                    }
                });
                // Counted before anyone is answered, as on SQLite.
                metrics::counter!("outpost_messages_stored_total").increment(stored as u64);
                metrics::histogram!("outpost_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("outpost_commit_commands").record(n as f64);
                // Publish before answering: once a sender holds `stored`, every online
                // member (on every node that has caught up) has the message queued. The
                // tail answers once it has published, while this writer goes on with the
                // next group: publication and the next transaction overlap.
                if through > base {
                    entries.sort_by_key(|e| e.cursor);
                    let commit = LocalCommit { base, through, entries, answer };
                    if let Err(mpsc::error::SendError(c)) = self.local.send(commit).await {
                        // The tail has stopped (shutdown): the commit happened, say so.
                        (c.answer)();
                    }
                } else {
                    answer();
                }
                self.refresh_size().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "transaction failed and was rolled back; senders are told to retry");
                metrics::counter!("outpost_commits_failed_total").increment(1);
                if let Ok(mut m) = self.st.shared.excepts.lock() {
                    for c in excepts {
                        m.remove(&c);
                    }
                }
                let err = match err {
                    StoreError::StorageFull { .. } => StoreError::StorageFull {
                        used: self.st.shared.used_bytes.load(Ordering::Relaxed),
                        quota: self.st.shared.opts.quota_bytes,
                    },
                    other => other,
                };
                for p in pending {
                    p.finish(Some(&err));
                }
                // Batches the transaction failed before reaching.
                for reply in import_replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Reads the database's size now and then (it counts against the quota).
    async fn refresh_size(&mut self) {
        let due = self.st.size_checked.is_none_or(|t| t.elapsed() >= SIZE_REFRESH);
        if !due {
            return;
        }
        self.st.size_checked = Some(tokio::time::Instant::now());
        match self.client.query_one("SELECT pg_database_size(current_database())", &[]).await {
            Ok(row) => self.st.shared.used_bytes.store(from_sql(row.get(0)), Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "cannot read the database size"),
        }
    }
}

/// What Outpost relies on for "acknowledged means durable": a commit returns after the
/// WAL is flushed (`synchronous_commit` `on`, or stronger when replication is set up). A
/// server configured with `off` is overridden for the writing connections.
pub(crate) async fn prepare_session(client: &Client) -> Result<(), tokio_postgres::Error> {
    let level: String = client.query_one("SHOW synchronous_commit", &[]).await?.get(0);
    if level == "off" {
        tracing::warn!("the database has synchronous_commit = off; this node's writes use on");
        client.batch_execute("SET synchronous_commit = on").await?;
    }
    Ok(())
}

/// Opens a writing connection again after it was lost, waiting with backoff meanwhile
/// (writes wait in their queue).
pub(crate) async fn reconnect(cfg: &tokio_postgres::Config, who: &str) -> Client {
    let mut wait = RECONNECT_MIN;
    loop {
        match crate::connect(cfg).await {
            Ok(c) => match prepare_session(&c).await {
                Ok(()) => {
                    tracing::info!(who, "reconnected to the database");
                    return c;
                }
                Err(e) => tracing::warn!(who, error = %e, "cannot set up the database session"),
            },
            Err(e) => {
                tracing::warn!(who, error = %e, retry_in_ms = wait.as_millis() as u64, "database unreachable; writes wait");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

impl State {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, stmts: HashMap::new(), next_cursor: 0, last_seq: HashMap::new(), size_checked: None }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, HlcClock> {
        // A poisoned clock is still a clock: it only ever moves forward.
        self.shared.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn prep(&mut self, tx: &Transaction<'_>, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql).await.map_err(db)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    async fn exec(&mut self, tx: &Transaction<'_>, sql: &'static str, params: &Params<'_>) -> Result<u64, StoreError> {
        let s = self.prep(tx, sql).await?;
        tx.execute(&s, params).await.map_err(db)
    }

    async fn query(
        &mut self,
        tx: &Transaction<'_>,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let s = self.prep(tx, sql).await?;
        tx.query(&s, params).await.map_err(db)
    }

    async fn query_opt(
        &mut self,
        tx: &Transaction<'_>,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let s = self.prep(tx, sql).await?;
        tx.query_opt(&s, params).await.map_err(db)
    }

    fn take_cursor(&mut self) -> u64 {
        let c = self.next_cursor;
        self.next_cursor += 1;
        c
    }

    async fn note_room(
        &mut self,
        tx: &Transaction<'_>,
        room: &RoomId,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<(), StoreError> {
        let known = self.shared.known_rooms.read().map(|k| k.contains(room)).unwrap_or(false);
        if !known && !new_rooms.contains(room) {
            self.exec(tx, "INSERT INTO rooms (room) VALUES ($1) ON CONFLICT DO NOTHING", &[&room.as_str()]).await?;
            new_rooms.push(room.clone());
        }
        Ok(())
    }

    /// The cursor and stamp of the message with `id`, if it is held.
    async fn message_position(
        &mut self,
        tx: &Transaction<'_>,
        id: MessageId,
    ) -> Result<Option<(Cursor, Hlc)>, StoreError> {
        let row =
            self.query_opt(tx, "SELECT cursor, hlc FROM messages WHERE id = $1", &[&id.as_bytes().as_slice()]).await?;
        Ok(row.map(|r| (Cursor(from_sql(r.get(0))), Hlc(from_sql(r.get(1))))))
    }

    async fn append(
        &mut self,
        tx: &Transaction<'_>,
        req: AppendRequest,
        entries: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<Result<Appended, StoreError>, StoreError> {
        let (quota, reserve) = (self.shared.opts.quota_bytes, self.shared.opts.emergency_reserve_bytes);
        let limit = req.storage_limit(quota, reserve);
        let m = &req.msg;
        let used = self.shared.used_bytes.load(Ordering::Relaxed);
        if used >= limit {
            if let Some((cursor, hlc)) = self.message_position(tx, m.id).await? {
                return Ok(Ok(Appended { id: m.id, cursor, hlc, duplicate: true }));
            }
            return Ok(Err(StoreError::StorageFull { used, quota }));
        }
        let hlc = match m.reply_to {
            Some(parent) => {
                let row = self
                    .query_opt(tx, "SELECT hlc FROM messages WHERE id = $1", &[&parent.as_bytes().as_slice()])
                    .await?;
                match row {
                    Some(r) => self.clock().observe(Hlc(from_sql(r.get(0))), req.at),
                    None => self.clock().tick(req.at),
                }
            }
            None => self.clock().tick(req.at),
        };
        let (id, at) = (req.msg.id, req.at);
        // For the gap check, which only a stored message may move on.
        let (user, dev, seq) = (req.from.clone(), req.device.clone(), req.msg.seq.0);
        let (body, alert) = req.into_stored(hlc);
        let Some(cursor) = self.insert_message(tx, body, None, entries, new_rooms).await? else {
            let (cursor, hlc) = self
                .message_position(tx, id)
                .await?
                .ok_or_else(|| StoreError::Database("a duplicate id has no row".into()))?;
            return Ok(Ok(Appended { id, cursor, hlc, duplicate: true }));
        };
        if let Some(event) = alert {
            self.insert_audit(tx, at, &event).await?;
        }
        self.check_seq(&user, &dev, seq);
        Ok(Ok(Appended { id, cursor, hlc, duplicate: false }))
    }

    /// Inserts one message; None, with nothing written, when its id is held already.
    async fn insert_message(
        &mut self,
        tx: &Transaction<'_>,
        m: MessageBody,
        origin_peer: Option<&str>,
        entries: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<Option<Cursor>, StoreError> {
        let cursor = self.take_cursor();
        let inserted = self
            .exec(
                tx,
                "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at, origin_peer)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &to_sql(cursor),
                    &m.id.as_bytes().as_slice(),
                    &m.room.as_str(),
                    &m.kind.as_str(),
                    &i16::from(m.priority.as_u8()),
                    &m.body.as_str(),
                    &to_sql(m.seq.0),
                    &m.reply_to.map(|r| r.as_bytes().to_vec()),
                    &m.from.as_str(),
                    &m.device.as_str(),
                    &to_sql(m.hlc.0),
                    &to_sql(m.at),
                    &origin_peer,
                ],
            )
            .await?;
        if inserted == 0 {
            self.next_cursor = cursor;
            return Ok(None);
        }
        self.note_room(tx, &m.room, new_rooms).await?;
        if let Ok(Some(blob)) = outpost_shared::media::body_ref(&m.body) {
            self.exec(
                tx,
                "INSERT INTO media_refs (cursor, sha256, room) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&to_sql(cursor), &blob.0.as_slice(), &m.room.as_str()],
            )
            .await?;
        }
        entries.push(message_entry(Cursor(cursor), m));
        Ok(Some(Cursor(cursor)))
    }

    fn check_seq(&mut self, user: &UserId, device: &DeviceId, seq: u64) {
        let prev = self.last_seq.insert((user.clone(), device.clone()), seq);
        if let Some(prev) = prev
            && seq > prev + 1
        {
            tracing::warn!(device = %device, after = prev, got = seq, "gap in device sequence");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn ack(
        &mut self,
        tx: &Transaction<'_>,
        device: &DeviceId,
        user: &UserId,
        rooms: &[RoomId],
        cursor: Cursor,
        at: u64,
        entries: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        // Read under the log lock, not cached: the device may have acked on another node.
        let prev = self
            .query_opt(
                tx,
                "SELECT acked FROM device_cursors WHERE user_id = $1 AND device = $2",
                &[&user.as_str(), &device.as_str()],
            )
            .await?
            .map_or(0, |r| from_sql(r.get(0)));
        let upto = cursor.0.min(self.next_cursor - 1);
        if upto <= prev || rooms.is_empty() {
            return Ok(());
        }
        let cap = self.shared.opts.max_receipts_per_ack;
        let room_names: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        let rows = self
            .query(
                tx,
                "SELECT id, sender, room, cursor, origin_peer FROM messages
                 WHERE cursor > $1 AND cursor <= $2 AND sender <> $3 AND room = ANY($4)
                 ORDER BY cursor LIMIT $5",
                &[&to_sql(prev), &to_sql(upto), &user.as_str(), &room_names, &to_sql(cap as u64)],
            )
            .await?;
        let targets = targets(&rows);
        let mark = if targets.len() >= cap { targets.last().map_or(upto, |t| t.cursor) } else { upto };
        for t in targets {
            self.receipt(
                tx,
                t.id,
                ReceiptState::Delivered,
                Some(user),
                t.sender,
                t.room,
                at,
                None,
                t.peer.as_deref(),
                entries,
            )
            .await?;
        }
        self.exec(
            tx,
            "INSERT INTO device_cursors (user_id, device, acked, updated) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device) DO UPDATE
               SET acked = greatest(device_cursors.acked, excluded.acked), updated = excluded.updated",
            &[&user.as_str(), &device.as_str(), &to_sql(mark), &to_sql(now_ms())],
        )
        .await?;
        Ok(())
    }

    async fn read(
        &mut self,
        tx: &Transaction<'_>,
        user: &UserId,
        room: &RoomId,
        id: MessageId,
        at: u64,
        entries: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        let target = self
            .query_opt(
                tx,
                "SELECT cursor FROM messages WHERE id = $1 AND room = $2",
                &[&id.as_bytes().as_slice(), &room.as_str()],
            )
            .await?;
        let Some(target) = target.map(|r| r.get::<_, i64>(0)) else { return Ok(()) };
        let prev: i64 = self
            .query_opt(
                tx,
                "SELECT cursor FROM read_marks WHERE user_id = $1 AND room = $2",
                &[&user.as_str(), &room.as_str()],
            )
            .await?
            .map_or(0, |r| r.get(0));
        if target <= prev {
            return Ok(());
        }
        let cap = self.shared.opts.max_receipts_per_ack;
        let rows = self
            .query(
                tx,
                "SELECT id, sender, room, cursor, origin_peer FROM messages
                 WHERE room = $1 AND cursor > $2 AND cursor <= $3 AND sender <> $4
                 ORDER BY cursor LIMIT $5",
                &[&room.as_str(), &prev, &target, &user.as_str(), &to_sql(cap as u64)],
            )
            .await?;
        let targets = targets(&rows);
        let mark = if targets.len() >= cap { targets.last().map_or(target, |t| to_sql(t.cursor)) } else { target };
        for t in targets {
            self.receipt(
                tx,
                t.id,
                ReceiptState::Read,
                Some(user),
                t.sender,
                t.room,
                at,
                None,
                t.peer.as_deref(),
                entries,
            )
            .await?;
        }
        self.exec(
            tx,
            "INSERT INTO read_marks (user_id, room, cursor) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, room) DO UPDATE SET cursor = greatest(read_marks.cursor, excluded.cursor)",
            &[&user.as_str(), &room.as_str(), &mark],
        )
        .await?;
        Ok(())
    }

    /// Stores one receipt (once per message, state and reader) and queues it for the
    /// target.
    #[allow(clippy::too_many_arguments)]
    async fn receipt(
        &mut self,
        tx: &Transaction<'_>,
        id: MessageId,
        state: ReceiptState,
        by: Option<&UserId>,
        target: UserId,
        room: RoomId,
        at: u64,
        origin_peer: Option<&str>,
        msg_peer: Option<&str>,
        entries: &mut Vec<LogEntry>,
    ) -> Result<bool, StoreError> {
        let cursor = self.next_cursor;
        let inserted = self
            .exec(
                tx,
                "INSERT INTO receipts (cursor, msg_id, state, by_user, target, room, at, origin_peer, msg_peer)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (msg_id, state, by_user) DO NOTHING",
                &[
                    &to_sql(cursor),
                    &id.as_bytes().as_slice(),
                    &state.as_str(),
                    &by.map_or("", UserId::as_str),
                    &target.as_str(),
                    &room.as_str(),
                    &to_sql(at),
                    &origin_peer,
                    &msg_peer,
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        self.take_cursor();
        entries.push(receipt_entry(Cursor(cursor), id, state, by.cloned(), target, room, at));
        Ok(true)
    }

    /// Applies hubs' batches: every message of all of them in one statement and every
    /// receipt in another (a group holds hundreds of batches of hundreds of entries; a
    /// statement per entry, or per batch, would be a network round trip each). Entries
    /// already held are skipped by the unique indexes, so a batch replayed after a
    /// reconnect, or by a hub connected to two nodes at once, changes nothing. The
    /// cursors of skipped entries stay unused (cursors are strictly increasing, not
    /// dense). Answers how many entries of each batch were new.
    pub async fn import(
        &mut self,
        tx: &Transaction<'_>,
        batches: Vec<(String, Vec<Entry>, Cursor)>,
        log: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<Vec<usize>, StoreError> {
        // (cursor, batch) of each entry; a batch's cursors are one range, in order.
        let mut messages: Vec<(u64, usize, MessageBody)> = Vec::new();
        let mut receipts: Vec<(u64, usize, WireReceipt)> = Vec::new();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut hwms: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        let mut peer_names: Vec<String> = Vec::with_capacity(batches.len());
        for (b, (peer, batch, hwm)) in batches.into_iter().enumerate() {
            let first = self.next_cursor;
            for e in batch {
                match e {
                    Entry::Message(m) => {
                        let (id, hlc) = (m.id, m.hlc);
                        let Ok(msg) = WireMessage::into_stored(m) else {
                            tracing::error!(peer, %id, "a peer sent a message whose body is not JSON; skipped");
                            continue;
                        };
                        self.clock().observe(hlc, now_ms());
                        messages.push((self.take_cursor(), b, msg));
                    }
                    Entry::Receipt(r) => receipts.push((self.take_cursor(), b, r)),
                }
            }
            ranges.push((first, self.next_cursor));
            let mark = hwms.entry(peer.clone()).or_default();
            *mark = (*mark).max(hwm.0);
            peer_names.push(peer);
        }
        let peer_of = |b: usize| peer_names[b].as_str();
        let mut fresh_cursors: Vec<u64> = Vec::new();
        // Rooms first, all in one statement and in one order: imports on other
        // connections add rooms too, and two transactions adding the same two rooms in
        // opposite orders would deadlock.
        let mut rooms: Vec<&RoomId> = messages.iter().map(|(_, _, m)| &m.room).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let fresh_rooms: Vec<&str> = {
            let known = self.shared.known_rooms.read();
            rooms
                .into_iter()
                .filter(|r| !new_rooms.contains(r) && !known.as_ref().is_ok_and(|k| k.contains(*r)))
                .map(RoomId::as_str)
                .collect()
        };
        if !fresh_rooms.is_empty() {
            self.exec(
                tx,
                "INSERT INTO rooms (room) SELECT * FROM unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
                &[&fresh_rooms],
            )
            .await?;
            new_rooms.extend(fresh_rooms.iter().filter_map(|r| RoomId::new(*r).ok()));
        }
        if !messages.is_empty() {
            let cursors: Vec<i64> = messages.iter().map(|(c, _, _)| to_sql(*c)).collect();
            let ids: Vec<&[u8]> = messages.iter().map(|(_, _, m)| m.id.as_bytes().as_slice()).collect();
            let rooms: Vec<&str> = messages.iter().map(|(_, _, m)| m.room.as_str()).collect();
            let kinds: Vec<&str> = messages.iter().map(|(_, _, m)| m.kind.as_str()).collect();
            let prios: Vec<i16> = messages.iter().map(|(_, _, m)| i16::from(m.priority.as_u8())).collect();
            let bodies: Vec<&str> = messages.iter().map(|(_, _, m)| m.body.as_str()).collect();
            let seqs: Vec<i64> = messages.iter().map(|(_, _, m)| to_sql(m.seq.0)).collect();
            let replies: Vec<Option<Vec<u8>>> =
                messages.iter().map(|(_, _, m)| m.reply_to.map(|r| r.as_bytes().to_vec())).collect();
            let senders: Vec<&str> = messages.iter().map(|(_, _, m)| m.from.as_str()).collect();
            let devices: Vec<&str> = messages.iter().map(|(_, _, m)| m.device.as_str()).collect();
            let hlcs: Vec<i64> = messages.iter().map(|(_, _, m)| to_sql(m.hlc.0)).collect();
            let ats: Vec<i64> = messages.iter().map(|(_, _, m)| to_sql(m.at)).collect();
            let peers: Vec<&str> = messages.iter().map(|(_, b, _)| peer_of(*b)).collect();
            let rows = self
                .query(
                    tx,
                    "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at, origin_peer)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::smallint[], $6::text[],
                                          $7::bigint[], $8::bytea[], $9::text[], $10::text[], $11::bigint[], $12::bigint[],
                                          $13::text[])
                     ON CONFLICT (id) DO NOTHING
                     RETURNING cursor",
                    &[
                        &cursors, &ids, &rooms, &kinds, &prios, &bodies, &seqs, &replies, &senders, &devices, &hlcs, &ats,
                        &peers,
                    ],
                )
                .await?;
            let mut inserted: Vec<u64> = rows.iter().map(|r| from_sql(r.get(0))).collect();
            inserted.sort_unstable();
            let mut refs: (Vec<i64>, Vec<Vec<u8>>, Vec<String>) = Default::default();
            for (cursor, _, m) in messages {
                if inserted.binary_search(&cursor).is_err() {
                    continue;
                }
                if let Ok(Some(blob)) = outpost_shared::media::body_ref(&m.body) {
                    refs.0.push(to_sql(cursor));
                    refs.1.push(blob.0.to_vec());
                    refs.2.push(m.room.as_str().to_owned());
                }
                log.push(message_entry(Cursor(cursor), m));
            }
            fresh_cursors.extend(inserted);
            if !refs.0.is_empty() {
                self.exec(
                    tx,
                    "INSERT INTO media_refs (cursor, sha256, room)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[]) ON CONFLICT DO NOTHING",
                    &[&refs.0, &refs.1, &refs.2],
                )
                .await?;
            }
        }
        if !receipts.is_empty() {
            let cursors: Vec<i64> = receipts.iter().map(|(c, _, _)| to_sql(*c)).collect();
            let ids: Vec<&[u8]> = receipts.iter().map(|(_, _, r)| r.id.as_bytes().as_slice()).collect();
            let states: Vec<&str> = receipts.iter().map(|(_, _, r)| r.state.as_str()).collect();
            let bys: Vec<&str> = receipts.iter().map(|(_, _, r)| r.by.as_ref().map_or("", UserId::as_str)).collect();
            let targets: Vec<&str> = receipts.iter().map(|(_, _, r)| r.target.as_str()).collect();
            let rooms: Vec<&str> = receipts.iter().map(|(_, _, r)| r.room.as_str()).collect();
            let ats: Vec<i64> = receipts.iter().map(|(_, _, r)| to_sql(r.at)).collect();
            let peers: Vec<&str> = receipts.iter().map(|(_, b, _)| peer_of(*b)).collect();
            // A receipt about a message that came from a third peer goes on to it.
            let rows = self
                .query(
                    tx,
                    "INSERT INTO receipts (cursor, msg_id, state, by_user, target, room, at, origin_peer, msg_peer)
                     SELECT u.c, u.i, u.s, u.b, u.t, u.r, u.a, u.o, m.origin_peer
                       FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[],
                                   $7::bigint[], $8::text[])
                            AS u(c, i, s, b, t, r, a, o)
                       LEFT JOIN messages m ON m.id = u.i
                     ON CONFLICT (msg_id, state, by_user) DO NOTHING
                     RETURNING cursor",
                    &[&cursors, &ids, &states, &bys, &targets, &rooms, &ats, &peers],
                )
                .await?;
            let mut inserted: Vec<u64> = rows.iter().map(|r| from_sql(r.get(0))).collect();
            inserted.sort_unstable();
            for (cursor, _, r) in receipts {
                if inserted.binary_search(&cursor).is_ok() {
                    log.push(receipt_entry(Cursor(cursor), r.id, r.state, r.by, r.target, r.room, r.at));
                }
            }
            fresh_cursors.extend(inserted);
        }
        let (names, marks): (Vec<&str>, Vec<i64>) = hwms.iter().map(|(p, h)| (p.as_str(), to_sql(*h))).unzip();
        self.exec(
            tx,
            "INSERT INTO peers (peer, recv_hwm, last_contact)
             SELECT p, h, $3 FROM unnest($1::text[], $2::bigint[]) AS u(p, h)
             ON CONFLICT (peer) DO UPDATE
               SET recv_hwm = greatest(peers.recv_hwm, excluded.recv_hwm), last_contact = excluded.last_contact",
            &[&names, &marks, &to_sql(now_ms())],
        )
        .await?;
        fresh_cursors.sort_unstable();
        Ok(ranges
            .iter()
            .map(|(lo, hi)| fresh_cursors.partition_point(|c| c < hi) - fresh_cursors.partition_point(|c| c < lo))
            .collect())
    }

    async fn peer_acked(
        &mut self,
        tx: &Transaction<'_>,
        peer: &str,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
        log: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        for f in forwarded {
            self.receipt(tx, f.id, ReceiptState::Forwarded, None, f.sender, f.room, at, None, None, log).await?;
        }
        self.exec(
            tx,
            "INSERT INTO peers (peer, sent_hwm, last_contact) VALUES ($1, $2, $3)
             ON CONFLICT (peer) DO UPDATE
               SET sent_hwm = greatest(peers.sent_hwm, excluded.sent_hwm), last_contact = excluded.last_contact",
            &[&peer, &to_sql(sent_hwm.0), &to_sql(at)],
        )
        .await?;
        Ok(())
    }

    /// Records a peer's handshake. A different epoch means the peer's database is new:
    /// what we sent it before is gone, so we start over from the beginning of our log,
    /// and what it sent us before goes back to it too (`own_until`, up to the head; this
    /// transaction holds `log_head`).
    async fn peer_hello(
        &mut self,
        tx: &Transaction<'_>,
        peer: &str,
        epoch: &str,
        rooms: &[RoomId],
    ) -> Result<PeerState, StoreError> {
        let known = self
            .query_opt(tx, "SELECT epoch, sent_hwm, recv_hwm, own_until FROM peers WHERE peer = $1", &[&peer])
            .await?;
        let (sent, recv, own_until): (i64, i64, i64) = match known
            .map(|r| (r.get::<_, String>(0), r.get(1), r.get(2), r.get(3)))
        {
            Some((old, sent, recv, own)) if old == epoch || old.is_empty() => (sent, recv, own),
            Some((old, _, _, _)) => {
                tracing::warn!(peer, old_epoch = %old, new_epoch = epoch, "peer has a new database; resending everything");
                let head: i64 = self
                    .query_opt(
                        tx,
                        "UPDATE peers SET own_until = (SELECT head FROM log_head) WHERE peer = $1 RETURNING own_until",
                        &[&peer],
                    )
                    .await?
                    .map_or(0, |r| r.get(0));
                // Its files went with its database: what it confirmed holding, it holds no more.
                self.exec(tx, "DELETE FROM blob_peers WHERE peer = $1", &[&peer]).await?;
                (0, 0, head)
            }
            None => (0, 0, 0),
        };
        self.exec(
            tx,
            "INSERT INTO peers (peer, epoch, sent_hwm, recv_hwm, last_contact) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (peer) DO UPDATE SET epoch = excluded.epoch, sent_hwm = excluded.sent_hwm,
               recv_hwm = excluded.recv_hwm, last_contact = excluded.last_contact",
            &[&peer, &epoch, &sent, &recv, &to_sql(now_ms())],
        )
        .await?;
        let sent = if self.note_peer_rooms(tx, peer, rooms).await? > 0 { 0 } else { sent };
        let all = self.query(tx, "SELECT room FROM peer_rooms WHERE peer = $1", &[&peer]).await?;
        Ok(PeerState {
            sent_hwm: Cursor(from_sql(sent)),
            recv_hwm: Cursor(from_sql(recv)),
            rooms: all.iter().filter_map(|r| RoomId::new(r.get::<_, String>(0)).ok()).collect(),
            own_until: Cursor(from_sql(own_until)),
        })
    }

    /// Adds rooms `peer` serves; returns how many are new (then what the peer holds of
    /// our log is reset to the start, as in the SQLite store).
    async fn note_peer_rooms(
        &mut self,
        tx: &Transaction<'_>,
        peer: &str,
        rooms: &[RoomId],
    ) -> Result<usize, StoreError> {
        let mut added = 0;
        for r in rooms {
            added += self
                .exec(
                    tx,
                    "INSERT INTO peer_rooms (peer, room) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&peer, &r.as_str()],
                )
                .await?;
        }
        if added > 0 {
            self.exec(tx, "UPDATE peers SET sent_hwm = 0 WHERE peer = $1", &[&peer]).await?;
        }
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    async fn insert_audit(&mut self, tx: &Transaction<'_>, at: u64, e: &AuditEvent) -> Result<(), StoreError> {
        let s = self.prep(tx, crate::security::INSERT_AUDIT).await?;
        crate::security::insert_audit(tx, &s, at, e).await
    }

    async fn upsert_revocation(
        &mut self,
        tx: &Transaction<'_>,
        r: &outpost_shared::Revocation,
    ) -> Result<bool, StoreError> {
        crate::security::upsert_revocation(tx, r).await
    }
}

fn targets(rows: &[tokio_postgres::Row]) -> Vec<Target> {
    rows.iter()
        .filter_map(|r| {
            let id = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)).ok()?;
            Some(Target {
                id: MessageId::from_bytes(id),
                sender: UserId::new(r.get::<_, String>(1)).ok()?,
                room: RoomId::new(r.get::<_, String>(2)).ok()?,
                cursor: from_sql(r.get(3)),
                peer: r.get(4),
            })
        })
        .collect()
}

/// A message as the router publishes it (the writer's and the tail's are the same).
pub(crate) fn message_entry(cursor: Cursor, m: MessageBody) -> LogEntry {
    let priority = m.priority;
    let room = m.room.clone();
    let frame = ServerFrame::Message(Positioned { cursor, msg: m }).encode();
    LogEntry { cursor, priority, audience: Audience::Room { room, except: None }, frame }
}

/// A receipt as the router publishes it: to its target's sessions.
pub(crate) fn receipt_entry(
    cursor: Cursor,
    id: MessageId,
    state: ReceiptState,
    by: Option<UserId>,
    target: UserId,
    room: RoomId,
    at: u64,
) -> LogEntry {
    let frame = ServerFrame::Receipt(Receipt { id, state, by, at, room: Some(room), cursor: Some(cursor) }).encode();
    LogEntry { cursor, priority: Priority::Normal, audience: Audience::User(target), frame }
}
