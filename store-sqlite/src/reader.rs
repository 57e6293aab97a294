//! Read-only queries on their own connections: replay after a cursor and room history.
//!
//! Readers run on blocking threads so a phone replaying a month of messages never stalls
//! the writer or the async sessions. Connections are pooled; WAL gives each query a
//! consistent snapshot while commits continue.

use std::path::PathBuf;
use std::sync::Mutex;

use outpost_shared::frames::{HistoryPage, MessageBody, Positioned, Receipt, ReceiptState};
use outpost_shared::uplink::batch::{Entry, Lane, WireMessage, WireReceipt};
use outpost_shared::{Body, Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, RoomId, Seq, ServerFrame, UserId};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row};

use super::{Backlog, Forwarded, Outbound, OutboundQuery, Replay, ReplayQuery, StoreError, connect};

pub(crate) struct Readers {
    path: PathBuf,
    /// Connections kept open for reuse: as many as reads may run at once (the store's
    /// permits), so under steady load none is opened or closed.
    keep: usize,
    pool: Mutex<Vec<Connection>>,
    /// Connections opened so far (each costs a file handle and a page cache).
    opened: std::sync::atomic::AtomicUsize,
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn bad(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Null)
}

/// Rebuilds a stored message from columns cursor, id, room, kind, priority, body, seq,
/// reply_to, sender, device, hlc, at starting at `base`.
fn message_from_row(r: &Row<'_>, base: usize) -> Result<Positioned, rusqlite::Error> {
    let id: Vec<u8> = r.get(base + 1)?;
    let reply_to: Option<Vec<u8>> = r.get(base + 7)?;
    let mid = |b: &[u8]| <[u8; 16]>::try_from(b).map(MessageId::from_bytes).map_err(|_| bad("message id"));
    Ok(Positioned {
        cursor: Cursor(u(r.get(base)?)),
        msg: MessageBody {
            id: mid(&id)?,
            room: RoomId::new(r.get::<_, String>(base + 2)?).map_err(|_| bad("room"))?,
            kind: MessageKind::new(r.get::<_, String>(base + 3)?).map_err(|_| bad("kind"))?,
            priority: Priority::from_u8(r.get(base + 4)?).ok_or_else(|| bad("priority"))?,
            body: Body::from_json(&r.get::<_, String>(base + 5)?).map_err(|_| bad("body"))?,
            seq: Seq(u(r.get(base + 6)?)),
            reply_to: reply_to.as_deref().map(mid).transpose()?,
            from: UserId::new(r.get::<_, String>(base + 8)?).map_err(|_| bad("sender"))?,
            device: DeviceId::new(r.get::<_, String>(base + 9)?).map_err(|_| bad("device"))?,
            hlc: Hlc(u(r.get(base + 10)?)),
            at: u(r.get(base + 11)?),
        },
    })
}

const MESSAGE_COLUMNS: &str = "cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at";

impl Readers {
    pub fn new(path: PathBuf, keep: usize) -> Self {
        Self { path, keep, pool: Mutex::new(Vec::new()), opened: 0.into() }
    }

