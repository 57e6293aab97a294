//! Retention, legal hold and audited deletion on a cloud whose nodes share PostgreSQL:
//! the same rules as the SQLite cloud's (`outpost_store_sqlite::retention`, and
//! docs/operations.md, "Retention").
//!
//! - **Retention** (`storage.retain_days`, 0 by default: keep everything): a message older
//!   than that goes only once every hub serving its room holds it (or sent it), the
//!   receipts about it that must travel have travelled, an emergency was delivered, and its
//!   room is not under legal hold. Any node may run it: each batch is one short
//!   transaction whose `DELETE` re-checks every condition, so two nodes pruning at once only
//!   find less to do.
//! - **Legal hold** (`outpost-cloud hold` / `release`): a room on hold is never pruned or
//!   deleted. Recorded in the audit log.
//! - **Deletion** (`outpost-cloud delete`): erases a room's messages received before a
//!   date, with their receipts and media references, in batches, refused under hold, and
//!   recorded in the audit log. PostgreSQL has no `secure_delete`: a `DELETE` leaves the
//!   old row versions in the table's files until `VACUUM` makes their space reusable and
//!   later writes overwrite it. The command runs `VACUUM` on the tables it touched, and
//!   with `--vacuum-full` rewrites them (`VACUUM FULL`: the old files are removed, but the
//!   tables are locked while it runs). Copies in the WAL archive, replicas and backups
//!   remain until those expire (docs/operations.md says what to do about them).
//!
//! Log positions are never reused here: `log_head` only grows.

use outpost_shared::RoomId;
use outpost_storage::{AuditEvent, AuditKind, StoreError};
use tokio_postgres::Client;

use crate::security::{INSERT_AUDIT, insert_audit};
use crate::{OpenError, PgStore, connect, db, describe, parse_url, schema, to_sql};

/// Messages one transaction removes at most (a deletion or a retention batch).
pub const ERASE_BATCH: i64 = 1000;

/// Why a hold or a deletion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("room {room} is under legal hold; release it first (outpost-cloud release)")]
    Held { room: String },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("database error: {0}")]
    Store(#[from] StoreError),
}

/// What a message `m` must meet to be removed by retention; `$1` is the receive-time cutoff.
/// Record edits are never removed: a patient's record is derived from them.
const PRUNABLE: &str = "m.at < $1
    AND m.kind <> 'record.edit'
    AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.room = m.room)
    AND NOT EXISTS (SELECT 1 FROM peer_rooms pr JOIN peers p ON p.peer = pr.peer
                     WHERE pr.room = m.room AND m.cursor > p.sent_hwm
                       AND coalesce(m.origin_peer, '') <> pr.peer)
    AND (m.priority < 3 OR EXISTS (SELECT 1 FROM receipts r
                                    WHERE r.msg_id = m.id AND r.state IN ('delivered', 'read')))
    AND NOT EXISTS (SELECT 1 FROM receipts r JOIN peers p ON p.peer = r.msg_peer
                     WHERE r.msg_id = m.id AND r.cursor > p.sent_hwm
                       AND coalesce(r.origin_peer, '') <> r.msg_peer)";

async fn open(url: &str) -> Result<Client, OpenError> {
    let cfg = parse_url(url)?;
    let mut client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: describe(&cfg), source })?;
    schema::migrate(&mut client, &uuid::Uuid::new_v4().to_string()).await?;
    Ok(client)
}

