//! Media metadata in PostgreSQL: `outpost-storage`'s `MediaStore`, with the SQLite store's
//! rules (store-sqlite/src/media.rs); the bytes are in the database too (bytes.rs). These writes touch no log cursor, so they commit on
//! pooled connections of their own instead of queueing behind the log's writer.

use std::future::Future;
use std::path::Path;

use outpost_shared::media::BlobId;
use outpost_shared::{Cursor, RoomId, UserId};
use outpost_storage::{
    BlobRecord, BlobSource, BytesError, CompleteBlob, MediaStore, MediaUsage, PendingUpload, RetentionBasis, StoreError,
};
use tokio_postgres::types::ToSql;

use crate::reader::ReadLane;
use crate::{PgBytes, PgStore, db, from_sql, to_sql};

fn blob_id(bytes: &[u8]) -> Option<BlobId> {
    <[u8; 32]>::try_from(bytes).ok().map(BlobId)
}

impl PgStore {
    pub(crate) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let (_permit, c) = self.reader(ReadLane::Devices).await?;
        let stmt = c.prepare_cached(sql).await.map_err(db)?;
        c.query(&stmt, params).await.map_err(db)
    }

    async fn write(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), StoreError> {
        self.write_count(sql, params).await.map(drop)
    }

    /// Runs one statement in a transaction of its own; answers the rows it changed.
    pub(crate) async fn write_count(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.shared.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
        let stmt = c.prepare_cached(sql).await.map_err(db)?;
        c.execute(&stmt, params).await.map_err(db)
    }
}

impl MediaStore for PgStore {
    type Bytes = PgBytes;

    fn blob_bytes(&self, _place: &Path) -> Result<PgBytes, BytesError> {
        Ok(PgBytes::new(self.shared.clone()))
    }

    async fn blob(&self, blob: BlobId) -> Result<Option<BlobRecord>, StoreError> {
        let rows = self
            .rows("SELECT size, mime, width, height, evicted FROM blobs WHERE sha256 = $1", &[&blob.0.as_slice()])
            .await?;
        let Some(r) = rows.first() else { return Ok(None) };
        let (w, h): (Option<i32>, Option<i32>) = (r.get(2), r.get(3));
        let peers = self
            .rows("SELECT peer FROM blob_peers WHERE sha256 = $1 ORDER BY peer", &[&blob.0.as_slice()])
            .await?
            .iter()
            .map(|p| p.get(0))
            .collect();
        Ok(Some(BlobRecord {
            size: from_sql(r.get(0)),
            mime: r.get(1),
            preview: w
                .zip(h)
                .map(|(w, h)| (u32::try_from(w).unwrap_or_default(), u32::try_from(h).unwrap_or_default())),
            evicted: r.get::<_, Option<i64>>(4).is_some(),
            peers,
        }))
    }

    async fn blob_preview(&self, blob: BlobId) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.rows("SELECT preview FROM blobs WHERE sha256 = $1", &[&blob.0.as_slice()]).await?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    fn blob_uploaded_by(&self, blob: BlobId, user: &UserId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let user = user.as_str().to_owned();
        async move {
            let rows = self
                .rows("SELECT 1 FROM blob_owners WHERE sha256 = $1 AND user_id = $2", &[&blob.0.as_slice(), &user])
                .await?;
            Ok(!rows.is_empty())
        }
    }

    async fn blob_rooms(&self, blob: BlobId) -> Result<Vec<RoomId>, StoreError> {
        let rows = self.rows("SELECT DISTINCT room FROM media_refs WHERE sha256 = $1", &[&blob.0.as_slice()]).await?;
        Ok(rows.iter().filter_map(|r| RoomId::new(r.get::<_, String>(0)).ok()).collect())
    }

