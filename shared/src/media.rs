//! Media as pure code: blob names, the media reference in a message body, types by
//! content, and the uplink's chunk stream format.
//!
//! A blob (photo, voice note, document) is named by the SHA-256 of its bytes. Devices
//! upload it over HTTP (docs/protocol.md, Media) and then send a message whose body holds
//! `{"media": {"sha256": HEX, ...}}`; servers carry the blob between hub and cloud on the
//! uplink's bulk lane, one bidirectional QUIC stream per blob (the link's only
//! bidirectional streams after the control stream):
//!
//! ```text
//! sender → receiver:  frame*   frame = 0xB1 | u16 BE header length | postcard(ChunkHeader) | header.len bytes
//! receiver → sender:  have*    have  = u16 BE length | postcard(Have)
//! ```
//! The first frame has `len = 0`: it asks how much the receiver holds. Every frame is
//! answered by one `Have` once its bytes are durable, so the sender resumes a cut
//! transfer at the receiver's offset and keeps only a window of chunks unconfirmed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::frames::Body;

/// First byte of a chunk stream on the uplink.
pub const CHUNK_STREAM: u8 = 0xB1;
/// Largest chunk header accepted.
pub const MAX_CHUNK_HEADER: usize = 256;
/// Version of the chunk header format.
pub const CHUNK_VERSION: u8 = 1;

/// A blob's name: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// Parses 64 lowercase hex digits (the only spelling accepted, so one blob has one name).
    pub fn parse(hex: &str) -> Option<Self> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
        }
        Some(Self(out))
    }

    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }
}

impl std::fmt::Debug for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobId({})", self.hex())
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Why a body's `media` object is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaRefError {
    #[error("body.media must be an object with a \"sha256\" of 64 lowercase hex digits")]
    Shape,
}

/// The blob a message body refers to: `Ok(None)` for a body without `media`, an error for
/// a `media` that is not `{"sha256": HEX, ...}`.
pub fn body_ref(body: &Body) -> Result<Option<BlobId>, MediaRefError> {
    // Cheap test first: nearly every body has no media.
    if !body.as_str().contains("\"media\"") {
        return Ok(None);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body.as_str()) else { return Ok(None) };
    match map.get("media") {
        None => Ok(None),
        Some(Value::Object(m)) => match m.get("sha256") {
            Some(Value::String(h)) => BlobId::parse(h).map(Some).ok_or(MediaRefError::Shape),
            _ => Err(MediaRefError::Shape),
        },
        Some(_) => Err(MediaRefError::Shape),
    }
}

/// What a server writes into a media body: the true size and type, and the preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFacts {
    pub size: u64,
    pub mime: String,
    /// JPEG preview: bytes, width, height.
    pub preview: Option<(Vec<u8>, u32, u32)>,
}

/// The body with `media.size`, `media.type` and `media.preview` set from `facts` (the
/// client's values are not trusted); other fields are kept.
pub fn complete_body(body: &Body, facts: &MediaFacts) -> Result<Body, MediaRefError> {
    use base64::Engine as _;
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body.as_str()) else {
        return Err(MediaRefError::Shape);
    };
    let Some(Value::Object(media)) = map.get_mut("media") else { return Err(MediaRefError::Shape) };
    media.insert("size".into(), facts.size.into());
    media.insert("type".into(), facts.mime.clone().into());
    match &facts.preview {
        Some((jpeg, w, h)) => {
            let data = base64::engine::general_purpose::STANDARD.encode(jpeg);
            let preview = serde_json::json!({"type": "image/jpeg", "width": w, "height": h, "data": data});
            media.insert("preview".into(), preview);
        }
        None => {
            media.remove("preview");
        }
    }
    let text = serde_json::to_string(&Value::Object(map)).map_err(|_| MediaRefError::Shape)?;
    Body::from_json(&text).map_err(|_| MediaRefError::Shape)
}

/// Every type a server may accept, recognised by its first bytes (see [`sniff`]).
pub const KNOWN_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "audio/webm",
    "audio/ogg",
    "audio/mp4",
    "audio/mpeg",
    "audio/wav",
    "application/pdf",
];

