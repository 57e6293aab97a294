//! Reads on pooled connections: replay, history, room pages, what goes to a peer next and
//! what waits for it, the audit log and the revocation list. Same queries as the SQLite
//! store's (store-sqlite/src/reader.rs) in PostgreSQL's dialect; reads that must agree
//! with the head run in one REPEATABLE READ snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use deadpool_postgres::Object;
use outpost_shared::frames::{HistoryPage, MessageBody, Positioned, Receipt, ReceiptState};
use outpost_shared::uplink::batch::{Entry, Lane, WireMessage, WireReceipt};
use outpost_shared::{
    Body, Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, Revocation, RevocationList, RoomId, Seq,
    ServerFrame, UserId,
};
use outpost_storage::{AuditRecord, Backlog, Forwarded, Outbound, OutboundQuery, Replay, ReplayQuery, StoreError};
use tokio_postgres::{GenericClient, Row};

use crate::{PgStore, db, from_sql, to_sql};

pub(crate) const MESSAGE_COLUMNS: &str =
    "cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at";

fn bad(what: &str) -> StoreError {
    StoreError::Database(format!("a stored row has an invalid {what}"))
}

/// Rebuilds a stored message from [`MESSAGE_COLUMNS`] starting at column `base`.
pub(crate) fn message_from_row(r: &Row, base: usize) -> Result<Positioned, StoreError> {
    let mid = |b: &[u8]| <[u8; 16]>::try_from(b).map(MessageId::from_bytes).map_err(|_| bad("message id"));
    let reply_to: Option<&[u8]> = r.get(base + 7);
    Ok(Positioned {
        cursor: Cursor(from_sql(r.get(base))),
        msg: MessageBody {
            id: mid(r.get(base + 1))?,
            room: RoomId::new(r.get::<_, String>(base + 2)).map_err(|_| bad("room"))?,
            kind: MessageKind::new(r.get::<_, String>(base + 3)).map_err(|_| bad("kind"))?,
            priority: u8::try_from(r.get::<_, i16>(base + 4))
                .ok()
                .and_then(Priority::from_u8)
                .ok_or_else(|| bad("priority"))?,
            body: Body::from_json(r.get::<_, &str>(base + 5)).map_err(|_| bad("body"))?,
            seq: Seq(from_sql(r.get(base + 6))),
            reply_to: reply_to.map(mid).transpose()?,
            from: UserId::new(r.get::<_, String>(base + 8)).map_err(|_| bad("sender"))?,
            device: DeviceId::new(r.get::<_, String>(base + 9)).map_err(|_| bad("device"))?,
            hlc: Hlc(from_sql(r.get(base + 10))),
            at: from_sql(r.get(base + 11)),
        },
    })
}

pub(crate) async fn load_rooms(c: &impl GenericClient) -> Result<HashSet<RoomId>, tokio_postgres::Error> {
    let rows = c.query("SELECT room FROM rooms", &[]).await?;
    Ok(rows.iter().filter_map(|r| RoomId::new(r.get::<_, String>(0)).ok()).collect())
}

pub(crate) async fn revocation_mark(c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    Ok(from_sql(c.query_one("SELECT coalesce(max(seq), 0)::bigint FROM revocations", &[]).await?.get(0)))
}

pub(crate) async fn load_revocations(c: &impl GenericClient) -> Result<(u64, RevocationList), tokio_postgres::Error> {
    let mark = revocation_mark(c).await?;
    let rows = c.query("SELECT kind, value, issued_before, reason, at FROM revocations", &[]).await?;
    let entries: Vec<Revocation> = rows
        .iter()
        .filter_map(|r| {
            Revocation::from_key(r.get::<_, &str>(0), r.get(1), from_sql(r.get(2)), r.get(3), from_sql(r.get(4)))
        })
        .collect();
    Ok((mark, RevocationList::new(entries)))
}

