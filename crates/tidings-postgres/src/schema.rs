//! The tables, created if missing ([`migrate`]), and how their rows read as
//! the bus's types. The queries are in the modules named for what they do:
//! `append`, `claims`, `recover`, `admin`.

use sqlx::{PgConnection, Row};
use std::time::{Duration, SystemTime};
use tidings::store::{Begun, StoredDelivery, StoredEvent};
use tidings::StoreError;

/// `seq` orders a bus's events; rows refer to events by their id (a UUID
/// key PostgreSQL indexes well, unlike SQLite's rowid trade-off).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tidings_events (
        id            UUID PRIMARY KEY,
        seq           BIGSERIAL NOT NULL,
        bus           TEXT NOT NULL,
        event_type    TEXT NOT NULL,
        key           TEXT,
        emitted_at_ns BIGINT NOT NULL,
        data          TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS tidings_events_bus_seq ON tidings_events (bus, seq)",
    "CREATE TABLE IF NOT EXISTS tidings_deliveries (
        event_id UUID NOT NULL,
        handler  TEXT NOT NULL,
        attempt  INTEGER NOT NULL,
        PRIMARY KEY (event_id, handler)
    )",
    // Whether this bus has queued the delivery: false for events written by
    // the application's own transactions (the outbox), until the relay claims them.
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS queued BOOLEAN NOT NULL DEFAULT true",
    "CREATE INDEX IF NOT EXISTS tidings_deliveries_unqueued ON tidings_deliveries (event_id) WHERE NOT queued",
    // Shared buses (several processes on one bus name): each process is an
    // instance that keeps itself alive; a delivery it queued is its own
    // until it stops being alive, then any instance may claim it.
    "CREATE TABLE IF NOT EXISTS tidings_instances (
        id          UUID PRIMARY KEY,
        bus         TEXT NOT NULL,
        alive_until TIMESTAMPTZ NOT NULL
    )",
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS owner UUID",
    "CREATE INDEX IF NOT EXISTS tidings_deliveries_owner ON tidings_deliveries (owner) WHERE owner IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS tidings_dead_letters (
        event_id     UUID NOT NULL,
        handler      TEXT NOT NULL,
        attempts     INTEGER NOT NULL,
        error        TEXT NOT NULL,
        failed_at_ns BIGINT NOT NULL,
        PRIMARY KEY (event_id, handler)
    )",
    // The attempt last marked begun (0: none), written before each attempt
    // of a delivery an earlier process may have begun
    // (`tidings::store::Store::begin`).
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS begun INTEGER NOT NULL DEFAULT 0",
    // A shared bus's handlers, in any of its processes: an event gets a
    // delivery for each handler of its type bound when it is written.
    "CREATE TABLE IF NOT EXISTS tidings_handlers (
        bus        TEXT NOT NULL,
        handler    TEXT NOT NULL,
        event_type TEXT NOT NULL,
        PRIMARY KEY (bus, handler)
    )",
    // A shared bus hands out a key's deliveries to a handler one at a time,
    // the oldest first: the claim looks for an older one of the same key.
    "CREATE INDEX IF NOT EXISTS tidings_events_bus_key_seq ON tidings_events (bus, key, seq)
        WHERE key IS NOT NULL",
    // A shared bus's fencing token: bumped by every claim; a settle names
    // the owner and token of its claim and changes nothing when either
    // moved on (the instance paused past its lease and another took over).
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS fence BIGINT NOT NULL DEFAULT 0",
    // When a process with the handler last said it was alive (at its start,
    // and with each lease renewal): a handler nobody has had for long is
    // shown by `tidings inspect` and removed by `tidings prune`.
    "ALTER TABLE tidings_handlers ADD COLUMN IF NOT EXISTS seen_at TIMESTAMPTZ NOT NULL DEFAULT now()",
    // A delivery carries its event's bus, order and key, so that a shared
    // bus's claim reads an index of what it may take, in order, instead of
    // joining and sorting every pending delivery of the bus (75 ms a claim
    // with 20 000 pending, measured; see `claims`). The store writes them;
    // a row written without them (an older version of this crate, a
    // test's own insert) gets them from its event by the trigger.
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS bus TEXT",
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS seq BIGINT",
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS key TEXT",
    "UPDATE tidings_deliveries d SET bus = e.bus, seq = e.seq, key = e.key
       FROM tidings_events e WHERE e.id = d.event_id AND d.seq IS NULL",
    "CREATE OR REPLACE FUNCTION tidings_delivery_of_event() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       SELECT e.bus, e.seq, e.key INTO NEW.bus, NEW.seq, NEW.key
         FROM tidings_events e WHERE e.id = NEW.event_id;
       RETURN NEW;
     END $$",
    "DROP TRIGGER IF EXISTS tidings_delivery_of_event ON tidings_deliveries",
    "CREATE TRIGGER tidings_delivery_of_event BEFORE INSERT ON tidings_deliveries
       FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION tidings_delivery_of_event()",
    // Unqueued deliveries without a key, in order: the outbox's (and a
    // shared name's, before they were written queued: see `shared` below).
    "CREATE INDEX IF NOT EXISTS tidings_deliveries_unkeyed_claimable
       ON tidings_deliveries (bus, seq) WHERE NOT queued AND key IS NULL",
    // A key's deliveries to a handler in order: the claim reads the first of each.
    "CREATE INDEX IF NOT EXISTS tidings_deliveries_key_order
       ON tidings_deliveries (bus, handler, key, seq) WHERE key IS NOT NULL",
    // No foreign keys from deliveries and dead letters to their events: the
    // store writes an event with its deliveries, and deletes it only once
    // no delivery or dead letter refers to it (`writer::apply_settles`).
    // Checked by the server, they cost a lookup per delivery written and
    // two per event deleted, under a row lock: 500 000 lookups taking 38 s
    // of a 50 000-event run's 4 rows (pg_stat_statements, 76 µs each as the
    // queue's tables churned).
    "ALTER TABLE tidings_deliveries DROP CONSTRAINT IF EXISTS tidings_deliveries_event_id_fkey",
    "ALTER TABLE tidings_dead_letters DROP CONSTRAINT IF EXISTS tidings_dead_letters_event_id_fkey",
    // An event a bus name of its own queues to one handler is written in its
    // delivery's row alone (`append::APPEND_OWN`): one row to insert and one
    // to delete per event, where an event row beside it doubled both (the
    // bus at 0.53-0.68 of raw PostgreSQL at the SQL level, one row 0.88-1.07;
    // docs/BENCHMARKS.md). Its `seq` comes from the events' sequence. NULL
    // `data`: the event is in `tidings_events`. Such an event is written to
    // `tidings_events` when it becomes a dead letter (`writer::EVENTS_KEPT`).
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS event_type TEXT",
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS emitted_at_ns BIGINT",
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS data TEXT",
    // A shared bus name's delivery (`append::APPEND_BOUND`, `writer::REPLAYED`)
    // is written `shared` and `queued`, and neither ever changes: it is
    // claimed when it has an `owner`. So a claim writes only `owner` and
    // `fence`, columns no index names, and PostgreSQL updates the row in
    // place (a heap-only tuple: no index entry written, where the claim
    // that set `queued` wrote one in each index; docs/BENCHMARKS.md
    // section 7, session 20). Its pages are kept more than half empty for
    // it (`fillfactor` 40: a claim updates every row of a page at once, and
    // each new version is larger by its owner). Without the room, a claim
    // wrote a new entry in `tidings_deliveries_key_order` per row, which
    // the keyed claim's skip scan then walked: the shared bus with 1 000
    // keys ran 19-22 k events/s against 29-33 k with it, alternated on
    // fresh databases; `connect`'s rows share the table and its sparser
    // pages, at no cost measured (median 53.4 k against 53.1 k events/s,
    // five pairs alternated on fresh databases).
    // Rows of shared names from before are converted here
    // (a name is shared when it has handlers registered); one written by an
    // older version of this crate still running (`queued` false) is
    // converted by the trigger as it is inserted, so that a rolling upgrade
    // strands nothing: the older instances claim none of the converted rows
    // (they look for unqueued ones) and settle what they hold, fenced as before.
    "ALTER TABLE tidings_deliveries ADD COLUMN IF NOT EXISTS shared BOOLEAN NOT NULL DEFAULT false",
    "UPDATE tidings_deliveries d SET shared = true, queued = true
       WHERE NOT d.shared AND (d.owner IS NOT NULL OR EXISTS (
         SELECT 1 FROM tidings_handlers h WHERE h.bus = d.bus AND h.handler = d.handler))",
    "CREATE OR REPLACE FUNCTION tidings_shared_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF EXISTS (SELECT 1 FROM tidings_handlers h
                  WHERE h.bus = NEW.bus AND h.handler = NEW.handler) THEN
         NEW.shared := true;
         NEW.queued := true;
       END IF;
       RETURN NEW;
     END $$",
    "DROP TRIGGER IF EXISTS tidings_shared_delivery ON tidings_deliveries",
    // (Fired after `tidings_delivery_of_event`, by name: `bus` is set.)
    "CREATE TRIGGER tidings_shared_delivery BEFORE INSERT ON tidings_deliveries
       FOR EACH ROW WHEN (NOT NEW.queued AND NOT NEW.shared)
       EXECUTE FUNCTION tidings_shared_delivery()",
    // Its claims found the owned rows by this index; they no longer may
    // (see above), and read the bus's rows instead, on rare paths.
    "DROP INDEX IF EXISTS tidings_deliveries_owner",
    "ALTER TABLE tidings_deliveries SET (fillfactor = 40)",
    // The last statement: `migrate` runs nothing once it has run.
    // What a shared bus's claim may take without a key: the unclaimed (no
    // owner, read from the row), in order.
    "CREATE INDEX IF NOT EXISTS tidings_deliveries_shared_unkeyed
       ON tidings_deliveries (bus, seq) WHERE shared AND key IS NULL",
];