/// The type of a file by its first bytes (at least 16 are needed), or None when it is
/// none of [`KNOWN_TYPES`]. The name a device gave it is never consulted.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |i: usize, magic: &[u8]| head.get(i..i + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some("image/webp")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("audio/wav")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML: WebM (MediaRecorder in Chromium and Firefox).
        Some("audio/webm")
    } else if at(0, b"OggS") {
        Some("audio/ogg")
    } else if at(4, b"ftyp") {
        // ISO base media: Safari's MediaRecorder and .m4a files. HEIF/AVIF photos share
        // the container and are not voice notes; they are refused rather than mislabelled.
        const STILL_IMAGES: [&[u8; 4]; 8] = [b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif"];
        let brand = head.get(8..12).unwrap_or_default();
        if STILL_IMAGES.iter().any(|b| brand == b.as_slice()) { None } else { Some("audio/mp4") }
    } else if at(0, b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        Some("audio/mpeg")
    } else if at(0, b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

/// Whether a type gets a preview (decoded and scaled by the server).
pub fn is_image(mime: &str) -> bool {
    mime.starts_with("image/")
}

/// The header of one chunk on the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub v: u8,
    pub blob: BlobId,
    /// The whole blob's size.
    pub size: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// How many bytes follow the header.
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("not a chunk stream")]
    NotChunk,
    #[error("chunk header of {0} bytes is too large")]
    HeaderTooLarge(usize),
    #[error("undecodable chunk header: {0}")]
    Decode(String),
    #[error("chunk version {0} is not supported")]
    Version(u8),
    #[error("chunk of {len} bytes at {offset} does not fit a blob of {size} bytes, or exceeds {max}")]
    Bounds { offset: u64, len: u32, size: u64, max: u32 },
}

impl ChunkHeader {
    /// The stream prefix: marker, length, header.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 3);
        out.push(CHUNK_STREAM);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads the header length from the 3-byte prefix.
    pub fn prefix_len(prefix: [u8; 3]) -> Result<usize, ChunkError> {
        if prefix[0] != CHUNK_STREAM {
            return Err(ChunkError::NotChunk);
        }
        let len = usize::from(u16::from_be_bytes([prefix[1], prefix[2]]));
        if len > MAX_CHUNK_HEADER { Err(ChunkError::HeaderTooLarge(len)) } else { Ok(len) }
    }

    /// Decodes and bounds-checks a header (`max_chunk`: largest chunk accepted,
    /// `max_blob`: largest blob).
    pub fn decode(body: &[u8], max_chunk: u32, max_blob: u64) -> Result<Self, ChunkError> {
        let h: Self = postcard::from_bytes(body).map_err(|e| ChunkError::Decode(e.to_string()))?;
        if h.v != CHUNK_VERSION {
            return Err(ChunkError::Version(h.v));
        }
        let end = h.offset.checked_add(u64::from(h.len));
        if h.len > max_chunk || h.size > max_blob || end.is_none_or(|e| e > h.size) {
            return Err(ChunkError::Bounds { offset: h.offset, len: h.len, size: h.size, max: max_chunk });
        }
        Ok(h)
    }
}

/// The receiver's answer to each frame of a blob stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// Bytes of the blob durable at the receiver (continue from here).
    pub offset: u64,
    /// The whole blob is there and its SHA-256 checked.
    pub complete: bool,
    /// The receiver will not take this blob now (over its size limit, storage full, not
    /// an accepted type); the sender tries again on a later connection.
    pub refused: Option<String>,
}

/// Largest `Have` frame accepted.
pub const MAX_HAVE: usize = 1024;

