//! Blobs over the hub ↔ cloud link: the bulk lane.
//!
//! Each side runs a [`sender`] that picks the next blob its peer lacks (named by a
//! message the peer has already acknowledged, so the message and its preview always
//! arrive first) and sends it on a bidirectional stream of the lowest priority: quinn
//! sends higher-priority streams' data first, so an emergency batch raised mid-transfer
//! overtakes every chunk still queued. The stream format is in
//! `outpost_shared::media`: a query, then chunks; each answered with the receiver's
//! durable offset. Unconfirmed bytes are kept near the measured bandwidth-delay product
//! (as for the normal lane, `uplink::flow::Pipe`), and to at most `media.link_window`
//! chunks of at most `media.link_chunk_bytes`: that bounds memory and, above all, how
//! much bulk data sits in the network's queue ahead of an emergency. A cut link loses at
//! most that window; the next connection's query resumes at the receiver's offset.
//!
//! [`serve`] is the receiving side: one task per incoming blob stream.

use outpost_storage::Storage;
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use outpost_shared::RoomId;
use outpost_shared::media::{BlobId, CHUNK_VERSION, ChunkHeader, Have, MAX_CHUNK_HEADER, MAX_HAVE};
use outpost_shared::uplink::flow::Pipe;
use tokio::io::AsyncReadExt as _;

use super::LinkError;
use crate::media::{Blobs, MediaError, Owner, Upload};

/// Stream priority of blob transfers (below every batch lane).
pub(super) const PRIORITY_BULK: i32 = -100;

/// The bulk window before any measurement, and its floor (EDGE's bandwidth-delay
/// product is about 21 KB).
const MIN_WINDOW: u64 = 16 << 10;
/// Smallest chunk: below this the per-chunk answer and fsync cost more than they save.
const MIN_CHUNK: u64 = 4 << 10;

/// A frame sent and not yet confirmed.
#[derive(Debug, Clone, Copy)]
struct Unconfirmed {
    /// Blob offset after this frame.
    end: u64,
    bytes: u64,
    sent_at: Duration,
    /// What the pipe had delivered when it was sent (for the rate sample).
    delivered: u64,
}

/// How long a sender waits for the receiver's answer to one frame before it gives the
/// blob up for this connection (the link's keep-alive notices a dead peer sooner).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn stream_err(e: impl std::fmt::Display) -> LinkError {
    LinkError::Stream(e.to_string())
}

