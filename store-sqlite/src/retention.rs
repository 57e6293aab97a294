//! Retention: removing messages that another server keeps, so a hub's disk never fills
//! with history the cloud already holds, and nothing unconfirmed is ever lost.
//!
//! Two triggers, one rule (see `writer/retention.rs` for what "confirmed" means):
//! by age, [`Store::prune_aged`] is called on a timer by the application and removes
//! one bounded batch of messages received before a cutoff; by quota, the writer itself
//! removes the oldest confirmed messages, a batch at a time between other work, while
//! storage in use is above the policy's high-water mark, and once more before it would
//! refuse a send with `storage_full`. Only when nothing confirmed is left does the
//! refusal stand. The quota counts database pages in use (page count less the free
//! list), so the pages a deletion frees count as free at once and are reused before the
//! file grows; the file itself does not shrink.
//!
//! This module does not choose the period or the mark (configuration does) and does
//! not talk to peers.

use std::sync::atomic::Ordering;

use outpost_shared::frames::Positioned;
use outpost_shared::{Hlc, RoomId};
use outpost_storage::{RetentionStats, StoreError};
use tokio::sync::oneshot;

use crate::{Command, ReadLane, Store};

/// Why a message was removed (counted separately on the status page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneReason {
    /// Older than the retention period.
    Age,
    /// Storage neared its quota.
    Quota,
}

/// How this store's retention works; given once at start-up ([`Store::set_retention`]).
/// Without it nothing is ever removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// A hub: the peer whose acknowledgement confirms a message (`cloud`). `None`: this
    /// is a cloud, and a message is confirmed once every hub serving its room holds it.
    pub confirm_peer: Option<String>,
    /// Storage in use (database pages and media files) past which confirmed messages go
    /// oldest first, whatever their age; `None`: never for quota.
    pub quota_high_water_bytes: Option<u64>,
    /// Most messages removed in one transaction: the writer is never held for long.
    pub batch: usize,
    /// Added to the wall clock for "now" (the `testing.clock_offset_secs` hook).
    pub clock_offset_ms: i64,
}

/// One prune step's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Messages removed.
    pub removed: usize,
    /// More may qualify: call again (after letting other work run).
    pub more: bool,
}

impl Store {
    /// Sets the retention policy; messages may be removed from now on.
    pub async fn set_retention(&self, policy: RetentionPolicy) -> Result<(), StoreError> {
        self.tx.send(Command::Retention(policy)).await.map_err(|_| StoreError::Closed)?;
        self.ping().await
    }

    /// Removes one batch of confirmed messages received before `cutoff_ms` (ms since the
    /// Unix epoch), `now_ms` being the time recorded as the last prune. Candidates are
    /// found on a reader connection (a scan that may be long never holds the writer);
    /// the writer re-checks and removes each in one short transaction.
    pub async fn prune_aged(
        &self,
        policy: &RetentionPolicy,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Pruned, StoreError> {
        let policy = policy.clone();
        let batch = policy.batch;
        let cutoff = i64::try_from(cutoff_ms).unwrap_or(i64::MAX);
        let candidates: Vec<i64> = self
            .on_reader(ReadLane::Devices, move |r| {
                r.with(|c| {
                    let sql = format!(
                        "SELECT m.cursor FROM messages m WHERE {} ORDER BY m.cursor LIMIT ?3",
                        prunable_sql(&policy)
                    );
                    let mut stmt = c.prepare_cached(&sql)?;
                    let args = prunable_args(&policy, cutoff, &[i64::try_from(batch).unwrap_or(i64::MAX)]);
                    stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))?.collect()
                })
            })
            .await?;
        if candidates.is_empty() {
            return Ok(Pruned::default());
        }
        let found = candidates.len();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Prune { cutoff: cutoff_ms, candidates, at: now_ms, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let removed = rx.await.unwrap_or(Err(StoreError::Closed))?;
        Ok(Pruned { removed, more: found >= batch && removed > 0 })
    }

    /// What retention removed so far, and the oldest message held.
    pub fn retention_stats(&self) -> RetentionStats {
        let g = &self.gauges;
        let opt = |v: u64| (v > 0).then_some(v);
        RetentionStats {
            pruned_by_age: g.pruned_age.load(Ordering::Relaxed),
            pruned_by_quota: g.pruned_quota.load(Ordering::Relaxed),
            last_prune_at: opt(g.last_prune.load(Ordering::Relaxed)),
            oldest_held_at: opt(g.oldest_at.load(Ordering::Relaxed)),
            pruned_through: g.pruned_through.load(Ordering::Relaxed),
        }
    }