/// Audit events after `after`, oldest first, and whether more follow.
pub(crate) async fn audit_page(
    c: &impl GenericClient,
    after: u64,
    limit: u32,
) -> Result<(Vec<AuditRecord>, bool), StoreError> {
    let rows = c
        .query(
            "SELECT seq, at, event, actor, role, device, peer, room, detail FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&to_sql(after), &(i64::from(limit) + 1)],
        )
        .await
        .map_err(db)?;
    let mut out: Vec<AuditRecord> = rows
        .iter()
        .map(|r| AuditRecord {
            seq: from_sql(r.get(0)),
            at: from_sql(r.get(1)),
            event: r.get(2),
            actor: r.get(3),
            role: r.get(4),
            device: r.get(5),
            peer: r.get(6),
            room: r.get(7),
            detail: r.get(8),
        })
        .collect();
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// Who a read is for; each lane has its own permits (as in the SQLite store).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadLane {
    Devices,
    Peers,
}

impl PgStore {
    /// A pooled connection, once `lane` has a permit.
    pub(crate) async fn reader(
        &self,
        lane: ReadLane,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, Object), StoreError> {
        let permits = match lane {
            ReadLane::Devices => &self.shared.device_reads,
            ReadLane::Peers => &self.shared.peer_reads,
        };
        let permit = permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let client = self.shared.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
        Ok((permit, client))
    }