    #[cfg(test)]
    pub fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                connect(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?
            }
        };
        let out = f(&conn);
        if let Ok(mut p) = self.pool.lock()
            && p.len() < self.keep
        {
            p.push(conn);
        }
        Ok(out?)
    }

    pub fn replay(&self, q: &ReplayQuery) -> Result<Replay, StoreError> {
        self.with(|conn| {
            // ?1 after, ?2 user, ?3 limit, then one parameter per room (?4, ?5, ...), or
            // with floors two per room (room, floor).
            let mut args: Vec<rusqlite::types::Value> = vec![
                i64::try_from(q.after.0).unwrap_or(i64::MAX).into(),
                q.user.as_str().to_owned().into(),
                i64::try_from(q.limit).unwrap_or(i64::MAX).into(),
            ];
            let messages = match q.floors.as_deref() {
                // Each room on its own index (`messages_room`) from its own floor, at most
                // a page each: a quiet room's old floor does not make the busy rooms'
                // history be read.
                Some(floors) if !floors.is_empty() => {
                    let mut parts = Vec::with_capacity(floors.len());
                    for (i, (room, floor)) in floors.iter().enumerate() {
                        let (r, f) = (2 * i + 4, 2 * i + 5);
                        parts.push(format!(
                            "SELECT * FROM (SELECT 0, {MESSAGE_COLUMNS}, NULL FROM messages
                               WHERE room = ?{r} AND cursor > max(?1, ?{f}) ORDER BY cursor LIMIT ?3)"
                        ));
                        args.push(room.as_str().to_owned().into());
                        args.push(i64::try_from(floor.0).unwrap_or(i64::MAX).into());
                    }
                    parts.join("\n UNION ALL ")
                }
                // No room to read: receipts only.
                Some(_) => format!("SELECT 0, {MESSAGE_COLUMNS}, NULL FROM messages WHERE 0"),
                None => {
                    let rooms_list: Vec<String> = (0..q.rooms.len().max(1)).map(|i| format!("?{}", i + 4)).collect();
                    if q.rooms.is_empty() {
                        args.push(rusqlite::types::Value::Null);
                    }
                    args.extend(q.rooms.iter().map(|r| rusqlite::types::Value::from(r.as_str().to_owned())));
                    format!(
                        "SELECT 0, {MESSAGE_COLUMNS}, NULL FROM messages WHERE cursor > ?1 AND room IN ({})",
                        rooms_list.join(",")
                    )
                }
            };
            let sql = format!(
                "{messages}
                 UNION ALL
                 SELECT 1, cursor, msg_id, room, NULL, NULL, NULL, NULL, NULL, by_user, NULL, NULL, at, state
                   FROM receipts WHERE cursor > ?1 AND target = ?2
                 ORDER BY 2 LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut frames: Vec<(Cursor, String)> = Vec::new();
            let mut scanned_to = q.after;
            let mut count = 0usize;
            let mut bytes = 0usize;
            while let Some(r) = rows.next()? {
                if bytes >= q.max_bytes {
                    // Full by size: the rest is the next page's.
                    return Ok(Replay { frames, scanned_to, done: false });
                }
                count += 1;
                let kind: i64 = r.get(0)?;
                let cursor = Cursor(u(r.get(1)?));
                scanned_to = cursor;
                let frame = if kind == 0 {
                    let m = message_from_row(r, 1)?;
                    if m.msg.device == q.own_device && m.msg.from == q.user && cursor > q.own_visible_until {
                        continue;
                    }
                    ServerFrame::Message(m).encode()
                } else {
                    let id: Vec<u8> = r.get(2)?;
                    let state: String = r.get(13)?;
                    let receipt = Receipt {
                        id: <[u8; 16]>::try_from(id.as_slice())
                            .map(MessageId::from_bytes)
                            .map_err(|_| bad("msg_id"))?,
                        state: ReceiptState::parse(&state).ok_or_else(|| bad("state"))?,
                        by: UserId::new(r.get::<_, String>(9)?).ok(),
                        at: u(r.get(12)?),
                        room: RoomId::new(r.get::<_, String>(3)?).ok(),
                        cursor: Some(cursor),
                    };
                    ServerFrame::Receipt(receipt).encode()
                };
                bytes += frame.len();
                frames.push((cursor, frame));
            }
            Ok(Replay { frames, scanned_to, done: count < q.limit })
        })
    }

    pub fn history(&self, room: RoomId, before: Option<Cursor>, limit: u32) -> Result<HistoryPage, StoreError> {
        self.with(|conn| {
            let before = before.map_or(i64::MAX, |c| i64::try_from(c.0).unwrap_or(i64::MAX));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND cursor < ?2 ORDER BY cursor DESC LIMIT ?3"
            ))?;
            let mut rows = stmt.query(rusqlite::params![room.as_str(), before, i64::from(limit) + 1])?;
            let mut messages = Vec::new();
            while let Some(r) = rows.next()? {
                messages.push(message_from_row(r, 0)?);
            }
            let more = messages.len() > limit as usize;
            messages.truncate(limit as usize);
            messages.reverse();
            Ok(HistoryPage::local(room, messages, more))
        })
    }
}