/// `event_of!(row)`: the columns (id, type, key, emitted_at_ns, data) of
/// the event of delivery `row` (an alias whose columns are the delivery
/// table's), read from the row itself when the event is written there
/// alone (see [`SCHEMA`]), else from `e`, [`event_join!`]'s lookup.
macro_rules! event_of {
    ($row:literal) => {
        concat!(
            $row,
            ".event_id, COALESCE(",
            $row,
            ".event_type, e.event_type), ",
            $row,
            ".key, COALESCE(",
            $row,
            ".emitted_at_ns, e.emitted_at_ns), COALESCE(",
            $row,
            ".data, e.data)"
        )
    };
}
pub(crate) use event_of;

/// `event_join!(row)`: the event of delivery `row` looked up by primary key
/// as `e` when it is not in the row (a join no statistics can turn into a
/// scan: `plans.rs`); `event_found!(row)` is false for a delivery whose
/// event is in neither.
macro_rules! event_join {
    ($row:literal) => {
        concat!(
            "LEFT JOIN LATERAL (
                 SELECT e.event_type, e.emitted_at_ns, e.data FROM tidings_events e
                 WHERE e.id = ",
            $row,
            ".event_id AND ",
            $row,
            ".data IS NULL OFFSET 0) e ON true"
        )
    };
}
pub(crate) use event_join;

