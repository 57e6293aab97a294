//! The batch format, both directions.
//!
//! ```text
//! u32 BE header length | postcard(BatchHeader) | payload
//! payload = zstd(postcard(Vec<Entry>)) with the dictionary named in the header
//!           (or the plain postcard bytes when codec = Plain)
//! ```
//! One batch travels on one QUIC stream. Entries are the sender's log entries (messages
//! and custody receipts) in cursor order with their fields as stored, so the receiver can
//! apply them idempotently (deduplicating by message id) without guessing anything.
//! Decoding is bounded: a header over [`MAX_HEADER`], a payload that inflates past the
//! receiver's limit or claims a different entry count is refused, never trusted.

use serde::{Deserialize, Serialize};

use crate::frames::{Body, MessageBody, ReceiptState};
use crate::hlc::Hlc;
use crate::ids::{Cursor, DeviceId, MessageId, MessageKind, Priority, RoomId, Seq, UserId};

/// Current batch format version.
pub const BATCH_VERSION: u8 = 1;
/// Largest header accepted.
pub const MAX_HEADER: usize = 1024;
/// zstd level: fast enough for a Pi at link speeds, and most of the gain comes from the
/// dictionary anyway.
pub const ZSTD_LEVEL: i32 = 9;

/// Which lane a batch travels in (its own QUIC stream priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    Emergency,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    Plain,
    Zstd,
    ZstdDict(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchHeader {
    pub v: u8,
    /// Sender-assigned, unique per connection; the receiver acks it.
    pub batch: u64,
    pub lane: Lane,
    /// Cursor range of the entries (sender's log).
    pub first: Cursor,
    pub last: Cursor,
    pub count: u32,
    pub codec: Codec,
    /// Uncompressed payload length.
    pub raw_len: u32,
    /// The sender's high-water mark when it sent the batch: all its entries up to here
    /// were acknowledged by the receiver before.
    pub hwm: Cursor,
}

/// A stored message as it travels between hub and cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub cursor: Cursor,
    pub id: MessageId,
    pub room: RoomId,
    pub kind: MessageKind,
    pub priority: Priority,
    /// The body's JSON text, exactly as the sender wrote it.
    pub body: String,
    pub seq: Seq,
    pub reply_to: Option<MessageId>,
    pub from: UserId,
    pub device: DeviceId,
    pub hlc: Hlc,
    pub at: u64,
}

impl WireMessage {
    /// A stored message at `cursor`, for sending.
    pub fn from_stored(cursor: Cursor, m: MessageBody) -> Self {
        Self {
            cursor,
            id: m.id,
            room: m.room,
            kind: m.kind,
            priority: m.priority,
            body: m.body.as_str().to_owned(),
            seq: m.seq,
            reply_to: m.reply_to,
            from: m.from,
            device: m.device,
            hlc: m.hlc,
            at: m.at,
        }
    }

    /// The message as a receiver stores it; fails if the body is not JSON.
    pub fn into_stored(self) -> Result<MessageBody, serde_json::Error> {
        Ok(MessageBody {
            id: self.id,
            room: self.room,
            kind: self.kind,
            priority: self.priority,
            body: Body::from_json(&self.body)?,
            seq: self.seq,
            reply_to: self.reply_to,
            from: self.from,
            device: self.device,
            hlc: self.hlc,
            at: self.at,
        })
    }
}

/// A custody receipt as it travels between hub and cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReceipt {
    pub cursor: Cursor,
    /// The message the receipt is about.
    pub id: MessageId,
    pub state: ReceiptState,
    pub by: Option<UserId>,
    /// Who should see it: the sender of that message.
    pub target: UserId,
    pub room: RoomId,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Message(WireMessage),
    Receipt(WireReceipt),
}

impl Entry {
    pub fn cursor(&self) -> Cursor {
        match self {
            Entry::Message(m) => m.cursor,
            Entry::Receipt(r) => r.cursor,
        }
    }

