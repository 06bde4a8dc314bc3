//! `cargo fuzz run --features libfuzzer emit`: see [`tidings_fuzz::emit`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::emit(data));
