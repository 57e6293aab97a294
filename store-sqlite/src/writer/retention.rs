//! The writer's side of retention: removing confirmed messages in bounded batches.
//!
//! A message may go only when nothing is lost with it (docs/operations.md, "Retention"):
//! the peer that keeps the long history holds it (on a hub: the cloud acknowledged the
//! batch that carried it, or it came from the cloud), the receipts about it that must
//! travel have travelled, the blob it names has reached that peer (or was already
//! evicted), an emergency was delivered to at least one recipient device, and its room
//! is not under legal hold. Each candidate is re-checked by the `DELETE` itself, so a
//! candidate picked from an older snapshot (or before a peer reset its mark) is never
//! removed unless it still qualifies. Receipts go with their message, and a blob's preview
//! with the last message naming it (the blob's bytes have their own retention).

use std::sync::atomic::Ordering;

use rusqlite::params;

use super::{Writer, to_sql};
use crate::StoreError;
use crate::retention::{PruneReason, prunable_args, prunable_sql};

/// Totals of one transaction, added to the gauges only once it committed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub age: u64,
    pub quota: u64,
    pub through: u64,
    pub at: u64,
}

impl Writer {
    /// Removes up to `policy.batch` prunable messages received before `cutoff`: the
    /// `candidates` (cursors picked on a reader) or, without them, the oldest ones found
    /// here. Returns how many went. Runs inside the current transaction.
    pub(super) fn prune(
        &mut self,
        cutoff: u64,
        reason: PruneReason,
        candidates: Option<Vec<i64>>,
        at: u64,
    ) -> Result<usize, StoreError> {
        let Some(policy) = self.retention.clone() else { return Ok(0) };
        let cond = prunable_sql(&policy);
        let cutoff = to_sql(cutoff);
        let candidates = match candidates {
            Some(c) => c,
            None => {
                let sql = format!("SELECT m.cursor FROM messages m WHERE {cond} ORDER BY m.cursor LIMIT ?3");
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let args = prunable_args(&policy, cutoff, &[to_sql(policy.batch as u64)]);
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let delete = format!("DELETE FROM messages AS m WHERE m.cursor = ?3 AND {cond} RETURNING id, room, hlc");
        let mut removed = 0usize;
        for cursor in candidates.into_iter().take(policy.batch) {
            let row: Option<(Vec<u8>, String, i64)> = {
                let mut stmt = self.conn.prepare_cached(&delete)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(prunable_args(&policy, cutoff, &[cursor])))?;
                match rows.next()? {
                    Some(r) => Some((r.get(0)?, r.get(1)?, r.get(2)?)),
                    None => None,
                }
            };
            let Some((id, room, hlc)) = row else { continue };
            removed += 1;
            self.conn.prepare_cached("DELETE FROM receipts WHERE msg_id = ?1")?.execute([&id])?;
            let blobs: Vec<Vec<u8>> = self
                .conn
                .prepare_cached("DELETE FROM media_refs WHERE cursor = ?1 RETURNING sha256")?
                .query_map([cursor], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for sha in blobs {
                // The preview travels inside the messages that name the blob: with the last
                // of them gone here, nothing here shows it any more.
                self.conn
                    .prepare_cached(
                        "UPDATE blobs SET preview = NULL
                          WHERE sha256 = ?1 AND NOT EXISTS (SELECT 1 FROM media_refs WHERE sha256 = ?1)",
                    )?
                    .execute([&sha])?;
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO retention_rooms (room, pruned_hlc, pruned_cursor) VALUES (?1, ?2, ?3)
                     ON CONFLICT (room) DO UPDATE SET pruned_hlc = max(pruned_hlc, excluded.pruned_hlc),
                       pruned_cursor = max(pruned_cursor, excluded.pruned_cursor)",
                )?
                .execute(params![room, hlc, cursor])?;
            self.tally.through = self.tally.through.max(u64::try_from(cursor).unwrap_or(0));
        }
        self.tally.at = at;
        if removed > 0 {
            let n = removed as u64;
            let key = match reason {
                PruneReason::Age => {
                    self.tally.age += n;
                    "retention.pruned_age"
                }
                PruneReason::Quota => {
                    self.tally.quota += n;
                    "retention.pruned_quota"
                }
            };
            let mut add = self.conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)",
            )?;
            add.execute(params![key, n.to_string()])?;
            let mut set = self.conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
            )?;
            set.execute(params!["retention.last_prune", at.to_string()])?;
            set.execute(params!["retention.pruned_through", self.tally.through.to_string()])?;
        }
        Ok(removed)
    }

    /// Retention's "now": the wall clock, moved by the policy's test offset.
    pub(super) fn retention_now(&self) -> u64 {
        let offset = self.retention.as_ref().map_or(0, |p| p.clock_offset_ms);
        super::now_ms().saturating_add_signed(offset)
    }

    /// Whether storage in use has passed the point where confirmed messages start to go.
    pub(super) fn over_high_water(&self) -> bool {
        match self.retention.as_ref().and_then(|p| p.quota_high_water_bytes) {
            Some(hw) => self.used_bytes + self.gauges.blob_bytes.load(Ordering::Relaxed) > hw,
            None => false,
        }
    }

    /// Publishes a committed transaction's totals.
    pub(super) fn publish_tally(&mut self) {
        let t = std::mem::take(&mut self.tally);
        if t.age + t.quota == 0 {
            return;
        }
        let g = &self.gauges;
        g.pruned_age.fetch_add(t.age, Ordering::Relaxed);
        g.pruned_quota.fetch_add(t.quota, Ordering::Relaxed);
        g.pruned_through.fetch_max(t.through, Ordering::Relaxed);
        g.last_prune.store(t.at, Ordering::Relaxed);
        metrics::counter!("outpost_retention_pruned_total", "reason" => "age").increment(t.age);
        metrics::counter!("outpost_retention_pruned_total", "reason" => "quota").increment(t.quota);
        self.refresh_oldest();
    }

    /// The receive time of the oldest message held (oldest by log position).
    pub(super) fn refresh_oldest(&self) {
        let at: Option<i64> =
            self.conn.query_row("SELECT at FROM messages ORDER BY cursor LIMIT 1", [], |r| r.get(0)).ok();
        self.gauges.oldest_at.store(at.and_then(|a| u64::try_from(a).ok()).unwrap_or(0), Ordering::Relaxed);
    }

    /// Loads the persisted totals into the gauges (at start-up).
    pub(super) fn load_retention_totals(&self) {
        let get = |key: &str| -> u64 {
            self.conn
                .query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0)
        };
        let g = &self.gauges;
        g.pruned_age.store(get("retention.pruned_age"), Ordering::Relaxed);
        g.pruned_quota.store(get("retention.pruned_quota"), Ordering::Relaxed);
        g.last_prune.store(get("retention.last_prune"), Ordering::Relaxed);
        g.pruned_through.store(get("retention.pruned_through"), Ordering::Relaxed);
        self.refresh_oldest();
    }
}