impl Readers {
    pub fn read_marks(&self, user: &UserId) -> Result<Vec<(RoomId, Cursor)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT room, cursor FROM read_marks WHERE user = ?1")?;
            let rows = stmt.query_map([user.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (room, cursor) = row?;
                if let Ok(room) = RoomId::new(room) {
                    out.push((room, Cursor(u64::try_from(cursor).unwrap_or(0))));
                }
            }
            Ok(out)
        })
    }

    /// The cursor below `room`'s `keep` latest messages (index only, `messages_room`).
    pub fn room_floor(&self, room: &RoomId, keep: u32) -> Result<Cursor, StoreError> {
        self.with(|conn| {
            let c: Option<i64> = conn
                .prepare_cached("SELECT cursor FROM messages WHERE room = ?1 ORDER BY cursor DESC LIMIT 1 OFFSET ?2")?
                .query_row(rusqlite::params![room.as_str(), i64::from(keep)], |r| r.get(0))
                .optional()?;
            Ok(Cursor(c.map_or(0, |c| u64::try_from(c).unwrap_or(0))))
        })
    }

    pub fn message_cursor(&self, room: &RoomId, id: MessageId) -> Result<Option<Cursor>, StoreError> {
        self.with(|conn| {
            let c: Option<i64> = conn
                .prepare_cached("SELECT cursor FROM messages WHERE id = ?1 AND room = ?2")?
                .query_row(rusqlite::params![id.as_bytes().as_slice(), room.as_str()], |r| r.get(0))
                .optional()?;
            Ok(c.map(|c| Cursor(u64::try_from(c).unwrap_or(0))))
        })
    }

    /// The messages of `room` feeding `workflow` from `since_hlc` on, in stamp order
    /// (through its partial index: `kind_sql` repeats the index's condition).
    pub fn workflow_events(
        &self,
        room: &RoomId,
        workflow: outpost_storage::Workflow,
        since_hlc: Hlc,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND hlc >= ?2 AND {} \
                 ORDER BY hlc, id LIMIT ?3",
                workflow.kind_sql()
            ))?;
            let since = i64::try_from(since_hlc.0).unwrap_or(i64::MAX);
            let mut rows = stmt.query(rusqlite::params![room.as_str(), since, i64::from(limit) + 1])?;
            let mut messages = Vec::new();
            while let Some(r) = rows.next()? {
                messages.push(message_from_row(r, 0)?);
            }
            let more = messages.len() > limit as usize;
            messages.truncate(limit as usize);
            Ok((messages, more))
        })
    }

    /// Messages of `room` stamped before `before_hlc`, oldest first (`messages_room_hlc`).
    pub fn history_before_hlc(
        &self,
        room: &RoomId,
        before_hlc: Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND hlc < ?2 ORDER BY hlc DESC LIMIT ?3"
            ))?;
            let before = i64::try_from(before_hlc.0).unwrap_or(i64::MAX);
            let mut rows = stmt.query(rusqlite::params![room.as_str(), before, i64::from(limit) + 1])?;
            let mut messages = Vec::new();
            let mut bytes = 0usize;
            let mut more = false;
            while let Some(r) = rows.next()? {
                if messages.len() >= limit as usize {
                    more = true;
                    break;
                }
                let m = message_from_row(r, 0)?;
                bytes += m.msg.body.as_str().len();
                if bytes > max_bytes && !messages.is_empty() {
                    more = true;
                    break;
                }
                messages.push(m);
            }
            messages.reverse();
            Ok((messages, more))
        })
    }

    pub fn outbound(&self, q: &OutboundQuery) -> Result<Outbound, StoreError> {
        self.with(|conn| {
            // One snapshot for the page and the head, so "nothing more up to the head"
            // is true of the same state.
            let tx = conn.unchecked_transaction()?;
            let head: i64 = tx.query_row(
                "SELECT max(coalesce((SELECT max(cursor) FROM messages), 0), coalesce((SELECT max(cursor) FROM receipts), 0))",
                [],
                |r| r.get(0),
            )?;
            let lane_cond = match q.lane {
                Lane::Emergency => "priority = 3",
                Lane::Normal => "priority < 3",
            };
            let room_cond = match &q.rooms {
                None => String::new(),
                Some(rooms) => {
                    let list: Vec<String> = (0..rooms.len().max(1)).map(|i| format!("?{}", i + 5)).collect();
                    format!("AND room IN ({})", list.join(","))
                }
            };
            let receipts = match q.lane {
                _ if q.newest_first => String::new(),
                Lane::Emergency => String::new(),
                Lane::Normal => "UNION ALL
                 SELECT 1, cursor, msg_id, room, NULL, NULL, NULL, NULL, NULL, by_user, NULL, NULL, at, state, target, 0
                   FROM receipts WHERE cursor > ?1 AND cursor <= ?4
                    AND (msg_peer = ?2 AND coalesce(origin_peer, '') <> ?2
                         OR origin_peer = ?2 AND cursor <= (SELECT own_until FROM peers WHERE peer = ?2))"
                    .to_owned(),
            };
            let sql = format!(
                "SELECT 0, {MESSAGE_COLUMNS}, NULL, NULL, origin_peer IS NULL FROM messages
                   WHERE cursor > ?1 AND cursor <= ?4 AND {lane_cond} {room_cond}
                     AND (coalesce(origin_peer, '') <> ?2 OR cursor <= (SELECT own_until FROM peers WHERE peer = ?2))
                 {receipts}
                 ORDER BY 2 {order} LIMIT ?3",
                order = if q.newest_first { "DESC" } else { "" }
            );
            let mut args: Vec<rusqlite::types::Value> = vec![
                i64::try_from(q.after.0).unwrap_or(i64::MAX).into(),
                q.peer.clone().into(),
                i64::try_from(q.limit).unwrap_or(i64::MAX).into(),
                q.until.map_or(i64::MAX, |c| i64::try_from(c.0).unwrap_or(i64::MAX)).into(),
            ];
            if let Some(rooms) = &q.rooms {
                if rooms.is_empty() {
                    args.push(rusqlite::types::Value::Null);
                }
                args.extend(rooms.iter().map(|r| rusqlite::types::Value::from(r.as_str().to_owned())));
            }
            let mut entries = Vec::new();
            let mut forwardable = Vec::new();
            let mut bytes = 0usize;
            let mut full = false;
            {
                let mut stmt = tx.prepare_cached(&sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
                while let Some(r) = rows.next()? {
                    let kind: i64 = r.get(0)?;
                    let e = if kind == 0 {
                        let p = message_from_row(r, 1)?;
                        let m = p.msg;
                        if r.get::<_, bool>(15)? {
                            forwardable.push(Forwarded { id: m.id, sender: m.from.clone(), room: m.room.clone() });
                        }
                        Entry::Message(WireMessage::from_stored(p.cursor, m))
                    } else {
                        let id: Vec<u8> = r.get(2)?;
                        Entry::Receipt(WireReceipt {
                            cursor: Cursor(u(r.get(1)?)),
                            id: <[u8; 16]>::try_from(id.as_slice()).map(MessageId::from_bytes).map_err(|_| bad("msg_id"))?,
                            state: ReceiptState::parse(&r.get::<_, String>(13)?).ok_or_else(|| bad("state"))?,
                            by: UserId::new(r.get::<_, String>(9)?).ok(),
                            target: UserId::new(r.get::<_, String>(14)?).map_err(|_| bad("target"))?,
                            room: RoomId::new(r.get::<_, String>(3)?).map_err(|_| bad("room"))?,
                            at: u(r.get(12)?),
                        })
                    };
                    bytes += match &e {
                        Entry::Message(m) => m.body.len() + 96,
                        Entry::Receipt(_) => 64,
                    };
                    entries.push(e);
                    if bytes >= q.max_bytes {
                        full = true;
                        break;
                    }
                }
            }
            tx.commit()?;
            let scanned_to = if full || entries.len() >= q.limit {
                entries.last().map_or(q.after, Entry::cursor)
            } else {
                let head = Cursor(u(head));
                q.until.map_or(head, |until| until.min(head)).max(q.after)
            };
            Ok(Outbound { entries, scanned_to, forwardable })
        })
    }
}

