//! Blob bytes in PostgreSQL: `outpost-storage`'s `BlobBytes`, so that every cloud node
//! serves every blob and resumes every upload, whichever node received the bytes.
//!
//! The bytes are rows of `blob_chunks` (schema version 3), at most
//! [`crate::PgOptions::blob_chunk_bytes`] each, keyed by holder, blob and position:
//!
//! ```text
//! holder ''          a complete blob (its size in `blob_data`)
//! holder OWNER       an unfinished upload (its committed length in `partial_data`)
//! holder ~STAGE      a chunk being written, invisible until its commit (`blob_stages`)
//! ```
//! A chunk is streamed into rows under a stage of its own as it arrives, each row in a
//! statement of its own, so neither a large chunk nor a slow client holds memory, a
//! pooled connection or a lock. Its commit is one short transaction: lock the upload's
//! `partial_data` row, check that the upload is still at the chunk's offset, move the
//! stage's rows to the upload (an UPDATE of the holder: PostgreSQL keeps the unchanged
//! out-of-line data) and advance the length. Two nodes appending to one upload therefore
//! serialise on that row, and the second learns the new length; an append is idempotent
//! by offset. Completing an upload moves its rows to the complete blob the same way;
//! bytes already held under that name are kept and the upload's dropped.
//!
//! `data` is stored uncompressed out of line (`STORAGE EXTERNAL`): photos and voice notes
//! are compressed already, and a range read (HTTP `Range`, the bulk lane's `read_at`)
//! then fetches only the slices it needs. Commits are durable before they return
//! (`synchronous_commit` raised to `on` where the server has `off`). The bytes count
//! against the quota with the database's size; nothing is added by hand.

use std::sync::Arc;

use deadpool_postgres::Transaction;
use outpost_shared::media::BlobId;
use outpost_storage::{BlobAppend, BlobBytes, BytesError, StoreError};
use sha2::Digest as _;

use crate::{Shared, db, from_sql, now_ms, to_sql};

/// Rows read at once when a whole upload is hashed (at most this many chunks in memory).
const DIGEST_PAGE: i64 = 8;

/// The holder of a complete blob's rows.
const COMPLETE: &str = "";

fn pg(e: tokio_postgres::Error) -> BytesError {
    BytesError::Store(db(e))
}

/// A database connection from the node's pool.
type Conn = deadpool_postgres::Object;

/// The blob bytes of one node's database. Cheap to clone.
#[derive(Clone)]
pub struct PgBytes {
    shared: Arc<Shared>,
    /// Most bytes in one row.
    chunk: usize,
}

impl std::fmt::Debug for PgBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBytes").field("chunk", &self.chunk).finish_non_exhaustive()
    }
}

impl PgBytes {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let chunk = shared.opts.blob_chunk_bytes.max(1);
        Self { shared, chunk }
    }

    async fn conn(&self) -> Result<Conn, BytesError> {
        self.shared.pool.get().await.map_err(|e| BytesError::Store(StoreError::Database(e.to_string())))
    }

    /// Runs one statement on its own; answers the rows it changed.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, BytesError> {
        let c = self.conn().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg)?;
        c.execute(&stmt, params).await.map_err(pg)
    }

    /// The committed length of an upload, if there is one.
    async fn committed(&self, owner: &str, blob: BlobId) -> Result<Option<u64>, BytesError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT length FROM partial_data WHERE owner = $1 AND sha256 = $2",
                &[&owner, &blob.0.as_slice()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| from_sql(r.get(0))))
    }

    /// Drops a stage and the rows written under it.
    async fn drop_stage(&self, stage: &str) -> Result<(), BytesError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM blob_chunks WHERE holder = $1", &[&stage]).await.map_err(pg)?;
        tx.execute("DELETE FROM blob_stages WHERE stage = $1", &[&stage]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}

/// Begins a transaction whose commit is durable when it returns: a server configured with
/// `synchronous_commit = off` is overridden for it (a stronger level is kept).
async fn durable(c: &mut Conn) -> Result<Transaction<'_>, BytesError> {
    let tx = c.transaction().await.map_err(pg)?;
    tx.execute(
        "SELECT set_config('synchronous_commit', 'on', true) WHERE current_setting('synchronous_commit') = 'off'",
        &[],
    )
    .await
    .map_err(pg)?;
    Ok(tx)
}

