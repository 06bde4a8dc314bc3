//! `cargo fuzz run --features libfuzzer stored`: see [`tidings_fuzz::stored`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::stored(data));
