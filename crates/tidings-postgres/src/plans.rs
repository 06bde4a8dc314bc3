//! The statements a busy bus runs for every batch, planned from the worst
//! statistics a queue's tables get: taken while every row was deleted but
//! not yet vacuumed (what autovacuum's `ANALYZE` records between two
//! bursts). The planner then believes the tables hold no row, and a
//! statement joined to its batch may scan every pending delivery once per
//! settle (docs/BENCHMARKS.md section 7, session 13: 8 to 87 s a statement
//! on 20 000 pending deliveries, and the bus collapsing). Each batch
//! statement here must read no more rows of the store's tables than its
//! batch names, in a custom and in a generic plan; each claim, the heads of
//! keys or the claimable once; each statement of a start, a lost claim's
//! recovery or an operator's request, each row a few times (session 14:
//! 11 of 14 of them, joined, failed it, 9 by running past the 20 s limit).

use crate::append::{APPEND_ALONE, APPEND_BOUND, APPEND_ONE, APPEND_OWN};
use crate::claims::CLAIM_SHARED;
use crate::writer::{
    BEGIN_MARK, DEAD_LETTERS_GONE, DEAD_LETTERS_KEPT, EVENTS_GONE, EVENTS_KEPT, HANDLED_AT_ONCE,
    HANDLED_SHARED, REPLAYED, REPLAYED_SHARED, SETTLE_ATTEMPT, SETTLE_DELETE, UNBEGUN,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A `horizon::Horizon` that holds back no key (no append open), bound
/// as the claims bind it.
const OPEN: (i64, [Option<i64>; crate::horizon::BUCKETS as usize]) =
    (i64::MAX, [None; crate::horizon::BUCKETS as usize]);

/// Pending deliveries when the statements run.
const PENDING: usize = 20_000;
/// Deliveries each statement names.
const BATCH: usize = 500;
/// The instance that claimed them all, under fencing token 7.
pub(crate) const OWNER: Uuid = Uuid::from_u128(1);

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

/// `PENDING` events of the shared bus `plans` with one delivery each to
/// handler `h`: claimed by `OWNER` under token 7 (`keys: None`), or
/// (`Some(n)`) unclaimed with `n` keys, each key's first delivery claimed;
/// and a dead letter of each to handler `dead`.
fn fill(keys: Option<usize>) -> String {
    let (key, owner) = match keys {
        None => ("NULL".to_string(), format!("'{OWNER}'::uuid")),
        Some(n) => (
            format!("'key-' || (g % {n})"),
            format!("CASE WHEN g <= {n} THEN '{OWNER}'::uuid END"),
        ),
    };
    format!(
        "WITH ev AS (
             INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
             SELECT gen_random_uuid(), 'plans', 'activity_log', {key}, g, '{{\"n\": 1}}'
             FROM generate_series(1, {PENDING}) g RETURNING id, seq, key, emitted_at_ns AS g),
         dead AS (
             INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
             SELECT ev.id, 'dead', 3, 'failed', ev.seq FROM ev)
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, owner, fence,
                                         bus, seq, key)
         SELECT ev.id, 'h', 1, true, true, {owner}, 7, 'plans', ev.seq, ev.key FROM ev"
    )
}

/// A connection set up as the bus's are, whose tables are the store's,
/// fresh, in a schema of its own (the statistics made here touch no other
/// test's tables), with no autovacuum; `None` when
/// `TIDINGS_TEST_POSTGRES_URL` is unset.
pub(crate) async fn scratch() -> Option<(PgConnection, String)> {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        eprintln!("TIDINGS_TEST_POSTGRES_URL is not set: not run");
        return None;
    };
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("TIDINGS_TEST_POSTGRES_URL is set but the server does not answer");
    let schema = format!("tidings_plans_{}", Uuid::now_v7().simple());
    // Set up as the bus's connections are (`link::SESSION`).
    let session = crate::link::SESSION.map(|(name, value)| format!("SET {name} = {value}"));
    for sql in [
        format!("CREATE SCHEMA {schema}"),
        format!("SET search_path TO {schema}"),
        "SET statement_timeout = '20s'".to_string(),
    ]
    .into_iter()
    .chain(session)
    {
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
    Some((conn, schema))
}

