//! The cloud database's schema in PostgreSQL and its versioned migrations.
//!
//! The tables are the SQLite store's (store-sqlite/src/schema.rs), in PostgreSQL's types,
//! plus `log_head`, the newest cursor handed out, and `open_ranges`, the cursors handed
//! to imports that have not committed yet (see the crate documentation).
//!
//! `outpost_schema.version` records how many migrations have run. Several nodes may start
//! at once: each migrates inside one transaction that first takes a transaction-level
//! advisory lock, so one of them applies the migrations and the others then find them
//! applied. Migrations are append-only: a released one is never edited.

use tokio_postgres::Client;

/// The advisory lock key of migrations (any constant unique to Outpost).
const MIGRATION_LOCK: i64 = 0x6f75_7470_6f73_7401;

/// Every migration, oldest first. Index + 1 is the schema version it produces.
pub const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store's versions 1-4 hold.
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    -- The newest cursor handed out. Every writing transaction locks this row first and
    -- updates it before its commit: writes of all nodes are serialised through it, so
    -- cursors follow commit order.
    CREATE TABLE log_head (
        only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        head      BIGINT NOT NULL
    );
    INSERT INTO log_head (only_row, head) VALUES (TRUE, 0);

    CREATE TABLE messages (
        cursor       BIGINT PRIMARY KEY,
        id           BYTEA NOT NULL UNIQUE,
        room         TEXT NOT NULL,
        kind         TEXT NOT NULL,
        priority     SMALLINT NOT NULL,
        body         TEXT NOT NULL,
        seq          BIGINT NOT NULL,
        reply_to     BYTEA,
        sender       TEXT NOT NULL,
        device       TEXT NOT NULL,
        hlc          BIGINT NOT NULL,
        at           BIGINT NOT NULL,
        -- NULL: written on this cloud; otherwise the peer (hub) it came from.
        origin_peer  TEXT
    );
    CREATE INDEX messages_room ON messages (room, cursor);

    CREATE TABLE receipts (
        cursor       BIGINT PRIMARY KEY,
        msg_id       BYTEA NOT NULL,
        state        TEXT NOT NULL,
        by_user      TEXT NOT NULL,
        target       TEXT NOT NULL,
        room         TEXT NOT NULL,
        at           BIGINT NOT NULL,
        origin_peer  TEXT,
        msg_peer     TEXT,
        UNIQUE (msg_id, state, by_user)
    );
    CREATE INDEX receipts_target ON receipts (target, cursor);
    CREATE INDEX receipts_msg_peer ON receipts (msg_peer, cursor) WHERE msg_peer IS NOT NULL;

    CREATE TABLE device_cursors (
        user_id  TEXT NOT NULL,
        device   TEXT NOT NULL,
        acked    BIGINT NOT NULL,
        updated  BIGINT NOT NULL,
        PRIMARY KEY (user_id, device)
    );

    CREATE TABLE read_marks (
        user_id  TEXT NOT NULL,
        room     TEXT NOT NULL,
        cursor   BIGINT NOT NULL,
        PRIMARY KEY (user_id, room)
    );

    CREATE TABLE rooms (
        room  TEXT PRIMARY KEY
    );

    CREATE TABLE peers (
        peer          TEXT PRIMARY KEY,
        epoch         TEXT NOT NULL DEFAULT '',
        sent_hwm      BIGINT NOT NULL DEFAULT 0,
        recv_hwm      BIGINT NOT NULL DEFAULT 0,
        last_contact  BIGINT
    );

    CREATE TABLE peer_rooms (
        peer  TEXT NOT NULL,
        room  TEXT NOT NULL,
        PRIMARY KEY (peer, room)
    );

    CREATE TABLE audit (
        seq     BIGSERIAL PRIMARY KEY,
        at      BIGINT NOT NULL,
        event   TEXT NOT NULL,
        actor   TEXT,
        role    TEXT,
        device  TEXT,
        peer    TEXT,
        room    TEXT,
        detail  TEXT NOT NULL DEFAULT ''
    );
    -- Append-only for every connection, not only for this program's code paths.
    CREATE FUNCTION outpost_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only';
    END;
    $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION outpost_audit_append_only();

    CREATE TABLE revocations (
        seq            BIGSERIAL PRIMARY KEY,
        kind           TEXT NOT NULL CHECK (kind IN ('token', 'user')),
        value          TEXT NOT NULL,
        issued_before  BIGINT NOT NULL DEFAULT 0,
        reason         TEXT NOT NULL DEFAULT '',
        at             BIGINT NOT NULL,
        UNIQUE (kind, value)
    );

    CREATE TABLE blobs (
        sha256   BYTEA PRIMARY KEY,
        size     BIGINT NOT NULL,
        mime     TEXT NOT NULL,
        preview  BYTEA,
        width    INTEGER,
        height   INTEGER,
        origin   TEXT,
        created  BIGINT NOT NULL,
        evicted  BIGINT
    );

    CREATE TABLE blob_owners (
        sha256   BYTEA NOT NULL,
        user_id  TEXT NOT NULL,
        at       BIGINT NOT NULL,
        PRIMARY KEY (sha256, user_id)
    );
    CREATE INDEX blob_owners_user ON blob_owners (user_id);

    CREATE TABLE uploads (
        owner    TEXT NOT NULL,
        sha256   BYTEA NOT NULL,
        size     BIGINT NOT NULL,
        created  BIGINT NOT NULL,
        PRIMARY KEY (owner, sha256)
    );

    CREATE TABLE media_refs (
        cursor  BIGINT PRIMARY KEY,
        sha256  BYTEA NOT NULL,
        room    TEXT NOT NULL
    );
    CREATE INDEX media_refs_sha ON media_refs (sha256);

    CREATE TABLE blob_peers (
        sha256  BYTEA NOT NULL,
        peer    TEXT NOT NULL,
        at      BIGINT NOT NULL,
        PRIMARY KEY (sha256, peer)
    );
    ",
    // 2: webhooks — each endpoint's delivery position and the lease that lets one node at
    // a time deliver to it (SQLite's version 5).
    r"
    CREATE TABLE hooks (
        name         TEXT PRIMARY KEY,
        position     BIGINT NOT NULL DEFAULT 0,
        holder       TEXT NOT NULL DEFAULT '',
        lease_until  BIGINT NOT NULL DEFAULT 0
    );
    ",
    // 3: media bytes in the database (bytes.rs), so that every node serves every blob and
    // resumes every upload; the SQLite store keeps them as files.
    r"
    -- Complete blobs whose bytes are here (metadata stays in `blobs`, also once evicted).
    CREATE TABLE blob_data (
        sha256  BYTEA PRIMARY KEY,
        size    BIGINT NOT NULL,
        at      BIGINT NOT NULL
    );

    -- Unfinished uploads' bytes: `length` is what was committed (acknowledged), `touched`
    -- when it last grew.
    CREATE TABLE partial_data (
        owner    TEXT NOT NULL,
        sha256   BYTEA NOT NULL,
        length   BIGINT NOT NULL,
        touched  BIGINT NOT NULL,
        PRIMARY KEY (owner, sha256)
    );

    -- The bytes, in rows of at most `storage.blob_chunk_bytes`. `holder` is '' for a
    -- complete blob, the owner for an unfinished upload, '~STAGE' for a chunk still being
    -- written (see `blob_stages`).
    CREATE TABLE blob_chunks (
        holder  TEXT NOT NULL,
        sha256  BYTEA NOT NULL,
        pos     BIGINT NOT NULL,
        data    BYTEA NOT NULL,
        PRIMARY KEY (holder, sha256, pos)
    );
    -- Out of line and uncompressed: media is compressed already, and a range read then
    -- fetches only the slices it needs.
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

    -- Chunks being written: their rows join the upload at the commit, or are removed
    -- (refused, or left by a node that died mid-chunk).
    CREATE TABLE blob_stages (
        stage    TEXT PRIMARY KEY,
        owner    TEXT NOT NULL,
        sha256   BYTEA NOT NULL,
        started  BIGINT NOT NULL
    );
    ",
    // 4: cursor ranges reserved by hubs' imports still committing (import.rs). Readers
    // stop below the lowest open range (`crate::STABLE_HEAD`). Unlogged: after a crash
    // or a failover no transaction is open any more, and the table starts empty.
    r"
    CREATE UNLOGGED TABLE open_ranges (
        first    BIGINT PRIMARY KEY,
        last     BIGINT NOT NULL,
        -- The backend that will commit or roll back the range; when it is gone the
        -- range can never commit, and any node removes it.
        pid      INTEGER NOT NULL,
        started  TIMESTAMPTZ NOT NULL
    );
    ",
    // 5: what a peer sent us that it lost with its database (the SQLite store's version
    // 6): after a hub comes back with a new epoch, what came from it up to this cursor
    // goes back to it too.
    r"
    ALTER TABLE peers ADD COLUMN own_until BIGINT NOT NULL DEFAULT 0;
    ",
    // 7: a hub whose retention removed a room's older messages asks the cloud for them
    // by stamp (the order every server shares): `history_before_hlc`.
    r"
    CREATE INDEX messages_room_hlc ON messages (room, hlc);
    ",
    // Rooms under legal hold (`outpost-cloud hold`): never pruned by retention nor
    // erased by `delete` (store-postgres/src/retention.rs), as on a SQLite cloud.
    r"
    CREATE TABLE holds (
        room    TEXT PRIMARY KEY,
        at      BIGINT NOT NULL,
        actor   TEXT NOT NULL DEFAULT '',
        reason  TEXT NOT NULL DEFAULT ''
    );
    ",
    // Doctors' queues and patients' records are derived from their messages on every
    // read (outpost_shared::queue, ::record; the SQLite store's version 9).
    r"
    CREATE INDEX messages_queue ON messages (room, hlc) WHERE kind IN ('queue.book', 'queue.update');
    CREATE INDEX messages_record ON messages (room, hlc) WHERE kind = 'record.edit';
    ",
];

