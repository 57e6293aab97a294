//! libFuzzer entry point; the checks are in `outpost_fuzz::media_chunk::check`, so the
//! corpus replay test runs them without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_fuzz::media_chunk::check(data));