/// Fills the tables by `fill`, deletes every row, takes the statistics
/// (pages, and no live row in them: the worst), and fills them again.
async fn worst_statistics(conn: &mut PgConnection, fill: &str) {
    for sql in [
        fill,
        "DELETE FROM tidings_deliveries",
        "DELETE FROM tidings_dead_letters",
        "DELETE FROM tidings_events",
        "ANALYZE tidings_events",
        "ANALYZE tidings_deliveries",
        "ANALYZE tidings_dead_letters",
        fill,
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .expect("statistics");
    }
}

#[tokio::test]
async fn batch_statements_read_only_the_rows_they_name_whatever_the_statistics_say() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    worst_statistics(&mut conn, &fill(None)).await;
    with_events_alone(&mut conn).await;
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
            "HANDLED_SHARED",
            explain!(conn, HANDLED_SHARED, &ids, &handlers, &fences, OWNER),
        ));
        runs.push(("EVENTS_KEPT", explain!(conn, EVENTS_KEPT, &ids, &handlers)));
        runs.push((
            "DEAD_LETTERS_GONE",
            explain!(conn, DEAD_LETTERS_GONE, &ids, vec!["dead"; BATCH]),
        ));
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
            "REPLAYED_SHARED",
            explain!(
                conn,
                REPLAYED_SHARED,
                &ids,
                &handlers,
                &attempts,
                "plans",
                "plans_channel"
            ),
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
                &data,
                "tidings",
                Some(OWNER),
                7i64,
                vec!["h"],
                vec!["t"]
            ),
        ));
        runs.push((
            "APPEND_OWN",
            explain!(
                conn,
                APPEND_OWN,
                "plans",
                &fresh,
                &types,
                &keys,
                &at,
                &data,
                &fresh,
                vec!["h"; BATCH],
                vec![1i32; BATCH],
                true,
                vec![None::<&str>; BATCH],
                vec![None::<i32>; BATCH]
            ),
        ));
        runs.push((
            "APPEND_ALONE",
            explain!(
                conn,
                APPEND_ALONE,
                "plans",
                &fresh,
                &types,
                &keys,
                &at,
                &data,
                true,
                vec![Some("h"); BATCH],
                vec![Some(1i32); BATCH]
            ),
        ));
        runs.push((
            "APPEND_ONE",
            explain!(
                conn, APPEND_ONE, "plans", fresh[0], types[0], keys[0], at[0], data[0], "h", 1i32
            ),
        ));
        runs.push((
            "APPEND_OWN (alone)",
            explain!(
                conn,
                APPEND_OWN,
                "plans",
                &fresh,
                &types,
                &keys,
                &at,
                &data,
                Vec::<Uuid>::new(),
                Vec::<&str>::new(),
                Vec::<i32>::new(),
                true,
                vec![Some("h"); BATCH],
                vec![Some(1i32); BATCH]
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
    drop_schema(conn, &schema).await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every other pending delivery carries its event in its own row, as a
/// bus name of its own writes an event with one delivery (see `schema`).
async fn with_events_alone(conn: &mut PgConnection) {
    sqlx::query(
        "UPDATE tidings_deliveries SET event_type = 'activity_log', emitted_at_ns = seq,
                data = '{}' WHERE seq % 2 = 1",
    )
    .execute(&mut *conn)
    .await
    .expect("events alone");
}

pub(crate) async fn drop_schema(mut conn: PgConnection, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .expect("dropped");
}

/// Keys of the claim tests.
const KEYS: usize = 1_000;

/// `KEYS` keys among `PENDING` deliveries, each key's first claimed, the
/// rest unclaimed, behind the worst statistics; `OWNER` alive.
async fn keyed_claimable(conn: &mut PgConnection) {
    worst_statistics(conn, &fill(Some(KEYS))).await;
    owner_alive(conn).await;
}

/// `OWNER` an instance of the bus `plans`, alive for an hour.
pub(crate) async fn owner_alive(conn: &mut PgConnection) {
    sqlx::query(
        "INSERT INTO tidings_instances (id, bus, alive_until) VALUES ($1, 'plans', now() + interval '1 hour')",
    )
    .bind(OWNER)
    .execute(&mut *conn)
    .await
    .expect("an instance");
}

/// [`CLAIM_SHARED`] of 256 for `OWNER`, explained on a connection set up
/// as the claimer's is: the rows it read, and its plan.
async fn shared_claim(conn: &mut PgConnection) -> (f64, serde_json::Value) {
    shared_claim_of(conn, 256, ("", "")).await
}

/// [`CLAIM_SHARED`] of `limit` for `OWNER`, its walk of the keys going on
/// from `cursor`, explained as [`shared_claim`] is.
async fn shared_claim_of(
    conn: &mut PgConnection,
    limit: i64,
    cursor: (&str, &str),
) -> (f64, serde_json::Value) {
    crate::claims::set_up_claimer(conn, "plans")
        .await
        .expect("the claimer's set-up");
    explain!(
        conn,
        CLAIM_SHARED,
        "plans",
        limit,
        OWNER,
        8i64,
        vec!["h"],
        vec!["activity_log"],
        cursor.0,
        cursor.1,
        OPEN.0,
        OPEN.1.to_vec()
    )
}

/// The shared bus's claim, on a connection set up as the claimer's is,
/// with 1 000 keys whose first deliveries are claimed, among 20 000
/// pending: it reads the head of each key, however many wait behind them.
#[tokio::test]
async fn the_shared_claim_reads_the_heads_of_keys_whatever_the_statistics_say() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    keyed_claimable(&mut conn).await;
    let (read, plan) = shared_claim(&mut conn).await;
    drop_schema(conn, &schema).await;
    // The first entry of each key in the index, and what it claims.
    assert!(
        read <= (4 * KEYS) as f64,
        "the claim read {read} rows with {KEYS} keys and {PENDING} pending: {plan}"
    );
}

/// With every key's head claimable, a claim walks only as many keys as it
/// takes, from where the last walk stopped, not every key's head (a claim
/// of 20 walked all 1 000 before: `ORDER BY seq` over every head).
#[tokio::test]
async fn the_shared_claim_walks_only_the_keys_it_takes() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    keyed_claimable(&mut conn).await;
    sqlx::query("UPDATE tidings_deliveries SET owner = NULL")
        .execute(&mut conn)
        .await
        .expect("every head claimable");
    let (from_start, plan) = shared_claim_of(&mut conn, 20, ("", "")).await;
    assert!(
        from_start <= 200.0,
        "a claim of 20 read {from_start} rows with {KEYS} keys claimable: {plan}"
    );
    // Going on from a key in the middle, and round past the last key.
    let (on, plan) = shared_claim_of(&mut conn, 20, ("h", "key-9")).await;
    assert!(
        on <= 200.0,
        "a claim of 20 from a cursor read {on} rows: {plan}"
    );
    drop_schema(conn, &schema).await;
}

/// Keyed deliveries to handler `h` of bus `bus`, one per key of `keys` in
/// that order (`seq` 1, 2, …, as if drawn by appends: a claim takes no
/// head above the last drawn), `OWNER` alive, the connection set up as the
/// claimer's: the handlers a claim is bound to.
async fn keyed_heads(conn: &mut PgConnection, bus: &str, keys: &[&str]) -> crate::claims::Bound {
    sqlx::query(
        "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, bus, seq, key,
                                         event_type, emitted_at_ns, data)
         SELECT gen_random_uuid(), 'h', 1, true, true, $1, k.n, k.key, 'activity_log', k.n, '{}'
         FROM UNNEST($2::text[]) WITH ORDINALITY AS k(key, n)",
    )
    .bind(bus)
    .bind(keys)
    .execute(&mut *conn)
    .await
    .expect("keyed deliveries");
    sqlx::query("SELECT setval('tidings_events_seq_seq', $1)")
        .bind(i64::try_from(keys.len()).expect("a few"))
        .execute(&mut *conn)
        .await
        .expect("the sequence");
    owner_alive(conn).await;
    crate::claims::set_up_claimer(conn, "plans")
        .await
        .expect("the claimer's set-up");
    crate::claims::Bound {
        handlers: vec!["h".into()],
        types: vec!["activity_log".into()],
    }
}

