//! The statements a busy bus runs for every batch, planned from the worst
//! statistics a queue's tables get: taken while every row was deleted but
//! not yet vacuumed (what autovacuum's `ANALYZE` records between two
//! bursts). The planner then believes the tables hold no row, and a
//! statement joined to its batch may scan every pending delivery once per
//! settle (docs/BENCHMARKS.md section 7, session 13: 8 to 87 s a statement
//! on 20 000 pending deliveries, and the bus collapsing). Each statement
//! here must read no more rows of the store's tables than its batch names,
//! in a custom and in a generic plan.

use crate::append::APPEND_BOUND;
use crate::writer::{
    BEGIN_MARK, DEAD_LETTERS_KEPT, EVENTS_GONE, HANDLED_AT_ONCE, REPLAYED, SETTLE_ATTEMPT,
    SETTLE_DELETE, UNBEGUN,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Pending deliveries when the statements run.
const PENDING: usize = 20_000;
/// Deliveries each statement names.
const BATCH: usize = 500;
/// The instance that claimed them all, under fencing token 7.
const OWNER: Uuid = Uuid::from_u128(1);

/// Rows a plan read from the store's tables: each scan's rows returned and
/// removed by its filters, times its loops.
fn rows_read(node: &serde_json::Value) -> f64 {
    let own = match node["Relation Name"].as_str() {
        Some(r) if r.starts_with("tidings_") => {
            let n = |k: &str| node[k].as_f64().unwrap_or(0.0);
            (n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Index Recheck"))
                * n("Actual Loops").max(1.0)
        }
        _ => 0.0,
    };
    own + node["Plans"]
        .as_array()
        .map_or(0.0, |plans| plans.iter().map(rows_read).sum())
}

/// EXPLAIN ANALYZE of a statement with its binds, in a transaction rolled
/// back: the rows it read, and its plan (for the failure message). A
/// statement that runs past the session's `statement_timeout` read too
/// many (a scan of the pending deliveries per settle takes minutes).
macro_rules! explain {
    ($conn:expr, $sql:expr $(, $bind:expr)*) => {{
        let mut tx = $conn.begin().await.expect("a transaction");
        let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", $sql);
        let plan: Result<serde_json::Value, _> = sqlx::query_scalar(&sql)
            $(.bind($bind))*
            .fetch_one(&mut *tx)
            .await;
        tx.rollback().await.expect("a rollback");
        match plan {
            Ok(plan) => {
                let plan = plan[0]["Plan"].clone();
                (rows_read(&plan), plan)
            }
            Err(e) => (f64::INFINITY, serde_json::Value::String(e.to_string())),
        }
    }};
}

/// Fills a bus of its own in schema `schema`: `PENDING` events with one
/// delivery each to handler `h`, all claimed by `OWNER` under token 7.
async fn fill(conn: &mut PgConnection) {
    sqlx::query(
        "WITH ev AS (
             INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
             SELECT gen_random_uuid(), 'plans', 'activity_log', NULL, g, '{\"n\": 1}'
             FROM generate_series(1, $1) g RETURNING id, seq)
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, owner, fence, bus, seq)
         SELECT ev.id, 'h', 1, true, $2, 7, 'plans', ev.seq FROM ev",
    )
    .bind(i32::try_from(PENDING).unwrap())
    .bind(OWNER)
    .execute(&mut *conn)
    .await
    .expect("filled");
}

