//! Load on one NATS JetStream bus, for profiling: `EMITTERS` tasks emit
//! `EVENTS` events in all (each emit awaited before the task's next), with
//! `KEYS` keys in turn when set, to one no-op handler in the same process,
//! as `tidings bench`'s scenario 6 NATS rows do; prints the rate from the
//! first emit to the last handled, and when the emits ended. `ROUNDS` runs
//! it that many times on fresh bus names (the process and its connection
//! stay, so `perf` sees only this). With `ONE_AT_A_TIME` set, key
//! partitions hand out one delivery at a time instead of being pinned
//! (`Options::pin_key_partitions(false)`).
//!
//! ```sh
//! TIDINGS_NATS_URL=nats://127.0.0.1:4222 EVENTS=20000 ROUNDS=3 KEYS=1000 \
//!   cargo run --release -p tidings-nats --example keyed_load --features tidings-benches/mimalloc
//! ```
//!
//! (With the feature, the allocator is the `tidings` binary's, as `tidings
//! bench` runs; without it, the system's: glibc's malloc then takes about a
//! fifth of the process's samples.)

use anyhow::Context;
use std::time::Duration;

// The `tidings` binary's allocator when built with
// `--features tidings-benches/mimalloc` (as `tidings bench` runs), else the system's.
#[global_allocator]
static GLOBAL: tidings_benches::Allocator = tidings_benches::ALLOCATOR_INSTANCE;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_NATS_URL")
        .context("set TIDINGS_NATS_URL to a NATS server with JetStream")?;
    let shape = tidings_benches::LoadShape::from_env().map_err(anyhow::Error::msg)?;
    for _ in 0..shape.rounds {
        let name = format!("load_{}", uuid::Uuid::now_v7().simple());
        let options = tidings_nats::Options::default()
            .pin_key_partitions(std::env::var("ONE_AT_A_TIME").is_err());
        let store = tidings_nats::JetStreamStore::connect_with(&url, &name, options).await?;
        let bus = tidings_benches::noop_builder(1, "activity_log", 65_536, None)
            .store(store)
            .build()?;
        println!(
            "{}",
            tidings_benches::load(&bus, shape.events, shape.emitters, shape.keys).await?
        );
        bus.shutdown(Duration::from_secs(30)).await;
        drop(bus);
        tidings_nats::JetStreamStore::purge(&url, &name).await?;
    }
    Ok(())
}
