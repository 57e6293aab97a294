//! Media metadata in SQLite (`blobs`, `uploads`, `blob_owners`, `blob_peers`,
//! `media_refs`; schema.rs): `outpost-storage`'s `MediaStore`. Writes go through the
//! writer thread like everything else (so they share its group commit and its one-writer
//! rule); reads use the reader pool. The bytes are files beside the database (files.rs).

use std::future::Future;
use std::path::Path;

use outpost_shared::media::BlobId;
use outpost_shared::{Cursor, RoomId, UserId};
use outpost_storage::{
    BlobRecord, BlobSource, BytesError, CompleteBlob, MediaStore, MediaUsage, PendingUpload, RetentionBasis, StoreError,
};
use rusqlite::{OptionalExtension, params};

use crate::{FileBytes, Store};

fn sql_u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn blob_id(bytes: &[u8]) -> Option<BlobId> {
    <[u8; 32]>::try_from(bytes).ok().map(BlobId)
}

impl MediaStore for Store {
    type Bytes = FileBytes;

    fn blob_bytes(&self, place: &Path) -> Result<FileBytes, BytesError> {
        let root = place.parent().unwrap_or(Path::new(".")).join("media");
        Ok(FileBytes::open(root, self.clone())?)
    }

    fn blob(&self, blob: BlobId) -> impl Future<Output = Result<Option<BlobRecord>, StoreError>> + Send {
        self.read_with(move |c| {
            let row = c
                .prepare_cached("SELECT size, mime, width, height, evicted FROM blobs WHERE sha256 = ?1")?
                .query_row([blob.0.as_slice()], |r| {
                    let (w, h): (Option<i64>, Option<i64>) = (r.get(2)?, r.get(3)?);
                    Ok(BlobRecord {
                        size: sql_u(r.get(0)?),
                        mime: r.get(1)?,
                        preview: w
                            .zip(h)
                            .map(|(w, h)| (u32::try_from(w).unwrap_or_default(), u32::try_from(h).unwrap_or_default())),
                        evicted: r.get::<_, Option<i64>>(4)?.is_some(),
                        peers: Vec::new(),
                    })
                })
                .optional()?;
            let Some(mut record) = row else { return Ok(None) };
            let mut stmt = c.prepare_cached("SELECT peer FROM blob_peers WHERE sha256 = ?1 ORDER BY peer")?;
            record.peers = stmt.query_map([blob.0.as_slice()], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(Some(record))
        })
    }

    fn blob_preview(&self, blob: BlobId) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        self.read_with(move |c| {
            c.prepare_cached("SELECT preview FROM blobs WHERE sha256 = ?1")?
                .query_row([blob.0.as_slice()], |r| r.get::<_, Option<Vec<u8>>>(0))
                .optional()
                .map(Option::flatten)
        })
    }