impl Have {
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 2);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ChunkError> {
        postcard::from_bytes(body).map_err(|e| ChunkError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(s: &str) -> Body {
        Body::from_json(s).unwrap_or_else(|e| panic!("{e}"))
    }

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn blob_ids_are_lowercase_hex_only() {
        let id = BlobId::parse(H).unwrap_or_else(|| panic!("valid"));
        assert_eq!(id.hex(), H);
        assert!(BlobId::parse(&H.to_uppercase()).is_none());
        assert!(BlobId::parse(&H[1..]).is_none());
        assert!(BlobId::parse(&format!("{}g", &H[1..])).is_none());
    }

    #[test]
    fn body_references() {
        assert_eq!(body_ref(&body(r#"{"text":"hi"}"#)), Ok(None));
        assert_eq!(body_ref(&body(r#""media""#)), Ok(None));
        let r = body_ref(&body(&format!(r#"{{"media":{{"sha256":"{H}"}}}}"#)));
        assert_eq!(r, Ok(BlobId::parse(H)));
        assert_eq!(body_ref(&body(r#"{"media":"x"}"#)), Err(MediaRefError::Shape));
        assert_eq!(body_ref(&body(r#"{"media":{"sha256":"abc"}}"#)), Err(MediaRefError::Shape));
    }

    #[test]
    fn completing_a_body_overrides_what_the_client_claimed() {
        let b =
            body(&format!(r#"{{"text":"arm","media":{{"sha256":"{H}","size":1,"type":"text/html","name":"a.jpg"}}}}"#));
        let facts = MediaFacts { size: 5_000_000, mime: "image/jpeg".into(), preview: Some((vec![1, 2, 3], 256, 192)) };
        let out = complete_body(&b, &facts).unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_str(out.as_str()).unwrap_or_default();
        assert_eq!(v["text"], "arm");
        assert_eq!(v["media"]["size"], 5_000_000);
        assert_eq!(v["media"]["type"], "image/jpeg");
        assert_eq!(v["media"]["name"], "a.jpg");
        assert_eq!(v["media"]["preview"]["data"], "AQID");
        assert_eq!(v["media"]["preview"]["width"], 256);
        assert_eq!(body_ref(&out), Ok(BlobId::parse(H)));
    }

    #[test]
    fn types_by_content() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0]), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\0"), Some("image/png"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some("audio/wav"));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1, 2]), Some("audio/webm"));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some("audio/mp4"));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0"), None, "an iPhone photo is not a voice note");
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0\0\0"), None);
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"<html><script>"), None);
        assert_eq!(sniff(b"MZ\x90\0"), None);
        assert_eq!(sniff(b""), None);
    }

    proptest! {
        #[test]
        fn chunk_headers_round_trip(bytes in any::<[u8; 32]>(), size in 1u64..1 << 30, off in any::<u64>(), len in 1u32..1 << 20) {
            let offset = off % size;
            let len = u32::try_from(u64::from(len).min(size - offset)).unwrap_or(1);
            let h = ChunkHeader { v: CHUNK_VERSION, blob: BlobId(bytes), size, offset, len };
            let enc = h.encode();
            let n = ChunkHeader::prefix_len([enc[0], enc[1], enc[2]]);
            prop_assert_eq!(n, Ok(enc.len() - 3));
            prop_assert_eq!(ChunkHeader::decode(&enc[3..], 1 << 20, 1 << 30), Ok(h));
        }

        #[test]
        fn chunk_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ChunkHeader::decode(&bytes, 1 << 20, 1 << 30);
        }
    }

    #[test]
    fn haves_round_trip() {
        for h in [
            Have { offset: 0, complete: false, refused: None },
            Have { offset: 5 << 20, complete: true, refused: None },
            Have { offset: 0, complete: false, refused: Some("storage full".into()) },
        ] {
            let enc = h.encode();
            assert_eq!(usize::from(u16::from_be_bytes([enc[0], enc[1]])), enc.len() - 2);
            assert_eq!(Have::decode(&enc[2..]), Ok(h));
        }
    }

    #[test]
    fn chunks_outside_their_blob_are_refused() {
        let h = ChunkHeader { v: CHUNK_VERSION, blob: BlobId([0; 32]), size: 100, offset: 90, len: 20 };
        assert!(matches!(ChunkHeader::decode(&h.encode()[3..], 1 << 20, 1 << 30), Err(ChunkError::Bounds { .. })));
        let h = ChunkHeader { offset: u64::MAX, len: 2, ..h };
        assert!(matches!(ChunkHeader::decode(&h.encode()[3..], 1 << 20, 1 << 30), Err(ChunkError::Bounds { .. })));
        assert_eq!(ChunkHeader::prefix_len([0, 0, 0]), Err(ChunkError::NotChunk));
    }
}
