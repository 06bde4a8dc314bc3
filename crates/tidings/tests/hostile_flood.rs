//! A million emits from 64 tasks against a slow handler, on the in-memory
//! bus: memory bounded by the capacity, every emit refused or handled
//! (`tidings_conformance::hostile::flood`). Alone in its test binary: it
//! measures the process's resident memory.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_emits_against_a_slow_handler_stay_within_the_capacity() {
    let builder = tidings::EventBus::builder().discover(false);
    let f = tidings_conformance::hostile::flood(builder, 1_000_000, 10_000).await;
    eprintln!("flood, memory, capacity 10 000: {f:?}");
}
