//! The audit log and the token revocation list, in the same database as the log.
//!
//! Both are written by the writer thread in the group commit (an audit row for a login
//! costs no extra fsync) or, for the one-shot commands (`outpost-cloud revoke`, `token`,
//! `enroll-relay`), straight into the database file — WAL lets them commit beside a
//! running server. A running server notices a new revocation by polling `max(seq)` of the
//! revocation table (see [`super::Store::watch_revocations`]), whichever process wrote it.

use std::path::Path;

use outpost_shared::{Revocation, RevocationList};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{AuditEvent, AuditRecord, OpenError, StoreError, connect, schema};

fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn insert_audit(conn: &Connection, at: u64, e: &AuditEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, event, actor, role, device, peer, room, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![to_sql(at), e.kind.as_str(), e.actor, e.role, e.device, e.peer, e.room, e.detail])?;
    Ok(())
}

/// Records `r` unless the table already holds it or a stronger entry; returns whether
/// anything changed (then an audit row is due).
pub(super) fn upsert_revocation(conn: &Connection, r: &Revocation) -> rusqlite::Result<bool> {
    let (kind, value) = r.key();
    let existing: Option<i64> = conn
        .prepare_cached("SELECT issued_before FROM revocations WHERE kind = ?1 AND value = ?2")?
        .query_row(params![kind, value], |row| row.get(0))
        .optional()?;
    match existing {
        // A token entry is final; a user entry only moves forward in time.
        Some(_) if kind == "token" => return Ok(false),
        Some(before) if from_sql(before) >= r.issued_before() => return Ok(false),
        Some(_) => {
            // Replaced by delete + insert so the entry gets a new, larger `seq`.
            conn.prepare_cached("DELETE FROM revocations WHERE kind = ?1 AND value = ?2")?
                .execute(params![kind, value])?;
        }
        None => {}
    }
    conn.prepare_cached(
        "INSERT INTO revocations (kind, value, issued_before, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![kind, value, to_sql(r.issued_before()), r.reason, to_sql(r.at)])?;
    Ok(true)
}

/// The revocation list and its mark (max `seq`; changes whenever the list does).
pub(super) fn load_revocations(conn: &Connection) -> rusqlite::Result<(u64, RevocationList)> {
    let mark = revocation_mark(conn)?;
    let mut stmt = conn.prepare_cached("SELECT kind, value, issued_before, reason, at FROM revocations")?;
    let rows = stmt.query_map([], |r| {
        Ok(Revocation::from_key(
            &r.get::<_, String>(0)?,
            r.get(1)?,
            from_sql(r.get(2)?),
            r.get(3)?,
            from_sql(r.get(4)?),
        ))
    })?;
    let mut entries = Vec::new();
    for r in rows {
        entries.extend(r?);
    }
    Ok((mark, RevocationList::new(entries)))
}

pub(super) fn revocation_mark(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM revocations", [], |r| r.get(0)).map(from_sql)
}

/// Audit events after `after`, oldest first, and whether more follow.
pub(super) fn audit_page(conn: &Connection, after: u64, limit: u32) -> rusqlite::Result<(Vec<AuditRecord>, bool)> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, event, actor, role, device, peer, room, detail FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_sql(after), i64::from(limit) + 1], |r| {
        Ok(AuditRecord {
            seq: from_sql(r.get(0)?),
            at: from_sql(r.get(1)?),
            event: r.get(2)?,
            actor: r.get(3)?,
            role: r.get(4)?,
            device: r.get(5)?,
            peer: r.get(6)?,
            room: r.get(7)?,
            detail: r.get(8)?,
        })
    })?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// For one-shot commands: records revocations (each with its audit row) and further audit
/// events in one transaction, straight into the database at `path` (created and migrated
/// if needed; a running server picks the revocations up within its poll interval).
/// Returns how many revocations were new.
pub fn record_offline(
    path: &Path,
    revocations: &[Revocation],
    events: &[AuditEvent],
    actor: &str,
    at: u64,
) -> Result<usize, OpenError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| OpenError::Dir { path: parent.to_path_buf(), source })?;
    }
    let open_err = |source| OpenError::Open { path: path.to_path_buf(), source };
    let mut conn = connect(path, OpenFlags::default()).map_err(open_err)?;
    // A command may wait: a script issuing hundreds of tokens at once queues them all on
    // the database's write lock, and SQLite's busy handler is not fair, so the default
    // 5 s is not enough for the last in line.
    conn.busy_timeout(std::time::Duration::from_secs(120)).map_err(open_err)?;
    schema::migrate(&mut conn, &super::new_epoch())?;
    // IMMEDIATE: a running server's writer may hold the lock; waiting for it (busy
    // timeout) works only if we ask for the write lock up front, not upgrade a read.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(open_err)?;
    let mut fresh = 0;
    for r in revocations {
        if upsert_revocation(&tx, r).map_err(open_err)? {
            fresh += 1;
            insert_audit(&tx, at, &AuditEvent::revocation(r, actor)).map_err(open_err)?;
        }
    }
    for e in events {
        insert_audit(&tx, at, e).map_err(open_err)?;
    }
    tx.commit().map_err(open_err)?;
    Ok(fresh)
}

/// Reads the audit log of the database at `path` (for `outpost-relay audit`).
pub fn read_offline(path: &Path, after: u64, limit: u32) -> Result<(Vec<AuditRecord>, bool), StoreError> {
    let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(audit_page(&conn, after, limit)?)
}