/// The committed length of an upload, its row locked until the transaction ends.
async fn lock_partial(tx: &Transaction<'_>, owner: &str, blob: BlobId) -> Result<Option<u64>, BytesError> {
    let row = tx
        .query_opt(
            "SELECT length FROM partial_data WHERE owner = $1 AND sha256 = $2 FOR UPDATE",
            &[&owner, &blob.0.as_slice()],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|r| from_sql(r.get(0))))
}

impl BlobBytes for PgBytes {
    type Append = PgAppend;

    async fn partial_len(&self, owner: &str, blob: BlobId) -> Result<u64, BytesError> {
        Ok(self.committed(owner, blob).await?.unwrap_or(0))
    }

    async fn partial_create(&self, owner: &str, blob: BlobId) -> Result<(), BytesError> {
        let mut c = self.conn().await?;
        let tx = durable(&mut c).await?;
        tx.execute(
            "INSERT INTO partial_data (owner, sha256, length, touched) VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
            &[&owner, &blob.0.as_slice(), &to_sql(now_ms())],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn append(&self, owner: &str, blob: BlobId, offset: u64) -> Result<PgAppend, BytesError> {
        let have = self.committed(owner, blob).await?;
        if have.unwrap_or(0) != offset {
            return Err(BytesError::Offset(have.unwrap_or(0)));
        }
        if have.is_none() {
            // An upload not created yet has length 0 and is created by its first chunk, as
            // a file is (one whose metadata was written and whose bytes never were).
            self.partial_create(owner, blob).await?;
        }
        let stage = format!("~{}", uuid::Uuid::new_v4());
        self.execute(
            "INSERT INTO blob_stages (stage, owner, sha256, started) VALUES ($1, $2, $3, $4)",
            &[&stage, &owner, &blob.0.as_slice(), &to_sql(now_ms())],
        )
        .await?;
        Ok(PgAppend {
            bytes: self.clone(),
            owner: owner.to_owned(),
            blob,
            start: offset,
            stage,
            buf: Vec::new(),
            flushed: 0,
        })
    }

    async fn partial_touched(&self, owner: &str, blob: BlobId) -> Result<Option<u64>, BytesError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT touched FROM partial_data WHERE owner = $1 AND sha256 = $2",
                &[&owner, &blob.0.as_slice()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| from_sql(r.get(0))))
    }