#[tokio::test]
async fn batch_statements_read_only_the_rows_they_name_whatever_the_statistics_say() {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        eprintln!("TIDINGS_TEST_POSTGRES_URL is not set: not run");
        return;
    };
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("TIDINGS_TEST_POSTGRES_URL is set but the server does not answer");
    // Tables of their own, in a schema of their own: the statistics made
    // here touch no other test's tables.
    let schema = format!("tidings_plans_{}", Uuid::now_v7().simple());
    for sql in [
        format!("CREATE SCHEMA {schema}"),
        format!("SET search_path TO {schema}"),
        "SET statement_timeout = '20s'".to_string(),
    ] {
        sqlx::query(&sql)
            .execute(&mut conn)
            .await
            .expect("a schema");
    }
    crate::schema::migrate(&mut conn).await.expect("the tables");
    for sql in [
        "ALTER TABLE tidings_events SET (autovacuum_enabled = false)",
        "ALTER TABLE tidings_deliveries SET (autovacuum_enabled = false)",
        "ALTER TABLE tidings_dead_letters SET (autovacuum_enabled = false)",
        "INSERT INTO tidings_handlers (bus, handler, event_type) VALUES ('plans', 'h', 'activity_log')",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect("set up");
    }
    // The worst statistics: pages, and no live row in them.
    fill(&mut conn).await;
    for sql in [
        "DELETE FROM tidings_deliveries",
        "DELETE FROM tidings_events",
        "ANALYZE tidings_events",
        "ANALYZE tidings_deliveries",
        "ANALYZE tidings_dead_letters",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect("statistics");
    }
    fill(&mut conn).await;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM tidings_deliveries ORDER BY seq LIMIT $1")
            .bind(i64::try_from(BATCH).unwrap())
            .fetch_all(&mut conn)
            .await
            .expect("the batch");
    let handlers = vec!["h"; BATCH];
    let attempts = vec![2i32; BATCH];
    let fences = vec![7i64; BATCH];
    let errors = vec!["failed"; BATCH];
    let fresh: Vec<Uuid> = (0..BATCH).map(|_| Uuid::now_v7()).collect();
    let types = vec!["activity_log"; BATCH];
    let keys: Vec<Option<&str>> = vec![None; BATCH];
    let at = vec![1i64; BATCH];
    let data = vec!["{}"; BATCH];
    let mut failures = Vec::new();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        sqlx::query(&format!("SET plan_cache_mode = {mode}"))
            .execute(&mut conn)
            .await
            .expect("a plan mode");
        let settle = (&ids, &handlers, &attempts, &fences);
        let mut runs: Vec<(&str, (f64, serde_json::Value))> = Vec::new();
        for (name, sql) in [
            ("SETTLE_DELETE", SETTLE_DELETE),
            ("SETTLE_ATTEMPT", SETTLE_ATTEMPT),
            ("BEGIN_MARK", BEGIN_MARK),
            ("UNBEGUN", UNBEGUN),
        ] {
            for owner in [Some(OWNER), None] {
                let read = explain!(conn, sql, settle.0, settle.1, settle.2, settle.3, owner);
                runs.push((name, read));
            }
        }
        runs.push((
            "HANDLED_AT_ONCE",
            explain!(conn, HANDLED_AT_ONCE, &ids, &handlers),
        ));
        runs.push(("EVENTS_GONE", explain!(conn, EVENTS_GONE, &ids)));
        runs.push((
            "DEAD_LETTERS_KEPT",
            explain!(
                conn,
                DEAD_LETTERS_KEPT,
                &ids,
                &handlers,
                &attempts,
                &errors,
                1i64
            ),
        ));
        runs.push((
            "REPLAYED",
            explain!(conn, REPLAYED, &ids, &handlers, &attempts, Some(OWNER)),
        ));
        runs.push((
            "APPEND_BOUND",
            explain!(
                conn,
                APPEND_BOUND,
                "plans",
                &fresh,
                &types,
                &keys,
                &at,
                &data
            ),
        ));
        for (name, (read, plan)) in runs {
            // Each named row, its event, and their neighbours in an index:
            // a few per settle. A plan that scans the pending deliveries
            // reads them all once per settle (10 000 000 rows here).
            if read > (10 * BATCH) as f64 {
                failures.push(format!(
                    "{name} ({mode}) read {read} rows for {BATCH} settles of {PENDING} pending: {plan}"
                ));
            }
        }
    }
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .expect("dropped");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