    /// The newest stamp retention removed from `room`, if it removed any.
    pub async fn pruned_floor(&self, room: RoomId) -> Result<Option<Hlc>, StoreError> {
        self.read_with(move |c| {
            use rusqlite::OptionalExtension;
            let h: Option<i64> = c
                .prepare_cached("SELECT pruned_hlc FROM retention_rooms WHERE room = ?1")?
                .query_row([room.as_str()], |r| r.get(0))
                .optional()?;
            Ok(h.map(|h| Hlc(u64::try_from(h).unwrap_or(0))))
        })
        .await
    }

    /// Messages of `room` stamped before `before_hlc`, oldest first, at most `limit` and
    /// about `max_bytes` of bodies, and whether older ones remain.
    pub async fn history_before_hlc(
        &self,
        room: RoomId,
        before_hlc: Hlc,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<Positioned>, bool), StoreError> {
        self.on_reader(ReadLane::Devices, move |r| r.history_before_hlc(&room, before_hlc, limit, max_bytes)).await
    }

    /// Puts `room` under legal hold (nothing of it is pruned or deleted until released);
    /// answers whether it was not held before. Audited by the caller.
    pub async fn hold(&self, room: RoomId, actor: String, reason: String, at: u64) -> Result<bool, StoreError> {
        self.exec(move |c| {
            Ok(c.prepare_cached("INSERT OR IGNORE INTO holds (room, at, actor, reason) VALUES (?1, ?2, ?3, ?4)")?
                .execute(rusqlite::params![room.as_str(), i64::try_from(at).unwrap_or(i64::MAX), actor, reason])?
                > 0)
        })
        .await
    }

    /// Releases a hold; answers whether there was one.
    pub async fn release(&self, room: RoomId) -> Result<bool, StoreError> {
        self.exec(move |c| Ok(c.prepare_cached("DELETE FROM holds WHERE room = ?1")?.execute([room.as_str()])? > 0))
            .await
    }

