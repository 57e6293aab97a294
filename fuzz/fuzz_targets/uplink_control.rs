//! libFuzzer entry point; the decoding and the invariants live in
//! `outpost_fuzz::uplink_control::check` so the corpus replay test runs them without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_fuzz::uplink_control::check(data));