    fn blob_uploaded_by(&self, blob: BlobId, user: &UserId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let user = user.as_str().to_owned();
        self.read_with(move |c| {
            Ok(c.prepare_cached("SELECT 1 FROM blob_owners WHERE sha256 = ?1 AND user = ?2")?
                .query_row(params![blob.0.as_slice(), user], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    fn blob_rooms(&self, blob: BlobId) -> impl Future<Output = Result<Vec<RoomId>, StoreError>> + Send {
        self.read_with(move |c| {
            let mut stmt = c.prepare_cached("SELECT DISTINCT room FROM media_refs WHERE sha256 = ?1")?;
            let rooms = stmt.query_map([blob.0.as_slice()], |r| r.get::<_, String>(0))?;
            // A room name that no longer parses names no room anyone may read.
            Ok(rooms.filter_map(|r| r.ok().and_then(|r| RoomId::new(r).ok())).collect())
        })
    }

    fn upload_owners(&self, blob: BlobId) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        self.read_with(move |c| {
            let mut stmt = c.prepare_cached("SELECT owner FROM uploads WHERE sha256 = ?1")?;
            stmt.query_map([blob.0.as_slice()], |r| r.get(0))?.collect()
        })
    }

    fn upload_size(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        let owner = owner.to_owned();
        self.read_with(move |c| {
            c.prepare_cached("SELECT size FROM uploads WHERE owner = ?1 AND sha256 = ?2")?
                .query_row(params![owner, blob.0.as_slice()], |r| r.get::<_, i64>(0))
                .optional()
                .map(|v| v.map(sql_u))
        })
    }

    fn upload_begin(
        &self,
        owner: &str,
        blob: BlobId,
        size: u64,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let owner = owner.to_owned();
        self.exec(move |c| {
            c.prepare_cached("INSERT OR IGNORE INTO uploads (owner, sha256, size, created) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![owner, blob.0.as_slice(), sql_i(size), sql_i(at)])?;
            Ok(())
        })
    }

    fn upload_discard(&self, owner: &str, blob: BlobId) -> impl Future<Output = Result<(), StoreError>> + Send {
        let owner = owner.to_owned();
        self.exec(move |c| {
            c.prepare_cached("DELETE FROM uploads WHERE owner = ?1 AND sha256 = ?2")?
                .execute(params![owner, blob.0.as_slice()])?;
            Ok(())
        })
    }

    fn uploads(&self) -> impl Future<Output = Result<Vec<PendingUpload>, StoreError>> + Send {
        self.read_with(|c| {
            let mut stmt = c.prepare_cached("SELECT owner, sha256, size FROM uploads")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (owner, sha, size) = row?;
                if let Some(blob) = blob_id(&sha) {
                    out.push(PendingUpload { owner, blob, size: sql_u(size) });
                }
            }
            Ok(out)
        })
    }

    fn media_usage(&self, owner: &str, user: &UserId) -> impl Future<Output = Result<MediaUsage, StoreError>> + Send {
        let (owner, user) = (owner.to_owned(), user.as_str().to_owned());
        self.read_with(move |c| {
            let (n, pending): (i64, i64) = c
                .prepare_cached("SELECT count(*), coalesce(sum(size), 0) FROM uploads WHERE owner = ?1")?
                .query_row([&owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let owned: i64 = c
                .prepare_cached(
                    "SELECT coalesce(sum(b.size), 0) FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256
                     WHERE o.user = ?1 AND b.evicted IS NULL",
                )?
                .query_row([&user], |r| r.get(0))?;
            Ok(MediaUsage { pending_uploads: sql_u(n), bytes: sql_u(pending) + sql_u(owned) })
        })
    }

    fn blob_complete(&self, b: CompleteBlob) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.exec(move |c| {
            let (data, w, h) = match b.preview {
                Some((d, w, h)) => (Some(d), Some(w), Some(h)),
                None => (None, None, None),
            };
            let origin = match &b.source {
                BlobSource::Peer(p) => Some(p.clone()),
                BlobSource::User(_) => None,
            };
            let at = sql_i(b.at);
            // A blob arriving again after retention removed its bytes is whole again, and
            // its retention clock restarts with this arrival.
            c.prepare_cached(
                "INSERT INTO blobs (sha256, size, mime, preview, width, height, origin, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (sha256) DO UPDATE SET evicted = NULL,
                   created = CASE WHEN blobs.evicted IS NULL THEN blobs.created ELSE excluded.created END",
            )?
            .execute(params![b.blob.0.as_slice(), sql_i(b.size), b.mime, data, w, h, origin, at])?;
            c.prepare_cached("DELETE FROM uploads WHERE owner = ?1 AND sha256 = ?2")?
                .execute(params![b.upload_owner, b.blob.0.as_slice()])?;
            match &b.source {
                BlobSource::User(u) => c
                    .prepare_cached("INSERT OR IGNORE INTO blob_owners (sha256, user, at) VALUES (?1, ?2, ?3)")?
                    .execute(params![b.blob.0.as_slice(), u.as_str(), at])?,
                // The peer that sent it holds it as of now: a file fetched back after
                // retention removed it stays here another retention period (with the old
                // confirmation time the next sweep would remove it again at once).
                BlobSource::Peer(p) => c
                    .prepare_cached(
                        "INSERT INTO blob_peers (sha256, peer, at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (sha256, peer) DO UPDATE SET at = max(blob_peers.at, excluded.at)",
                    )?
                    .execute(params![b.blob.0.as_slice(), p, at])?,
            };
            Ok(())
        })
    }

    fn blob_confirmed(&self, blob: BlobId, peer: &str, at: u64) -> impl Future<Output = Result<(), StoreError>> + Send {
        let peer = peer.to_owned();
        self.exec(move |c| {
            c.prepare_cached("INSERT OR IGNORE INTO blob_peers (sha256, peer, at) VALUES (?1, ?2, ?3)")?
                .execute(params![blob.0.as_slice(), peer, sql_i(at)])?;
            Ok(())
        })
    }

    fn next_blob_for(
        &self,
        peer: &str,
        rooms: Option<Vec<RoomId>>,
    ) -> impl Future<Output = Result<Option<(BlobId, u64)>, StoreError>> + Send {
        let peer = peer.to_owned();
        self.read_with(move |c| {
            let hwm: i64 = c
                .prepare_cached("SELECT sent_hwm FROM peers WHERE peer = ?1")?
                .query_row([&peer], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            // A hub being rebuilt gets the files of the history it lost on demand
            // (`blob_for_peer`), not all at once: only files named after its return go
            // eagerly. Our own history goes to a rebuilt cloud in full (rooms: None).
            let eager_after: i64 = match rooms {
                None => 0,
                Some(_) => c
                    .prepare_cached("SELECT own_until FROM peers WHERE peer = ?1")?
                    .query_row([&peer], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
            };
            let mut stmt = c.prepare_cached(
                "SELECT r.sha256, b.size, r.room FROM media_refs r JOIN blobs b ON b.sha256 = r.sha256
                 WHERE r.cursor <= ?1 AND r.cursor > ?3 AND b.evicted IS NULL
                   AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = r.sha256 AND p.peer = ?2)
                 ORDER BY r.cursor",
            )?;
            let mut rows = stmt.query(params![hwm, peer, eager_after])?;
            while let Some(r) = rows.next()? {
                let room: String = r.get(2)?;
                if let Some(rooms) = &rooms
                    && !rooms.iter().any(|x| x.as_str() == room)
                {
                    continue;
                }
                let sha: Vec<u8> = r.get(0)?;
                if let Some(blob) = blob_id(&sha) {
                    return Ok(Some((blob, sql_u(r.get(1)?))));
                }
            }
            Ok(None)
        })
    }

    fn blobs_named_through(
        &self,
        peer: &str,
        through: Cursor,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(BlobId, u64)>, StoreError>> + Send {
        let peer = peer.to_owned();
        self.read_with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.sha256, b.size FROM media_refs r JOIN blobs b ON b.sha256 = r.sha256
                  WHERE r.cursor <= ?1 AND b.evicted IS NULL
                    AND NOT EXISTS (SELECT 1 FROM blob_peers p WHERE p.sha256 = r.sha256 AND p.peer = ?2)
                  GROUP BY r.sha256 ORDER BY min(r.cursor) LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![i64::try_from(through.0).unwrap_or(i64::MAX), peer, i64::from(limit)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let sha: Vec<u8> = r.get(0)?;
                if let Some(blob) = blob_id(&sha) {
                    out.push((blob, sql_u(r.get(1)?)));
                }
            }
            Ok(out)
        })
    }

    fn blob_for_peer(
        &self,
        blob: BlobId,
        rooms: Option<Vec<RoomId>>,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        self.read_with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT b.size, r.room FROM blobs b JOIN media_refs r ON r.sha256 = b.sha256
                 WHERE b.sha256 = ?1 AND b.evicted IS NULL",
            )?;
            let mut rows = stmt.query([blob.0.as_slice()])?;
            while let Some(r) = rows.next()? {
                let room: String = r.get(1)?;
                if rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|x| x.as_str() == room)) {
                    return Ok(Some(sql_u(r.get(0)?)));
                }
            }
            Ok(None)
        })
    }