    pub(crate) async fn replay(&self, q: ReplayQuery) -> Result<Replay, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let rooms: Vec<&str> = q.rooms.iter().map(RoomId::as_str).collect();
        // Nothing past what this node published (itself below the stable head): an
        // import still committing below a later cursor would otherwise be passed over,
        // and the session's cursor would then be ahead of it when it is published live.
        let head = to_sql(*self.head_rx.borrow());
        let (after, user, limit) = (to_sql(q.after.0), q.user.as_str(), to_sql(q.limit as u64));
        const RECEIPTS: &str =
            "SELECT 1, cursor, msg_id, room, NULL, NULL, NULL, NULL, NULL, by_user, NULL, NULL, at, state
                   FROM receipts WHERE cursor > $1 AND cursor <= $4 AND target = $2";
        let rows = match q.floors.as_deref() {
            // A new device's window: each room read on its own index from its own floor,
            // at most a page each, then merged ($5 rooms, $6 floors).
            Some(floors) => {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT 0, m.*, NULL FROM unnest($5::text[], $6::bigint[]) AS f(froom, ffloor)
                           CROSS JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages
                                WHERE room = f.froom AND cursor > greatest($1, f.ffloor) AND cursor <= $4
                                ORDER BY cursor LIMIT $3) m
                         UNION ALL {RECEIPTS}
                         ORDER BY 2 LIMIT $3"
                    ))
                    .await
                    .map_err(db)?;
                let rooms: Vec<&str> = floors.iter().map(|(r, _)| r.as_str()).collect();
                let floors: Vec<i64> = floors.iter().map(|(_, c)| to_sql(c.0)).collect();
                c.query(&stmt, &[&after, &user, &limit, &head, &rooms, &floors]).await.map_err(db)?
            }
            None => {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT 0, {MESSAGE_COLUMNS}, NULL FROM messages
                          WHERE cursor > $1 AND cursor <= $4 AND room = ANY($5)
                         UNION ALL {RECEIPTS}
                         ORDER BY 2 LIMIT $3"
                    ))
                    .await
                    .map_err(db)?;
                c.query(&stmt, &[&after, &user, &limit, &head, &rooms]).await.map_err(db)?
            }
        };
        let mut frames: Vec<(Cursor, String)> = Vec::new();
        let mut scanned_to = q.after;
        let mut count = 0usize;
        let mut bytes = 0usize;
        for r in &rows {
            if bytes >= q.max_bytes {
                return Ok(Replay { frames, scanned_to, done: false });
            }
            count += 1;
            let kind: i32 = r.get(0);
            let cursor = Cursor(from_sql(r.get(1)));
            scanned_to = cursor;
            let frame = if kind == 0 {
                let m = message_from_row(r, 1)?;
                if m.msg.device == q.own_device && m.msg.from == q.user && cursor > q.own_visible_until {
                    continue;
                }
                ServerFrame::Message(m).encode()
            } else {
                let receipt = Receipt {
                    id: <[u8; 16]>::try_from(r.get::<_, &[u8]>(2))
                        .map(MessageId::from_bytes)
                        .map_err(|_| bad("msg_id"))?,
                    state: ReceiptState::parse(r.get::<_, &str>(13)).ok_or_else(|| bad("state"))?,
                    by: UserId::new(r.get::<_, String>(9)).ok(),
                    at: from_sql(r.get(12)),
                    room: RoomId::new(r.get::<_, String>(3)).ok(),
                    cursor: Some(cursor),
                };
                ServerFrame::Receipt(receipt).encode()
            };
            bytes += frame.len();
            frames.push((cursor, frame));
        }
        Ok(Replay { frames, scanned_to, done: count < q.limit })
    }

    pub(crate) async fn read_marks(&self, user: UserId) -> Result<Vec<(RoomId, Cursor)>, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c.prepare_cached("SELECT room, cursor FROM read_marks WHERE user_id = $1").await.map_err(db)?;
        let rows = c.query(&stmt, &[&user.as_str()]).await.map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((RoomId::new(r.get::<_, String>(0)).ok()?, Cursor(from_sql(r.get(1))))))
            .collect())
    }

    /// The cursor below `room`'s `keep` latest messages.
    pub(crate) async fn room_floor(&self, room: RoomId, keep: u32) -> Result<Cursor, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c
            .prepare_cached("SELECT cursor FROM messages WHERE room = $1 ORDER BY cursor DESC LIMIT 1 OFFSET $2")
            .await
            .map_err(db)?;
        let rows = c.query(&stmt, &[&room.as_str(), &i64::from(keep)]).await.map_err(db)?;
        Ok(Cursor(rows.first().map_or(0, |r| from_sql(r.get(0)))))
    }

    pub(crate) async fn message_cursor(&self, room: RoomId, id: MessageId) -> Result<Option<Cursor>, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c.prepare_cached("SELECT cursor FROM messages WHERE id = $1 AND room = $2").await.map_err(db)?;
        let rows = c.query(&stmt, &[&id.as_bytes().as_slice(), &room.as_str()]).await.map_err(db)?;
        Ok(rows.first().map(|r| Cursor(from_sql(r.get(0)))))
    }

    pub(crate) async fn history(
        &self,
        room: RoomId,
        before: Option<Cursor>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let before = before.map_or(i64::MAX, |b| to_sql(b.0));
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND cursor < $2 ORDER BY cursor DESC LIMIT $3"
            ))
            .await
            .map_err(db)?;
        let rows = c.query(&stmt, &[&room.as_str(), &before, &(i64::from(limit) + 1)]).await.map_err(db)?;
        let mut messages = rows.iter().map(|r| message_from_row(r, 0)).collect::<Result<Vec<_>, _>>()?;
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        messages.reverse();
        Ok(HistoryPage::local(room, messages, more))
    }

    /// The messages of `room` feeding `workflow` from `since_hlc` on, in stamp order (see
    /// `LogStore::workflow_events`; through the workflow's partial index).
    pub(crate) async fn workflow_events(
        &self,
        room: RoomId,
        workflow: outpost_storage::Workflow,
        since_hlc: outpost_shared::Hlc,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND hlc >= $2 AND {} \
                 ORDER BY hlc, id LIMIT $3",
                workflow.kind_sql()
            ))
            .await
            .map_err(db)?;
        let rows =
            c.query(&stmt, &[&room.as_str(), &to_sql(since_hlc.0), &(i64::from(limit) + 1)]).await.map_err(db)?;
        let mut messages =
            rows.iter().take(limit as usize).map(|r| message_from_row(r, 0)).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit as usize;
        messages.truncate(limit as usize);
        Ok((messages, more))
    }

    /// Messages of `room` stamped before `before_hlc`, oldest first (see
    /// `LogStore::history_before_hlc`).
    pub(crate) async fn history_before_hlc(
        &self,
        room: RoomId,
        before_hlc: outpost_shared::Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND hlc < $2 ORDER BY hlc DESC LIMIT $3"
            ))
            .await
            .map_err(db)?;
        let rows =
            c.query(&stmt, &[&room.as_str(), &to_sql(before_hlc.0), &(i64::from(limit) + 1)]).await.map_err(db)?;
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut more = rows.len() > limit as usize;
        for r in rows.iter().take(limit as usize) {
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
    }

    pub(crate) async fn room_since(
        &self,
        room: RoomId,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND cursor > $2 AND cursor <= $4
                 ORDER BY cursor LIMIT $3"
            ))
            .await
            .map_err(db)?;
        // Nothing past what this node published: a page must never get ahead of the
        // order live delivery keeps.
        let head = to_sql(*self.head_rx.borrow());
        let rows =
            c.query(&stmt, &[&room.as_str(), &to_sql(after.0), &(i64::from(limit) + 1), &head]).await.map_err(db)?;
        let mut out = rows.iter().map(|r| message_from_row(r, 0)).collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    /// The events feed: messages after `after` in `rooms` (all when None), in cursor
    /// order, never past what this node published (so a later page cannot show a cursor
    /// below one already shown). For a list of rooms, each room's index is read for at
    /// most `limit + 1` entries and the lists merged, so a page costs about
    /// `rooms × limit` rows however long the log is.
    pub(crate) async fn events(
        &self,
        rooms: Option<Arc<[RoomId]>>,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let head = to_sql(*self.head_rx.borrow());
        let take = i64::from(limit) + 1;
        let rows = match rooms {
            None => {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE cursor > $1 AND cursor <= $2 ORDER BY cursor LIMIT $3"
                    ))
                    .await
                    .map_err(db)?;
                c.query(&stmt, &[&to_sql(after.0), &head, &take]).await.map_err(db)?
            }
            Some(rooms) => {
                let mut names: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
                names.sort_unstable();
                names.dedup();
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT m.* FROM unnest($4::text[]) AS r(room)
                         CROSS JOIN LATERAL (
                             SELECT {MESSAGE_COLUMNS} FROM messages
                              WHERE room = r.room AND cursor > $1 AND cursor <= $2 ORDER BY cursor LIMIT $3
                         ) m
                         ORDER BY m.cursor LIMIT $3"
                    ))
                    .await
                    .map_err(db)?;
                c.query(&stmt, &[&to_sql(after.0), &head, &take, &names]).await.map_err(db)?
            }
        };
        let mut out = rows.iter().map(|r| message_from_row(r, 0)).collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    pub(crate) async fn outbound(&self, q: OutboundQuery) -> Result<Outbound, StoreError> {
        let (_permit, mut c) = self.reader(ReadLane::Peers).await?;
        // One snapshot for the page and the head, so "nothing more up to the head" is
        // true of the same state.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        // The stable head: a range below the head may still commit (import.rs).
        let head = from_sql(tx.query_one(crate::STABLE_HEAD, &[]).await.map_err(db)?.get(0));
        let lane_cond = match q.lane {
            Lane::Emergency => "priority = 3",
            Lane::Normal => "priority < 3",
        };
        let room_cond = if q.rooms.is_some() { "AND room = ANY($5)" } else { "AND $5::text[] IS NULL" };
        let receipts = match q.lane {
            _ if q.newest_first => "",
            Lane::Emergency => "",
            Lane::Normal => {
                "UNION ALL
                 SELECT 1, cursor, msg_id, room, NULL, NULL, NULL, NULL, NULL, by_user, NULL, NULL, at, state, target, FALSE
                   FROM receipts WHERE cursor > $1 AND cursor <= $4
                    AND (msg_peer = $2 AND coalesce(origin_peer, '') <> $2
                         OR origin_peer = $2 AND cursor <= (SELECT own_until FROM peers WHERE peer = $2))"
            }
        };
        let sql = format!(
            "SELECT 0, {MESSAGE_COLUMNS}, NULL, NULL, origin_peer IS NULL FROM messages
               WHERE cursor > $1 AND cursor <= $4 AND {lane_cond} {room_cond}
                 AND (coalesce(origin_peer, '') <> $2 OR cursor <= (SELECT own_until FROM peers WHERE peer = $2))
             {receipts}
             ORDER BY 2 {order} LIMIT $3",
            order = if q.newest_first { "DESC" } else { "" }
        );
        let rooms: Option<Vec<&str>> = q.rooms.as_ref().map(|r| r.iter().map(RoomId::as_str).collect());
        let until = q.until.map_or(head, |u| u.0.min(head));
        let stmt = tx.prepare(&sql).await.map_err(db)?;
        let rows = tx
            .query(&stmt, &[&to_sql(q.after.0), &q.peer, &to_sql(q.limit as u64), &to_sql(until), &rooms])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut entries = Vec::new();
        let mut forwardable = Vec::new();
        let mut bytes = 0usize;
        let mut full = false;
        for r in &rows {
            let kind: i32 = r.get(0);
            let e = if kind == 0 {
                let p = message_from_row(r, 1)?;
                let m = p.msg;
                if r.get::<_, bool>(15) {
                    forwardable.push(Forwarded { id: m.id, sender: m.from.clone(), room: m.room.clone() });
                }
                Entry::Message(WireMessage::from_stored(p.cursor, m))
            } else {
                Entry::Receipt(WireReceipt {
                    cursor: Cursor(from_sql(r.get(1))),
                    id: <[u8; 16]>::try_from(r.get::<_, &[u8]>(2))
                        .map(MessageId::from_bytes)
                        .map_err(|_| bad("msg_id"))?,
                    state: ReceiptState::parse(r.get::<_, &str>(13)).ok_or_else(|| bad("state"))?,
                    by: UserId::new(r.get::<_, String>(9)).ok(),
                    target: UserId::new(r.get::<_, String>(14)).map_err(|_| bad("target"))?,
                    room: RoomId::new(r.get::<_, String>(3)).map_err(|_| bad("room"))?,
                    at: from_sql(r.get(12)),
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
        let scanned_to = if full || entries.len() >= q.limit {
            entries.last().map_or(q.after, Entry::cursor)
        } else {
            Cursor(until).max(q.after)
        };
        Ok(Outbound { entries, scanned_to, forwardable })
    }

    pub(crate) async fn backlog(&self, peer: &str) -> Result<Backlog, StoreError> {
        let (_permit, mut c) = self.reader(ReadLane::Peers).await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let hwm: i64 = tx
            .query_one("SELECT coalesce((SELECT sent_hwm FROM peers WHERE peer = $1), 0)", &[&peer])
            .await
            .map_err(db)?
            .get(0);
        let row = tx
            .query_one(
                "SELECT count(*), coalesce(sum(length(body)), 0)::bigint, min(at), min(CASE WHEN priority = 3 THEN at END)
                   FROM messages WHERE cursor > $1 AND origin_peer IS NULL",
                &[&hwm],
            )
            .await
            .map_err(db)?;
        let (messages, bytes, oldest, emergency): (i64, i64, Option<i64>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let receipts: i64 = tx
            .query_one(
                "SELECT count(*) FROM receipts WHERE cursor > $1 AND msg_peer = $2 AND origin_peer IS NULL",
                &[&hwm, &peer],
            )
            .await
            .map_err(db)?
            .get(0);
        let files = tx
            .query_one(
                "SELECT count(*), coalesce(sum(size), 0)::bigint FROM blobs b
                  WHERE b.evicted IS NULL
                    AND EXISTS (SELECT 1 FROM media_refs r WHERE r.sha256 = b.sha256)
                    AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = b.sha256 AND p.peer = $1)",
                &[&peer],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Backlog {
            files: from_sql(files.get(0)),
            file_bytes: from_sql(files.get(1)),
            messages: from_sql(messages),
            bytes: from_sql(bytes),
            receipts: from_sql(receipts),
            oldest_at: oldest.map(from_sql),
            oldest_emergency_at: emergency.map(from_sql),
            acked_through: from_sql(hwm),
        })
    }

    pub(crate) async fn audit_page(&self, after: u64, limit: u32) -> Result<(Vec<AuditRecord>, bool), StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        audit_page(&**c, after, limit).await
    }

    /// Reloads the revocation list whenever its table changed — written by any node or a
    /// command — checking every `every`.
    pub(crate) async fn watch_revocations(self, every: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let known = self.shared.revocation_mark.load(Ordering::Acquire);
            let loaded = async {
                let (_permit, c) = self.reader(ReadLane::Peers).await?;
                if revocation_mark(&**c).await.map_err(db)? == known {
                    return Ok(None);
                }
                load_revocations(&**c).await.map(Some).map_err(db)
            }
            .await;
            match loaded {
                Ok(Some((mark, list))) => {
                    tracing::info!(entries = list.len(), "revocation list changed");
                    self.shared.revocation_mark.store(mark, Ordering::Release);
                    self.shared.revocations.send_replace(Arc::new(list));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the revocation list"),
            }
        }
    }
}