impl Readers {
    /// Up to `limit` messages of `room` after `after`, oldest first (the HTTP API's feed).
    pub fn room_since(&self, room: &RoomId, after: Cursor, limit: u32) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3"
            ))?;
            let after = i64::try_from(after.0).unwrap_or(i64::MAX);
            let mut rows = stmt.query(rusqlite::params![room.as_str(), after, i64::from(limit) + 1])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(message_from_row(r, 0)?);
            }
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            Ok((out, more))
        })
    }
}

/// The next message of one room's scan in [`Readers::events`], ordered by cursor alone.
struct Head {
    msg: Positioned,
    scan: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.msg.cursor == other.msg.cursor
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.msg.cursor.cmp(&other.msg.cursor)
    }
}

/// [`Readers::events`] for every room: the primary key's range from `after`.
pub(crate) fn events_all_sql() -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE cursor > ?1 ORDER BY cursor LIMIT ?2")
}

/// [`Readers::events`], one room's scan: `messages_room` from `after`.
pub(crate) fn events_room_sql() -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND cursor > ?2 ORDER BY cursor")
}

impl Readers {
    /// Up to `limit` messages after `after` in `rooms` (every room when `None`), in
    /// cursor order, and whether there are more.
    ///
    /// Every room: one range scan of the primary key from `after`. Some rooms: one scan
    /// of `messages_room (room, cursor)` per room, all stepped together and merged by
    /// cursor, so a page reads `limit + rooms` rows however long the log is and however
    /// rare those rooms are in it. (`room IN (...) ORDER BY cursor` would either sort
    /// every message of those rooms after `after` or walk the whole log past them.)
    pub fn events(
        &self,
        rooms: Option<&[RoomId]>,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        let want = limit as usize + 1;
        let after = i64::try_from(after.0).unwrap_or(i64::MAX);
        self.with(|conn| {
            let mut out = Vec::with_capacity(want.min(1024));
            match rooms {
                None => {
                    let mut stmt = conn.prepare_cached(&events_all_sql())?;
                    let mut rows = stmt.query(rusqlite::params![after, i64::from(limit) + 1])?;
                    while let Some(r) = rows.next()? {
                        out.push(message_from_row(r, 0)?);
                    }
                }
                Some(rooms) => {
                    let mut rooms: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
                    rooms.sort_unstable();
                    rooms.dedup();
                    // One snapshot for every room's scan.
                    let tx = conn.unchecked_transaction()?;
                    {
                        // A statement per room: each scan is stepped on its own.
                        let sql = events_room_sql();
                        let mut stmts = Vec::with_capacity(rooms.len());
                        for _ in &rooms {
                            stmts.push(tx.prepare(&sql)?);
                        }
                        let mut scans = Vec::with_capacity(rooms.len());
                        for (stmt, room) in stmts.iter_mut().zip(&rooms) {
                            scans.push(stmt.query(rusqlite::params![room, after])?);
                        }
                        let mut heads = std::collections::BinaryHeap::with_capacity(scans.len());
                        for (scan, rows) in scans.iter_mut().enumerate() {
                            if let Some(r) = rows.next()? {
                                heads.push(std::cmp::Reverse(Head { msg: message_from_row(r, 0)?, scan }));
                            }
                        }
                        while out.len() < want {
                            let Some(std::cmp::Reverse(Head { msg, scan })) = heads.pop() else { break };
                            out.push(msg);
                            if let Some(r) = scans[scan].next()? {
                                heads.push(std::cmp::Reverse(Head { msg: message_from_row(r, 0)?, scan }));
                            }
                        }
                    }
                    tx.commit()?;
                }
            }
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            Ok((out, more))
        })
    }
}