    /// When the entry was made (server time, ms since the Unix epoch).
    pub fn at(&self) -> u64 {
        match self {
            Entry::Message(m) => m.at,
            Entry::Receipt(r) => r.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated")]
    Truncated,
    #[error("batch header of {len} bytes exceeds {MAX_HEADER}")]
    HeaderTooLarge { len: usize },
    #[error("undecodable batch header: {0}")]
    Header(String),
    #[error("batch format version {0} is not supported")]
    Version(u8),
    #[error("batch inflates to {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("batch uses zstd dictionary {0}, which this build does not have")]
    UnknownDictionary(u32),
    #[error("batch payload does not decompress: {0}")]
    Decompress(String),
    #[error("batch payload is not a list of entries: {0}")]
    Entries(String),
    #[error("batch claims {claimed} entries but holds {found}")]
    Count { claimed: u32, found: usize },
    #[error("batch entries are not in cursor order within {first}..={last}")]
    Order { first: u64, last: u64 },
    #[error("compression failed: {0}")]
    Compress(String),
}

/// Encodes `entries` (non-empty, cursor order) as one batch.
pub fn encode(
    batch: u64,
    lane: Lane,
    hwm: Cursor,
    entries: &[Entry],
    dict: Option<(u32, &[u8])>,
) -> Result<Vec<u8>, BatchError> {
    let raw = postcard::to_stdvec(entries).map_err(|e| BatchError::Compress(e.to_string()))?;
    let (codec, payload) = match dict {
        Some((id, d)) => {
            let mut c = zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, d)
                .map_err(|e| BatchError::Compress(e.to_string()))?;
            (Codec::ZstdDict(id), c.compress(&raw).map_err(|e| BatchError::Compress(e.to_string()))?)
        }
        None => (Codec::Zstd, zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(|e| BatchError::Compress(e.to_string()))?),
    };
    let header = BatchHeader {
        v: BATCH_VERSION,
        batch,
        lane,
        first: entries.first().map_or(Cursor(0), Entry::cursor),
        last: entries.last().map_or(Cursor(0), Entry::cursor),
        count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        codec,
        raw_len: u32::try_from(raw.len()).unwrap_or(u32::MAX),
        hwm,
    };
    let h = postcard::to_stdvec(&header).map_err(|e| BatchError::Compress(e.to_string()))?;
    let mut out = Vec::with_capacity(4 + h.len() + payload.len());
    out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads only the header (to route or refuse a batch before inflating it).
pub fn decode_header(bytes: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    let prefix: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or(BatchError::Truncated)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HEADER {
        return Err(BatchError::HeaderTooLarge { len });
    }
    let h = bytes.get(4..4 + len).ok_or(BatchError::Truncated)?;
    let header: BatchHeader = postcard::from_bytes(h).map_err(|e| BatchError::Header(e.to_string()))?;
    if header.v != BATCH_VERSION {
        return Err(BatchError::Version(header.v));
    }
    Ok((header, &bytes[4 + len..]))
}

/// Decodes a whole batch; `max_raw` bounds the inflated size.
pub fn decode(bytes: &[u8], max_raw: usize) -> Result<(BatchHeader, Vec<Entry>), BatchError> {
    let (header, payload) = decode_header(bytes)?;
    let raw_len = header.raw_len as usize;
    if raw_len > max_raw {
        return Err(BatchError::TooLarge { len: raw_len, max: max_raw });
    }
    let raw = match header.codec {
        Codec::Plain => payload.to_vec(),
        Codec::Zstd => zstd::bulk::decompress(payload, raw_len).map_err(|e| BatchError::Decompress(e.to_string()))?,
        Codec::ZstdDict(id) => {
            let d = super::dict::get(id).ok_or(BatchError::UnknownDictionary(id))?;
            let mut dec =
                zstd::bulk::Decompressor::with_dictionary(d).map_err(|e| BatchError::Decompress(e.to_string()))?;
            dec.decompress(payload, raw_len).map_err(|e| BatchError::Decompress(e.to_string()))?
        }
    };
    if raw.len() != raw_len {
        return Err(BatchError::Decompress(format!("inflated to {} bytes, header says {raw_len}", raw.len())));
    }
    let entries: Vec<Entry> = postcard::from_bytes(&raw).map_err(|e| BatchError::Entries(e.to_string()))?;
    if entries.len() != header.count as usize {
        return Err(BatchError::Count { claimed: header.count, found: entries.len() });
    }
    let in_order = entries.windows(2).all(|w| w[0].cursor() < w[1].cursor());
    let in_range = entries.first().is_none_or(|e| e.cursor() == header.first)
        && entries.last().is_none_or(|e| e.cursor() == header.last);
    if !in_order || !in_range {
        return Err(BatchError::Order { first: header.first.0, last: header.last.0 });
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_s() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,10}"
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let msg = (
            any::<[u8; 16]>(),
            id_s(),
            "[a-z]{1,8}",
            0u8..4,
            "\\PC{0,60}",
            any::<u64>(),
            proptest::option::of(any::<[u8; 16]>()),
            id_s(),
            "[ -~]{1,20}",
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(id, room, kind, p, text, seq, reply, from, device, hlc, at)| {
                Entry::Message(WireMessage {
                    cursor: Cursor(0),
                    id: MessageId::from_bytes(id),
                    room: RoomId::new(room).unwrap_or_else(|e| panic!("{e}")),
                    kind: MessageKind::new(kind).unwrap_or_else(|e| panic!("{e}")),
                    priority: Priority::from_u8(p).unwrap_or(Priority::Normal),
                    body: serde_json::json!({ "text": text }).to_string(),
                    seq: Seq(seq),
                    reply_to: reply.map(MessageId::from_bytes),
                    from: UserId::new(from).unwrap_or_else(|e| panic!("{e}")),
                    device: DeviceId::new(device).unwrap_or_else(|e| panic!("{e}")),
                    hlc: Hlc(hlc),
                    at,
                })
            });
        let receipt = (any::<[u8; 16]>(), 0u8..4, proptest::option::of(id_s()), id_s(), id_s(), any::<u64>()).prop_map(
            |(id, s, by, target, room, at)| {
                Entry::Receipt(WireReceipt {
                    cursor: Cursor(0),
                    id: MessageId::from_bytes(id),
                    state: [ReceiptState::Stored, ReceiptState::Forwarded, ReceiptState::Delivered, ReceiptState::Read]
                        [s as usize],
                    by: by.map(|b| UserId::new(b).unwrap_or_else(|e| panic!("{e}"))),
                    target: UserId::new(target).unwrap_or_else(|e| panic!("{e}")),
                    room: RoomId::new(room).unwrap_or_else(|e| panic!("{e}")),
                    at,
                })
            },
        );
        prop_oneof![3 => msg, 1 => receipt]
    }

    fn numbered(mut entries: Vec<Entry>, start: u64) -> Vec<Entry> {
        for (i, e) in entries.iter_mut().enumerate() {
            let c = Cursor(start + 2 * i as u64);
            match e {
                Entry::Message(m) => m.cursor = c,
                Entry::Receipt(r) => r.cursor = c,
            }
        }
        entries
    }

    proptest! {
        #[test]
        fn batches_round_trip_with_and_without_dictionary(
            entries in prop::collection::vec(entry(), 1..40),
            start in 1u64..1_000_000,
            batch in any::<u64>(),
            use_dict in any::<bool>(),
        ) {
            let entries = numbered(entries, start);
            let dict = if use_dict { super::super::dict::get(1).map(|d| (1, d)) } else { None };
            let bytes = encode(batch, Lane::Normal, Cursor(start - 1), &entries, dict).unwrap_or_default();
            let (h, got) = decode(&bytes, 1 << 24).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(h.batch, batch);
            prop_assert_eq!(h.count as usize, entries.len());
            prop_assert_eq!(got, entries);
        }

        #[test]
        fn garbage_is_refused_not_trusted(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 1 << 20);
        }
    }