    async fn partial_digest(&self, owner: &str, blob: BlobId, head: usize) -> Result<([u8; 32], Vec<u8>), BytesError> {
        let c = self.conn().await?;
        let sha = blob.0.as_slice();
        let row = c
            .query_opt("SELECT length FROM partial_data WHERE owner = $1 AND sha256 = $2", &[&owner, &sha])
            .await
            .map_err(pg)?;
        let length = row.map(|r| r.get::<_, i64>(0)).ok_or(BytesError::Missing)?;
        let page = c
            .prepare_cached(
                "SELECT pos, data FROM blob_chunks WHERE holder = $1 AND sha256 = $2 AND pos >= $3 AND pos < $4
                 ORDER BY pos LIMIT $5",
            )
            .await
            .map_err(pg)?;
        let mut hasher = sha2::Sha256::new();
        let mut first = Vec::new();
        let mut at = 0i64;
        while at < length {
            let rows = c.query(&page, &[&owner, &sha, &at, &length, &DIGEST_PAGE]).await.map_err(pg)?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let (pos, data): (i64, &[u8]) = (r.get(0), r.get(1));
                if pos != at {
                    return Err(BytesError::Io(format!("upload {blob} of {owner} lacks bytes {at}..{pos}")));
                }
                let keep = &data[..data.len().min(usize::try_from(length - at).unwrap_or(usize::MAX))];
                if first.len() < head {
                    first.extend_from_slice(&keep[..keep.len().min(head - first.len())]);
                }
                hasher.update(keep);
                at += i64::try_from(keep.len()).unwrap_or(i64::MAX);
            }
        }
        if at != length {
            return Err(BytesError::Io(format!("upload {blob} of {owner} holds {at} of its {length} bytes")));
        }
        Ok((hasher.finalize().into(), first))
    }

    async fn partial_remove(&self, owner: &str, blob: BlobId) -> Result<bool, BytesError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let sha = blob.0.as_slice();
        let n = tx
            .execute("DELETE FROM partial_data WHERE owner = $1 AND sha256 = $2", &[&owner, &sha])
            .await
            .map_err(pg)?;
        tx.execute("DELETE FROM blob_chunks WHERE holder = $1 AND sha256 = $2", &[&owner, &sha]).await.map_err(pg)?;
        // Chunks still being written to it (on any node) lose their stage: their commits
        // find the upload gone.
        tx.execute(
            "DELETE FROM blob_chunks WHERE holder IN (SELECT stage FROM blob_stages WHERE owner = $1 AND sha256 = $2)",
            &[&owner, &sha],
        )
        .await
        .map_err(pg)?;
        tx.execute("DELETE FROM blob_stages WHERE owner = $1 AND sha256 = $2", &[&owner, &sha]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn promote(&self, owner: &str, blob: BlobId, size: u64) -> Result<bool, BytesError> {
        let mut c = self.conn().await?;
        let tx = durable(&mut c).await?;
        let sha = blob.0.as_slice();
        match lock_partial(&tx, owner, blob).await? {
            None => return Err(BytesError::Missing),
            Some(length) if length != size => return Err(BytesError::Offset(length)),
            Some(_) => {}
        }
        // Two nodes completing the same blob at once: the second waits on the key, then
        // finds it and keeps the first one's bytes.
        let fresh = tx
            .execute(
                "INSERT INTO blob_data (sha256, size, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&sha, &to_sql(size), &to_sql(now_ms())],
            )
            .await
            .map_err(pg)?
            == 1;
        if fresh {
            tx.execute(
                "UPDATE blob_chunks SET holder = $3 WHERE holder = $1 AND sha256 = $2 AND pos < $4",
                &[&owner, &sha, &COMPLETE, &to_sql(size)],
            )
            .await
            .map_err(pg)?;
        }
        tx.execute("DELETE FROM blob_chunks WHERE holder = $1 AND sha256 = $2", &[&owner, &sha]).await.map_err(pg)?;
        tx.execute("DELETE FROM partial_data WHERE owner = $1 AND sha256 = $2", &[&owner, &sha]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(fresh)
    }

    async fn read_at(&self, blob: BlobId, offset: u64, len: usize) -> Result<Vec<u8>, BytesError> {
        let c = self.conn().await?;
        let sha = blob.0.as_slice();
        let row = c.query_opt("SELECT size FROM blob_data WHERE sha256 = $1", &[&sha]).await.map_err(pg)?;
        let size = row.map(|r| from_sql(r.get(0))).ok_or(BytesError::Missing)?;
        // One read returns at most what a bytea may hold.
        let len = u64::try_from(len).unwrap_or(u64::MAX).min(i32::MAX as u64);
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let (start, stop) = (to_sql(offset), to_sql(end));
        // The row holding `start` (the last one at or before it), then every row up to
        // `stop`, each cut to the range: only those slices of the data are read.
        let rows = c
            .query(
                "SELECT pos, substring(data FROM (greatest($2 - pos, 0) + 1)::int FOR ($3 - greatest($2, pos))::int)
                 FROM blob_chunks
                 WHERE holder = $4 AND sha256 = $1 AND pos < $3
                   AND pos >= (SELECT coalesce(max(pos), 0) FROM blob_chunks
                               WHERE holder = $4 AND sha256 = $1 AND pos <= $2)
                 ORDER BY pos",
                &[&sha, &start, &stop, &COMPLETE],
            )
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for r in rows {
            let (pos, piece): (i64, &[u8]) = (r.get(0), r.get(1));
            let at = start + i64::try_from(out.len()).unwrap_or(i64::MAX);
            if pos.max(start) != at {
                return Err(BytesError::Io(format!("blob {blob} lacks bytes from {at}")));
            }
            out.extend_from_slice(piece);
        }
        if out.len() as u64 != end - offset {
            return Err(BytesError::Io(format!("blob {blob} holds {} of bytes {offset}..{end}", out.len())));
        }
        Ok(out)
    }

    async fn remove(&self, blob: BlobId) -> Result<bool, BytesError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let sha = blob.0.as_slice();
        let n = tx.execute("DELETE FROM blob_data WHERE sha256 = $1", &[&sha]).await.map_err(pg)?;
        tx.execute("DELETE FROM blob_chunks WHERE holder = $1 AND sha256 = $2", &[&COMPLETE, &sha])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn used(&self) -> Result<u64, BytesError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT (SELECT coalesce(sum(size), 0) FROM blob_data)::bigint
                      + (SELECT coalesce(sum(length), 0) FROM partial_data)::bigint",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(from_sql(row.get(0)))
    }

    async fn sweep(&self, before: u64) -> Result<usize, BytesError> {
        let c = self.conn().await?;
        let stale =
            c.query("SELECT stage FROM blob_stages WHERE started < $1", &[&to_sql(before)]).await.map_err(pg)?;
        drop(c);
        for r in &stale {
            self.drop_stage(r.get(0)).await?;
        }
        Ok(stale.len())
    }
}

