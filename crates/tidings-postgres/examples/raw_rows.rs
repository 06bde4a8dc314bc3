//! Raw PostgreSQL (no bus), for what the bus's row costs the engine: 64
//! tasks insert `EVENTS` events (20 000) in statements of `BATCH` rows
//! (500, the bench's raw ceiling; 50 is about what the bus's writer
//! gathers), each statement committed and awaited, through up to 16
//! connections, while one connection deletes them 500 at a time, oldest
//! first (`SKIP LOCKED`). Prints events/s end to end. `SHAPE`: `plain` (the
//! raw ceiling's table: a `bigserial` id and a `jsonb` document) or `bus` (a
//! shared bus's unkeyed delivery row as `tidings_deliveries` holds it: event
//! id, handler, attempt, `queued`, `shared`, bus, `seq`, key, type, emit
//! time, the JSON as text, owner, fence; its primary key (event, handler),
//! its index of unclaimed rows by (bus, seq), `fillfactor` 40; the claim
//! deletes by the row's address). BENCHMARKS.md, section 7, session 28.
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test SHAPE=bus \
//!   cargo run --release -p tidings-postgres --example raw_rows
//! ```

use anyhow::{bail, Context};
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};

const EMITTERS: usize = 64;
const CLAIM: i64 = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let shape = std::env::var("SHAPE").unwrap_or_else(|_| "plain".into());
    if !["plain", "bus"].contains(&shape.as_str()) {
        bail!("SHAPE is plain or bus");
    }
    let number = |name: &str, default: usize| -> anyhow::Result<usize> {
        match std::env::var(name) {
            Ok(v) => v.parse().with_context(|| format!("{name} is a number")),
            Err(_) => Ok(default),
        }
    };
    let (events, batch) = (number("EVENTS", 20_000)?, number("BATCH", 500)?.max(1));
    let pool = PgPoolOptions::new()
        .max_connections(17)
        .connect(&url)
        .await?;
    let table = format!("rawrows_{}", uuid::Uuid::now_v7().simple());
    let (create, insert, claim) = statements(&shape, &table);
    for statement in create {
        sqlx::query(&statement).execute(&pool).await?;
    }
    let per = events / EMITTERS;
    let total = per * EMITTERS;
    let start = Instant::now();
    let consumer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < total {
                let got = sqlx::query(&claim).bind(CLAIM).execute(&pool).await?;
                if got.rows_affected() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen += got.rows_affected() as usize;
            }
            Ok::<_, sqlx::Error>(seen)
        })
    };
    let mut tasks = Vec::new();
    for e in 0..EMITTERS {
        let (pool, insert) = (pool.clone(), insert.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while i < per {
                let n = batch.min(per - i);
                let data: Vec<String> = (i..i + n)
                    .map(|k| {
                        serde_json::json!({
                            "user_id": e, "action": "login", "n": k, "ip": "10.0.0.1", "ok": true
                        })
                        .to_string()
                    })
                    .collect();
                let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
                sqlx::query(&insert)
                    .bind(&ids)
                    .bind(&data)
                    .execute(&pool)
                    .await?;
                i += n;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seen = consumer.await??;
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    println!("SHAPE={shape} BATCH={batch} {rate:.0} events/s");
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await?;
    Ok(())
}

/// The table's creation, the insert (`$1` ids, `$2` JSON texts) and the
/// claim (`$1` how many), for `shape`.
fn statements(shape: &str, t: &str) -> (Vec<String>, String, String) {
    if shape == "plain" {
        return (
            vec![format!(
                "CREATE TABLE {t} (id BIGSERIAL PRIMARY KEY, data JSONB NOT NULL)"
            )],
            format!("INSERT INTO {t} (data) SELECT d::jsonb FROM UNNEST($1::uuid[], $2::text[]) AS u(i, d)"),
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
    }
    (
        vec![
            format!("CREATE SEQUENCE {t}_seq"),
            format!(
                "CREATE TABLE {t} (event_id UUID NOT NULL, handler TEXT NOT NULL, \
                 attempt INTEGER NOT NULL, queued BOOLEAN NOT NULL, shared BOOLEAN NOT NULL, \
                 bus TEXT, seq BIGINT, key TEXT, event_type TEXT, emitted_at_ns BIGINT, \
                 data TEXT, owner UUID, fence BIGINT NOT NULL DEFAULT 0, \
                 PRIMARY KEY (event_id, handler)) WITH (fillfactor = 40)"
            ),
            format!("CREATE INDEX {t}_unkeyed ON {t} (bus, seq) WHERE shared AND key IS NULL"),
        ],
        format!(
            "INSERT INTO {t} (event_id, handler, attempt, queued, shared, bus, seq, key, \
             event_type, emitted_at_ns, data) \
             SELECT u.i, 'worker', 1, true, true, 'b', nextval('{t}_seq'), NULL, 'activity_log', \
                    1796509827782959836, u.d \
             FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS u(i, d, n) ORDER BY u.n"
        ),
        format!(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {t} WHERE bus = 'b' AND shared AND key IS NULL \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED))"
        ),
    )
}