/// Successive claims go round the keys: each walk starts after the last
/// key the one before took, so a key whose next delivery is claimable
/// again at once does not keep the keys after it waiting (three keys, two
/// deliveries each, claimed one at a time and settled at once: a, b, c,
/// then a, b, c; from the first key each time, a's second would come
/// before b's first).
#[tokio::test]
async fn successive_shared_claims_go_round_the_keys() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    let bound = keyed_heads(&mut conn, "plans", &["a", "b", "c", "a", "b", "c"]).await;
    let mut walk = crate::claims::Walk::default();
    let mut keys = Vec::new();
    for token in 1..=6 {
        let claimed = crate::claims::claim(
            &mut conn,
            "plans",
            1,
            Some(OWNER),
            Some(&bound),
            token,
            &walk,
        )
        .await
        .expect("a claim");
        let [event] = &claimed.events[..] else {
            panic!("claim {token} took {:?}", claimed.events);
        };
        keys.push(event.key.clone().unwrap_or_default());
        if let Some(next) = claimed.cursor {
            walk.cursor = next;
        }
        sqlx::query("DELETE FROM tidings_deliveries WHERE event_id = $1")
            .bind(event.id)
            .execute(&mut conn)
            .await
            .expect("settled");
    }
    drop_schema(conn, &schema).await;
    assert_eq!(keys, ["a", "b", "c", "a", "b", "c"]);
}

