//! A shared bus name's registered handlers, listed and pruned from outside.

use crate::schema::*;
use sqlx::PgConnection;
use std::time::{Duration, SystemTime};

/// The handlers registered on a shared bus name, with when a process last
/// had each and how many deliveries wait for it.
pub(crate) async fn registrations(
    conn: &mut PgConnection,
    bus: &str,
) -> Result<Vec<tidings::store::Registration>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT h.handler, h.event_type, (extract(epoch FROM h.seen_at) * 1000000)::int8,
                (SELECT count(*) FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
                 WHERE e.bus = h.bus AND d.handler = h.handler)
         FROM tidings_handlers h WHERE h.bus = $1 ORDER BY h.handler",
    )
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
        let kept = sqlx::query(
            "INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
             SELECT d.event_id, d.handler, GREATEST(d.attempt - 1, 0), $3, $4
             FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
             WHERE e.bus = $1 AND d.handler = $2
             ON CONFLICT (event_id, handler) DO NOTHING",
        )
        .bind(bus)
        .bind(&handler)
        .bind(&error)
        .bind(to_nanos(SystemTime::now()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM tidings_deliveries d USING tidings_events e
             WHERE e.id = d.event_id AND e.bus = $1 AND d.handler = $2",
        )
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
