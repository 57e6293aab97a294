//! Fuzz targets for the decoders that read bytes an attacker controls.
//!
//! Each module is one target: `check(data)` feeds the bytes to the decoder the way the
//! hub or cloud would and then asserts invariants on the result (a decoded value
//! re-encodes to itself, a batch stays within its byte limit, a verified token is
//! signed, unexpired and from our issuer). A panic, in the decoder or in an invariant,
//! is a finding. The libFuzzer entry points in `fuzz_targets/` only call these
//! functions, so `tests/corpus.rs` replays the committed corpus through the very same
//! checks in the normal test run. What is fuzzed and how: `docs/fuzzing.md`.

pub mod device_frame;
pub mod media_chunk;
pub mod token;
pub mod uplink_batch;
pub mod uplink_control;

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[&str] = &["device_frame", "uplink_batch", "uplink_control", "token", "media_chunk"];

/// Runs the check of `target` on `data`; `None` if there is no such target.
pub fn check(target: &str, data: &[u8]) -> Option<()> {
    match target {
        "device_frame" => device_frame::check(data),
        "uplink_batch" => uplink_batch::check(data),
        "uplink_control" => uplink_control::check(data),
        "token" => token::check(data),
        "media_chunk" => media_chunk::check(data),
        _ => return None,
    }
    Some(())
}