/// Deliveries claimed and still in flight when the unkeyed claims below run.
const IN_FLIGHT: usize = 2_000;

/// The shared bus's claim without keys, with the oldest `IN_FLIGHT` of
/// 20 000 deliveries claimed and not yet settled (a busy bus's): a claim
/// writes no indexed column, so their entries stay in the index it reads,
/// and it walks past them — once, never once per delivery it claims.
#[tokio::test]
async fn the_unkeyed_shared_claim_walks_past_the_claims_in_flight_once() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    worst_statistics(&mut conn, &fill(None)).await;
    for sql in [
        format!("UPDATE tidings_deliveries SET owner = NULL WHERE seq > (SELECT min(seq) + {IN_FLIGHT} FROM tidings_deliveries)"),
        format!("INSERT INTO tidings_instances (id, bus, alive_until) VALUES ('{OWNER}', 'plans', now() + interval '1 hour')"),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.expect("set up");
    }
    let (read, plan) = shared_claim(&mut conn).await;
    drop_schema(conn, &schema).await;
    // The claims in flight once, then what it claims and its events, a few
    // times each (a walk per claimed delivery: 512 000 rows).
    assert!(
        read <= (IN_FLIGHT + 6 * 256) as f64,
        "the claim read {read} rows past {IN_FLIGHT} in flight: {plan}"
    );
}

