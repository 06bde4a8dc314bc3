//! Emit→handled throughput of a bus on NATS JetStream, from 1 and from 64
//! emitter tasks, one no-op handler, in one process: each emit waits for the
//! server's acknowledgement; the run ends when `wait_idle` says no delivery
//! is outstanding on the server. Uses a fresh bus name and purges it after.
//! A third argument `K` > 0 gives the events keys, `K` of them in turn (so
//! they go through the key partitions' one-at-a-time consumers).
//!
//! ```sh
//! cargo run --release -p tidings-nats --example throughput -- nats://127.0.0.1:4222 20000
//! cargo run --release -p tidings-nats --example throughput -- nats://127.0.0.1:4222 20000 1000
//! ```

use std::time::{Duration, Instant};
use tidings::{Envelope, EventBus, EventHandler, HandlerError};

struct Noop;

impl EventHandler for Noop {
    fn event_type(&self) -> &str {
        "activity_log"
    }
    fn name(&self) -> &str {
        "noop"
    }
    async fn handle(&self, _event: &Envelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let n: u64 = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let keys: u64 = args.next().map_or(Ok(0), |s| s.parse())?;
    for emitters in [1u64, 64] {
        let name = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let store = tidings_nats::JetStreamStore::connect(&url, &name).await?;
        let bus = EventBus::builder()
            .discover(false)
            .handler(Noop)
            .store(store)
            .build()?;
        let per = n / emitters;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..emitters {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                let mut took = Vec::with_capacity(per as usize);
                for i in 0..per {
                    let at = Instant::now();
                    let n = t * per + i;
                    let emit = bus.emit(
                        "activity_log",
                        serde_json::json!({"user_id": n, "severity": "HIGH"}),
                    );
                    if keys > 0 {
                        emit.key(format!("k{}", n % keys)).await?;
                    } else {
                        emit.await?;
                    }
                    took.push(at.elapsed());
                }
                Ok::<_, anyhow::Error>(took)
            }));
        }
        let mut took: Vec<Duration> = Vec::new();
        for t in tasks {
            took.extend(t.await??);
        }
        let emitted = start.elapsed();
        bus.wait_idle().await;
        let handled = start.elapsed();
        took.sort_unstable();
        let p = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "{emitters:>2} emitters: {} events, emitted in {:.2} s, all handled in {:.2} s: {:.0} events/s; emit p50 {} µs, p99 {} µs",
            took.len(),
            emitted.as_secs_f64(),
            handled.as_secs_f64(),
            took.len() as f64 / handled.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
        bus.shutdown(Duration::from_secs(5)).await;
        drop(bus);
        tidings_nats::JetStreamStore::purge(&url, &name).await?;
    }
    Ok(())
}
