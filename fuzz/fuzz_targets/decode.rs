//! `cargo fuzz run --features libfuzzer decode`: see [`tidings_fuzz::decode`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::decode(data));