/// A shared bus's events of a type one handler takes are written in their
/// delivery's row alone; its claim changes no column any index names, and
/// its rows have room in their pages, so PostgreSQL updates each in place (a
/// heap-only tuple) and writes no index entry: `schema`'s layout for
/// shared names, and what made the claim cheaper (docs/BENCHMARKS.md
/// section 7, session 20). Counted by the server for the claim's own
/// transaction (`pg_stat_xact_user_tables`).
#[tokio::test]
async fn a_shared_claim_updates_its_rows_in_place() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    let n = 2_000;
    // Unkeyed, then keyed (four keys).
    for keys in [
        vec![None::<&str>; n],
        (0..n).map(|i| Some(["a", "b", "c", "d"][i % 4])).collect(),
    ] {
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        sqlx::query(APPEND_BOUND)
            .bind("plans")
            .bind(&ids)
            .bind(vec!["activity_log"; n])
            .bind(&keys)
            .bind(vec![1i64; n])
            .bind(vec!["{}"; n])
            .bind("tidings")
            .bind(None::<Uuid>)
            .bind(0i64)
            .bind(Vec::<String>::new())
            .bind(Vec::<String>::new())
            .execute(&mut conn)
            .await
            .expect("appended");
    }
    // One handler takes the type: each event is in its delivery's row alone.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings_events")
        .fetch_one(&mut conn)
        .await
        .expect("a count");
    owner_alive(&mut conn).await;
    crate::claims::set_up_claimer(&mut conn, "plans")
        .await
        .expect("the claimer's set-up");
    let mut tx = conn.begin().await.expect("a transaction");
    let claimed = sqlx::query(CLAIM_SHARED)
        .bind("plans")
        .bind(256i64)
        .bind(OWNER)
        .bind(8i64)
        .bind(vec!["h"])
        .bind(vec!["activity_log"])
        .bind("")
        .bind("")
        .bind(OPEN.0)
        .bind(OPEN.1.to_vec())
        .fetch_all(&mut *tx)
        .await
        .expect("a claim")
        .len();
    let (updated, in_place): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
         WHERE relname = 'tidings_deliveries' AND schemaname = current_schema()",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("the counts");
    tx.rollback().await.expect("a rollback");
    drop_schema(conn, &schema).await;
    assert_eq!(
        events, 0,
        "events of a type one handler takes have no row of their own"
    );
    assert_eq!(claimed, 256, "the oldest unkeyed and the four keys' heads");
    assert_eq!(updated, 256);
    assert_eq!(
        in_place, updated,
        "claimed rows updated with new index entries"
    );
}

/// The relay's general claim (a bus name of its own, the outbox; and a
/// shared instance taking over a dead one's deliveries): it reads the
/// claimable deliveries once at most, never once per claimed delivery.
#[tokio::test]
async fn the_relay_claim_reads_the_claimable_once_whatever_the_statistics_say() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    keyed_claimable(&mut conn).await;
    let dead = vec![Uuid::from_u128(2)];
    // (A shared instance claims on the claimer's connection.)
    crate::claims::set_up_claimer(&mut conn, "plans")
        .await
        .expect("the claimer's set-up");
    let taking_over = explain!(
        conn,
        crate::claims::claim_sql(true, true, true),
        "plans",
        256i64,
        OWNER,
        &dead,
        8i64,
        vec!["h"],
        vec!["activity_log"],
        OPEN.0,
        OPEN.1.to_vec()
    );
    // The same deliveries as an outbox's (a bus name of its own): not
    // queued, claimed on the writer's connection.
    for sql in [
        "UPDATE tidings_deliveries SET shared = false, queued = owner IS NOT NULL, owner = NULL",
        "SET enable_sort = on",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect("an outbox");
    }
    let own = explain!(
        conn,
        crate::claims::claim_sql(false, false, false),
        "plans",
        256i64,
        None::<Uuid>,
        Vec::<Uuid>::new(),
        8i64
    );
    drop_schema(conn, &schema).await;
    // (A claim per delivery of the join it replaced: 256 × 20 000 rows.)
    for (name, (read, plan)) in [("own", own), ("taking over", taking_over)] {
        assert!(
            read <= (5 * PENDING) as f64,
            "the claim ({name}) read {read} rows with {PENDING} pending: {plan}"
        );
    }
}

