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

// A start after a crash finds every pending delivery still there, and may
// find the statistics of an emptied queue (autovacuum's `ANALYZE` between
// two bursts): joined to the events, these statements read one table once
// per row of the other (past 20 s each with 20 000 pending; `plans.rs`). A
// delivery carries its bus, and each event is looked up by primary key.

/// Marks every pending delivery of bus `$1` queued (this bus queues them all now).
pub(crate) const MARK_QUEUED: &str =
    "UPDATE tidings_deliveries d SET queued = true WHERE d.bus = $1 AND NOT d.queued";

/// The queued deliveries of bus `$1` with their events (in the delivery's
/// row, or looked up), oldest first.
pub(crate) const PENDING_OF_BUS: &str = concat!(
    "SELECT ",
    event_of!("d"),
    ", d.handler, d.attempt, d.begun, true FROM tidings_deliveries d ",
    event_join!("d"),
    " WHERE d.bus = $1 AND d.queued AND ",
    event_found!("d"),
    " ORDER BY d.seq, d.handler"
);

/// The newest `$2` dead letters of bus `$1`, with their events.
pub(crate) const DEAD_LETTERS_OF_BUS: &str =
    "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data,
            l.handler, l.attempts, l.error, l.failed_at_ns
     FROM tidings_dead_letters l CROSS JOIN LATERAL (
         SELECT e.id, e.bus, e.event_type, e.key, e.emitted_at_ns, e.data FROM tidings_events e
         WHERE e.id = l.event_id OFFSET 0) e
     WHERE e.bus = $1 ORDER BY l.failed_at_ns DESC LIMIT $2";

async fn pending(conn: &mut PgConnection, bus: &str) -> Result<Vec<StoredEvent>, StoreError> {
    sqlx::query(MARK_QUEUED)
        .bind(bus)
        .execute(&mut *conn)
        .await
        .map_err(crate::store::error)?;
    let rows = sqlx::query(PENDING_OF_BUS)
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
    let rows = sqlx::query(DEAD_LETTERS_OF_BUS)
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
