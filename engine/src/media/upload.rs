//! Writing an upload: chunks appended to the partial file (fsynced before each answer, so
//! an upload resumes exactly where the last acknowledged chunk ended), then the finished
//! file checked (hash, type), previewed, moved into place and recorded.

use super::*;

impl<S: Storage> Blobs<S> {
    /// Appends a chunk at `offset` (which must be where the upload stands), fsyncs it and,
    /// when it completes the blob, verifies and stores the blob.
    pub async fn write(&self, owner: &Owner, blob: BlobId, offset: u64, bytes: Vec<u8>) -> Result<Upload, MediaError> {
        let once = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes.into())]);
        self.write_stream(owner, blob, offset, once, u64::MAX, None).await
    }

    /// Appends a chunk that arrives as a stream (an HTTP body) at `offset`, writing it to
    /// the partial file as it comes, so a large chunk never sits in memory. `max`: the
    /// most bytes one chunk may carry. With `checksum` (the SHA-256 the device computed
    /// over the chunk) a chunk that does not match is removed again, and so is one cut
    /// off before its end (it cannot be checked). Without one, what arrived before a cut
    /// is kept and the device resumes after it (as tus does). Everything kept is fsynced
    /// before the answer.
    pub async fn write_stream<B, E>(
        &self,
        owner: &Owner,
        blob: BlobId,
        offset: u64,
        mut body: B,
        max: u64,
        checksum: Option<[u8; 32]>,
    ) -> Result<Upload, MediaError>
    where
        B: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;
        let _guard = self.lock(owner, blob).await;
        let Some(size) = self.upload_size(owner, blob).await? else {
            // Completed meanwhile (another tab, or a resend of the last chunk)?
            if let Some(size) = self.complete_here(blob).await? {
                return Ok(Upload::Complete { size });
            }
            return Err(MediaError::NotFound(blob));
        };
        let path = self.partial_path(owner, &blob);
        let have = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if offset != have {
            return Err(MediaError::OffsetMismatch(have));
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await.map_err(io)?;
        let mut hasher = checksum.map(|_| sha2::Sha256::new());
        let (mut got, mut refusal, mut cut) = (0u64, None, false);
        while let Some(piece) = body.next().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(%blob, error = %e, received = got, "upload chunk cut off");
                    cut = true;
                    break;
                }
            };
            let n = piece.len() as u64;
            if have + got + n > size {
                refusal = Some(MediaError::BadRequest(format!(
                    "the chunk runs past Upload-Length {size}; send at most {} more bytes",
                    size - have
                )));
                break;
            }
            if got + n > max {
                refusal = Some(MediaError::TooLarge(format!(
                    "a chunk may carry at most {max} bytes (media.max_chunk_bytes); send smaller PATCHes"
                )));
                break;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&piece);
            }
            file.write_all(&piece).await.map_err(io)?;
            got += n;
        }
        let mismatch = match (hasher, checksum) {
            (Some(h), Some(want)) if !cut && refusal.is_none() => <[u8; 32]>::from(h.finalize()) != want,
            _ => false,
        };
        // A refused chunk, a chunk that does not match its checksum, or a cut one that
        // cannot be checked leaves the upload where it was.
        let keep = if refusal.is_some() || mismatch || (cut && checksum.is_some()) { 0 } else { got };
        file.flush().await.map_err(io)?;
        if keep < got {
            file.set_len(have).await.map_err(io)?;
        }
        // The answer promises these bytes survive a power cut.
        file.sync_data().await.map_err(io)?;
        drop(file);
        if keep > 0 {
            self.inner.store.add_blob_bytes(i64::try_from(keep).unwrap_or(0));
            metrics::counter!("outpost_media_bytes_received_total").increment(keep);
        }
        if let Some(e) = refusal {
            return Err(e);
        }
        if mismatch {
            return Err(MediaError::ChecksumMismatch);
        }
        if have + keep < size {
            return Ok(Upload::Partial { offset: have + keep, size });
        }
        self.finish(owner, blob, size, path).await
    }

    /// A complete upload: check the hash and the type, make the preview, move the file
    /// into place and record it.
    async fn finish(&self, owner: &Owner, blob: BlobId, size: u64, path: PathBuf) -> Result<Upload, MediaError> {
        let p = path.clone();
        let (digest, head) = tokio::task::spawn_blocking(move || -> std::io::Result<([u8; 32], Vec<u8>)> {
            let mut f = std::fs::File::open(&p)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut head = Vec::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if head.len() < 64 {
                    head.extend_from_slice(&buf[..n.min(64 - head.len())]);
                }
                hasher.update(&buf[..n]);
            }
            Ok((hasher.finalize().into(), head))
        })
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?
        .map_err(io)?;
        let mime = sniff(&head).filter(|m| self.inner.cfg.accepted_types.iter().any(|t| t == m));
        let refusal = if digest != blob.0 {
            Some(MediaError::HashMismatch)
        } else if mime.is_none() {
            Some(MediaError::UnsupportedType(match sniff(&head) {
                Some(m) => format!("{m} is not accepted on this server"),
                None => "unrecognised content".into(),
            }))
        } else {
            None
        };
        if let Some(e) = refusal {
            tracing::info!(%blob, owner = %owner.key(), error = %e, "upload refused");
            self.discard(owner, blob, size).await?;
            return Err(e);
        }
        let mime = mime.unwrap_or("application/octet-stream");
        let preview = if outpost_shared::media::is_image(mime) {
            let (p, cfg) = (path.clone(), self.inner.cfg.clone());
            tokio::task::spawn_blocking(move || preview::make(&p, &cfg)).await.ok().flatten()
        } else {
            None
        };
        let target = self.blob_path(&blob);
        let t = target.clone();
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let dir = t.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            if t.exists() {
                // Deduplicated: the bytes are here already.
                std::fs::remove_file(&path)?;
                return Ok(false);
            }
            std::fs::rename(&path, &t)?;
            sync_dir(dir)?;
            Ok(true)
        })
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?
        .map_err(io)?;
        if !moved {
            self.inner.store.add_blob_bytes(-i64::try_from(size).unwrap_or(0));
        }
        let source = match owner {
            Owner::User(u) => BlobSource::User(u.clone()),
            Owner::Peer(p) => BlobSource::Peer(p.clone()),
        };
        let complete = CompleteBlob {
            blob,
            size,
            mime: mime.to_owned(),
            preview,
            source,
            upload_owner: owner.key(),
            at: now_ms(),
        };
        self.inner.store.blob_complete(complete).await?;
        tracing::info!(%blob, size, mime, owner = %owner.key(), "blob stored");
        metrics::counter!("outpost_media_blobs_stored_total").increment(1);
        Ok(Upload::Complete { size })
    }
}
