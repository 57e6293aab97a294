//! The media bulk lane's frames as a receiver reads them (engine/src/link/bulk.rs): the
//! 3-byte prefix of a chunk frame, its header, and the sender's reading of a `Have`
//! answer; plus the two things a server does with a device's body that names a blob
//! (finding the reference, completing the body) and the type sniffer on the file's head.
//! Invariants: accepted headers stay inside their blob and under the chunk limit, and
//! re-encode to themselves; a completed body still names the same blob.

use outpost_shared::Body;
use outpost_shared::media::{self, ChunkHeader, Have, MAX_CHUNK_HEADER, MediaFacts};

/// The receiver's limits in the check (defaults of `[media]`).
const MAX_CHUNK: u32 = 1 << 20;
const MAX_BLOB: u64 = 16 << 20;

pub fn check(data: &[u8]) {
    if let Some(prefix) = data.get(..3).and_then(|p| <[u8; 3]>::try_from(p).ok())
        && let Ok(len) = ChunkHeader::prefix_len(prefix)
    {
        assert!(len <= MAX_CHUNK_HEADER);
        if let Some(body) = data.get(3..3 + len)
            && let Ok(h) = ChunkHeader::decode(body, MAX_CHUNK, MAX_BLOB)
        {
            assert!(h.len <= MAX_CHUNK && h.size <= MAX_BLOB);
            assert!(h.offset + u64::from(h.len) <= h.size, "a chunk outside its blob was accepted: {h:?}");
            let again = h.encode();
            assert_eq!(ChunkHeader::decode(&again[3..], MAX_CHUNK, MAX_BLOB).ok(), Some(h));
        }
    }
    if let Ok(have) = Have::decode(data) {
        assert_eq!(Have::decode(&have.encode()[2..]).ok(), Some(have));
    }
    let _ = media::sniff(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(body) = Body::from_json(text)
        && let Ok(Some(blob)) = media::body_ref(&body)
    {
        let facts = MediaFacts { size: 1, mime: "image/jpeg".into(), preview: Some((vec![0xFF, 0xD8], 2, 1)) };
        let done =
            media::complete_body(&body, &facts).unwrap_or_else(|e| panic!("a referenced body must complete: {e}"));
        assert_eq!(media::body_ref(&done), Ok(Some(blob)), "completing a body changed the blob it names");
    }
}
