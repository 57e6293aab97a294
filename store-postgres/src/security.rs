//! The audit log and the revocation list: the SQL shared by the writer and the one-shot
//! commands (`outpost-cloud revoke`, `token`, `enroll-relay`, `audit`), which write
//! straight into the database while nodes run. Commands take the `log_head` lock like a
//! node's writer, so audit and revocation sequence numbers follow commit order too (a
//! reader paging by `seq` never skips a row that committed late).

use outpost_shared::Revocation;
use outpost_storage::{AuditEvent, AuditRecord, StoreError};
use tokio_postgres::{Statement, Transaction};

use crate::{OpenError, connect, db, describe, from_sql, parse_url, schema, to_sql};

pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit (at, event, actor, role, device, peer, room, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) async fn insert_audit(
    tx: &Transaction<'_>,
    stmt: &Statement,
    at: u64,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    tx.execute(stmt, &[&to_sql(at), &e.kind.as_str(), &e.actor, &e.role, &e.device, &e.peer, &e.room, &e.detail])
        .await
        .map_err(db)?;
    Ok(())
}

/// Records `r` unless the table already holds it or a stronger entry; returns whether
/// anything changed (then an audit row is due).
pub(crate) async fn upsert_revocation(tx: &Transaction<'_>, r: &Revocation) -> Result<bool, StoreError> {
    let (kind, value) = r.key();
    let existing = tx
        .query_opt("SELECT issued_before FROM revocations WHERE kind = $1 AND value = $2", &[&kind, &value])
        .await
        .map_err(db)?
        .map(|row| from_sql(row.get(0)));
    match existing {
        // A token entry is final; a user entry only moves forward in time.
        Some(_) if kind == "token" => return Ok(false),
        Some(before) if before >= r.issued_before() => return Ok(false),
        Some(_) => {
            // Replaced so the entry gets a new, larger `seq` (nodes watch max(seq)).
            tx.execute("DELETE FROM revocations WHERE kind = $1 AND value = $2", &[&kind, &value]).await.map_err(db)?;
        }
        None => {}
    }
    tx.execute(
        "INSERT INTO revocations (kind, value, issued_before, reason, at) VALUES ($1, $2, $3, $4, $5)",
        &[&kind, &value, &to_sql(r.issued_before()), &r.reason, &to_sql(r.at)],
    )
    .await
    .map_err(db)?;
    Ok(true)
}

/// For one-shot commands: records revocations (each with its audit row) and further audit
/// events in one transaction in the database at `url` (migrated if needed; running nodes
/// pick the revocations up within their poll interval). Returns how many were new.
pub async fn record_offline(
    url: &str,
    revocations: &[Revocation],
    events: &[AuditEvent],
    actor: &str,
    at: u64,
) -> Result<usize, OpenError> {
    let cfg = parse_url(url)?;
    let mut client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: describe(&cfg), source })?;
    schema::migrate(&mut client, &uuid::Uuid::new_v4().to_string()).await?;
    let write = async {
        let tx = client.transaction().await.map_err(db)?;
        tx.query_one("SELECT head FROM log_head FOR UPDATE", &[]).await.map_err(db)?;
        let insert = tx.prepare(INSERT_AUDIT).await.map_err(db)?;
        let mut fresh = 0;
        for r in revocations {
            if upsert_revocation(&tx, r).await? {
                fresh += 1;
                insert_audit(&tx, &insert, at, &AuditEvent::revocation(r, actor)).await?;
            }
        }
        for e in events {
            insert_audit(&tx, &insert, at, e).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok::<_, StoreError>(fresh)
    };
    write.await.map_err(OpenError::Write)
}

/// Reads a page of the audit log of the database at `url` (for `outpost-cloud audit`).
pub async fn read_offline(url: &str, after: u64, limit: u32) -> Result<(Vec<AuditRecord>, bool), OpenError> {
    let cfg = parse_url(url)?;
    let client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: describe(&cfg), source })?;
    crate::reader::audit_page(&client, after, limit).await.map_err(OpenError::Write)
}
