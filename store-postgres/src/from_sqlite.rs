//! `outpost-cloud migrate`: moves a cloud's SQLite database into PostgreSQL.
//!
//! Everything is copied as it is — cursors, the epoch, what each hub holds and has sent
//! (`peers`), devices' acknowledged marks, read marks, the audit log and revocations with
//! their sequence numbers, media metadata, and the media files themselves (complete blobs
//! and unfinished uploads, into `blob_chunks`) — in one transaction, so hubs and doctors
//! carry on from where they were without a resync or a resend, and a migration that fails
//! leaves the target as it was. The target must hold no log yet; the cloud must be stopped
//! meanwhile (the SQLite file is opened read-only, and a write after the copy would be
//! left behind).
//!
//! A media file is copied only when the database names it (a blob not evicted, an
//! unfinished upload), and a blob only when its bytes hash to its name and have its
//! recorded size; what is not copied is listed in [`MovedMedia::left`], and such a blob
//! is recorded as evicted (it may be uploaded again). Files no row names (left by a crash
//! between a file's removal and its row's) stay behind unlisted.

use std::io::Read as _;
use std::path::Path;

use outpost_shared::media::BlobId;
use sha2::Digest as _;

use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use crate::{OpenError, connect, describe, parse_url, schema};

/// The SQLite schema version this copies from (store-sqlite's current one). Version 7's
/// `delegation` is a hub's (a cloud holds none); of version 8, `holds` moves and
/// `retention_rooms` does not (it guides a hub's history requests to its cloud; a cloud
/// asks no one); version 9 adds only an index (`messages_queue`, made by this schema too).
const SQLITE_VERSION: i64 = 9;
/// Rows per INSERT.
const CHUNK: usize = 5000;

/// A column's type in transit.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    Text,
    Bytes,
}

/// One table: its name in both databases, and (SQLite column, PostgreSQL column, type).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str, Ty)],
}

use Ty::{Bytes, Int, Text};

