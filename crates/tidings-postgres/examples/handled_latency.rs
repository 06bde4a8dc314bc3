//! One emitter's event from `emit` to its handler's start, for profiling:
//! `EVENTS` emits one at a time on a shared bus name
//! (`PgStore::connect_shared`, the handler in the same process), each
//! waiting for its handler to start before the next; with `FRONT` set,
//! emitted by a second instance without handlers (a front end) on the same
//! name; with `CONNECT` set, on a bus name of its own (`PgStore::connect`);
//! with `KEYED` set, each event with one of 16 keys in turn. Prints the p50 and p99 in µs
//! of each of `ROUNDS` rounds, on fresh bus names (the first 100 emits of a
//! round left out).
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test EVENTS=2000 ROUNDS=3 \
//!   cargo run --release -p tidings-postgres --example handled_latency
//! ```

use anyhow::Context;
use std::time::{Duration, Instant};
use tidings::{Envelope, EventHandler, HandlerError};
use tokio::sync::mpsc;

/// Says when each call started.
struct Started(mpsc::UnboundedSender<Instant>);

impl EventHandler for Started {
    fn event_type(&self) -> &str {
        "activity_log"
    }
    fn name(&self) -> &str {
        "started"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        let _ = self.0.send(Instant::now());
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let shape = tidings_benches::LoadShape::from_env().map_err(anyhow::Error::msg)?;
    for _ in 0..shape.rounds {
        let name = format!("latency-{}", uuid::Uuid::now_v7().simple());
        let store = if std::env::var("CONNECT").is_ok() {
            tidings_postgres::PgStore::connect(&url, &name).await?
        } else {
            tidings_postgres::PgStore::connect_shared(&url, &name, Duration::from_secs(10)).await?
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let bus = tidings::EventBus::builder()
            .discover(false)
            .handler(Started(tx))
            .store(store)
            .build()?;
        let front = match std::env::var("FRONT") {
            Ok(_) => Some(
                tidings::EventBus::builder()
                    .discover(false)
                    .store(
                        tidings_postgres::PgStore::connect_shared(
                            &url,
                            &name,
                            Duration::from_secs(10),
                        )
                        .await?,
                    )
                    .build()?,
            ),
            Err(_) => None,
        };
        let emitter = front.as_ref().unwrap_or(&bus);
        let keyed = std::env::var("KEYED").is_ok();
        let mut waits = Vec::with_capacity(shape.events);
        for n in 0..shape.events + 100 {
            let at = Instant::now();
            let emit = emitter.emit("activity_log", serde_json::json!({ "n": n }));
            if keyed {
                emit.key(format!("k{}", n % 16)).await?;
            } else {
                emit.await?;
            }
            let started = rx.recv().await.context("the handler is gone")?;
            if n >= 100 {
                waits.push(started.duration_since(at).as_secs_f64() * 1e6);
            }
        }
        waits.sort_by(f64::total_cmp);
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
        println!(
            "emit → handler start: p50 {:.0} µs, p99 {:.0} µs",
            at(0.5),
            at(0.99)
        );
        if let Some(front) = front {
            front.shutdown(Duration::from_secs(30)).await;
        }
        bus.shutdown(Duration::from_secs(30)).await;
        drop(bus);
        tidings_postgres::PgStore::purge(&url, &name).await?;
    }
    Ok(())
}
