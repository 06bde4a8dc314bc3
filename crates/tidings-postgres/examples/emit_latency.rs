//! One emitter's wait, for profiling: `EVENTS` emits one at a time on a
//! bus name of its own (`PgStore::connect`, one no-op handler, as `tidings
//! bench`'s row 6b), then as many raw one-row `INSERT`s committed on one
//! connection (the row's ceiling), in the same process; prints each one's
//! p50 and p99 in µs and the bus's p50 ÷ the raw p50. `ROUNDS` repeats both
//! that many times, alternating which goes first.
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test EVENTS=2000 ROUNDS=3 \
//!   cargo run --release -p tidings-postgres --example emit_latency
//! ```

use anyhow::Context;
use sqlx::Connection;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let shape = tidings_benches::LoadShape::from_env().map_err(anyhow::Error::msg)?;
    for round in 0..shape.rounds {
        let (bus, raw) = if round % 2 == 0 {
            let bus = bus(&url, shape.events).await?;
            (bus, raw(&url, shape.events).await?)
        } else {
            let raw = raw(&url, shape.events).await?;
            (bus(&url, shape.events).await?, raw)
        };
        println!(
            "bus p50 {:.0} p99 {:.0} µs; raw p50 {:.0} p99 {:.0} µs; p50 ratio {:.2}",
            bus[0],
            bus[1],
            raw[0],
            raw[1],
            bus[0] / raw[0]
        );
    }
    Ok(())
}

/// p50 and p99 in µs.
fn quantiles(mut waits: Vec<Duration>) -> [f64; 2] {
    waits.sort_unstable();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    [at(0.5), at(0.99)]
}

async fn bus(url: &str, n: usize) -> anyhow::Result<[f64; 2]> {
    let name = format!("latency-{}", uuid::Uuid::now_v7().simple());
    let store = tidings_postgres::PgStore::connect(url, &name).await?;
    let bus = tidings_benches::noop_builder(1, "activity_log", 65_536, None)
        .store(store)
        .build()?;
    let mut waits = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        bus.emit("activity_log", tidings_benches::dynamic_payload(i))
            .await?;
        waits.push(t.elapsed());
    }
    bus.wait_idle().await;
    bus.shutdown(Duration::from_secs(30)).await;
    drop(bus);
    tidings_postgres::PgStore::purge(url, &name).await?;
    Ok(quantiles(waits))
}

async fn raw(url: &str, n: usize) -> anyhow::Result<[f64; 2]> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let table = format!("latency_raw_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, data JSONB NOT NULL)"
    ))
    .execute(&mut conn)
    .await?;
    let insert = format!("INSERT INTO {table} (data) VALUES ($1)");
    let mut waits = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        sqlx::query(&insert)
            .bind(tidings_benches::dynamic_payload(i))
            .execute(&mut conn)
            .await?;
        waits.push(t.elapsed());
    }
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await?;
    Ok(quantiles(waits))
}
