//! What may go: unfinished uploads left without progress, and the bytes of blobs whose
//! retention period is over (metadata and previews stay).

use super::*;

impl<S: Storage> Blobs<S> {
    /// Removes what may go: unfinished uploads without progress for
    /// `media.partial_ttl_hours`, and the bytes of blobs whose retention period
    /// (`media.retention_days`, counted from the moment `media.retention_basis` names) is
    /// over; their metadata and preview stay. Returns the number of files removed.
    pub async fn sweep(&self) -> Result<usize, MediaError> {
        let cfg = &self.inner.cfg;
        let now = now_ms();
        let mut removed = 0;
        let stale_before = now.saturating_sub(u64::from(cfg.partial_ttl_hours) * 3_600_000);
        for PendingUpload { owner: key, blob, size } in self.inner.store.uploads().await? {
            let path = self.inner.root.join("partial").join(format!("{}-{}", hex_of(&key), blob.hex()));
            let touched = tokio::fs::metadata(&path)
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            if touched < stale_before {
                let owner = match key.split_once(':') {
                    Some(("peer", p)) => Owner::Peer(p.to_owned()),
                    Some((_, u)) => match UserId::new(u) {
                        Ok(u) => Owner::User(u),
                        Err(_) => continue,
                    },
                    None => continue,
                };
                self.discard(&owner, blob, size).await?;
                removed += 1;
            }
        }
        if cfg.retention_days == 0 {
            return Ok(removed);
        }
        let started_before = now.saturating_sub(u64::from(cfg.retention_days) * 86_400_000);
        let basis = cfg.retention_basis;
        for (blob, size) in self.inner.store.blobs_retained_since(basis, started_before).await? {
            self.inner.store.blob_evicted(blob, now_ms()).await?;
            if tokio::fs::remove_file(self.blob_path(&blob)).await.is_ok() {
                self.inner.store.add_blob_bytes(-i64::try_from(size).unwrap_or(i64::MAX));
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
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "media sweep failed; will retry");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
