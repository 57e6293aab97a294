//! Uplink control frames: `Control::check_len` on the 4-byte prefix, then
//! `Control::decode` on the body the link read (engine/src/link `read_control`). The input
//! is the body, as `read_control` hands it over; its length is bounded by the fuzzer's
//! `-max_len`, as `check_len` bounds it on the link.

use outpost_shared::uplink::control::{Control, MAX_CONTROL_LEN};

pub fn check(data: &[u8]) {
    if let Some(prefix) = data.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok())
        && let Ok(len) = Control::check_len(prefix)
    {
        assert!(len <= MAX_CONTROL_LEN);
    }
    let Ok(control) = Control::decode(data) else {
        return;
    };
    let wire = control.encode();
    let body = &wire[4..];
    let prefix: [u8; 4] = [wire[0], wire[1], wire[2], wire[3]];
    assert_eq!(Control::check_len(prefix).ok(), (body.len() <= MAX_CONTROL_LEN).then_some(body.len()));
    // Canonical varints are never longer than what was accepted (trailing bytes after a
    // frame are ignored by postcard, so the input may be longer).
    assert!(body.len() <= data.len(), "control frame grew on re-encoding: {} > {}", body.len(), data.len());
    assert_eq!(Control::decode(body).ok(), Some(control), "control frame changed on re-encoding");
}
