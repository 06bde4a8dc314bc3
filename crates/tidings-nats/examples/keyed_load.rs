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
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};

struct Noop;

impl EventHandler for Noop {
    fn event_type(&self) -> &str {
        "activity_log"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().concurrency(32).no_timeout()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        std::hint::black_box(event);
        Ok(())
    }
}

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
        let bus = EventBus::builder()
            .discover(false)
            .capacity(65_536)
            .handler(Noop)
            .store(store)
            .build()?;
        let start = Instant::now();
        let per = events / emitters;
        let mut tasks = Vec::new();
        for e in 0..emitters {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    let n = e * per + i;
                    let data = serde_json::json!({
                        "user_id": n,
                        "incident_type": "UNAUTHORIZED_ACCESS",
                        "severity": "HIGH",
                        "description": "User attempted to access restricted resource",
                        "ip_address": "192.168.1.1"
                    });
                    let emit = bus.emit("activity_log", data);
                    let done = if keys > 0 {
                        emit.key(format!("key-{}", n % keys)).await
                    } else {
                        emit.await
                    };
                    done.expect("emit");
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let emitted = start.elapsed();
        bus.wait_idle().await;
        let all = start.elapsed();
        println!(
            "{} events/s; emits done after {:.0} ms of {:.0} ms",
            ((per * emitters) as f64 / all.as_secs_f64()) as u64,
            emitted.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
        bus.shutdown(Duration::from_secs(30)).await;
        drop(bus);
        tidings_nats::JetStreamStore::purge(&url, &name).await?;
    }
    Ok(())
}
