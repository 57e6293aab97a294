//! Webhook positions and leases in SQLite (`hooks`; schema.rs): `outpost-storage`'s
//! `HookStore`. The lease and the position change through the writer thread (one
//! statement each, a compare-and-set in its `WHERE`), answered after the commit; the
//! position is read on the reader pool.

use std::future::Future;

use outpost_shared::Cursor;
use outpost_storage::{HookStore, StoreError};
use rusqlite::{OptionalExtension, params};

use crate::Store;

fn sql_i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl HookStore for Store {
    fn hook_position(&self, name: &str) -> impl Future<Output = Result<Cursor, StoreError>> + Send {
        let name = name.to_owned();
        self.read_with(move |c| {
            let position = c
                .prepare_cached("SELECT position FROM hooks WHERE name = ?1")?
                .query_row([name], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(Cursor(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0)))
        })
    }

    fn hook_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.exec(move |c| {
            let changed = c
                .prepare_cached(
                    "INSERT INTO hooks (name, holder, lease_until) VALUES (?1, ?2, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
                       WHERE hooks.holder = excluded.holder OR hooks.lease_until <= ?3",
                )?
                .execute(params![name, holder, sql_i(now_ms), sql_i(now_ms.saturating_add(ttl_ms))])?;
            Ok(changed == 1)
        })
    }

    fn hook_advance(
        &self,
        name: &str,
        holder: &str,
        cursor: Cursor,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.exec(move |c| {
            let changed = c
                .prepare_cached("UPDATE hooks SET position = max(position, ?3) WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder, sql_i(cursor.0)])?;
            Ok(changed == 1)
        })
    }

    fn hook_release(&self, name: &str, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.exec(move |c| {
            c.prepare_cached("UPDATE hooks SET lease_until = 0 WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
    }
}