/// Removes the receipts and media references of the messages just deleted (`ids`,
/// `cursors`), and the previews of blobs no message names any more.
async fn remove_dependents(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &[Vec<u8>],
    cursors: &[i64],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM receipts WHERE msg_id = ANY($1)", &[&ids]).await.map_err(db)?;
    let shas: Vec<Vec<u8>> = tx
        .query("DELETE FROM media_refs WHERE cursor = ANY($1) RETURNING sha256", &[&cursors])
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !shas.is_empty() {
        // The preview travels in the messages that name the blob: with the last gone,
        // nothing here shows it.
        tx.execute(
            "UPDATE blobs b SET preview = NULL WHERE b.sha256 = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM media_refs x WHERE x.sha256 = b.sha256)",
            &[&shas],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

impl PgStore {
    /// Removes one batch of messages received before `cutoff_ms` that retention may remove
    /// (see the module docs). Returns how many went; fewer than `batch` means nothing
    /// more qualifies now.
    pub async fn prune_aged(&self, cutoff_ms: u64, batch: i64) -> Result<usize, StoreError> {
        let mut c = self.shared.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
        let tx = c.transaction().await.map_err(db)?;
        let sql = format!(
            "DELETE FROM messages WHERE cursor IN
               (SELECT m.cursor FROM messages m WHERE {PRUNABLE} ORDER BY m.cursor LIMIT $2)
             RETURNING cursor, id"
        );
        let rows = tx.query(&sql, &[&to_sql(cutoff_ms), &batch]).await.map_err(db)?;
        let cursors: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
        remove_dependents(&tx, &ids, &cursors).await?;
        tx.commit().await.map_err(db)?;
        Ok(cursors.len())
    }
}

/// For `outpost-cloud hold` / `release` on PostgreSQL: puts `room` under legal hold (`on`)
/// or releases it, with its audit row in the same transaction; answers whether anything
/// changed.
pub async fn hold_offline(
    url: &str,
    room: &RoomId,
    on: bool,
    actor: &str,
    reason: &str,
    at: u64,
) -> Result<bool, EraseError> {
    let mut client = open(url).await?;
    let tx = client.transaction().await.map_err(db)?;
    let changed = if on {
        tx.execute(
            "INSERT INTO holds (room, at, actor, reason) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&room.as_str(), &to_sql(at), &actor, &reason],
        )
        .await
    } else {
        tx.execute("DELETE FROM holds WHERE room = $1", &[&room.as_str()]).await
    }
    .map_err(db)?
        > 0;
    if changed {
        let stmt = tx.prepare(INSERT_AUDIT).await.map_err(db)?;
        insert_audit(&tx, &stmt, at, &AuditEvent::hold(room.as_str(), on, reason, actor)).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(changed)
}

/// For `outpost-cloud delete` on PostgreSQL: erases every message of `room` received
/// before `before_ms`, with its receipts and media references, [`ERASE_BATCH`] per
/// transaction, each re-checking the hold (a hold placed meanwhile stops it); records who
/// and how many in the audit log; then `VACUUM`s the tables (`VACUUM FULL` with
/// `vacuum_full`). Returns how many messages were erased.
pub async fn delete_offline(
    url: &str,
    room: &RoomId,
    before_ms: u64,
    actor: &str,
    at: u64,
    vacuum_full: bool,
) -> Result<usize, EraseError> {
    let mut client = open(url).await?;
    let mut erased = 0usize;
    loop {
        let tx = client.transaction().await.map_err(db)?;
        // Shares the row with `hold` (which inserts it): a hold committed before this
        // check stops the deletion; one placed after waits for this batch.
        let held = tx
            .query_opt("SELECT 1 FROM holds WHERE room = $1 FOR SHARE", &[&room.as_str()])
            .await
            .map_err(db)?
            .is_some();
        if held {
            return Err(EraseError::Held { room: room.to_string() });
        }
        let rows = tx
            .query(
                "DELETE FROM messages WHERE cursor IN
                   (SELECT cursor FROM messages WHERE room = $1 AND at < $2 ORDER BY cursor LIMIT $3)
                 RETURNING cursor, id",
                &[&room.as_str(), &to_sql(before_ms), &ERASE_BATCH],
            )
            .await
            .map_err(db)?;
        let cursors: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
        remove_dependents(&tx, &ids, &cursors).await?;
        erased += cursors.len();
        let last = (cursors.len() as i64) < ERASE_BATCH;
        if last {
            let detail = format!(
                "erased {erased} messages of room {room} received before {before_ms} (ms since epoch){}",
                if vacuum_full { "; tables rewritten (VACUUM FULL)" } else { "" }
            );
            let stmt = tx.prepare(INSERT_AUDIT).await.map_err(db)?;
            let event = AuditEvent::new(AuditKind::Deletion, detail).actor(actor).room(room.as_str());
            insert_audit(&tx, &stmt, at, &event).await?;
        }
        tx.commit().await.map_err(db)?;
        if last {
            break;
        }
    }
    let vacuum = if vacuum_full { "VACUUM (FULL, ANALYZE)" } else { "VACUUM (ANALYZE)" };
    client.batch_execute(&format!("{vacuum} messages, receipts, media_refs")).await.map_err(db)?;
    Ok(erased)
}
