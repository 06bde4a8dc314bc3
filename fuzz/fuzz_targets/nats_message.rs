//! `cargo fuzz run --features libfuzzer nats_message`: see [`tidings_fuzz::nats_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz::nats_message(data));
