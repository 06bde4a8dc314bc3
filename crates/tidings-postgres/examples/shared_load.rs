//! Load on one shared bus name, for profiling: `EMITTERS` tasks emit
//! `EVENTS` events in all (each emit awaited before the task's next), with
//! `KEYS` keys in turn when set, to one no-op handler in the same process,
//! as `tidings bench`'s scenario 6 row "PostgreSQL shared" does; prints the
//! rate from the first emit to the last handled, and when the emits ended.
//! `ROUNDS` runs it that many times on fresh bus names (the process and
//! its connections stay, so `perf` and `pg_stat_statements` see only this).
//! With `CONNECT` set, the bus name is its own (`PgStore::connect`). With
//! `BUS` set, every round uses that name and leaves it as it is: run
//! several processes with one `BUS` at once for replicas that each emit to
//! the handler they all have.
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test EVENTS=20000 ROUNDS=3 \
//!   cargo run --release -p tidings-postgres --example shared_load
//! ```

use anyhow::Context;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let shape = tidings_benches::LoadShape::from_env().map_err(anyhow::Error::msg)?;
    for _ in 0..shape.rounds {
        let fixed = std::env::var("BUS").ok();
        let name = fixed
            .clone()
            .unwrap_or_else(|| format!("load-{}", uuid::Uuid::now_v7().simple()));
        let store = if std::env::var("CONNECT").is_ok() {
            tidings_postgres::PgStore::connect(&url, &name).await?
        } else {
            tidings_postgres::PgStore::connect_shared(&url, &name, Duration::from_secs(10)).await?
        };
        let bus = tidings_benches::noop_builder(1, "activity_log", 65_536, None)
            .store(store)
            .build()?;
        println!(
            "{}",
            tidings_benches::load(&bus, shape.events, shape.emitters, shape.keys).await?
        );
        bus.shutdown(Duration::from_secs(30)).await;
        drop(bus);
        if fixed.is_none() {
            tidings_postgres::PgStore::purge(&url, &name).await?;
        }
    }
    Ok(())
}