    /// Rooms under hold, with when and by whom.
    pub async fn holds(&self) -> Result<Vec<(RoomId, u64, String)>, StoreError> {
        self.read_with(|c| {
            let mut stmt = c.prepare_cached("SELECT room, at, actor FROM holds ORDER BY room")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (room, at, actor) = row?;
                if let Ok(room) = RoomId::new(room) {
                    out.push((room, u64::try_from(at).unwrap_or(0), actor));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Why an audited deletion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("room {room} is under legal hold; release it first (outpost-cloud release)")]
    Held { room: String },
    #[error(transparent)]
    Open(#[from] crate::OpenError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Opens the database at `path` for a one-shot command (created and migrated if needed)
/// with a busy timeout long enough to wait for a running server's writer.
fn open_offline(path: &std::path::Path) -> Result<rusqlite::Connection, crate::OpenError> {
    let open_err = |source| crate::OpenError::Open { path: path.to_path_buf(), source };
    let mut conn = crate::connect(path, rusqlite::OpenFlags::default()).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(120)).map_err(open_err)?;
    crate::schema::migrate(&mut conn, &crate::new_epoch())?;
    Ok(conn)
}

/// For `outpost-cloud hold` / `release`: puts `room` under legal hold (`on`) or releases
/// it, with its audit row in the same transaction; answers whether anything changed.
pub fn hold_offline(
    path: &std::path::Path,
    room: &RoomId,
    on: bool,
    actor: &str,
    reason: &str,
    at: u64,
) -> Result<bool, EraseError> {
    let mut conn = open_offline(path)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let at_sql = i64::try_from(at).unwrap_or(i64::MAX);
    let changed = if on {
        tx.execute(
            "INSERT OR IGNORE INTO holds (room, at, actor, reason) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![room.as_str(), at_sql, actor, reason],
        )?
    } else {
        tx.execute("DELETE FROM holds WHERE room = ?1", [room.as_str()])?
    } > 0;
    if changed {
        let event = outpost_storage::AuditEvent::hold(room.as_str(), on, reason, actor);
        crate::security::insert_audit(&tx, at, &event)?;
    }
    tx.commit()?;
    Ok(changed)
}

/// Messages an audited deletion removes per transaction (a running server's writer
/// waits at most one such transaction).
const ERASE_BATCH: i64 = 1000;

/// For `outpost-cloud delete`: erases every message of `room` received before
/// `before_ms`, with their receipts and media references, and records who did it and how
/// many in the audit log. Refused while the room is under legal hold (checked in every
/// transaction, so a hold placed meanwhile stops it). `secure_delete` overwrites the
/// freed content in the database file, and the WAL is checkpointed and truncated at the
/// end so no copy of the old pages stays there either (when a running server's readers
/// keep the checkpoint from completing, the next one overwrites them). Returns how many
/// messages were erased.
pub fn delete_offline(
    path: &std::path::Path,
    room: &RoomId,
    before_ms: u64,
    actor: &str,
    at: u64,
) -> Result<usize, EraseError> {
    let mut conn = open_offline(path)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
    let mut erased = 0usize;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM holds WHERE room = ?1)", [room.as_str()], |r| r.get(0))?;
        if held {
            return Err(EraseError::Held { room: room.to_string() });
        }
        let gone: Vec<(i64, Vec<u8>)> = {
            let mut stmt = tx.prepare(
                "DELETE FROM messages WHERE cursor IN
                   (SELECT cursor FROM messages WHERE room = ?1 AND at < ?2 ORDER BY cursor LIMIT ?3)
                 RETURNING cursor, id",
            )?;
            stmt.query_map(rusqlite::params![room.as_str(), before, ERASE_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (cursor, id) in &gone {
            tx.execute("DELETE FROM receipts WHERE msg_id = ?1", [id])?;
            tx.execute("DELETE FROM media_refs WHERE cursor = ?1", [cursor])?;
        }
        // Positions erased are never handed out again (see the writer's start-up).
        if let Some(max) = gone.iter().map(|(c, _)| *c).max() {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('retention.pruned_through', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                [max.to_string()],
            )?;
        }
        erased += gone.len();
        let last = (gone.len() as i64) < ERASE_BATCH;
        if last {
            let detail =
                format!("erased {erased} messages of room {room} received before {before_ms} (ms since epoch)");
            let event = outpost_storage::AuditEvent::new(outpost_storage::AuditKind::Deletion, detail)
                .actor(actor)
                .room(room.as_str());
            crate::security::insert_audit(&tx, at, &event)?;
        }
        tx.commit()?;
        if last {
            break;
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "the WAL could not be truncated now; the next checkpoint overwrites it");
    }
    Ok(erased)
}

/// The condition a message `m` must meet to be removed; `?1` is the receive-time cutoff
/// (ms), `?2` the confirming peer (hub mode only).
pub(crate) fn prunable_sql(policy: &RetentionPolicy) -> String {
    let confirmed = match &policy.confirm_peer {
        // A hub: its cloud holds everything of ours up to its acknowledged mark, and
        // everything it sent us.
        Some(_) => {
            "(m.origin_peer IS NOT NULL
                     OR m.cursor <= coalesce((SELECT sent_hwm FROM peers WHERE peer = ?2), 0))"
        }
        // A cloud: every hub serving the room holds it (or sent it).
        None => {
            "NOT EXISTS (SELECT 1 FROM peer_rooms pr JOIN peers p ON p.peer = pr.peer
                              WHERE pr.room = m.room AND m.cursor > p.sent_hwm
                                AND coalesce(m.origin_peer, '') <> pr.peer)"
        }
    };
    let blob_peer = match &policy.confirm_peer {
        Some(_) => "AND NOT EXISTS (SELECT 1 FROM blob_peers bp WHERE bp.sha256 = x.sha256 AND bp.peer = ?2)",
        None => "AND 0",
    };
    // A patient's record is derived from its edits (outpost_shared::record), so they are
    // never pruned: a record must read the same offline years later.
    format!(
        "m.at < ?1 AND {confirmed}
         AND m.kind <> 'record.edit'
         AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.room = m.room)
         AND (m.priority < 3 OR EXISTS (SELECT 1 FROM receipts r
                                         WHERE r.msg_id = m.id AND r.state IN ('delivered', 'read')))
         AND NOT EXISTS (SELECT 1 FROM receipts r JOIN peers p ON p.peer = r.msg_peer
                          WHERE r.msg_id = m.id AND r.cursor > p.sent_hwm
                            AND coalesce(r.origin_peer, '') <> r.msg_peer)
         AND NOT EXISTS (SELECT 1 FROM media_refs x JOIN blobs b ON b.sha256 = x.sha256
                          WHERE x.cursor = m.cursor AND m.origin_peer IS NULL AND b.evicted IS NULL {blob_peer})"
    )
}

/// The statement's arguments for [`prunable_sql`], then `extra`.
pub(crate) fn prunable_args(policy: &RetentionPolicy, cutoff: i64, extra: &[i64]) -> Vec<rusqlite::types::Value> {
    let mut args: Vec<rusqlite::types::Value> = vec![cutoff.into()];
    match &policy.confirm_peer {
        Some(p) => args.push(p.clone().into()),
        None => args.push(rusqlite::types::Value::Null),
    }
    args.extend(extra.iter().map(|v| rusqlite::types::Value::from(*v)));
    args
}
