//! `cargo fuzz run --features libfuzzer sqlite_rows`: see [`tidings_fuzz::sqlite_rows`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::sqlite_rows(data));
