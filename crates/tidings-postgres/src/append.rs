//! Writing events and their deliveries (an emit's batch, the outbox).

use crate::schema::*;
use sqlx::PgConnection;
use tidings::store::StoredEvent;

/// Who an event's deliveries go to, as [`insert_events`] writes them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deliveries {
    /// The event's own list (its bus's handlers), queued by the bus that
    /// writes them.
    Queued,
    /// The event's own list, for the relay to claim (the outbox).
    Unqueued,
    /// Every handler of its type bound to the (shared) bus name, for any
    /// instance's relay to claim; an event with none is not kept.
    Bound,
}

/// The events' columns, as arrays for `UNNEST`.
struct Columns<'a> {
    ids: Vec<uuid::Uuid>,
    types: Vec<&'a str>,
    keys: Vec<Option<&'a str>>,
    at: Vec<i64>,
    data: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    /// Binds `$1` (the bus name) and `$2`–`$6` (the columns).
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        bus: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(bus)
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.keys)
            .bind(&self.at)
            .bind(&self.data)
    }

    fn of(events: &[&'a StoredEvent]) -> Self {
        Self {
            ids: events.iter().map(|e| e.id).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            keys: events.iter().map(|e| e.key.as_deref()).collect(),
            at: events.iter().map(|e| to_nanos(e.emitted_at)).collect(),
            data: events.iter().map(|e| e.data.as_str()).collect(),
        }
    }
}

/// The events' own deliveries, as arrays for `UNNEST`: of the events
/// written alone in their delivery's row (`queued`, one delivery), the
/// handler and attempt beside each event (`None` for the others); of the
/// others, each delivery's event, handler and attempt.
struct Own<'a> {
    alone_handlers: Vec<Option<&'a str>>,
    alone_attempts: Vec<Option<i32>>,
    ids: Vec<uuid::Uuid>,
    handlers: Vec<&'a str>,
    attempts: Vec<i32>,
}

impl<'a> Own<'a> {
    fn of(events: &[&'a StoredEvent], queued: bool) -> Self {
        let mut own = Own {
            alone_handlers: Vec::with_capacity(events.len()),
            alone_attempts: Vec::with_capacity(events.len()),
            ids: Vec::new(),
            handlers: Vec::new(),
            attempts: Vec::new(),
        };
        for e in events {
            match &e.deliveries[..] {
                [d] if queued => {
                    own.alone_handlers.push(Some(d.handler.as_str()));
                    own.alone_attempts.push(Some(to_attempt(d.attempt)));
                }
                all => {
                    own.alone_handlers.push(None);
                    own.alone_attempts.push(None);
                    for d in all {
                        own.ids.push(e.id);
                        own.handlers.push(d.handler.as_str());
                        own.attempts.push(to_attempt(d.attempt));
                    }
                }
            }
        }
        own
    }
}

/// A shared bus's emits (`$1` the bus name, `$2`–`$6` the events'
/// columns): the events that some handler bound to the name takes (an
/// event no handler is registered for is not kept, as a stream with
/// interest retention keeps nothing nobody consumes), with a delivery to
/// each such handler (unowned: any instance's to claim, see `schema`). An
/// event whose type has one handler bound (the common case) is written in
/// its delivery's row alone, as a bus name of its own writes it
/// ([`APPEND_OWN`]): one row to insert, claim and delete per event. The
/// others' deliveries come from what their insert returns: no lookup of the
/// events just written (a join with `tidings_events` was planned as a scan
/// of it whenever the statistics said the table was empty). Each event's
/// `seq` is drawn in the batch's order, whichever table it goes to. The
/// name's handlers are read once a batch (looked up per event, the
/// statement took twice as long: 0.33 against 0.16 ms for 33 events,
/// docs/BENCHMARKS.md section 7, session 20). It
/// wakes every instance's relay (`pg_notify` on channel `$7`, at commit):
/// sent on its own, it is a whole batch of emits in one round trip.
pub(crate) const APPEND_BOUND: &str = "WITH hs AS MATERIALIZED (
         SELECT h.event_type, array_agg(h.handler) AS handlers FROM tidings_handlers h
         WHERE h.bus = $1 GROUP BY h.event_type),
     u AS MATERIALIZED (
         SELECT u.id, u.t, u.k, u.at, u.d, hs.handlers,
                nextval('tidings_events_seq_seq') AS seq
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[])
              WITH ORDINALITY AS u(id, t, k, at, d, n)
         JOIN hs ON hs.event_type = u.t
         ORDER BY u.n),
     alone AS (
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, bus, seq, key,
                                         event_type, emitted_at_ns, data)
         SELECT u.id, u.handlers[1], 1, true, true, $1, u.seq, u.k, u.t, u.at, u.d
         FROM u WHERE cardinality(u.handlers) = 1
         ON CONFLICT (event_id, handler) DO NOTHING),
     ev AS (
         INSERT INTO tidings_events (id, seq, bus, event_type, key, emitted_at_ns, data)
         SELECT u.id, u.seq, $1, u.t, u.k, u.at, u.d FROM u WHERE cardinality(u.handlers) > 1
         ON CONFLICT (id) DO NOTHING
         RETURNING id, seq, key),
     more AS (
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, bus, seq, key)
         SELECT ev.id, h.handler, 1, true, true, $1, ev.seq, ev.key
         FROM ev JOIN u ON u.id = ev.id CROSS JOIN LATERAL UNNEST(u.handlers) AS h(handler)
         ON CONFLICT (event_id, handler) DO NOTHING)
     SELECT pg_notify($7, $1)";

