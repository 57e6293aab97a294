//! The writer thread: group commit, dedupe, cursors, receipts.
//!
//! It owns the only write connection and all in-memory state derived from the log (next
//! cursor, HLC, device acks), so none of it needs locks. It drains whatever is queued (up
//! to `max_batch` commands), commits emergencies in a transaction of their own first,
//! then the rest, and only after each commit answers the senders and publishes the new
//! entries. If a transaction fails (disk full, I/O error) it is rolled back and every
//! sender in it is told so: nothing is acknowledged that is not on disk.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use outpost_shared::frames::{MessageBody, Positioned, Receipt, ReceiptState};
use outpost_shared::{Cursor, DeviceId, Hlc, HlcClock, MessageId, Priority, RoomId, ServerFrame, UserId};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::{AppendRequest, Appended, Audience, Command, LogEntry, Pending, Publisher, StoreError, StoreOptions};

mod link;
pub(crate) mod retention;

/// What the writer restores from the database at start-up.
pub(crate) struct State {
    pub epoch: String,
    pub next_cursor: u64,
    pub last_hlc: Hlc,
    pub rooms: HashSet<RoomId>,
}

impl State {
    pub fn load(conn: &Connection) -> Result<Self, rusqlite::Error> {
        let epoch: String = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0))?;
        // Positions removed by retention or deletion are never given out again: devices
        // hold cursors up to them.
        let max_cursor: i64 = conn.query_row(
            "SELECT max(coalesce((SELECT max(cursor) FROM messages), 0), coalesce((SELECT max(cursor) FROM receipts), 0),
                        coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'retention.pruned_through'), 0))",
            [],
            |r| r.get(0),
        )?;
        let last_hlc: i64 = conn.query_row("SELECT coalesce(max(hlc), 0) FROM messages", [], |r| r.get(0))?;
        let mut rooms = HashSet::new();
        let mut stmt = conn.prepare("SELECT room FROM rooms")?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            if let Ok(room) = RoomId::new(r?) {
                rooms.insert(room);
            }
        }
        Ok(Self {
            epoch,
            next_cursor: u64::try_from(max_cursor).unwrap_or(0) + 1,
            last_hlc: Hlc(u64::try_from(last_hlc).unwrap_or(0)),
            rooms,
        })
    }
}

pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    publisher: Arc<dyn Publisher>,
    opts: StoreOptions,
    next_cursor: u64,
    clock: HlcClock,
    gauges: Arc<super::Gauges>,
    /// Wakes link senders after each commit.
    head_tx: tokio::sync::watch::Sender<u64>,
    known_rooms: Arc<RwLock<HashSet<RoomId>>>,
    used_bytes: u64,
    /// Last acked cursor per (user, device), loaded lazily.
    acks: HashMap<(UserId, DeviceId), u64>,
    /// Last seq seen per (user, device) in this run, to report gaps.
    last_seq: HashMap<(UserId, DeviceId), u64>,
    /// Retention, once the application set it.
    retention: Option<crate::RetentionPolicy>,
    /// The last quota prune found nothing to remove, and nothing has been confirmed
    /// since: looking again would only rescan the unconfirmed rows.
    quota_idle: bool,
    /// What the current transaction pruned.
    tally: retention::Tally,
    /// Turn on `secure_delete` after the current transaction (a pragma outside one).
    secure_delete: bool,
}

/// A message that a receipt is about.
struct Target {
    id: MessageId,
    sender: UserId,
    room: RoomId,
    cursor: u64,
    /// Where the message came from (the receipt goes back there).
    peer: Option<String>,
}

