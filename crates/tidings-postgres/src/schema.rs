//! The tables, created if missing, and reading back what a bus left pending.

use sqlx::{PgConnection, Row};
use std::time::{Duration, SystemTime};
use tidings::store::{Recovered, StoredDeadLetter, StoredDelivery, StoredEvent};
use tidings::StoreError;

/// Dead letters listed again at start, the newest.
const DEAD_LETTERS_RECOVERED: i64 = 10_000;

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
        event_id UUID NOT NULL REFERENCES tidings_events (id),
        handler  TEXT NOT NULL,
        attempt  INTEGER NOT NULL,
        PRIMARY KEY (event_id, handler)
    )",
    "CREATE TABLE IF NOT EXISTS tidings_dead_letters (
        event_id     UUID NOT NULL REFERENCES tidings_events (id),
        handler      TEXT NOT NULL,
        attempts     INTEGER NOT NULL,
        error        TEXT NOT NULL,
        failed_at_ns BIGINT NOT NULL,
        PRIMARY KEY (event_id, handler)
    )",
];

/// Creates the tables if missing (under a transaction-scoped advisory lock,
/// so that two stores starting at once do not race on `CREATE`).
pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<(), StoreError> {
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

fn from_nanos(n: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

fn attempt(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(1)
}

/// The bus's pending deliveries, oldest event first, and its newest dead letters.
pub(crate) async fn recover(conn: &mut PgConnection, bus: &str) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let rows = sqlx::query(
        "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data, d.handler, d.attempt
         FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
         WHERE e.bus = $1 ORDER BY e.seq, d.handler",
    )
    .bind(bus)
    .fetch_all(&mut *conn)
    .await
    .map_err(crate::store::error)?;
    for row in rows {
        let id: uuid::Uuid = row.try_get(0).map_err(crate::store::error)?;
        let delivery = StoredDelivery {
            handler: row.try_get(5).map_err(crate::store::error)?,
            attempt: attempt(row.try_get(6).map_err(crate::store::error)?),
        };
        match out.events.last_mut() {
            Some(last) if last.id == id => last.deliveries.push(delivery),
            _ => out.events.push(StoredEvent {
                id,
                event_type: row.try_get(1).map_err(crate::store::error)?,
                key: row.try_get(2).map_err(crate::store::error)?,
                emitted_at: from_nanos(row.try_get(3).map_err(crate::store::error)?),
                data: row.try_get(4).map_err(crate::store::error)?,
                deliveries: vec![delivery],
            }),
        }
    }
    let rows = sqlx::query(
        "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data,
                l.handler, l.attempts, l.error, l.failed_at_ns
         FROM tidings_dead_letters l JOIN tidings_events e ON e.id = l.event_id
         WHERE e.bus = $1 ORDER BY l.failed_at_ns DESC LIMIT $2",
    )
    .bind(bus)
    .bind(DEAD_LETTERS_RECOVERED)
    .fetch_all(&mut *conn)
    .await
    .map_err(crate::store::error)?;
    for row in rows {
        out.dead_letters.push(StoredDeadLetter {
            event: StoredEvent {
                id: row.try_get(0).map_err(crate::store::error)?,
                event_type: row.try_get(1).map_err(crate::store::error)?,
                key: row.try_get(2).map_err(crate::store::error)?,
                emitted_at: from_nanos(row.try_get(3).map_err(crate::store::error)?),
                data: row.try_get(4).map_err(crate::store::error)?,
                deliveries: Vec::new(),
            },
            handler: row.try_get(5).map_err(crate::store::error)?,
            attempts: u32::try_from(row.try_get::<i32, _>(6).map_err(crate::store::error)?)
                .unwrap_or(0),
            error: row.try_get(7).map_err(crate::store::error)?,
            failed_at: from_nanos(row.try_get(8).map_err(crate::store::error)?),
        });
    }
    out.dead_letters.reverse();
    Ok(out)
}