/// The schema version this build writes.
pub fn current_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database is at schema version {found}, newer than this build's {supported}; upgrade outpost-cloud on every node"
    )]
    TooNew { found: i32, supported: i32 },
    #[error("migration to schema version {version} failed: {source}")]
    Failed { version: i32, source: tokio_postgres::Error },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Brings the database up to [`current_version`]; creates the epoch on a new database.
/// Returns the version found.
pub async fn migrate(client: &mut Client, new_epoch: &str) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    // Held until this transaction ends: nodes starting together migrate one at a time.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    // Looked up rather than `CREATE ... IF NOT EXISTS`, whose notice every node would log.
    let exists: bool = tx.query_one("SELECT to_regclass('outpost_schema') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE outpost_schema (version INTEGER NOT NULL)").await?;
    }
    let found: i32 = match tx.query_opt("SELECT version FROM outpost_schema", &[]).await? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO outpost_schema (version) VALUES (0)", &[]).await?;
            0
        }
    };
    let supported = current_version();
    if found > supported {
        return Err(MigrateError::TooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await.map_err(|source| MigrateError::Failed { version, source })?;
        if version == 1 {
            tx.execute("INSERT INTO meta (key, value) VALUES ('epoch', $1)", &[&new_epoch])
                .await
                .map_err(|source| MigrateError::Failed { version, source })?;
        }
        tx.execute("UPDATE outpost_schema SET version = $1", &[&version])
            .await
            .map_err(|source| MigrateError::Failed { version, source })?;
    }
    tx.commit().await?;
    Ok(found)
}
