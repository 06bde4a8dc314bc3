//! Open-loop load, for profiling: `RATE` emits a second on a bus name of
//! its own (`PgStore::connect`), each from a task of its own (requests that
//! each emit once, not emitters that wait and emit again), for `SECS`
//! seconds; prints the emits' waits, p50 and p99 in µs, and how many
//! waited over 10 ms (a stall: a checkpoint, the machine), emitted when.
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test RATE=10000 SECS=3 \
//!   cargo run --release -p tidings-postgres --example open_load
//! ```

use anyhow::Context;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let var = |name: &str, default: u64| -> anyhow::Result<u64> {
        std::env::var(name)
            .map_or(Ok(default), |v| v.parse())
            .with_context(|| format!("{name} is a number"))
    };
    let (rate, secs) = (var("RATE", 10_000)?, var("SECS", 3)?);
    let name = format!("open-{}", uuid::Uuid::now_v7().simple());
    let store = tidings_postgres::PgStore::connect(&url, &name).await?;
    let bus = tidings_benches::noop_builder(1, "activity_log", 65_536, None)
        .store(store)
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let per_tick = rate / 1000;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        for _ in 0..per_tick {
            let (bus, tx) = (bus.clone(), tx.clone());
            n += 1;
            tokio::spawn(async move {
                let at = Instant::now();
                let ok = bus
                    .emit("activity_log", tidings_benches::dynamic_payload(n))
                    .await
                    .is_ok();
                let _ = tx.send((ok, at.elapsed(), at.duration_since(start)));
            });
        }
    }
    drop(tx);
    let mut waits = Vec::new();
    let mut slow = Vec::new();
    while let Some((ok, wait, when)) = rx.recv().await {
        anyhow::ensure!(ok, "an emit failed");
        waits.push(wait.as_micros() as u64);
        if wait > Duration::from_millis(10) {
            slow.push(when.as_millis() as u64);
        }
    }
    if std::env::var("SLOW").is_ok() && !slow.is_empty() {
        slow.sort_unstable();
        eprintln!(
            "{} over 10 ms, emitted at {:?} ms",
            slow.len(),
            &slow[..slow.len().min(5)]
        );
        eprintln!("... to {:?} ms", &slow[slow.len().saturating_sub(3)..]);
    }
    waits.sort_unstable();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
    println!(
        "{} emits at {rate}/s: p50 {} µs, p99 {} µs; {} over 10 ms{}",
        waits.len(),
        at(0.5),
        at(0.99),
        slow.len(),
        match (slow.first(), slow.last()) {
            (Some(a), Some(b)) => format!(", emitted from {a} to {b} ms"),
            _ => String::new(),
        }
    );
    bus.shutdown(Duration::from_secs(30)).await;
    drop(bus);
    tidings_postgres::PgStore::purge(&url, &name).await?;
    Ok(())
}
