//! systemd integration: readiness and a watchdog that proves the store still commits.
//!
//! Under `Type=notify` the service is "started" only once the listeners are bound and the
//! store is open (`READY=1`). With `WatchdogSec=` set, the watchdog is fed only after a
//! round trip through the store's writer thread succeeded, so a wedged writer (a dead
//! SD card, a stuck fsync) gets the hub restarted instead of silently refusing to ack.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use outpost_storage::LogStore;

/// Tells systemd the service is serving.
pub(crate) fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// Tells systemd a graceful stop has begun.
pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Feeds systemd's watchdog while the store answers, until `shutdown`; `None` when
/// systemd asked for no watchdog.
pub(crate) fn watchdog<S: LogStore>(
    store: S,
    shutdown: CancellationToken,
) -> Option<impl std::future::Future<Output = ()>> {
    let interval = sd_notify::watchdog_enabled()?;
    // Feed at half the deadline; a store round trip must fit well inside it.
    let period = interval / 2;
    Some(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(period, store.ping()).await {
                Ok(Ok(())) => {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "store does not answer; the watchdog will restart the hub"),
                Err(_) => tracing::error!(timeout = ?period, "store round trip too slow; not feeding the watchdog"),
            }
        }
    })
}
