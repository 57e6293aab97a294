//! The hub database's schema and its versioned migrations.
//!
//! `PRAGMA user_version` records how many migrations have run. Each migration runs in
//! its own transaction at start-up, so an upgrade interrupted by a power cut resumes where
//! it stopped. Migrations are append-only: a released one is never edited.
//!
//! Messages and receipts share one cursor sequence (the log position a device resumes
//! from), so a reconnecting phone gets the messages and the custody receipts it missed in
//! one ordered replay.

use rusqlite::Connection;

/// Every migration, oldest first. Index + 1 is the schema version it produces. From the
/// first release on, a shipped migration is frozen.
pub const MIGRATIONS: &[&str] = &[
    // 1: the durable core.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    -- The message log. `cursor` is the log position; `id` the sender's idempotency key,
    -- unique forever (the dedupe index).
    CREATE TABLE messages (
        cursor    INTEGER PRIMARY KEY,
        id        BLOB NOT NULL UNIQUE,
        room      TEXT NOT NULL,
        kind      TEXT NOT NULL,
        priority  INTEGER NOT NULL,
        body      TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        reply_to  BLOB,
        sender    TEXT NOT NULL,
        device    TEXT NOT NULL,
        hlc       INTEGER NOT NULL,
        at        INTEGER NOT NULL
    );
    CREATE INDEX messages_room ON messages (room, cursor);

    -- Custody receipts, addressed to the sender of the message they are about.
    CREATE TABLE receipts (
        cursor   INTEGER PRIMARY KEY,
        msg_id   BLOB NOT NULL,
        state    TEXT NOT NULL,
        by_user  TEXT NOT NULL,
        target   TEXT NOT NULL,
        room     TEXT NOT NULL,
        at       INTEGER NOT NULL,
        UNIQUE (msg_id, state, by_user)
    );
    CREATE INDEX receipts_target ON receipts (target, cursor);

    -- What each device has acknowledged (drives `delivered`).
    -- A device id is chosen by the client, so it is only unique per user.
    CREATE TABLE device_cursors (
        user     TEXT NOT NULL,
        device   TEXT NOT NULL,
        acked    INTEGER NOT NULL,
        updated  INTEGER NOT NULL,
        PRIMARY KEY (user, device)
    ) WITHOUT ROWID;

    -- How far each user has read each room (drives `read`).
    CREATE TABLE read_marks (
        user     TEXT NOT NULL,
        room     TEXT NOT NULL,
        cursor   INTEGER NOT NULL,
        PRIMARY KEY (user, room)
    ) WITHOUT ROWID;

    -- Rooms this hub has heard of (from tokens or messages): tells `unknown_room` from
    -- `forbidden`.
    CREATE TABLE rooms (
        room     TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    ",
    // 2: the link between hub and cloud. The same tables serve both ends: a hub has one
    // peer (its cloud), the cloud one per hub.
    "
    -- NULL: written on this server; otherwise the peer it came from.
    ALTER TABLE messages ADD COLUMN origin_peer TEXT;
    -- NULL: made on this server; otherwise the peer it came from.
    ALTER TABLE receipts ADD COLUMN origin_peer TEXT;
    -- The peer the message it is about came from (where the receipt must go), if any.
    ALTER TABLE receipts ADD COLUMN msg_peer TEXT;
    CREATE INDEX receipts_msg_peer ON receipts (msg_peer, cursor) WHERE msg_peer IS NOT NULL;

    CREATE TABLE peers (
        peer          TEXT PRIMARY KEY,
        -- The peer's database epoch: a new one means it lost what we sent.
        epoch         TEXT NOT NULL DEFAULT '',
        -- Our log: everything up to here the peer has durably (resume after it).
        sent_hwm      INTEGER NOT NULL DEFAULT 0,
        -- The peer's log: its own mark of what we hold of it (as it last reported).
        recv_hwm      INTEGER NOT NULL DEFAULT 0,
        last_contact  INTEGER
    ) WITHOUT ROWID;

    -- Rooms a peer serves: what the cloud sends down to each hub.
    CREATE TABLE peer_rooms (
        peer   TEXT NOT NULL,
        room   TEXT NOT NULL,
        PRIMARY KEY (peer, room)
    ) WITHOUT ROWID;
    ",
    // 3: security — the audit log and the token revocation list.
    "
    -- Append-only record of security-relevant events (logins, refusals, enrollments,
    -- revocations, emergency alerts). The triggers make the append-only rule hold for
    -- every connection, not only for this program's code paths.
    CREATE TABLE audit (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        event   TEXT NOT NULL,
        actor   TEXT,
        role    TEXT,
        device  TEXT,
        peer    TEXT,
        room    TEXT,
        detail  TEXT NOT NULL DEFAULT ''
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    -- Revoked tokens (kind 'token', value = jti) and users (kind 'user', value = user id,
    -- every token issued at or before `issued_before` seconds). AUTOINCREMENT keeps `seq`
    -- growing even when an entry is replaced, so max(seq) tells a reader the list changed.
    CREATE TABLE revocations (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind           TEXT NOT NULL CHECK (kind IN ('token', 'user')),
        value          TEXT NOT NULL,
        issued_before  INTEGER NOT NULL DEFAULT 0,
        reason         TEXT NOT NULL DEFAULT '',
        at             INTEGER NOT NULL,
        UNIQUE (kind, value)
    );
    ",
    // 4: media — blob metadata (the bytes are content-addressed files beside the
    // database, see engine/src/media), who uploaded what, the messages that name a blob,
    // and which peers hold it.
    "
    CREATE TABLE blobs (
        sha256   BLOB PRIMARY KEY,
        size     INTEGER NOT NULL,
        mime     TEXT NOT NULL,
        -- JPEG preview of an image (a few KB), sent inside the message that names it.
        preview  BLOB,
        width    INTEGER,
        height   INTEGER,
        -- NULL: uploaded here; otherwise the peer it came from.
        origin   TEXT,
        created  INTEGER NOT NULL,
        -- Set when retention removed the file (the cloud had confirmed it).
        evicted  INTEGER
    ) WITHOUT ROWID;

    -- Users who uploaded a blob here: they may name it in messages (others may only once
    -- it was sent in a room they can read). `bytes` counts against their quota.
    CREATE TABLE blob_owners (
        sha256  BLOB NOT NULL,
        user    TEXT NOT NULL,
        at      INTEGER NOT NULL,
        PRIMARY KEY (sha256, user)
    ) WITHOUT ROWID;
    CREATE INDEX blob_owners_user ON blob_owners (user);

    -- Unfinished uploads: `owner` is 'user:NAME' (HTTP) or 'peer:NAME' (the uplink). The
    -- bytes received so far are the partial file's length.
    CREATE TABLE uploads (
        owner    TEXT NOT NULL,
        sha256   BLOB NOT NULL,
        size     INTEGER NOT NULL,
        created  INTEGER NOT NULL,
        PRIMARY KEY (owner, sha256)
    ) WITHOUT ROWID;

    -- Messages that name a blob, by log cursor (written with the message).
    CREATE TABLE media_refs (
        cursor   INTEGER PRIMARY KEY,
        sha256   BLOB NOT NULL,
        room     TEXT NOT NULL
    );
    CREATE INDEX media_refs_sha ON media_refs (sha256);

    -- Peers known to hold a blob completely: they confirmed it, or sent it to us.
    CREATE TABLE blob_peers (
        sha256  BLOB NOT NULL,
        peer    TEXT NOT NULL,
        at      INTEGER NOT NULL,
        PRIMARY KEY (sha256, peer)
    ) WITHOUT ROWID;
    ",
    // 5: webhooks — each endpoint's delivery position and the lease that lets one cloud
    // server at a time deliver to it (a plain row changed by compare-and-set, so the
    // same scheme works on any database several servers share).
    "
    CREATE TABLE hooks (
        name         TEXT PRIMARY KEY,
        -- Every message up to this cursor was delivered (acknowledged by the endpoint).
        position     INTEGER NOT NULL DEFAULT 0,
        -- The server delivering to the endpoint, and until when (ms since the Unix
        -- epoch); a lease at or before now is free to take.
        holder       TEXT NOT NULL DEFAULT '',
        lease_until  INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    ",
    // 6: what a peer sent us that it lost with its database. Our sending leaves out what
    // came from the peer itself, except, after it came back with a new epoch, what came
    // from it up to this cursor: the messages of its old database, which it no longer holds.
    r"
    ALTER TABLE peers ADD COLUMN own_until INTEGER NOT NULL DEFAULT 0;
    ",
    // 7: the cloud's delegation to this hub's token-renewal key (one row: the latest
    // received), so a hub cut off after a restart still renews its devices' tokens.
    r"
    CREATE TABLE delegation (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        token  TEXT NOT NULL,
        at     INTEGER NOT NULL
    );
    ",
    // 8: retention. Confirmed messages may be removed (store-sqlite/src/retention.rs);
    // what was removed of each room is remembered so history past it is asked of the
    // peer that holds it, by stamp (the order every server shares), hence the index.
    // Rooms under legal hold (the cloud's) are never pruned or deleted.
    r"
    CREATE INDEX messages_room_hlc ON messages (room, hlc);
    CREATE TABLE retention_rooms (
        room           TEXT PRIMARY KEY,
        -- The newest stamp and log position removed from the room.
        pruned_hlc     INTEGER NOT NULL,
        pruned_cursor  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE holds (
        room    TEXT PRIMARY KEY,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL DEFAULT '',
        reason  TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    ",
    // 9: doctors' queues and patients' records are derived from their messages on every
    // read (outpost_shared::queue, ::record; Workflow::kind_sql): an index of those kinds
    // alone keeps that read small in a room of hundreds of thousands of messages, and
    // costs nothing on other messages.
    r"
    CREATE INDEX messages_queue ON messages (room, hlc) WHERE kind IN ('queue.book', 'queue.update');
    CREATE INDEX messages_record ON messages (room, hlc) WHERE kind = 'record.edit';
    ",
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the database is at schema version {found}, newer than this build's {supported}; upgrade outpost-relay")]
    TooNew { found: u32, supported: u32 },
    #[error("migration to schema version {version} failed: {source}")]
    Failed { version: u32, source: rusqlite::Error },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings the database up to [`current_version`]; creates the epoch on a new database.
pub fn migrate(conn: &mut Connection, new_epoch: &str) -> Result<u32, MigrateError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = current_version();
    if found > supported {
        return Err(MigrateError::TooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
        // Another process (a one-shot command beside a starting server) may migrate at the
        // same time: take the write lock first, then look again.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| MigrateError::Failed { version, source })?;
        let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(|source| MigrateError::Failed { version, source })?;
        if version == 1 {
            tx.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?1)", [new_epoch])
                .map_err(|source| MigrateError::Failed { version, source })?;
        }
        tx.pragma_update(None, "user_version", version).map_err(|source| MigrateError::Failed { version, source })?;
        tx.commit().map_err(|source| MigrateError::Failed { version, source })?;
    }
    Ok(found)
}
