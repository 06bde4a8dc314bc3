//! What a bus left pending, read back at start.

use crate::schema::*;
use sqlx::{PgConnection, Row};
use tidings::store::{Recovered, StoredDeadLetter, StoredEvent};
use tidings::StoreError;

/// Dead letters listed again at start, the newest.
const DEAD_LETTERS_RECOVERED: i64 = 10_000;

/// The bus's pending deliveries, oldest event first, and its newest dead
/// letters. Every delivery is first marked queued (this bus queues them all
/// now); only those are read, so that an outbox event committed between the
/// two statements is left unqueued, for the relay, and not delivered twice.
/// Each may have been begun by the bus that stopped ([`Begun::Maybe`](tidings::store::Begun::Maybe); an
/// outbox row never queued before is counted so too, which costs it one
/// begin mark).
///
/// A shared bus (`shared`) reads only the dead letters: the pending
/// deliveries belong to the instances that queued them, and the relay claims
/// those of instances no longer alive.
pub(crate) async fn recover(
    conn: &mut PgConnection,
    bus: &str,
    shared: bool,
) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    if !shared {
        out.events = pending(conn, bus).await?;
    }
    out.dead_letters = dead_letters(conn, bus).await?;
    Ok(out)
}

async fn pending(conn: &mut PgConnection, bus: &str) -> Result<Vec<StoredEvent>, StoreError> {
    sqlx::query(
        "UPDATE tidings_deliveries d SET queued = true FROM tidings_events e
         WHERE e.id = d.event_id AND e.bus = $1 AND NOT d.queued",
    )
    .bind(bus)
    .execute(&mut *conn)
    .await
    .map_err(crate::store::error)?;
    let rows = sqlx::query(
        "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data, d.handler, d.attempt,
                d.begun, true
         FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
         WHERE e.bus = $1 AND d.queued ORDER BY e.seq, d.handler",
    )
    .bind(bus)
    .fetch_all(&mut *conn)
    .await
    .map_err(crate::store::error)?;
    events_of(rows)
}

async fn dead_letters(
    conn: &mut PgConnection,
    bus: &str,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    let mut out = Vec::new();
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
        out.push(StoredDeadLetter {
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
    out.reverse();
    Ok(out)
}