    async fn upload_owners(&self, blob: BlobId) -> Result<Vec<String>, StoreError> {
        let rows = self.rows("SELECT owner FROM uploads WHERE sha256 = $1", &[&blob.0.as_slice()]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn upload_size(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        let owner = owner.to_owned();
        async move {
            let rows = self
                .rows("SELECT size FROM uploads WHERE owner = $1 AND sha256 = $2", &[&owner, &blob.0.as_slice()])
                .await?;
            Ok(rows.first().map(|r| from_sql(r.get(0))))
        }
    }

    fn upload_begin(
        &self,
        owner: &str,
        blob: BlobId,
        size: u64,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let owner = owner.to_owned();
        async move {
            self.write(
                "INSERT INTO uploads (owner, sha256, size, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&owner, &blob.0.as_slice(), &to_sql(size), &to_sql(at)],
            )
            .await
        }
    }

    fn upload_discard(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<(), StoreError>> + Send {
        let owner = owner.to_owned();
        async move {
            self.write("DELETE FROM uploads WHERE owner = $1 AND sha256 = $2", &[&owner, &blob.0.as_slice()]).await
        }
    }

    async fn uploads(&self) -> Result<Vec<PendingUpload>, StoreError> {
        let rows = self.rows("SELECT owner, sha256, size FROM uploads", &[]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some(PendingUpload { owner: r.get(0), blob: blob_id(r.get(1))?, size: from_sql(r.get(2)) }))
            .collect())
    }

    fn media_usage(&self, owner: &str, user: &UserId) -> impl Future<Output = Result<MediaUsage, StoreError>> + Send {
        let (owner, user) = (owner.to_owned(), user.as_str().to_owned());
        async move {
            let pending = self
                .rows("SELECT count(*), coalesce(sum(size), 0)::bigint FROM uploads WHERE owner = $1", &[&owner])
                .await?;
            let owned = self
                .rows(
                    "SELECT coalesce(sum(b.size), 0)::bigint FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256
                     WHERE o.user_id = $1 AND b.evicted IS NULL",
                    &[&user],
                )
                .await?;
            let (n, bytes): (i64, i64) = pending.first().map_or((0, 0), |r| (r.get(0), r.get(1)));
            let owned: i64 = owned.first().map_or(0, |r| r.get(0));
            Ok(MediaUsage { pending_uploads: from_sql(n), bytes: from_sql(bytes) + from_sql(owned) })
        }
    }

    async fn blob_complete(&self, b: CompleteBlob) -> Result<(), StoreError> {
        let mut c = self.shared.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
        let tx = c.transaction().await.map_err(db)?;
        let (data, w, h) = match b.preview {
            Some((d, w, h)) => (Some(d), i32::try_from(w).ok(), i32::try_from(h).ok()),
            None => (None, None, None),
        };
        let origin = match &b.source {
            BlobSource::Peer(p) => Some(p.clone()),
            BlobSource::User(_) => None,
        };
        let at = to_sql(b.at);
        tx.execute(
            "INSERT INTO blobs (sha256, size, mime, preview, width, height, origin, created)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sha256) DO UPDATE SET evicted = NULL,
               created = CASE WHEN blobs.evicted IS NULL THEN blobs.created ELSE excluded.created END",
            &[&b.blob.0.as_slice(), &to_sql(b.size), &b.mime, &data, &w, &h, &origin, &at],
        )
        .await
        .map_err(db)?;
        tx.execute("DELETE FROM uploads WHERE owner = $1 AND sha256 = $2", &[&b.upload_owner, &b.blob.0.as_slice()])
            .await
            .map_err(db)?;
        let sha = b.blob.0.as_slice();
        let (sql, who) = match &b.source {
            BlobSource::User(u) => {
                ("INSERT INTO blob_owners (sha256, user_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", u.as_str())
            }
            // The sender holds it as of now (as in the SQLite store: a file fetched back
            // after retention starts a new retention period).
            BlobSource::Peer(p) => (
                "INSERT INTO blob_peers (sha256, peer, at) VALUES ($1, $2, $3)
                 ON CONFLICT (sha256, peer) DO UPDATE SET at = greatest(blob_peers.at, excluded.at)",
                p.as_str(),
            ),
        };
        tx.execute(sql, &[&sha, &who, &at]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    fn blob_confirmed(&self, blob: BlobId, peer: &str, at: u64) -> impl Future<Output = Result<(), StoreError>> + Send {
        let peer = peer.to_owned();
        async move {
            self.write(
                "INSERT INTO blob_peers (sha256, peer, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&blob.0.as_slice(), &peer, &to_sql(at)],
            )
            .await
        }
    }

    fn next_blob_for(
        &self,
        peer: &str,
        rooms: Option<Vec<RoomId>>,
    ) -> impl Future<Output = Result<Option<(BlobId, u64)>, StoreError>> + Send {
        let peer = peer.to_owned();
        async move {
            let rooms: Option<Vec<String>> = rooms.map(|r| r.iter().map(|x| x.as_str().to_owned()).collect());
            let rows = self
                .rows(
                    "SELECT r.sha256, b.size FROM media_refs r JOIN blobs b ON b.sha256 = r.sha256
                     WHERE r.cursor <= coalesce((SELECT sent_hwm FROM peers WHERE peer = $1), 0)
                       AND b.evicted IS NULL
                       AND ($2::text[] IS NULL OR r.room = ANY($2))
                       AND ($2::text[] IS NULL OR r.cursor > coalesce((SELECT own_until FROM peers WHERE peer = $1), 0))
                       AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = r.sha256 AND p.peer = $1)
                     ORDER BY r.cursor LIMIT 1",
                    &[&peer, &rooms],
                )
                .await?;
            Ok(rows.first().and_then(|r| Some((blob_id(r.get(0))?, from_sql(r.get(1))))))
        }
    }

    async fn blobs_named_through(
        &self,
        peer: &str,
        through: Cursor,
        limit: u32,
    ) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT r.sha256, min(b.size) FROM media_refs r JOIN blobs b ON b.sha256 = r.sha256
                  WHERE r.cursor <= $1 AND b.evicted IS NULL
                    AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = r.sha256 AND p.peer = $2)
                  GROUP BY r.sha256 ORDER BY min(r.cursor) LIMIT $3",
                &[&crate::to_sql(through.0), &peer, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().filter_map(|r| Some((blob_id(r.get(0))?, from_sql(r.get(1))))).collect())
    }

    async fn blob_for_peer(&self, blob: BlobId, rooms: Option<Vec<RoomId>>) -> Result<Option<u64>, StoreError> {
        let rooms: Option<Vec<String>> = rooms.map(|r| r.iter().map(|x| x.as_str().to_owned()).collect());
        let rows = self
            .rows(
                "SELECT b.size FROM blobs b WHERE b.sha256 = $1 AND b.evicted IS NULL
                   AND EXISTS (SELECT 1 FROM media_refs r WHERE r.sha256 = b.sha256
                                 AND ($2::text[] IS NULL OR r.room = ANY($2)))",
                &[&blob.0.as_slice(), &rooms],
            )
            .await?;
        Ok(rows.first().map(|r| from_sql(r.get(0))))
    }

    async fn blobs_retained_since(&self, basis: RetentionBasis, before: u64) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let sql = match basis {
            RetentionBasis::PeerConfirmed => {
                "SELECT b.sha256, b.size FROM blobs b WHERE b.evicted IS NULL
                   AND (SELECT min(p.at) FROM blob_peers p WHERE p.sha256 = b.sha256) < $1"
            }
            RetentionBasis::Received => "SELECT sha256, size FROM blobs WHERE evicted IS NULL AND created < $1",
        };
        let rows = self.rows(sql, &[&to_sql(before)]).await?;
        Ok(rows.iter().filter_map(|r| Some((blob_id(r.get(0))?, from_sql(r.get(1))))).collect())
    }

    async fn blob_evicted(&self, blob: BlobId, at: u64) -> Result<(), StoreError> {
        self.write("UPDATE blobs SET evicted = $2 WHERE sha256 = $1", &[&blob.0.as_slice(), &to_sql(at)]).await
    }
}