/// The statements a bus runs at its start, when a connection's claim
/// answer was lost, and on an operator's request (`tidings inspect`,
/// `prune`, the admin API): each reads the bus's rows a few times at most,
/// never once per row. A start after a crash, with every pending delivery
/// still there, is exactly when the statistics may say the tables are
/// empty.
#[tokio::test]
async fn start_and_admin_statements_read_each_row_a_few_times_whatever_the_statistics_say() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    // Half of the deliveries not yet queued (an outbox's), behind the
    // worst statistics; one instance alive, one gone.
    worst_statistics(&mut conn, &fill(None)).await;
    with_events_alone(&mut conn).await;
    for sql in [
        "UPDATE tidings_deliveries SET queued = false, shared = false, owner = NULL
           WHERE seq % 2 = 0",
        "INSERT INTO tidings_instances (id, bus, alive_until) VALUES
           ('00000000-0000-0000-0000-000000000001', 'plans', now() + interval '1 hour'),
           ('00000000-0000-0000-0000-000000000002', 'plans', now() - interval '1 hour')",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect("set up");
    }
    use crate::admin::{
        PRUNE_DELETE, PRUNE_EVENTS_KEPT, PRUNE_KEPT, PURGE_DEAD_LETTERS, REGISTRATIONS,
        SUMMARY_DEAD, SUMMARY_PENDING,
    };
    use crate::claims::{CLAIM_TOKENS, INSTANCES_GONE, OUTSTANDING, RECLAIM, RECLAIM_OWNED};
    use crate::recover::{DEAD_LETTERS_OF_BUS, MARK_QUEUED, PENDING_OF_BUS};
    let runs = [
        ("MARK_QUEUED", explain!(conn, MARK_QUEUED, "plans")),
        ("PENDING_OF_BUS", explain!(conn, PENDING_OF_BUS, "plans")),
        (
            "DEAD_LETTERS_OF_BUS",
            explain!(conn, DEAD_LETTERS_OF_BUS, "plans", 10_000i64),
        ),
        (
            "RECLAIM_OWNED",
            explain!(conn, RECLAIM_OWNED, "plans", vec![7i64], OWNER),
        ),
        (
            "RECLAIM (own bus name)",
            explain!(conn, RECLAIM, "plans", vec![7i64], None::<Uuid>),
        ),
        ("CLAIM_TOKENS", explain!(conn, CLAIM_TOKENS, "plans", OWNER)),
        (
            "OUTSTANDING",
            explain!(conn, OUTSTANDING, "plans", vec!["h"]),
        ),
        ("INSTANCES_GONE", explain!(conn, INSTANCES_GONE, "plans")),
        ("REGISTRATIONS", explain!(conn, REGISTRATIONS, "plans")),
        ("SUMMARY_PENDING", explain!(conn, SUMMARY_PENDING, "plans")),
        ("SUMMARY_DEAD", explain!(conn, SUMMARY_DEAD, "plans")),
        (
            "PRUNE_KEPT",
            explain!(conn, PRUNE_KEPT, "plans", "h", "pruned", 1i64),
        ),
        ("PRUNE_DELETE", explain!(conn, PRUNE_DELETE, "plans", "h")),
        (
            "PRUNE_EVENTS_KEPT",
            explain!(conn, PRUNE_EVENTS_KEPT, "plans", "h"),
        ),
        (
            "PURGE_DEAD_LETTERS",
            explain!(conn, PURGE_DEAD_LETTERS, "plans"),
        ),
    ];
    drop_schema(conn, &schema).await;
    for (name, (read, _)) in &runs {
        eprintln!("{name}: {read} rows read");
    }
    let failures: Vec<String> = runs
        .into_iter()
        // A pass over the deliveries, one over the events, a lookup of each
        // by primary key: a few rows per row. A plan that reads one table
        // once per row of the other reads 400 000 000.
        .filter(|(_, (read, _))| *read > (6 * PENDING) as f64)
        .map(|(name, (read, plan))| {
            format!("{name} read {read} rows with {PENDING} pending: {plan}")
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A plan a connection keeps is made at the statement's first execution,
/// from the sizes the tables have then. Made right after autovacuum
/// truncated the queue's emptied tables (no page, no row: a scan of one
/// looks free), it is kept while they fill again, until the next `ANALYZE`:
/// each statement here, prepared on a connection set up as the bus's are
/// ([`crate::link::SESSION`]) and first run on truncated tables, must
/// still read only the rows it names once 20 000 deliveries are pending.
/// (Without `enable_seqscan = off` the settles looked up each event by
/// scanning `tidings_events`: 4 min 53 s at one core for one handled-delete
/// batch on the benchmark's server, session 15.)
#[tokio::test]
async fn plans_made_on_truncated_tables_read_only_the_rows_they_name_once_they_fill() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    // Filled and emptied, then vacuumed: truncated, no page and no row known.
    sqlx::query(&fill(None))
        .execute(&mut conn)
        .await
        .expect("filled");
    for sql in [
        "DELETE FROM tidings_deliveries",
        "DELETE FROM tidings_dead_letters",
        "DELETE FROM tidings_events",
        "VACUUM ANALYZE tidings_events",
        "VACUUM ANALYZE tidings_deliveries",
        "VACUUM ANALYZE tidings_dead_letters",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect("emptied");
    }
    let uuids = |ids: &[Uuid]| {
        let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        format!("'{{{}}}'::uuid[]", list.join(","))
    };
    let repeat = |v: &str, ty: &str| format!("'{{{}}}'::{ty}[]", vec![v; BATCH].join(","));
    let settle = "uuid[], text[], int4[], int8[], uuid";
    let statements: [(&str, &str, &str); 10] = [
        ("SETTLE_DELETE", SETTLE_DELETE, settle),
        (
            "HANDLED_SHARED",
            HANDLED_SHARED,
            "uuid[], text[], int8[], uuid",
        ),
        ("SETTLE_ATTEMPT", SETTLE_ATTEMPT, settle),
        ("BEGIN_MARK", BEGIN_MARK, settle),
        ("HANDLED_AT_ONCE", HANDLED_AT_ONCE, "uuid[], text[]"),
        ("EVENTS_GONE", EVENTS_GONE, "uuid[]"),
        ("EVENTS_KEPT", EVENTS_KEPT, "uuid[], text[]"),
        (
            "DEAD_LETTERS_KEPT",
            DEAD_LETTERS_KEPT,
            "uuid[], text[], int4[], text[], int8",
        ),
        ("REPLAYED", REPLAYED, "uuid[], text[], int4[], uuid"),
        (
            "REPLAYED_SHARED",
            REPLAYED_SHARED,
            "uuid[], text[], int4[], text, text",
        ),
    ];
    let args = |name: &str, ids: &str| -> String {
        let (h, a, f, e) = (
            repeat("h", "text"),
            repeat("2", "int4"),
            repeat("7", "int8"),
            repeat("failed", "text"),
        );
        match name {
            "HANDLED_AT_ONCE" | "EVENTS_KEPT" => format!("{ids}, {h}"),
            "EVENTS_GONE" => ids.to_string(),
            "DEAD_LETTERS_KEPT" => format!("{ids}, {h}, {a}, {e}, 1"),
            "REPLAYED" => format!("{ids}, {h}, {a}, '{OWNER}'::uuid"),
            "REPLAYED_SHARED" => format!("{ids}, {h}, {a}, 'plans', 'plans_channel'"),
            "HANDLED_SHARED" => {
                format!("{ids}, {h}, {f}, '{OWNER}'::uuid")
            }
            _ => format!("{ids}, {h}, {a}, {f}, '{OWNER}'::uuid"),
        }
    };
    // Prepared and run once now, on the truncated tables: the plan kept.
    let none = uuids(&(0..BATCH).map(|_| Uuid::now_v7()).collect::<Vec<_>>());
    for (i, (name, sql, types)) in statements.iter().enumerate() {
        sqlx::query(&format!("PREPARE s{i}({types}) AS {sql}"))
            .execute(&mut conn)
            .await
            .expect("prepared");
        let mut tx = conn.begin().await.expect("a transaction");
        sqlx::query(&format!("EXECUTE s{i}({})", args(name, &none)))
            .execute(&mut *tx)
            .await
            .expect("a first run");
        tx.rollback().await.expect("a rollback");
    }
    // Filled again (no `ANALYZE`: the kept plans stay).
    sqlx::query(&fill(None))
        .execute(&mut conn)
        .await
        .expect("filled again");
    with_events_alone(&mut conn).await;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM tidings_deliveries ORDER BY seq LIMIT $1")
            .bind(i64::try_from(BATCH).unwrap())
            .fetch_all(&mut conn)
            .await
            .expect("the batch");
    let ids = uuids(&ids);
    let mut failures = Vec::new();
    for (i, (name, _, _)) in statements.iter().enumerate() {
        let sql = format!("EXECUTE s{i}({})", args(name, &ids));
        let (read, plan) = explain!(conn, sql);
        eprintln!("{name}: {read} rows read");
        if read > (10 * BATCH) as f64 {
            failures.push(format!(
                "{name}, planned on truncated tables, read {read} rows for {BATCH} settles of {PENDING} pending: {plan}"
            ));
        }
    }
    drop_schema(conn, &schema).await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A claim after one that saw no keyed delivery pending reads no horizon
/// (the server's lock table): it takes no key's head, says keyed ones are
/// pending and asks for the next claim at once, which takes the head.
#[tokio::test]
async fn a_claim_that_read_no_horizon_takes_no_keys_head_and_asks_for_the_next() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    let bound = keyed_heads(&mut conn, "plans", &["a"]).await;
    let mut walk = crate::claims::Walk {
        keyed: false,
        ..Default::default()
    };
    let first = crate::claims::claim(&mut conn, "plans", 8, Some(OWNER), Some(&bound), 1, &walk)
        .await
        .expect("a claim");
    walk.keyed = first.keyed;
    let second = crate::claims::claim(&mut conn, "plans", 8, Some(OWNER), Some(&bound), 2, &walk)
        .await
        .expect("a claim");
    drop_schema(conn, &schema).await;
    assert!(first.events.is_empty(), "a head taken without the horizon");
    assert!(
        first.keyed && first.again,
        "the next claim is not asked for"
    );
    assert_eq!(second.events.len(), 1, "the head, with the horizon read");
    assert!(!second.again);
}

/// While another instance walks the keys for the same handlers, a claim
/// reads no horizon, takes no key's head and is left out of the walk: it
/// does not ask for the next claim at once (which would claim without end
/// while the other walks), but after the gap, as a claim left out does.
#[tokio::test]
async fn a_claim_while_another_walks_reads_no_horizon_and_does_not_ask_again() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    // (A bus of its own: the walk's lock is the database's, not the schema's.)
    let bus = format!("plans-{schema}");
    let bound = keyed_heads(&mut conn, &bus, &["a"]).await;
    let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").expect("set");
    let mut other = PgConnection::connect(&url).await.expect("a connection");
    let mut walking = other.begin().await.expect("a transaction");
    sqlx::query(concat!(
        "SELECT pg_advisory_xact_lock(",
        crate::claims::walk_lock!("$1", "$2"),
        ")"
    ))
    .bind(&bus)
    .bind(vec!["h"])
    .execute(&mut *walking)
    .await
    .expect("the walk held");
    let walk = crate::claims::Walk::default();
    let held = crate::claims::claim(&mut conn, &bus, 8, Some(OWNER), Some(&bound), 1, &walk)
        .await
        .expect("a claim");
    walking.commit().await.expect("the walk let go");
    let free = crate::claims::claim(&mut conn, &bus, 8, Some(OWNER), Some(&bound), 2, &walk)
        .await
        .expect("a claim");
    drop_schema(conn, &schema).await;
    assert!(held.events.is_empty(), "a head taken while another walks");
    assert!(held.walk_busy, "not told the walk was busy");
    assert!(
        !held.again,
        "asked for the next claim at once while another walks"
    );
    assert_eq!(free.events.len(), 1, "the head, the walk free");
}

/// An instance without handlers (a front end) that claims while keyed
/// deliveries are pending gets nothing, not an error: its walk's lock,
/// made from no handler names, was NULL, and so was the claim's answer to
/// whether the walk was left out (every claim failed decoding it, each
/// failure logged by the relay and followed by a sweep).
#[tokio::test]
async fn a_claim_for_no_handlers_with_keys_pending_takes_nothing_and_does_not_fail() {
    let Some((mut conn, schema)) = scratch().await else {
        return;
    };
    keyed_heads(&mut conn, "plans", &["a"]).await;
    let none = crate::claims::Bound::default();
    let claimed = crate::claims::claim(
        &mut conn,
        "plans",
        8,
        Some(OWNER),
        Some(&none),
        1,
        &crate::claims::Walk::default(),
    )
    .await;
    drop_schema(conn, &schema).await;
    let claimed = claimed.expect("a claim without handlers failed");
    assert!(claimed.events.is_empty());
}