    fn blobs_retained_since(
        &self,
        basis: RetentionBasis,
        before: u64,
    ) -> impl Future<Output = Result<Vec<(BlobId, u64)>, StoreError>> + Send {
        self.read_with(move |c| {
            let mut stmt = c.prepare_cached(match basis {
                // min() over no confirmation is NULL, never < ?1: unconfirmed blobs stay.
                RetentionBasis::PeerConfirmed => {
                    "SELECT b.sha256, b.size FROM blobs b WHERE b.evicted IS NULL
                       AND (SELECT min(p.at) FROM blob_peers p WHERE p.sha256 = b.sha256) < ?1"
                }
                RetentionBasis::Received => "SELECT sha256, size FROM blobs WHERE evicted IS NULL AND created < ?1",
            })?;
            let rows = stmt.query_map([sql_i(before)], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (sha, size) = row?;
                if let Some(blob) = blob_id(&sha) {
                    out.push((blob, sql_u(size)));
                }
            }
            Ok(out)
        })
    }

    fn blob_evicted(&self, blob: BlobId, at: u64) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.exec(move |c| {
            c.prepare_cached("UPDATE blobs SET evicted = ?2 WHERE sha256 = ?1")?
                .execute(params![blob.0.as_slice(), sql_i(at)])?;
            Ok(())
        })
    }
}
