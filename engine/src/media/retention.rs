//! What may go: unfinished uploads left without progress, and the bytes of blobs whose
//! retention period is over (metadata and previews stay).

use super::*;

/// A chunk still being written after this long was cut off with its writer (a node that
/// died mid-chunk); a live one carries at most `media.max_chunk_bytes`, and a day is far
/// more than even a slow phone needs for that.
const INTERRUPTED_AFTER_MS: u64 = 24 * 3_600_000;

impl<S: Storage> Blobs<S> {
    /// Removes what may go: unfinished uploads without progress for
    /// `media.partial_ttl_hours`, and the bytes of blobs whose retention period
    /// (`media.retention_days`, counted from the moment `media.retention_basis` names) is
    /// over; their metadata and preview stay. Returns the number of uploads and blobs
    /// removed.
    pub async fn sweep(&self) -> Result<usize, MediaError> {
        let cfg = &self.inner.cfg;
        let now = now_ms();
        let mut removed = 0;
        let interrupted = self.bytes().sweep(now.saturating_sub(INTERRUPTED_AFTER_MS)).await;
        match interrupted {
            Ok(0) => {}
            Ok(n) => tracing::info!(chunks = n, "removed the bytes of chunks whose writer never finished"),
            Err(e) => tracing::warn!(error = %e, "cannot remove the bytes of interrupted chunks; will retry"),
        }
        let stale_before = now.saturating_sub(u64::from(cfg.partial_ttl_hours) * 3_600_000);
        for PendingUpload { owner: key, blob, size: _ } in self.inner.store.uploads().await? {
            let touched = self.bytes().partial_touched(&key, blob).await.map_err(MediaError::bytes(blob))?;
            if touched.unwrap_or(0) < stale_before {
                let owner = match key.split_once(':') {
                    Some(("peer", p)) => Owner::Peer(p.to_owned()),
                    Some((_, u)) => match UserId::new(u) {
                        Ok(u) => Owner::User(u),
                        Err(_) => continue,
                    },
                    None => continue,
                };
                self.discard(&owner, blob).await?;
                removed += 1;
            }
        }
        if cfg.retention_days == 0 {
            return Ok(removed);
        }
        let started_before = now.saturating_sub(u64::from(cfg.retention_days) * 86_400_000);
        let basis = cfg.retention_basis;
        for (blob, _size) in self.inner.store.blobs_retained_since(basis, started_before).await? {
            self.inner.store.blob_evicted(blob, now_ms()).await?;
            if self.bytes().remove(blob).await.map_err(MediaError::bytes(blob))? {
                removed += 1;
                match basis {
                    RetentionBasis::PeerConfirmed => {
                        tracing::info!(%blob, "blob removed by retention (its peer confirmed it)");
                    }
                    RetentionBasis::Received => tracing::info!(%blob, "blob removed by retention (received long ago)"),
                }
            }
        }
        Ok(removed)
    }

    /// Runs [`Blobs::sweep`] every `every` until `stop`.
    pub async fn sweep_every(self, every: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            match self.sweep().await {
                // Counted so an operator (and a test) can tell the sweep has run.
                Ok(_) => metrics::counter!("outpost_media_sweeps_total").increment(1),
                Err(e) => tracing::warn!(error = %e, "media sweep failed; will retry"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
