//! Wall-clock time, where it is a fact of the data (a message's receive time, a token's
//! expiry, an audit row) rather than a timer: timers use tokio's clock so tests can pause
//! it.

use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds added to the system clock (`testing.clock_offset_secs`); 0 in production.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Moves this process's wall clock by `secs` (the `testing.clock_offset_secs` hook).
pub fn set_offset_secs(secs: i64) {
    OFFSET_MS.store(secs.saturating_mul(1000), Ordering::Relaxed);
}

/// Wall-clock milliseconds since the Unix epoch (message `at`, token expiry), moved by the
/// test hook's offset if one is set.
pub fn now_ms() -> u64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    real.saturating_add_signed(OFFSET_MS.load(Ordering::Relaxed))
}

/// Wall-clock seconds since the Unix epoch, as [`now_ms`].
pub fn now_secs() -> u64 {
    now_ms() / 1000
}