async fn read_have(recv: &mut quinn::RecvStream) -> Result<Option<Have>, LinkError> {
    let mut prefix = [0u8; 2];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(stream_err(e)),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_HAVE {
        return Err(LinkError::Protocol(format!("blob answer of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(stream_err)?;
    Have::decode(&body).map(Some).map_err(|e| LinkError::Protocol(e.to_string()))
}

/// Sends the blobs `peer` lacks, one at a time, until the link ends. `rooms`: the rooms
/// the peer serves (None: the peer is the cloud and takes every room).
pub(super) async fn sender<S: Storage>(
    conn: quinn::Connection,
    blobs: Blobs<S>,
    peer: String,
    rooms: Option<std::sync::Arc<std::sync::Mutex<HashSet<RoomId>>>>,
    mut wants: tokio::sync::mpsc::Receiver<BlobId>,
) -> LinkError {
    let mut head = blobs.store().subscribe_head();
    // Blobs the peer refused on this connection (storage full, too large): tried again
    // on the next one.
    let mut refused: HashSet<BlobId> = HashSet::new();
    // Blobs the peer asked for (a device there wants them): before any other.
    let mut asked: VecDeque<BlobId> = VecDeque::new();
    loop {
        while let Ok(b) = wants.try_recv() {
            if !asked.contains(&b) {
                asked.push_back(b);
            }
        }
        let filter = rooms.as_ref().and_then(|r| r.lock().ok().map(|r| r.iter().cloned().collect::<Vec<_>>()));
        let next = match asked.pop_front() {
            // Sent even if the peer once confirmed it: it asks because it lost it.
            Some(b) => match blobs.for_peer(b, filter).await {
                Ok(Some(size)) => Some((b, size)),
                Ok(None) => {
                    tracing::info!(%peer, blob = %b, "the peer asked for a file this server cannot give it");
                    continue;
                }
                Err(e) => return LinkError::Stream(e.to_string()),
            },
            None => match blobs.next_for(&peer, filter).await {
                Ok(n) => n.filter(|(b, _)| !refused.contains(b)),
                Err(e) => return LinkError::Stream(e.to_string()),
            },
        };
        let Some((blob, size)) = next else {
            // Wait for a commit (a message acked by the peer, a blob completed here), or
            // for the peer to ask for a file.
            tokio::select! {
                r = head.changed() => if r.is_err() { return LinkError::Shutdown },
                Some(b) = wants.recv() => asked.push_back(b),
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        match send_blob(&conn, &blobs, blob, size).await {
            Ok(Sent::Complete) => {
                if let Err(e) = blobs.confirm(blob, &peer).await {
                    return LinkError::Stream(e.to_string());
                }
                tracing::info!(%peer, %blob, size, "blob confirmed by the peer");
                metrics::counter!("outpost_media_blobs_sent_total", "peer" => peer.clone()).increment(1);
            }
            Ok(Sent::Refused(why)) => {
                tracing::warn!(%peer, %blob, reason = %why, "the peer refused a blob; will try again on the next connection");
                refused.insert(blob);
            }
            Ok(Sent::Restart) => {}
            Err(e) => return e,
        }
    }
}

enum Sent {
    Complete,
    Refused(String),
    /// The receiver's offset moved unexpectedly: ask again on a new stream.
    Restart,
}

async fn send_blob<S: Storage>(
    conn: &quinn::Connection,
    blobs: &Blobs<S>,
    blob: BlobId,
    size: u64,
) -> Result<Sent, LinkError> {
    let cfg = blobs.config();
    let max_chunk = u64::from(cfg.link_chunk_bytes);
    let max_frames = usize::try_from(cfg.link_window).unwrap_or(1).max(1);
    let origin = tokio::time::Instant::now();
    let mut pipe = Pipe::default();
    let (mut send, mut recv) = conn.open_bi().await?;
    let _ = send.set_priority(PRIORITY_BULK);
    let frame = |offset: u64, bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let mut f = ChunkHeader { v: CHUNK_VERSION, blob, size, offset, len }.encode();
        f.extend_from_slice(bytes);
        f
    };
    send.write_all(&frame(0, &[])).await.map_err(stream_err)?;
    let have = match next_have(&mut send, &mut recv).await? {
        Ok(h) => h,
        Err(done) => return Ok(done),
    };
    tracing::info!(%blob, size, resume_at = have.offset, "sending a blob");
    let mut next = have.offset;
    // Frames sent and not yet confirmed, oldest first.
    let mut unconfirmed: VecDeque<Unconfirmed> = VecDeque::new();
    loop {
        // Bulk bytes in flight stay near the measured bandwidth-delay product: what
        // QUIC's priorities cannot reorder is what already sits in the network's queue,
        // so that is kept short for an emergency raised now. The receiver answers a chunk
        // only once all of it has arrived and been written, so the pipe is full only with
        // one more chunk in flight than the product measured with the first (small)
        // chunks: without that allowance the window settles near half the link (the
        // measured rate shrinks with the chunks' own transmission time and the window
        // with it). A third of the product per chunk keeps four frames enough.
        let chunk = pipe.bdp().map_or(MIN_WINDOW / 2, |b| b / 3).clamp(MIN_CHUNK, max_chunk.max(MIN_CHUNK));
        let window = pipe.window(MIN_WINDOW) + chunk;
        loop {
            let inflight: u64 = unconfirmed.iter().map(|u| u.bytes).sum();
            let room = unconfirmed.is_empty() || (inflight + chunk <= window && unconfirmed.len() < max_frames);
            if next >= size || !room {
                break;
            }
            let len = usize::try_from(chunk.min(size - next)).unwrap_or(0);
            let bytes = blobs.read_at(blob, next, len).await.map_err(|e| LinkError::Stream(e.to_string()))?;
            if bytes.len() != len {
                return Err(LinkError::Stream(format!("blob {blob} is shorter than its recorded size")));
            }
            send.write_all(&frame(next, &bytes)).await.map_err(stream_err)?;
            metrics::counter!("outpost_media_bytes_sent_total").increment(len as u64);
            next += len as u64;
            let (sent_at, delivered) = (origin.elapsed(), pipe.delivered());
            unconfirmed.push_back(Unconfirmed { end: next, bytes: len as u64, sent_at, delivered });
        }
        if unconfirmed.is_empty() {
            // Everything confirmed without `complete`: the receiver must have discarded
            // it (hash mismatch); start over.
            return Ok(Sent::Restart);
        }
        let have = match next_have(&mut send, &mut recv).await? {
            Ok(h) => h,
            Err(done) => return Ok(done),
        };
        if let Some(u) = unconfirmed.front().filter(|u| u.end == have.offset).copied() {
            unconfirmed.pop_front();
            pipe.on_ack(u.bytes, u.sent_at, u.delivered, origin.elapsed());
        } else {
            let _ = send.reset(0u32.into());
            return Ok(Sent::Restart);
        }
    }
}

/// The receiver's next answer: `Ok` to go on from its offset, `Err` when it ends the
/// transfer (the blob is complete there, or refused).
async fn next_have(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<Result<Have, Sent>, LinkError> {
    let have = match tokio::time::timeout(ANSWER_TIMEOUT, read_have(recv)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return Err(LinkError::Protocol("the peer closed a blob stream early".into())),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(LinkError::Protocol("the peer did not answer on a blob stream".into())),
    };
    if let Some(why) = have.refused {
        return Ok(Err(Sent::Refused(why)));
    }
    if have.complete {
        let _ = send.finish();
        return Ok(Err(Sent::Complete));
    }
    Ok(Ok(have))
}

/// Accepts the peer's blob streams until the link ends.
pub(super) async fn serve<S: Storage>(conn: quinn::Connection, blobs: Blobs<S>, peer: String) -> LinkError {
    // One task per incoming blob; the set owns them and aborts what is left when the link
    // ends (an unfinished upload keeps its durable length, and the peer resumes from there).
    let mut streams = tokio::task::JoinSet::new();
    loop {
        while streams.try_join_next().is_some() {}
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => return LinkError::Connection(e),
        };
        let (blobs, peer) = (blobs.clone(), peer.clone());
        streams.spawn(async move {
            if let Err(e) = receive_blob(send, recv, &blobs, &peer).await {
                tracing::info!(%peer, error = %e, "blob stream ended");
            }
        });
    }
}

async fn receive_blob<S: Storage>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    blobs: &Blobs<S>,
    peer: &str,
) -> Result<(), LinkError> {
    let cfg = blobs.config();
    let max_chunk = cfg.link_chunk_bytes.max(u32::try_from(cfg.max_chunk_bytes).unwrap_or(u32::MAX));
    let owner = Owner::Peer(peer.to_owned());
    let mut buf = Vec::new();
    loop {
        let mut prefix = [0u8; 3];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(e) => return Err(stream_err(e)),
        }
        let hlen = ChunkHeader::prefix_len(prefix).map_err(|e| LinkError::Protocol(e.to_string()))?;
        debug_assert!(hlen <= MAX_CHUNK_HEADER);
        let mut hbytes = vec![0u8; hlen];
        recv.read_exact(&mut hbytes).await.map_err(stream_err)?;
        let h = ChunkHeader::decode(&hbytes, max_chunk, u64::MAX).map_err(|e| LinkError::Protocol(e.to_string()))?;
        buf.clear();
        (&mut recv).take(u64::from(h.len)).read_to_end(&mut buf).await.map_err(stream_err)?;
        if buf.len() != h.len as usize {
            return Err(LinkError::Protocol("a blob stream ended inside a chunk".into()));
        }
        let have = match take(blobs, &owner, &h, &buf).await {
            Ok(up) => Have { offset: up.offset(), complete: matches!(up, Upload::Complete { .. }), refused: None },
            Err(MediaError::OffsetMismatch(at)) => Have { offset: at, complete: false, refused: None },
            Err(e @ (MediaError::Io(_) | MediaError::Store(_))) => return Err(LinkError::Stream(e.to_string())),
            Err(MediaError::HashMismatch) => Have { offset: 0, complete: false, refused: None },
            Err(e) => Have { offset: 0, complete: false, refused: Some(e.to_string()) },
        };
        let stop = have.refused.is_some() || have.complete;
        send.write_all(&have.encode()).await.map_err(stream_err)?;
        if stop {
            let _ = send.finish();
            return Ok(());
        }
    }
}

/// One frame: the query (len 0) or a chunk. Uploads from a peer need no quota of a user,
/// only the size limit and the storage quota ([`Blobs::begin`]).
async fn take<S: Storage>(
    blobs: &Blobs<S>,
    owner: &Owner,
    h: &ChunkHeader,
    bytes: &[u8],
) -> Result<Upload, MediaError> {
    let up = blobs.begin(owner, h.blob, h.size, true).await?;
    if h.len == 0 || matches!(up, Upload::Complete { .. }) {
        return Ok(up);
    }
    blobs.write(owner, h.blob, h.offset, bytes.to_vec()).await
}
