//! Uplink batches: `batch::decode_header` and `batch::decode`, which the hub and the
//! cloud run on every stream the other side opens (engine/src/link: at most
//! `MAX_BATCH_WIRE` bytes read, decoded with `MAX_BATCH_RAW`).

use outpost_shared::uplink::batch::{self, BATCH_VERSION, BatchHeader, Entry};

/// The receiver's inflation limit, as `relay::link::MAX_BATCH_RAW` (16 MiB). Not imported
/// so the fuzz build does not compile the whole relay.
pub const MAX_RAW: usize = 16 << 20;
/// A small limit as well, so the refusal path is reached by ordinary inputs.
const SMALL_MAX_RAW: usize = 4 << 10;

pub fn check(data: &[u8]) {
    if let Ok((header, rest)) = batch::decode_header(data) {
        assert_eq!(header.v, BATCH_VERSION);
        assert!(data.ends_with(rest), "payload is not the tail of the batch");
    }
    let big = batch::decode(data, MAX_RAW);
    if let Ok((header, entries)) = &big {
        check_decoded(header, entries, MAX_RAW);
    }
    let small = batch::decode(data, SMALL_MAX_RAW);
    if let Ok((header, entries)) = &small {
        check_decoded(header, entries, SMALL_MAX_RAW);
        // A larger limit never refuses what a smaller one accepted.
        assert_eq!(big.as_ref().ok(), Some(&(header.clone(), entries.clone())), "limits disagree");
    }
}

fn check_decoded(header: &BatchHeader, entries: &[Entry], max_raw: usize) {
    assert!(header.raw_len as usize <= max_raw, "accepted raw_len {} over {max_raw}", header.raw_len);
    assert_eq!(entries.len(), header.count as usize);
    // postcard may accept over-long varints, so the canonical encoding can be shorter
    // than raw_len, never longer: what the decoder handed out fits in the limit.
    let canonical = postcard::to_stdvec(entries).unwrap_or_default();
    assert!(
        canonical.len() <= header.raw_len as usize,
        "entries re-encode to {} > raw_len {}",
        canonical.len(),
        header.raw_len
    );
    assert!(entries.windows(2).all(|w| w[0].cursor() < w[1].cursor()), "entries out of order");
    let Some((first, last)) = entries.first().zip(entries.last()) else {
        return;
    };
    assert_eq!((first.cursor(), last.cursor()), (header.first, header.last));
    for e in entries {
        // The receiver stores messages through this; it may refuse a non-JSON body but
        // must not panic.
        if let Entry::Message(m) = e {
            let _ = m.clone().into_stored();
        }
    }
    // Round trip through the real encoder (zstd, no dictionary).
    let bytes = batch::encode(header.batch, header.lane, header.hwm, entries, None)
        .unwrap_or_else(|e| panic!("decoded entries do not re-encode: {e}"));
    let (h2, e2) =
        batch::decode(&bytes, usize::MAX).unwrap_or_else(|e| panic!("re-encoded batch does not decode: {e}"));
    assert_eq!(e2, entries);
    assert_eq!(
        (h2.batch, h2.lane, h2.hwm, h2.first, h2.last, h2.count),
        (header.batch, header.lane, header.hwm, header.first, header.last, header.count)
    );
}