impl Readers {
    pub fn peer_known(&self, peer: &str) -> Result<Option<outpost_storage::KnownPeer>, StoreError> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let known = tx
                .prepare_cached("SELECT epoch, sent_hwm, recv_hwm FROM peers WHERE peer = ?1")?
                .query_row([peer], |r| {
                    Ok(outpost_storage::KnownPeer {
                        epoch: r.get(0)?,
                        sent_hwm: Cursor(u(r.get(1)?)),
                        recv_hwm: Cursor(u(r.get(2)?)),
                        rooms: Vec::new(),
                    })
                })
                .optional()?;
            let Some(mut known) = known else { return Ok(None) };
            let mut stmt = tx.prepare_cached("SELECT room FROM peer_rooms WHERE peer = ?1 ORDER BY room")?;
            let mut rows = stmt.query([peer])?;
            while let Some(r) = rows.next()? {
                if let Ok(room) = RoomId::new(r.get::<_, String>(0)?) {
                    known.rooms.push(room);
                }
            }
            Ok(Some(known))
        })
    }

    pub fn backlog(&self, peer: &str) -> Result<Backlog, StoreError> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let hwm: i64 =
                tx.query_row("SELECT coalesce((SELECT sent_hwm FROM peers WHERE peer = ?1), 0)", [peer], |r| r.get(0))?;
            let (messages, bytes, oldest, emergency): (i64, i64, Option<i64>, Option<i64>) = tx.query_row(
                "SELECT count(*), coalesce(sum(length(body)), 0), min(at), min(CASE WHEN priority = 3 THEN at END)
                   FROM messages WHERE cursor > ?1 AND origin_peer IS NULL",
                [hwm],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let receipts: i64 = tx.query_row(
                "SELECT count(*) FROM receipts WHERE cursor > ?1 AND msg_peer = ?2 AND origin_peer IS NULL",
                rusqlite::params![hwm, peer],
                |r| r.get(0),
            )?;
            let (files, file_bytes): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM blobs b
                  WHERE b.evicted IS NULL
                    AND EXISTS (SELECT 1 FROM media_refs r WHERE r.sha256 = b.sha256)
                    AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = b.sha256 AND p.peer = ?1)",
                [peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.commit()?;
            Ok(Backlog {
                files: u(files),
                file_bytes: u(file_bytes),
                messages: u(messages),
                bytes: u(bytes),
                receipts: u(receipts),
                oldest_at: oldest.map(u),
                oldest_emergency_at: emergency.map(u),
                acked_through: u(hwm),
            })
        })
    }
}
