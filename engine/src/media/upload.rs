//! Writing an upload: chunks appended to its bytes (durable before each answer, so an
//! upload resumes exactly where the last acknowledged chunk ended), then the finished
//! upload checked (hash, type), made the complete blob, previewed and recorded.

use super::*;
use sha2::Digest as _;

impl<S: Storage> Blobs<S> {
    /// Appends a chunk at `offset` (which must be where the upload stands), makes it
    /// durable and, when it completes the blob, verifies and stores the blob.
    pub async fn write(&self, owner: &Owner, blob: BlobId, offset: u64, bytes: Vec<u8>) -> Result<Upload, MediaError> {
        let once = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes.into())]);
        self.write_stream(owner, blob, offset, once, u64::MAX, None).await
    }

    /// Appends a chunk that arrives as a stream (an HTTP body) at `offset`, writing it to
    /// the upload's bytes as it comes, so a large chunk never sits in memory. `max`: the
    /// most bytes one chunk may carry. With `checksum` (the SHA-256 the device computed
    /// over the chunk) a chunk that does not match is removed again, and so is one cut
    /// off before its end (it cannot be checked). Without one, what arrived before a cut
    /// is kept and the device resumes after it (as tus does). Everything kept is durable
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
        let _guard = self.lock(owner, blob).await;
        let Some(size) = self.upload_size(owner, blob).await? else {
            // Completed meanwhile (another tab, or a resend of the last chunk)?
            if let Some(size) = self.complete_here(blob).await? {
                return Ok(Upload::Complete { size });
            }
            return Err(MediaError::NotFound(blob));
        };
        let fail = MediaError::bytes(blob);
        let mut chunk = self.bytes().append(&owner.key(), blob, offset).await.map_err(&fail)?;
        let have = offset;
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
            chunk.write(&piece).await.map_err(&fail)?;
            got += n;
        }
        let mismatch = match (hasher, checksum) {
            (Some(h), Some(want)) if !cut && refusal.is_none() => <[u8; 32]>::from(h.finalize()) != want,
            _ => false,
        };
        // A refused chunk, a chunk that does not match its checksum, or a cut one that
        // cannot be checked leaves the upload where it was.
        let keep = if refusal.is_some() || mismatch || (cut && checksum.is_some()) { 0 } else { got };
        // The answer promises the bytes kept survive a power cut.
        if keep > 0 {
            chunk.commit().await.map_err(&fail)?;
            metrics::counter!("outpost_media_bytes_received_total").increment(keep);
        } else {
            chunk.abort().await.map_err(&fail)?;
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
        self.finish(owner, blob, size).await
    }

    /// A complete upload: check the hash and the type, make it the complete blob, make
    /// the preview and record it.
    async fn finish(&self, owner: &Owner, blob: BlobId, size: u64) -> Result<Upload, MediaError> {
        let fail = MediaError::bytes(blob);
        let key = owner.key();
        let (digest, head) = self.bytes().partial_digest(&key, blob, SNIFF_HEAD).await.map_err(&fail)?;
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
            tracing::info!(%blob, owner = %key, error = %e, "upload refused");
            self.discard(owner, blob).await?;
            return Err(e);
        }
        let mime = mime.unwrap_or("application/octet-stream");
        self.bytes().promote(&key, blob, size).await.map_err(&fail)?;
        let preview = if outpost_shared::media::is_image(mime) {
            let whole = self.read_at(blob, 0, usize::try_from(size).unwrap_or(usize::MAX)).await?;
            let cfg = self.inner.cfg.clone();
            tokio::task::spawn_blocking(move || preview::make(&whole, &cfg)).await.ok().flatten()
        } else {
            None
        };
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