/// Writes events and their deliveries. Written again (a batch whose commit
/// was cut off with its connection, and is retried), nothing changes.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    to: Deliveries,
) -> Result<(), sqlx::Error> {
    let queued = match to {
        Deliveries::Bound => {
            let c = Columns::of(events);
            return c
                .bind(sqlx::query(APPEND_BOUND), bus)
                .bind(crate::store::CHANNEL)
                .execute(conn)
                .await
                .map(drop);
        }
        Deliveries::Queued => true,
        Deliveries::Unqueued => false,
    };
    insert_events_at_once(conn, bus, events, queued).await
}

/// [`insert_events_at_once`]'s statement: `$1` the bus, `$2`–`$6` the
/// events' columns, `$11`/`$12` the handler and attempt of each event
/// written alone in its delivery's row (NULL for the others), `$7`–`$9`
/// the others' deliveries (event, handler, attempt), `$10` whether they
/// are queued. Each event's `seq` is drawn in the batch's order, whichever
/// table it goes to. It reads no table but what it inserts.
pub(crate) const APPEND_OWN: &str = "WITH u AS MATERIALIZED (
         SELECT u.*, nextval('tidings_events_seq_seq') AS seq
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[],
                     $11::text[], $12::int4[])
              WITH ORDINALITY AS u(id, t, k, at, d, h, a, n)
         ORDER BY u.n),
     alone AS (
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, bus, seq, key,
                                         event_type, emitted_at_ns, data)
         SELECT u.id, u.h, u.a, $10, $1, u.seq, u.k, u.t, u.at, u.d
         FROM u WHERE u.h IS NOT NULL
         ON CONFLICT (event_id, handler) DO NOTHING),
     ev AS (
         INSERT INTO tidings_events (id, seq, bus, event_type, key, emitted_at_ns, data)
         SELECT u.id, u.seq, $1, u.t, u.k, u.at, u.d FROM u WHERE u.h IS NULL
         ON CONFLICT (id) DO NOTHING
         RETURNING id, bus, seq, key)
     INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, bus, seq, key)
     SELECT v.id, v.h, v.a, $10, ev.bus, ev.seq, ev.key
     FROM UNNEST($7::uuid[], $8::text[], $9::int4[]) AS v(id, h, a)
     JOIN ev ON ev.id = v.id
     ON CONFLICT (event_id, handler) DO NOTHING";

/// [`APPEND_OWN`] for a batch whose events are all written alone in their
/// delivery's row (the common case: one handler per type), with the same
/// binds but `$7`–`$9`: one insert, no common table expression.
pub(crate) const APPEND_ALONE: &str =
    "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, bus, seq, key,
                                     event_type, emitted_at_ns, data)
     SELECT u.id, u.h, u.a, $7, $1, nextval('tidings_events_seq_seq'), u.k, u.t, u.at, u.d
     FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[],
                 $8::text[], $9::int4[])
          WITH ORDINALITY AS u(id, t, k, at, d, h, a, n)
     ORDER BY u.n
     ON CONFLICT (event_id, handler) DO NOTHING";

/// [`APPEND_ALONE`] for one event (an emitter alone, say): the same row
/// from plain values, without arrays to build and unnest.
pub(crate) const APPEND_ONE: &str =
    "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, bus, seq, key,
                                     event_type, emitted_at_ns, data)
     VALUES ($2, $7, $8, true, $1, nextval('tidings_events_seq_seq'), $4, $3, $5, $6)
     ON CONFLICT (event_id, handler) DO NOTHING";

/// Writes events and their own deliveries (a bus name of its own, or the
/// outbox) in one statement, which commits by itself when sent outside a
/// transaction: one round trip for a batch of emits, where a transaction
/// with a statement per table takes four. An event the bus queues to one
/// handler is written in its delivery's row alone (see `schema`). Written
/// again (a batch whose commit was cut off with its connection), nothing
/// changes.
pub(crate) async fn insert_events_at_once(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    queued: bool,
) -> Result<(), sqlx::Error> {
    if let ([e], true) = (events, queued) {
        if let [d] = &e.deliveries[..] {
            sqlx::query(APPEND_ONE)
                .bind(bus)
                .bind(e.id)
                .bind(&e.event_type)
                .bind(e.key.as_deref())
                .bind(to_nanos(e.emitted_at))
                .bind(&e.data)
                .bind(&d.handler)
                .bind(to_attempt(d.attempt))
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
    }
    let c = Columns::of(events);
    let own = Own::of(events, queued);
    if own.ids.is_empty() && queued {
        c.bind(sqlx::query(APPEND_ALONE), bus)
            .bind(queued)
            .bind(&own.alone_handlers)
            .bind(&own.alone_attempts)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    c.bind(sqlx::query(APPEND_OWN), bus)
        .bind(&own.ids)
        .bind(&own.handlers)
        .bind(&own.attempts)
        .bind(queued)
        .bind(&own.alone_handlers)
        .bind(&own.alone_attempts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