/// See [`event_join!`].
macro_rules! event_found {
    ($row:literal) => {
        concat!("(", $row, ".data IS NOT NULL OR e.data IS NOT NULL)")
    };
}
pub(crate) use event_found;

/// Creates the tables if missing (under a transaction-scoped advisory lock,
/// so that two stores starting at once do not race on `CREATE`). When the
/// last statement of [`SCHEMA`] has run already, nothing is run: DDL such as
/// `ALTER TABLE` locks its table even when it has nothing to do, and would
/// deadlock with other buses writing to the tables.
pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<(), StoreError> {
    let current: bool =
        sqlx::query_scalar("SELECT to_regclass('tidings_deliveries_shared_unkeyed') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(crate::store::error)?;
    if current {
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(crate::store::error)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tidings-schema', 0))")
        .execute(&mut *tx)
        .await
        .map_err(crate::store::error)?;
    for ddl in SCHEMA {
        sqlx::query(ddl)
            .execute(&mut *tx)
            .await
            .map_err(crate::store::error)?;
    }
    tx.commit().await.map_err(crate::store::error)
}

pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_nanos(n: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn attempt(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(1)
}

/// An attempt number as its column holds it (the inverse of [`attempt`]).
pub(crate) fn to_attempt(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What a delivery at `attempt`, last marked begun at `begun`, was left as:
/// `Never` begun if no bus had queued it (`was_queued`: an outbox row).
pub(crate) fn begun_of(attempt: i32, begun: i32, was_queued: bool) -> Begun {
    if !was_queued {
        Begun::Never
    } else if begun > 0 && begun >= attempt {
        Begun::Interrupted
    } else {
        Begun::Maybe
    }
}

/// Rows of (id, type, key, emitted_at_ns, data, handler, attempt, begun,
/// was_queued, and for a claim its fencing token), ordered by event, as
/// events with their deliveries (a claimed one carries its token as its
/// [`Claim`](tidings::store::Claim)).
pub(crate) fn events_of(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events: Vec<StoredEvent> = Vec::new();
    for row in rows {
        let claim = if row.len() > 9 {
            let fence: i64 = row.try_get(9).map_err(crate::store::error)?;
            tidings::store::Claim::new(u64::try_from(fence).unwrap_or(0))
        } else {
            tidings::store::Claim::NONE
        };
        let id: uuid::Uuid = row.try_get(0).map_err(crate::store::error)?;
        let at: i32 = row.try_get(6).map_err(crate::store::error)?;
        let begun: i32 = row.try_get(7).map_err(crate::store::error)?;
        let was_queued: bool = row.try_get(8).map_err(crate::store::error)?;
        let delivery = StoredDelivery {
            handler: row.try_get(5).map_err(crate::store::error)?,
            attempt: attempt(at),
            begun: begun_of(at, begun, was_queued),
            claim,
        };
        match events.last_mut() {
            Some(last) if last.id == id => last.deliveries.push(delivery),
            _ => events.push(StoredEvent {
                id,
                event_type: row.try_get(1).map_err(crate::store::error)?,
                key: row.try_get(2).map_err(crate::store::error)?,
                emitted_at: from_nanos(row.try_get(3).map_err(crate::store::error)?),
                data: row.try_get(4).map_err(crate::store::error)?,
                deliveries: vec![delivery],
            }),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The statements before shared names' rows were written `shared`.
    fn before_shared() -> &'static [&'static str] {
        let at = SCHEMA
            .iter()
            .position(|s| s.contains("ADD COLUMN IF NOT EXISTS shared"))
            .expect("the shared column");
        &SCHEMA[..at]
    }

    /// A shared name's deliveries written by an older version of this crate
    /// (`queued` false until claimed, then owned) are converted by the
    /// migration, and one such version still running (a rolling upgrade)
    /// has its inserts converted as they are written; an outbox's
    /// deliveries (a name without registered handlers) stay as they are.
    #[tokio::test]
    async fn a_shared_names_rows_from_before_are_claimable_after_the_upgrade() {
        let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
            eprintln!("TIDINGS_TEST_POSTGRES_URL is not set: not run");
            return;
        };
        let mut conn = PgConnection::connect(&url)
            .await
            .expect("TIDINGS_TEST_POSTGRES_URL is set but the server does not answer");
        let schema = format!("tidings_upgrade_{}", uuid::Uuid::now_v7().simple());
        for sql in [
            format!("CREATE SCHEMA {schema}"),
            format!("SET search_path TO {schema}"),
        ] {
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .expect("a schema");
        }
        for ddl in before_shared() {
            sqlx::query(ddl)
                .execute(&mut conn)
                .await
                .expect("the old tables");
        }
        // As the older version wrote them: `s`'s deliveries unclaimed and
        // claimed, an outbox's on `o`.
        let old_insert =
            "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, owner, bus, seq)
                          VALUES (gen_random_uuid(), 'h', 1, $1, $2, $3, $4)";
        let owner = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO tidings_handlers (bus, handler, event_type) VALUES ('s', 'h', 't')",
        )
        .execute(&mut conn)
        .await
        .expect("a handler");
        for (queued, owner, bus, seq) in [
            (false, None, "s", 1i64),
            (true, Some(owner), "s", 2),
            (false, None, "o", 3),
        ] {
            sqlx::query(old_insert)
                .bind(queued)
                .bind(owner)
                .bind(bus)
                .bind(seq)
                .execute(&mut conn)
                .await
                .expect("an old row");
        }
        migrate(&mut conn).await.expect("the upgrade");
        // An older version still running writes one more of each.
        for (bus, seq) in [("s", 4i64), ("o", 5)] {
            sqlx::query(old_insert)
                .bind(false)
                .bind(None::<uuid::Uuid>)
                .bind(bus)
                .bind(seq)
                .execute(&mut conn)
                .await
                .expect("an old insert");
        }
        let rows: Vec<(i64, bool, bool, Option<uuid::Uuid>)> = sqlx::query_as(
            "SELECT seq, shared, queued, owner FROM tidings_deliveries ORDER BY seq",
        )
        .fetch_all(&mut conn)
        .await
        .expect("the rows");
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .expect("dropped");
        assert_eq!(
            rows,
            [
                (1, true, true, None),
                (2, true, true, Some(owner)),
                (3, false, false, None),
                (4, true, true, None),
                (5, false, false, None),
            ]
        );
    }
}