/// A chunk streamed into rows under its own stage until its commit.
pub struct PgAppend {
    bytes: PgBytes,
    owner: String,
    blob: BlobId,
    /// The upload's length when the chunk began (where its bytes go).
    start: u64,
    stage: String,
    /// Bytes not yet in a row (less than one row's worth).
    buf: Vec<u8>,
    /// Bytes already in rows.
    flushed: u64,
}

impl std::fmt::Debug for PgAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAppend").field("stage", &self.stage).field("start", &self.start).finish_non_exhaustive()
    }
}

impl PgAppend {
    /// Writes what is buffered as one row.
    async fn flush(&mut self) -> Result<(), BytesError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let pos = to_sql(self.start + self.flushed);
        self.bytes
            .execute(
                "INSERT INTO blob_chunks (holder, sha256, pos, data) VALUES ($1, $2, $3, $4)",
                &[&self.stage, &self.blob.0.as_slice(), &pos, &self.buf.as_slice()],
            )
            .await?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The commit's transaction: the chunk joins the upload if it is still at `start`.
    async fn join(&self) -> Result<u64, BytesError> {
        let mut c = self.bytes.conn().await?;
        let tx = durable(&mut c).await?;
        let (owner, sha) = (self.owner.as_str(), self.blob.0.as_slice());
        let length = lock_partial(&tx, owner, self.blob).await?.ok_or(BytesError::Missing)?;
        if length != self.start {
            return Err(BytesError::Offset(length));
        }
        let staged = tx.execute("DELETE FROM blob_stages WHERE stage = $1", &[&self.stage]).await.map_err(pg)?;
        if staged == 0 {
            // Swept as interrupted: its rows may be gone; the sender goes on from `length`.
            return Err(BytesError::Offset(length));
        }
        let moved: i64 = tx
            .query_one(
                "WITH moved AS (
                     UPDATE blob_chunks SET holder = $1 WHERE holder = $3 AND sha256 = $2 RETURNING octet_length(data) AS n)
                 SELECT coalesce(sum(n), 0)::bigint FROM moved",
                &[&owner, &sha, &self.stage],
            )
            .await
            .map_err(pg)?
            .get(0);
        if from_sql(moved) != self.flushed {
            return Err(BytesError::Io(format!(
                "a chunk of upload {} lost rows before its commit ({moved} of {} bytes)",
                self.blob, self.flushed
            )));
        }
        let new = self.start + self.flushed;
        tx.execute(
            "UPDATE partial_data SET length = $3, touched = $4 WHERE owner = $1 AND sha256 = $2",
            &[&owner, &sha, &to_sql(new), &to_sql(now_ms())],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }
}

impl BlobAppend for PgAppend {
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), BytesError> {
        let row = self.bytes.chunk;
        while !bytes.is_empty() {
            let take = (row - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() >= row {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<u64, BytesError> {
        self.flush().await?;
        let joined = self.join().await;
        if joined.is_err() {
            // Refused (or failed): its rows go now rather than at the next sweep.
            let _ = self.bytes.drop_stage(&self.stage).await;
        }
        joined
    }

    async fn abort(self) -> Result<(), BytesError> {
        self.bytes.drop_stage(&self.stage).await
    }
}
