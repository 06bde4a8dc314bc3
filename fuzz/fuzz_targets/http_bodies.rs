//! `cargo fuzz run --features libfuzzer http_bodies`: see [`tidings_fuzz::http_bodies`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::http_bodies(data));
