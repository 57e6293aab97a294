//! Same-run baselines on the disk the hub writes to: raw SQLite group commit and the
//! latency of one small durable write.
//!
//! The SQLite baseline is what a hub could reach if it did nothing but insert rows: one
//! writer thread, WAL, `synchronous=FULL`, rows shaped like the hub's `messages` table
//! (same columns, the same UNIQUE id index and room index, ~100-byte JSON bodies), `n`
//! rows per `BEGIN IMMEDIATE … COMMIT`. It leaves out what the hub adds per message (the
//! dedupe lookup, frame parsing and encoding, sockets, fan-out), so the ratio of the two
//! says how much of the disk's durable-write capacity the hub turns into acked messages.
//!
//! The fsync probe writes 4 KiB and calls `fdatasync` (`File::sync_data`) N times on the
//! same file: the floor under every commit's latency on this disk.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, params};
use tokio::time::Instant;

use crate::stats::{self, Latency};

/// Rows per second at one group size.
#[derive(Debug, Clone, Copy)]
pub struct GroupResult {
    pub group: usize,
    pub rows_per_sec: f64,
    pub commits: u64,
}

/// Inserts groups of `group` rows into a fresh database in `dir` for about `duration`.
/// Blocking: run it on its own thread, as the hub runs its writer.
pub fn sqlite_group_commit(dir: &Path, group: usize, duration: Duration) -> anyhow::Result<GroupResult> {
    let path = dir.join(format!("baseline-{group}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // The hub's pragmas (store-sqlite/src/lib.rs `connect`).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The hub's own schema (every migration), so each insert maintains exactly the
    // b-trees the hub's `messages` table has, and the baseline follows schema changes.
    for migration in outpost_store_sqlite::MIGRATIONS {
        conn.execute_batch(migration)?;
    }

    let body_pad = "x".repeat(60);
    let mut cursor: i64 = 0;
    let mut commits = 0u64;
    let start = Instant::now();
    let deadline = start + duration;
    // Always finish at least a few commits so tiny durations on slow disks still measure.
    while Instant::now() < deadline || commits < 3 {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO messages (cursor, id, room, kind, priority, body, seq, reply_to, sender, device, hlc, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for _ in 0..group {
                cursor += 1;
                let id = uuid::Uuid::now_v7();
                let client = cursor % 500;
                let at = crate::unix_ms();
                let body = format!(r#"{{"t":{},"c":{client},"text":"{body_pad}"}}"#, at * 1000);
                stmt.execute(params![
                    cursor,
                    id.as_bytes().as_slice(),
                    format!("room{:03}", client / 2),
                    "chat",
                    2,
                    body,
                    cursor / 500 + 1,
                    Option::<Vec<u8>>::None,
                    format!("u{client:03}"),
                    format!("d{client:03}"),
                    cursor << 16,
                    at,
                ])?;
            }
        }
        conn.execute_batch("COMMIT")?;
        commits += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(GroupResult { group, rows_per_sec: (commits * group as u64) as f64 / secs, commits })
}

/// `n` times: overwrite the same 4 KiB block, then `fdatasync`. Blocking.
pub fn fsync_latency(dir: &Path, n: usize) -> anyhow::Result<Latency> {
    let path = dir.join("fsync-probe.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let block = [0x5au8; 4096];
    // Allocate the block once so the loop measures data syncs, not file growth.
    f.write_all(&block)?;
    f.sync_all()?;
    let mut h = stats::new_hist();
    for _ in 0..n {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&block)?;
        f.sync_data()?;
        stats::record(&mut h, t.elapsed().as_micros() as u64);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(Latency::of(&h))
}