/// Converts between SQLite's signed integers and our unsigned ones. Values above
/// `i64::MAX` cannot be produced by the hub; they saturate rather than wrap.
pub(super) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Writer {
    // Everything the writer owns is handed over once at start-up; a struct for these
    // arguments would only repeat the field list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Connection,
        rx: mpsc::Receiver<Command>,
        publisher: Arc<dyn Publisher>,
        state: State,
        opts: StoreOptions,
        gauges: Arc<super::Gauges>,
        head_tx: tokio::sync::watch::Sender<u64>,
        known_rooms: Arc<RwLock<HashSet<RoomId>>>,
    ) -> Self {
        let mut w = Self {
            conn,
            rx,
            publisher,
            opts,
            next_cursor: state.next_cursor,
            clock: HlcClock::starting_after(state.last_hlc),
            gauges,
            head_tx,
            known_rooms,
            used_bytes: 0,
            acks: HashMap::new(),
            last_seq: HashMap::new(),
            retention: None,
            quota_idle: false,
            tally: retention::Tally::default(),
            secure_delete: false,
        };
        w.refresh_used_bytes();
        w.load_retention_totals();
        w
    }

    fn refresh_used_bytes(&mut self) {
        // Free pages are reused before the file grows, so they do not count as used.
        let total: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap_or(0);
        let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap_or(0);
        let pages = total.saturating_sub(free);
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap_or(4096);
        self.used_bytes = u64::try_from(pages.saturating_mul(size)).unwrap_or(0);
        self.gauges.used_bytes.store(self.used_bytes, Ordering::Relaxed);
    }

    pub fn run(mut self) {
        let span = tracing::info_span!("store_writer");
        let _enter = span.enter();
        let mut stop = None;
        while stop.is_none() {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < self.opts.max_batch {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            // Anything queued after a Stop is refused by the closed channel below.
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
                self.commit_group(urgent);
            }
            if !rest.is_empty() {
                self.commit_group(rest);
            }
            // Quota pruning: one bounded batch between groups of other work, so the
            // oldest confirmed messages go before a send would be refused.
            if stop.is_none() && !self.quota_idle && self.over_high_water() {
                self.commit_group(vec![Command::QuotaPrune]);
            }
        }
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Command::Append(_, reply) = c {
                reply(Err(StoreError::Closed));
            }
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL is replayed at next start");
        }
        tracing::info!("store writer stopped");
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
    }

    fn commit_group(&mut self, cmds: Vec<Command>) {
        let started = tokio::time::Instant::now();
        let n = cmds.len();
        let start_cursor = self.next_cursor;
        let mut pending: Vec<Pending> = Vec::new();
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut new_rooms: Vec<RoomId> = Vec::new();
        self.tally = retention::Tally::default();
        let outcome = (|| -> Result<(), StoreError> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            for cmd in cmds {
                match cmd {
                    Command::Append(req, reply) => {
                        // Outer error: the transaction is lost; inner: this message's answer.
                        match self.append(req, &mut entries, &mut new_rooms) {
                            Ok(answer) => pending.push(Pending::Append(reply, answer)),
                            Err(e) => {
                                pending.push(Pending::Append(reply, Err(e.clone())));
                                return Err(e);
                            }
                        }
                    }
                    Command::Ack { device, user, rooms, cursor, at } => {
                        // A `delivered` receipt may make an emergency prunable.
                        self.quota_idle = false;
                        self.ack(&device, &user, &rooms, cursor, at, &mut entries)?;
                    }
                    Command::Read { user, room, id, at } => self.read(&user, &room, id, at, &mut entries)?,
                    Command::Rooms(rooms) => {
                        for r in rooms {
                            self.note_room(&r, &mut new_rooms)?;
                        }
                    }
                    Command::Import { peer, entries: batch, peer_hwm, reply } => {
                        self.quota_idle = false;
                        match self.import(&peer, batch, peer_hwm, &mut entries, &mut new_rooms) {
                            Ok(n) => pending.push(Pending::Import(reply, n)),
                            Err(e) => {
                                pending.push(Pending::Import(reply, 0));
                                return Err(e);
                            }
                        }
                    }
                    Command::PeerAcked { peer, sent_hwm, forwarded, at } => {
                        self.quota_idle = false;
                        self.peer_acked(&peer, sent_hwm, forwarded, at, &mut entries)?;
                    }
                    Command::PeerHello { peer, epoch, rooms, reply } => match self.peer_hello(&peer, &epoch, &rooms) {
                        Ok(state) => pending.push(Pending::Hello(reply, state)),
                        Err(e) => {
                            pending.push(Pending::Hello(reply, Default::default()));
                            return Err(e);
                        }
                    },
                    Command::PeerRooms { peer, rooms, reply } => match self.note_peer_rooms(&peer, &rooms) {
                        Ok(n) => pending.push(Pending::Import(reply, n)),
                        Err(e) => {
                            pending.push(Pending::Import(reply, 0));
                            return Err(e);
                        }
                    },
                    Command::Audit(event, at) => super::security::insert_audit(&self.conn, at, &event)?,
                    Command::Revoke { from, entries, reply } => {
                        let mut fresh = 0;
                        for r in &entries {
                            if super::security::upsert_revocation(&self.conn, r)? {
                                fresh += 1;
                                let e = super::AuditEvent::revocation(r, &from);
                                super::security::insert_audit(&self.conn, now_ms(), &e)?;
                            }
                        }
                        pending.push(Pending::Import(reply, fresh));
                    }
                    Command::Exec(f, tx) => match f(&self.conn) {
                        Ok(v) => pending.push(Pending::Exec(tx, v)),
                        Err(e) => {
                            pending.push(Pending::Exec(tx, Box::new(())));
                            return Err(e);
                        }
                    },
                    Command::Retention(policy) => {
                        if policy.confirm_peer.is_none() {
                            // A cloud: what it removes (retention) is overwritten, not
                            // only unlinked. Takes effect once this transaction ends.
                            self.secure_delete = true;
                        }
                        self.retention = Some(policy);
                        self.quota_idle = false;
                    }
                    Command::Prune { cutoff, candidates, at, reply } => {
                        self.quota_idle = false;
                        match self.prune(cutoff, crate::PruneReason::Age, Some(candidates), at) {
                            Ok(n) => pending.push(Pending::Import(reply, n)),
                            Err(e) => {
                                pending.push(Pending::Import(reply, 0));
                                return Err(e);
                            }
                        }
                    }
                    Command::QuotaPrune => {
                        let now = self.retention_now();
                        if self.prune(u64::MAX, crate::PruneReason::Quota, None, now)? == 0 {
                            self.quota_idle = true;
                        }
                    }
                    Command::Ping(tx) => pending.push(Pending::Ping(tx)),
                    Command::Stop(_) => {}
                }
            }
            self.conn.execute_batch("COMMIT")?;
            Ok(())
        })();

        match outcome {
            Ok(()) => {
                self.gauges.head.store(self.next_cursor - 1, Ordering::Release);
                if !new_rooms.is_empty()
                    && let Ok(mut known) = self.known_rooms.write()
                {
                    known.extend(new_rooms);
                }
                // Publish before answering: once a sender holds `stored`, every online
                // member already has the message queued.
                for e in entries {
                    self.publisher.publish(e);
                }
                // What retention removed counts before anyone is answered: a caller told a
                // prune is done reads totals that include it.
                self.publish_tally();
                // The counters too: a sender that holds `stored` and then reads /metrics
                // finds its message counted.
                let stored = pending.iter().filter(|p| matches!(p, Pending::Append(_, Ok(a)) if !a.duplicate)).count();
                metrics::counter!("outpost_messages_stored_total").increment(stored as u64);
                metrics::histogram!("outpost_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("outpost_commit_commands").record(n as f64);
                for p in pending {
                    p.finish(None);
                }
                let _ = self.head_tx.send(self.next_cursor - 1);
                self.refresh_used_bytes();
                if std::mem::take(&mut self.secure_delete)
                    && let Err(e) = self.conn.pragma_update(None, "secure_delete", "ON")
                {
                    tracing::warn!(error = %e, "cannot turn on secure_delete");
                }
                if self.gauges.oldest_at.load(Ordering::Relaxed) == 0 && start_cursor < self.next_cursor {
                    self.refresh_oldest();
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "transaction failed and was rolled back; senders are told to retry");
                metrics::counter!("outpost_commits_failed_total").increment(1);
                let _ = self.conn.execute_batch("ROLLBACK");
                self.tally = retention::Tally::default();
                self.refresh_used_bytes();
                self.next_cursor = start_cursor;
                // Acks reloaded lazily: the in-memory view may be ahead of the rolled-back rows.
                self.acks.clear();
                let err = match err {
                    StoreError::StorageFull { .. } => {
                        StoreError::StorageFull { used: self.used_bytes, quota: self.opts.quota_bytes }
                    }
                    other => other,
                };
                for p in pending {
                    p.finish(Some(&err));
                }
            }
        }
    }

    fn take_cursor(&mut self) -> u64 {
        let c = self.next_cursor;
        self.next_cursor += 1;
        c
    }

    fn note_room(&mut self, room: &RoomId, new_rooms: &mut Vec<RoomId>) -> Result<(), StoreError> {
        let known = self.known_rooms.read().map(|k| k.contains(room)).unwrap_or(false);
        if !known && !new_rooms.contains(room) {
            self.conn.prepare_cached("INSERT OR IGNORE INTO rooms (room) VALUES (?1)")?.execute([room.as_str()])?;
            new_rooms.push(room.clone());
        }
        Ok(())
    }

    fn append(
        &mut self,
        req: AppendRequest,
        entries: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<Result<Appended, StoreError>, StoreError> {
        let limit = req.storage_limit(self.opts.quota_bytes, self.opts.emergency_reserve_bytes);
        let m = &req.msg;
        let mut used = self.used_bytes + self.gauges.blob_bytes.load(Ordering::Relaxed);
        if used >= limit
            && !self.quota_idle
            && self.retention.as_ref().is_some_and(|p| p.quota_high_water_bytes.is_some())
        {
            // Before refusing: confirmed messages go first (inside this transaction, so
            // a rollback keeps them).
            let now = self.retention_now();
            if self.prune(u64::MAX, crate::PruneReason::Quota, None, now)? == 0 {
                self.quota_idle = true;
            }
            self.refresh_used_bytes();
            used = self.used_bytes + self.gauges.blob_bytes.load(Ordering::Relaxed);
        }
        if used >= limit {
            // A re-send is answered as the duplicate it is even when storage is full.
            if let Some((cursor, hlc)) = self.message_position(m.id)? {
                return Ok(Ok(Appended { id: m.id, cursor, hlc, duplicate: true }));
            }
            return Ok(Err(StoreError::StorageFull { used, quota: self.opts.quota_bytes }));
        }
        let hlc = match m.reply_to {
            Some(parent) => {
                let parent_hlc: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT hlc FROM messages WHERE id = ?1")?
                    .query_row([parent.as_bytes().as_slice()], |r| r.get(0))
                    .optional()?;
                match parent_hlc {
                    Some(h) => self.clock.observe(Hlc(u64::try_from(h).unwrap_or(0)), req.at),
                    None => self.clock.tick(req.at),
                }
            }
            None => self.clock.tick(req.at),
        };
        let (id, at, origin) = (req.msg.id, req.at, req.origin);
        // For the gap check, which only a stored message may move on.
        let (user, dev, seq) = (req.from.clone(), req.device.clone(), req.msg.seq.0);
        let (body, alert) = req.into_stored(hlc);
        let Some(cursor) = self.insert_message(body, None, origin, entries, new_rooms)? else {
            // A re-send: the insert found the id and did nothing.
            let (cursor, hlc) =
                self.message_position(id)?.ok_or_else(|| StoreError::Database("a duplicate id has no row".into()))?;
            return Ok(Ok(Appended { id, cursor, hlc, duplicate: true }));
        };
        if let Some(event) = alert {
            // In the same transaction as the message: the audit row exists iff the alert does.
            super::security::insert_audit(&self.conn, at, &event)?;
        }
        self.check_seq(&user, &dev, seq);
        Ok(Ok(Appended { id, cursor, hlc, duplicate: false }))
    }

    /// Inserts a message, queues it for fan-out and returns its cursor; None, with nothing
    /// written, when a message with its id exists. `origin_peer` is None for messages
    /// written on this server.
    ///
    /// The conflict clause is the dedupe: the id's unique index is searched once, by the
    /// insert, where a lookup beforehand searched it a second time for every new message
    /// (14 % of the store writer's instructions per message, BENCHMARKS.md 2026-12-04).
    pub(super) fn insert_message(
        &mut self,
        m: MessageBody,
        origin_peer: Option<&str>,
        except: Option<super::SessionId>,
        entries: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<Option<Cursor>, StoreError> {
        let cursor = self.take_cursor();
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at, origin_peer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                to_sql(cursor),
                m.id.as_bytes().as_slice(),
                m.room.as_str(),
                m.kind.as_str(),
                m.priority.as_u8(),
                m.body.as_str(),
                to_sql(m.seq.0),
                m.reply_to.map(|r| r.as_bytes().to_vec()),
                m.from.as_str(),
                m.device.as_str(),
                to_sql(m.hlc.0),
                to_sql(m.at),
                origin_peer,
            ])?;
        if inserted == 0 {
            // Nothing used the cursor: the next message takes it.
            self.next_cursor = cursor;
            return Ok(None);
        }
        self.note_room(&m.room, new_rooms)?;
        // The blob a message names: who may read it, and what follows the message to
        // each peer (engine/src/media). A malformed reference was refused before; one in
        // a peer's message is not this server's to refuse, so it is only not recorded.
        if let Ok(Some(blob)) = outpost_shared::media::body_ref(&m.body) {
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO media_refs (cursor, sha256, room) VALUES (?1, ?2, ?3)")?
                .execute(params![to_sql(cursor), blob.0.as_slice(), m.room.as_str()])?;
        }
        let priority = m.priority;
        let room = m.room.clone();
        let frame = ServerFrame::Message(Positioned { cursor: Cursor(cursor), msg: m }).encode();
        entries.push(LogEntry { cursor: Cursor(cursor), priority, audience: Audience::Room { room, except }, frame });
        Ok(Some(Cursor(cursor)))
    }

    /// The cursor of message `id`, if this server has it.
    /// The cursor and stamp of the message with `id`, if it is held.
    pub(super) fn message_position(&self, id: MessageId) -> Result<Option<(Cursor, Hlc)>, StoreError> {
        let c: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT cursor, hlc FROM messages WHERE id = ?1")?
            .query_row([id.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(c.map(|(c, h)| (Cursor(u64::try_from(c).unwrap_or(0)), Hlc(u64::try_from(h).unwrap_or(0)))))
    }

    /// Gaps are reported, never filled in: the missing messages may still arrive from the
    /// device's outbox.
    fn check_seq(&mut self, user: &UserId, device: &DeviceId, seq: u64) {
        let prev = self.last_seq.insert((user.clone(), device.clone()), seq);
        if let Some(prev) = prev
            && seq > prev + 1
        {
            tracing::warn!(device = %device, after = prev, got = seq, "gap in device sequence");
        }
    }

    fn device_ack(&mut self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError> {
        let key = (user.clone(), device.clone());
        if let Some(v) = self.acks.get(&key) {
            return Ok(*v);
        }
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT acked FROM device_cursors WHERE user = ?1 AND device = ?2")?
            .query_row([user.as_str(), device.as_str()], |r| r.get(0))
            .optional()?;
        let v = v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        self.acks.insert(key, v);
        Ok(v)
    }

    fn ack(
        &mut self,
        device: &DeviceId,
        user: &UserId,
        rooms: &[RoomId],
        cursor: Cursor,
        at: u64,
        entries: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        let prev = self.device_ack(user, device)?;
        let upto = cursor.0.min(self.next_cursor - 1);
        if upto <= prev || rooms.is_empty() {
            return Ok(());
        }
        let placeholders = vec!["?"; rooms.len()].join(",");
        // Oldest first, at most `max_receipts_per_ack`; the mark only moves as far as was
        // processed, so a huge ack is worked off over the device's next acks.
        let sql = format!(
            "SELECT id, sender, room, cursor, origin_peer FROM messages
             WHERE cursor > ? AND cursor <= ? AND sender <> ? AND room IN ({placeholders})
             ORDER BY cursor LIMIT ?"
        );
        let cap = self.opts.max_receipts_per_ack;
        let mut args: Vec<rusqlite::types::Value> =
            vec![to_sql(prev).into(), to_sql(upto).into(), user.as_str().to_owned().into()];
        args.extend(rooms.iter().map(|r| r.as_str().to_owned().into()));
        args.push(to_sql(cap as u64).into());
        let targets = self.select_targets(&sql, args)?;
        let mark = if targets.len() >= cap { targets.last().map_or(upto, |t| t.cursor) } else { upto };
        for t in targets {
            self.receipt(
                t.id,
                ReceiptState::Delivered,
                Some(user),
                t.sender,
                t.room,
                at,
                None,
                t.peer.as_deref(),
                entries,
            )?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO device_cursors (user, device, acked, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, device) DO UPDATE SET acked = excluded.acked, updated = excluded.updated",
            )?
            .execute(params![user.as_str(), device.as_str(), to_sql(mark), to_sql(now_ms())])?;
        self.acks.insert((user.clone(), device.clone()), mark);
        Ok(())
    }

    /// Runs a `SELECT id, sender, room, cursor, origin_peer ...` and decodes the rows.
    fn select_targets(&self, sql: &str, args: Vec<rusqlite::types::Value>) -> Result<Vec<Target>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sender, room, cursor, peer) = row?;
            let (Ok(id), Ok(sender), Ok(room)) =
                (<[u8; 16]>::try_from(id.as_slice()), UserId::new(sender), RoomId::new(room))
            else {
                continue;
            };
            out.push(Target {
                id: MessageId::from_bytes(id),
                sender,
                room,
                cursor: u64::try_from(cursor).unwrap_or(0),
                peer,
            });
        }
        Ok(out)
    }

    fn read(
        &mut self,
        user: &UserId,
        room: &RoomId,
        id: MessageId,
        at: u64,
        entries: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        let target: Option<i64> = self
            .conn
            .prepare_cached("SELECT cursor FROM messages WHERE id = ?1 AND room = ?2")?
            .query_row(params![id.as_bytes().as_slice(), room.as_str()], |r| r.get(0))
            .optional()?;
        let Some(target) = target else { return Ok(()) };
        let prev: i64 = self
            .conn
            .prepare_cached("SELECT cursor FROM read_marks WHERE user = ?1 AND room = ?2")?
            .query_row(params![user.as_str(), room.as_str()], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if target <= prev {
            return Ok(());
        }
        let cap = self.opts.max_receipts_per_ack;
        let targets = self.select_targets(
            "SELECT id, sender, room, cursor, origin_peer FROM messages
             WHERE room = ? AND cursor > ? AND cursor <= ? AND sender <> ?
             ORDER BY cursor LIMIT ?",
            vec![
                room.as_str().to_owned().into(),
                prev.into(),
                target.into(),
                user.as_str().to_owned().into(),
                to_sql(cap as u64).into(),
            ],
        )?;
        // As for acks: oldest first, and the mark moves only as far as was processed.
        let mark = if targets.len() >= cap { targets.last().map_or(target, |t| to_sql(t.cursor)) } else { target };
        for t in targets {
            self.receipt(t.id, ReceiptState::Read, Some(user), t.sender, t.room, at, None, t.peer.as_deref(), entries)?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO read_marks (user, room, cursor) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, room) DO UPDATE SET cursor = excluded.cursor",
            )?
            .execute(params![user.as_str(), room.as_str(), mark])?;
        Ok(())
    }

    /// Stores one receipt (once per message, state and reader) and queues it for the
    /// target. `origin_peer`: where it was made (None: here); `msg_peer`: where the message
    /// it is about came from (the link sends it there).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receipt(
        &mut self,
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
            .conn
            .prepare_cached(
                "INSERT INTO receipts (cursor, msg_id, state, by_user, target, room, at, origin_peer, msg_peer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (msg_id, state, by_user) DO NOTHING",
            )?
            .execute(params![
                to_sql(cursor),
                id.as_bytes().as_slice(),
                state.as_str(),
                by.map_or("", UserId::as_str),
                target.as_str(),
                room.as_str(),
                to_sql(at),
                origin_peer,
                msg_peer,
            ])?;
        if inserted == 0 {
            return Ok(false);
        }
        self.take_cursor();
        let frame = ServerFrame::Receipt(Receipt {
            id,
            state,
            by: by.cloned(),
            at,
            room: Some(room),
            cursor: Some(Cursor(cursor)),
        })
        .encode();
        entries.push(LogEntry {
            cursor: Cursor(cursor),
            priority: Priority::Normal,
            audience: Audience::User(target),
            frame,
        });
        Ok(true)
    }
}
