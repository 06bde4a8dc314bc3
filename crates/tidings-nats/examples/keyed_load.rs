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
//!   cargo run --release -p tidings-nats --example keyed_load
//! ```

use anyhow::Context;
use std::time::{Duration, Instant};

fn var(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name} is a number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_NATS_URL")
        .context("set TIDINGS_NATS_URL to a NATS server with JetStream")?;
    let (events, emitters, keys) = (
        var("EVENTS", 20_000)?,
        var("EMITTERS", 64)?,
        var("KEYS", 0)?,
    );
    for _ in 0..var("ROUNDS", 1)? {
        let name = format!("load_{}", uuid::Uuid::now_v7().simple());
        let options = tidings_nats::Options::default()
            .pin_key_partitions(std::env::var("ONE_AT_A_TIME").is_err());
        let store = tidings_nats::JetStreamStore::connect_with(&url, &name, options).await?;
        let bus = tidings_benches::noop_builder(1, "activity_log", 65_536, None)
            .store(store)
            .build()?;
        let start = Instant::now();
        let emitted = tidings_benches::emit_awaited(&bus, events, emitters, keys).await?;
        let emitted_in = start.elapsed();
        bus.wait_idle().await;
        let all = start.elapsed();
        println!(
            "{} events/s; emits done after {:.0} ms of {:.0} ms",
            (emitted as f64 / all.as_secs_f64()) as u64,
            emitted_in.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
        bus.shutdown(Duration::from_secs(30)).await;
        drop(bus);
        tidings_nats::JetStreamStore::purge(&url, &name).await?;
    }
    Ok(())
}