const TABLES: &[Table] = &[
    Table {
        name: "messages",
        columns: &[
            ("cursor", "cursor", Int),
            ("id", "id", Bytes),
            ("room", "room", Text),
            ("kind", "kind", Text),
            ("priority", "priority", Int),
            ("body", "body", Text),
            ("seq", "seq", Int),
            ("reply_to", "reply_to", Bytes),
            ("sender", "sender", Text),
            ("device", "device", Text),
            ("hlc", "hlc", Int),
            ("at", "at", Int),
            ("origin_peer", "origin_peer", Text),
        ],
    },
    Table {
        name: "receipts",
        columns: &[
            ("cursor", "cursor", Int),
            ("msg_id", "msg_id", Bytes),
            ("state", "state", Text),
            ("by_user", "by_user", Text),
            ("target", "target", Text),
            ("room", "room", Text),
            ("at", "at", Int),
            ("origin_peer", "origin_peer", Text),
            ("msg_peer", "msg_peer", Text),
        ],
    },
    Table {
        name: "device_cursors",
        columns: &[
            ("user", "user_id", Text),
            ("device", "device", Text),
            ("acked", "acked", Int),
            ("updated", "updated", Int),
        ],
    },
    Table {
        name: "read_marks",
        columns: &[("user", "user_id", Text), ("room", "room", Text), ("cursor", "cursor", Int)],
    },
    Table { name: "rooms", columns: &[("room", "room", Text)] },
    Table {
        name: "peers",
        columns: &[
            ("peer", "peer", Text),
            ("epoch", "epoch", Text),
            ("sent_hwm", "sent_hwm", Int),
            ("recv_hwm", "recv_hwm", Int),
            ("last_contact", "last_contact", Int),
            ("own_until", "own_until", Int),
        ],
    },
    Table { name: "peer_rooms", columns: &[("peer", "peer", Text), ("room", "room", Text)] },
    // Legal holds move with the cloud: retention and `delete` honour them on PostgreSQL too.
    Table {
        name: "holds",
        columns: &[("room", "room", Text), ("at", "at", Int), ("actor", "actor", Text), ("reason", "reason", Text)],
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", "seq", Int),
            ("at", "at", Int),
            ("event", "event", Text),
            ("actor", "actor", Text),
            ("role", "role", Text),
            ("device", "device", Text),
            ("peer", "peer", Text),
            ("room", "room", Text),
            ("detail", "detail", Text),
        ],
    },
    Table {
        name: "revocations",
        columns: &[
            ("seq", "seq", Int),
            ("kind", "kind", Text),
            ("value", "value", Text),
            ("issued_before", "issued_before", Int),
            ("reason", "reason", Text),
            ("at", "at", Int),
        ],
    },
    Table {
        name: "blobs",
        columns: &[
            ("sha256", "sha256", Bytes),
            ("size", "size", Int),
            ("mime", "mime", Text),
            ("preview", "preview", Bytes),
            ("width", "width", Int),
            ("height", "height", Int),
            ("origin", "origin", Text),
            ("created", "created", Int),
            ("evicted", "evicted", Int),
        ],
    },
    Table {
        name: "blob_owners",
        columns: &[("sha256", "sha256", Bytes), ("user", "user_id", Text), ("at", "at", Int)],
    },
    Table {
        name: "uploads",
        columns: &[
            ("owner", "owner", Text),
            ("sha256", "sha256", Bytes),
            ("size", "size", Int),
            ("created", "created", Int),
        ],
    },
    Table {
        name: "media_refs",
        columns: &[("cursor", "cursor", Int), ("sha256", "sha256", Bytes), ("room", "room", Text)],
    },
    Table { name: "blob_peers", columns: &[("sha256", "sha256", Bytes), ("peer", "peer", Text), ("at", "at", Int)] },
    Table {
        name: "hooks",
        columns: &[
            ("name", "name", Text),
            ("position", "position", Int),
            ("holder", "holder", Text),
            ("lease_until", "lease_until", Int),
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error(
        "{path} is at schema version {found}; this build moves version {SQLITE_VERSION}: start the SQLite cloud once with this build (it upgrades its database), stop it, then migrate"
    )]
    Version { path: String, found: i64 },
    #[error("the PostgreSQL database already holds a log ({0} messages); migrate only into a new, empty database")]
    NotEmpty(i64),
    #[error("copying {table} failed: {source}")]
    Copy { table: &'static str, source: tokio_postgres::Error },
}

/// What was moved, per table, and of the media files.
#[derive(Debug, Default)]
pub struct Moved {
    pub epoch: String,
    pub head: u64,
    pub rows: Vec<(&'static str, usize)>,
    pub media: MovedMedia,
}

/// The media files moved into the database.
#[derive(Debug, Default)]
pub struct MovedMedia {
    /// Complete blobs, and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Unfinished uploads (resumable after the move), and the bytes they had received.
    pub uploads: usize,
    pub upload_bytes: u64,
    /// Files the database names that were not copied, each with the reason.
    pub left: Vec<String>,
}

/// Copies the SQLite database at `sqlite` and the media files under `media` (the
/// directory holding `blobs/` and `partial/`, beside the database) into the PostgreSQL
/// database at `url`, the bytes in rows of at most `chunk` bytes
/// ([`crate::PgOptions::blob_chunk_bytes`]).
pub async fn move_sqlite(sqlite: &Path, media: &Path, url: &str, chunk: usize) -> Result<Moved, MoveError> {
    let path = sqlite.display().to_string();
    let lite = |source| MoveError::Sqlite { path: path.clone(), source };
    let src =
        rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(lite)?;
    let found: i64 = src.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(lite)?;
    if found != SQLITE_VERSION {
        return Err(MoveError::Version { path, found });
    }
    let epoch: String = src.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0)).map_err(lite)?;

    let cfg = parse_url(url)?;
    let mut client = connect(&cfg).await.map_err(|source| OpenError::Connect { target: describe(&cfg), source })?;
    schema::migrate(&mut client, &epoch).await.map_err(OpenError::from)?;
    let copy = |table| move |source| MoveError::Copy { table, source };
    let tx = client.transaction().await.map_err(copy("log_head"))?;
    // Nodes started too early wait here rather than write beside the copy.
    tx.query_one("SELECT head FROM log_head FOR UPDATE", &[]).await.map_err(copy("log_head"))?;
    let held: i64 = tx.query_one("SELECT count(*) FROM messages", &[]).await.map_err(copy("messages"))?.get(0);
    if held > 0 {
        return Err(MoveError::NotEmpty(held));
    }
    let mut moved = Moved { epoch: epoch.clone(), ..Moved::default() };
    for t in TABLES {
        let n = copy_table(&src, &tx, t).await.map_err(|e| match e {
            Either::Lite(source) => MoveError::Sqlite { path: path.clone(), source },
            Either::Pg(source) => MoveError::Copy { table: t.name, source },
        })?;
        moved.rows.push((t.name, n));
    }
    moved.media = copy_media(&src, &tx, media, chunk.max(1)).await.map_err(|e| match e {
        Either::Lite(source) => MoveError::Sqlite { path: path.clone(), source },
        Either::Pg(source) => MoveError::Copy { table: "blob_chunks", source },
    })?;
    // The epoch is the SQLite cloud's: devices and hubs resume within it.
    tx.execute("UPDATE meta SET value = $1 WHERE key = 'epoch'", &[&epoch]).await.map_err(copy("meta"))?;
    let head: i64 = tx
        .query_one(
            "UPDATE log_head SET head = greatest(
                 (SELECT coalesce(max(cursor), 0) FROM messages), (SELECT coalesce(max(cursor), 0) FROM receipts))
             RETURNING head",
            &[],
        )
        .await
        .map_err(copy("log_head"))?
        .get(0);
    for table in ["audit", "revocations"] {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'seq'), (SELECT coalesce(max(seq), 0) + 1 FROM {table}), false)"
        );
        tx.execute(&sql, &[]).await.map_err(copy(table))?;
    }
    tx.commit().await.map_err(copy("commit"))?;
    moved.head = u64::try_from(head).unwrap_or(0);
    Ok(moved)
}

