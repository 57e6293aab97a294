//! Message retention on a SQLite server: the timer that removes, in bounded batches,
//! messages past `storage.retain_days` that another server keeps, and the quota policy
//! the store's writer applies by itself (see `outpost_store_sqlite::retention` for what
//! may go and when). Media bytes have their own retention (`media::retention`).
//!
//! "Now" is [`crate::clock::now_ms`], so the `testing.clock_offset_secs` hook moves it;
//! messages keep their real receive times.

use std::time::Duration;

use outpost_store_sqlite::{RetentionPolicy, Store};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::StorageConfig;

const DAY_MS: u64 = 86_400_000;

/// The store's policy from the configuration. `confirm_peer`: on a hub, its cloud;
/// `None` on a cloud.
pub fn policy(cfg: &StorageConfig, confirm_peer: Option<String>, clock_offset_secs: i64) -> RetentionPolicy {
    RetentionPolicy {
        confirm_peer,
        quota_high_water_bytes: cfg.prune_high_water_bytes(),
        batch: cfg.prune_batch.max(1),
        clock_offset_ms: clock_offset_secs.saturating_mul(1000),
    }
}

/// Sets the store's policy, then every `storage.prune_interval_secs` (and once at
/// start) removes what is past `storage.retain_days`, a batch per transaction, until
/// nothing more qualifies or `stop`.
pub async fn run(store: Store, cfg: StorageConfig, policy: RetentionPolicy, stop: CancellationToken) {
    if let Err(e) = store.set_retention(policy.clone()).await {
        tracing::warn!(error = %e, "cannot set the retention policy; nothing will be pruned");
        stop.cancelled().await;
        return;
    }
    tracing::info!(
        retain_days = cfg.retain_days,
        high_water_bytes = ?policy.quota_high_water_bytes,
        "retention on"
    );
    let every = Duration::from_secs(cfg.prune_interval_secs.max(1));
    loop {
        if cfg.retain_days > 0 {
            let cutoff = now_ms().saturating_sub(u64::from(cfg.retain_days) * DAY_MS);
            let mut removed = 0usize;
            loop {
                if stop.is_cancelled() {
                    return;
                }
                match store.prune_aged(&policy, cutoff, now_ms()).await {
                    Ok(p) => {
                        removed += p.removed;
                        if !p.more {
                            break;
                        }
                        // Let sessions' reads and writes in between batches.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention failed; will retry");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(removed, retain_days = cfg.retain_days, "retention removed confirmed messages");
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
