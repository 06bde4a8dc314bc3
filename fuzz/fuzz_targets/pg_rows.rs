//! `TIDINGS_TEST_POSTGRES_URL=... cargo fuzz run --features libfuzzer pg_rows`: see [`tidings_fuzz::pg_rows`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::pg_rows(data));