enum Either {
    Lite(rusqlite::Error),
    Pg(tokio_postgres::Error),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the files of complete blobs and unfinished uploads the database names.
async fn copy_media(
    src: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    dir: &Path,
    chunk: usize,
) -> Result<MovedMedia, Either> {
    let mut out = MovedMedia::default();
    let now = crate::to_sql(crate::now_ms());
    let blobs: Vec<(Vec<u8>, i64)> = src
        .prepare("SELECT sha256, size FROM blobs WHERE evicted IS NULL ORDER BY sha256")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(Either::Lite)?;
    for (sha, size) in blobs {
        let Ok(id) = <[u8; 32]>::try_from(sha.as_slice()).map(BlobId) else { continue };
        let name = id.hex();
        let path = dir.join("blobs").join(&name[..2]).join(&name);
        match copy_file(tx, &path, "", &sha, chunk).await.map_err(Either::Pg)? {
            Ok((n, digest)) if digest == id.0 && i64::try_from(n).ok() == Some(size) => {
                tx.execute("INSERT INTO blob_data (sha256, size, at) VALUES ($1, $2, $3)", &[&sha, &size, &now])
                    .await
                    .map_err(Either::Pg)?;
                out.blobs += 1;
                out.blob_bytes += n;
            }
            Ok((n, _)) => {
                tx.execute("DELETE FROM blob_chunks WHERE holder = '' AND sha256 = $1", &[&sha])
                    .await
                    .map_err(Either::Pg)?;
                missing(tx, &sha, now).await.map_err(Either::Pg)?;
                out.left.push(format!(
                    "{}: {n} bytes that do not hash to its name or have its recorded size ({size}); not copied",
                    path.display()
                ));
            }
            Err(e) => {
                missing(tx, &sha, now).await.map_err(Either::Pg)?;
                out.left.push(format!("{}: {e}; not copied", path.display()));
            }
        }
    }
    let uploads: Vec<(String, Vec<u8>)> = src
        .prepare("SELECT owner, sha256 FROM uploads ORDER BY owner, sha256")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(Either::Lite)?;
    for (owner, sha) in uploads {
        let path = dir.join("partial").join(format!("{}-{}", hex(owner.as_bytes()), hex(&sha)));
        let received = match copy_file(tx, &path, &owner, &sha, chunk).await.map_err(Either::Pg)? {
            Ok((n, _)) => n,
            // Nothing received yet: the upload starts at 0 on any node.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                out.left.push(format!("{}: {e}; not copied, the upload starts again", path.display()));
                continue;
            }
        };
        tx.execute(
            "INSERT INTO partial_data (owner, sha256, length, touched) VALUES ($1, $2, $3, $4)",
            &[&owner, &sha, &crate::to_sql(received), &now],
        )
        .await
        .map_err(Either::Pg)?;
        out.uploads += 1;
        out.upload_bytes += received;
    }
    Ok(out)
}

