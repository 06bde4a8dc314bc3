//! What runs on an operator's request, from outside a running bus: a shared
//! bus name's registered handlers, listed and pruned; what a bus name holds
//! (`PgStore::summarize`), and its dead letters purged with it.

use crate::schema::*;
use sqlx::PgConnection;
use std::time::{Duration, SystemTime};

// An operator asks while the bus runs, perhaps behind the statistics of an
// emptied queue: no statement here joins two of the queue's tables (each
// read one once per row of the other, past 20 s with 20 000 pending;
// `plans.rs`). A delivery carries its bus; events are looked up by primary
// key.

/// What bus `$1` has pending, by event type and handler: how many, and
/// the oldest's emission time.
pub(crate) const SUMMARY_PENDING: &str =
    "SELECT COALESCE(t.event_type, e.event_type) AS event_type, t.handler, count(*),
            min(COALESCE(t.emitted_at_ns, e.emitted_at_ns))
     FROM tidings_deliveries t LEFT JOIN LATERAL (
         SELECT e.event_type, e.emitted_at_ns FROM tidings_events e
         WHERE e.id = t.event_id AND t.data IS NULL OFFSET 0) e ON true
     WHERE t.bus = $1 AND (t.data IS NOT NULL OR e.event_type IS NOT NULL)
     GROUP BY 1, t.handler ORDER BY 1, t.handler";

/// [`SUMMARY_PENDING`] of the dead letters (which do not carry their bus).
pub(crate) const SUMMARY_DEAD: &str =
    "SELECT e.event_type, t.handler, count(*), min(e.emitted_at_ns)
     FROM tidings_dead_letters t CROSS JOIN LATERAL (
         SELECT e.bus, e.event_type, e.emitted_at_ns FROM tidings_events e
         WHERE e.id = t.event_id OFFSET 0) e
     WHERE e.bus = $1 GROUP BY e.event_type, t.handler
     ORDER BY e.event_type, t.handler";

/// The dead letters of bus `$1` deleted (by [`crate::PgStore::purge`]):
/// each dead letter's event looked up by primary key, those of the bus
/// deleted by row address.
pub(crate) const PURGE_DEAD_LETTERS: &str =
    "DELETE FROM tidings_dead_letters WHERE ctid = ANY(ARRAY(
         SELECT l.ctid FROM tidings_dead_letters l CROSS JOIN LATERAL (
             SELECT e.bus FROM tidings_events e WHERE e.id = l.event_id OFFSET 0) e
         WHERE e.bus = $1))";

/// [`registrations`]' statement (`$1` the bus): the deliveries counted once,
/// by handler.
pub(crate) const REGISTRATIONS: &str = "WITH waiting AS MATERIALIZED (
         SELECT d.handler, count(*) AS n FROM tidings_deliveries d
         WHERE d.bus = $1 GROUP BY d.handler)
     SELECT h.handler, h.event_type, (extract(epoch FROM h.seen_at) * 1000000)::int8,
            COALESCE((SELECT w.n FROM waiting w WHERE w.handler = h.handler), 0)
     FROM tidings_handlers h WHERE h.bus = $1 ORDER BY h.handler";

/// The handlers registered on a shared bus name, with when a process last
/// had each and how many deliveries wait for it.
pub(crate) async fn registrations(
    conn: &mut PgConnection,
    bus: &str,
) -> Result<Vec<tidings::store::Registration>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(REGISTRATIONS)
        .bind(bus)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(handler, event_type, seen_us, pending)| tidings::store::Registration {
                handler,
                event_type,
                last_seen: SystemTime::UNIX_EPOCH
                    + Duration::from_micros(u64::try_from(seen_us).unwrap_or(0)),
                pending: u64::try_from(pending).unwrap_or(0),
            },
        )
        .collect())
}

/// A pruned handler's (`$2`) waiting deliveries on bus `$1` whose events
/// are written in their rows alone (see `schema`) have their events written
/// to `tidings_events`, for the dead letters they become.
pub(crate) const PRUNE_EVENTS_KEPT: &str =
    "INSERT INTO tidings_events (id, seq, bus, event_type, key, emitted_at_ns, data)
     SELECT d.event_id, d.seq, d.bus, d.event_type, d.key, d.emitted_at_ns, d.data
     FROM tidings_deliveries d WHERE d.bus = $1 AND d.handler = $2 AND d.data IS NOT NULL
     ON CONFLICT (id) DO NOTHING";

/// A pruned handler's (`$2`) waiting deliveries on bus `$1` made dead
/// letters (error `$3`, at `$4`).
pub(crate) const PRUNE_KEPT: &str =
    "INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
     SELECT d.event_id, d.handler, GREATEST(d.attempt - 1, 0), $3, $4
     FROM tidings_deliveries d WHERE d.bus = $1 AND d.handler = $2
     ON CONFLICT (event_id, handler) DO NOTHING";

/// A pruned handler's (`$2`) deliveries on bus `$1` deleted.
pub(crate) const PRUNE_DELETE: &str =
    "DELETE FROM tidings_deliveries d WHERE d.bus = $1 AND d.handler = $2";

/// Removes the handlers of a shared bus name that no process has had for
/// `unused_for`, in one transaction: their waiting deliveries become dead
/// letters first (error "pruned: ..."), then the deliveries and the
/// registrations are deleted.
pub(crate) async fn prune(
    conn: &mut PgConnection,
    bus: &str,
    unused_for: Duration,
) -> Result<Vec<tidings::store::Pruned>, sqlx::Error> {
    let ms = i64::try_from(unused_for.as_millis()).unwrap_or(i64::MAX);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let gone: Vec<(String, String)> = sqlx::query_as(
        "SELECT handler, event_type FROM tidings_handlers
         WHERE bus = $1 AND seen_at < now() - $2 * interval '1 millisecond'
         ORDER BY handler FOR UPDATE",
    )
    .bind(bus)
    .bind(ms)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(gone.len());
    for (handler, event_type) in gone {
        let error = format!(
            "pruned: no process had handler {handler} for more than {} s",
            unused_for.as_secs()
        );
        sqlx::query(PRUNE_EVENTS_KEPT)
            .bind(bus)
            .bind(&handler)
            .execute(&mut *tx)
            .await?;
        let kept = sqlx::query(PRUNE_KEPT)
            .bind(bus)
            .bind(&handler)
            .bind(&error)
            .bind(to_nanos(SystemTime::now()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(PRUNE_DELETE)
            .bind(bus)
            .bind(&handler)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tidings_handlers WHERE bus = $1 AND handler = $2")
            .bind(bus)
            .bind(&handler)
            .execute(&mut *tx)
            .await?;
        out.push(tidings::store::Pruned {
            handler,
            event_type,
            dead_lettered: kept,
        });
    }
    tx.commit().await?;
    Ok(out)
}
