//! Wall-clock time, where it is a fact of the data (a message's receive time, a token's
//! expiry, an audit row) rather than a timer: timers use tokio's clock so tests can pause
//! it.

/// Wall-clock milliseconds since the Unix epoch (message `at`, token expiry).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