/// A blob whose bytes did not move is recorded as removed (as retention does): its
/// message and preview stay, and anyone holding the file may upload it again, which a
/// blob recorded as whole would refuse as already there.
async fn missing(tx: &tokio_postgres::Transaction<'_>, sha: &[u8], now: i64) -> Result<u64, tokio_postgres::Error> {
    tx.execute("UPDATE blobs SET evicted = $2 WHERE sha256 = $1", &[&sha, &now]).await
}

/// Copies the file at `path` into rows of `holder`'s `sha` and answers its length and
/// SHA-256; a file that cannot be read (whole) leaves no rows and answers why.
async fn copy_file(
    tx: &tokio_postgres::Transaction<'_>,
    path: &Path,
    holder: &str,
    sha: &[u8],
    chunk: usize,
) -> Result<Result<(u64, [u8; 32]), std::io::Error>, tokio_postgres::Error> {
    let insert = tx.prepare("INSERT INTO blob_chunks (holder, sha256, pos, data) VALUES ($1, $2, $3, $4)").await?;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; chunk];
    let mut pos = 0u64;
    loop {
        let mut filled = 0;
        while filled < chunk {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tx.execute("DELETE FROM blob_chunks WHERE holder = $1 AND sha256 = $2", &[&holder, &sha]).await?;
                    return Ok(Err(e));
                }
            }
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buf[..filled]);
        tx.execute(&insert, &[&holder, &sha, &crate::to_sql(pos), &&buf[..filled]]).await?;
        pos += filled as u64;
        if filled < chunk {
            break;
        }
    }
    Ok(Ok((pos, hasher.finalize().into())))
}

/// One column's values of a chunk, typed for an array parameter.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(ty: Ty) -> Self {
        match ty {
            Int => Self::Int(Vec::new()),
            Text => Self::Text(Vec::new()),
            Bytes => Self::Bytes(Vec::new()),
        }
    }

    fn push(&mut self, v: Value) {
        match (self, v) {
            (Self::Int(c), Value::Integer(i)) => c.push(Some(i)),
            (Self::Text(c), Value::Text(s)) => c.push(Some(s)),
            (Self::Bytes(c), Value::Blob(b)) => c.push(Some(b)),
            (Self::Text(c), Value::Integer(i)) => c.push(Some(i.to_string())),
            (Self::Bytes(c), Value::Text(s)) => c.push(Some(s.into_bytes())),
            (Self::Int(c), _) => c.push(None),
            (Self::Text(c), _) => c.push(None),
            (Self::Bytes(c), _) => c.push(None),
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Int(c) => c,
            Self::Text(c) => c,
            Self::Bytes(c) => c,
        }
    }

    fn array_type(ty: Ty) -> &'static str {
        match ty {
            Int => "bigint[]",
            Text => "text[]",
            Bytes => "bytea[]",
        }
    }
}

async fn copy_table(
    src: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    t: &Table,
) -> Result<usize, Either> {
    let select = format!(
        "SELECT {} FROM \"{}\"",
        t.columns.iter().map(|(c, _, _)| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
        t.name
    );
    let targets = t.columns.iter().map(|(_, c, _)| *c).collect::<Vec<_>>().join(", ");
    let arrays = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, _, ty))| format!("${}::{}", i + 1, Column::array_type(*ty)))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!("INSERT INTO {} ({targets}) SELECT * FROM unnest({arrays})", t.name);
    let insert = tx.prepare(&insert).await.map_err(Either::Pg)?;
    let mut stmt = src.prepare(&select).map_err(Either::Lite)?;
    let mut rows = stmt.query([]).map_err(Either::Lite)?;
    let mut total = 0;
    loop {
        let mut cols: Vec<Column> = t.columns.iter().map(|(_, _, ty)| Column::new(*ty)).collect();
        let mut n = 0;
        while n < CHUNK {
            let Some(row) = rows.next().map_err(Either::Lite)? else { break };
            for (i, col) in cols.iter_mut().enumerate() {
                col.push(row.get::<_, Value>(i).map_err(Either::Lite)?);
            }
            n += 1;
        }
        if n == 0 {
            break;
        }
        let params: Vec<&(dyn ToSql + Sync)> = cols.iter().map(Column::param).collect();
        tx.execute(&insert, &params).await.map_err(Either::Pg)?;
        total += n;
        if n < CHUNK {
            break;
        }
    }
    Ok(total)
}