    fn read_receipt() -> Entry {
        Entry::Receipt(WireReceipt {
            cursor: Cursor(1),
            id: MessageId::from_bytes([0; 16]),
            state: ReceiptState::Read,
            by: None,
            target: UserId::new("a").unwrap_or_else(|e| panic!("{e}")),
            room: RoomId::new("r").unwrap_or_else(|e| panic!("{e}")),
            at: 0,
        })
    }

    #[test]
    fn inflation_past_the_limit_is_refused() {
        let bytes = encode(1, Lane::Normal, Cursor(0), &[read_receipt()], None).unwrap_or_default();
        assert!(matches!(decode(&bytes, 4), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn a_lying_count_is_refused() {
        let mut bytes = encode(1, Lane::Normal, Cursor(0), &[read_receipt()], None).unwrap_or_default();
        let (mut h, payload) = decode_header(&bytes).map(|(h, p)| (h, p.to_vec())).unwrap_or_else(|e| panic!("{e}"));
        h.count = 5;
        let hb = postcard::to_stdvec(&h).unwrap_or_default();
        bytes = [(hb.len() as u32).to_be_bytes().to_vec(), hb, payload].concat();
        assert!(matches!(decode(&bytes, 1 << 20), Err(BatchError::Count { .. })));
    }
}
