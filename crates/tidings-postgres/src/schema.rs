//! The tables, created if missing, and reading back what a bus left pending.

use sqlx::{PgConnection, Row};
use std::time::{Duration, SystemTime};
use tidings::store::{Begun, Recovered, StoredDeadLetter, StoredDelivery, StoredEvent};
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
        event_id     UUID NOT NULL REFERENCES tidings_events (id),
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
    // The last object: `migrate` runs nothing when it exists.
    "ALTER TABLE tidings_handlers ADD COLUMN IF NOT EXISTS seen_at TIMESTAMPTZ NOT NULL DEFAULT now()",
];

/// Creates the tables if missing (under a transaction-scoped advisory lock,
/// so that two stores starting at once do not race on `CREATE`). When the
/// last object of [`SCHEMA`] exists already, nothing is run: DDL such as
/// `ALTER TABLE` locks its table even when it has nothing to do, and would
/// deadlock with other buses writing to the tables.
pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<(), StoreError> {
    let current: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('tidings_handlers')
                          AND attname = 'seen_at' AND NOT attisdropped)",
    )
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

fn from_nanos(n: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

fn attempt(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(1)
}

/// What a delivery at `attempt`, last marked begun at `begun`, was left as:
/// `Never` begun if no bus had queued it (`was_queued`: an outbox row).
fn begun_of(attempt: i32, begun: i32, was_queued: bool) -> Begun {
    if !was_queued {
        Begun::Never
    } else if begun > 0 && begun >= attempt {
        Begun::Interrupted
    } else {
        Begun::Maybe
    }
}

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

/// Writes events and their deliveries. Written again (a batch whose commit
/// was cut off with its connection, and is retried), nothing changes.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    to: Deliveries,
) -> Result<(), sqlx::Error> {
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let keys: Vec<Option<&str>> = events.iter().map(|e| e.key.as_deref()).collect();
    let at: Vec<i64> = events.iter().map(|e| to_nanos(e.emitted_at)).collect();
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    sqlx::query(
        "INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
         SELECT u.id, $1, u.t, u.k, u.at, u.d
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[])
              WITH ORDINALITY AS u(id, t, k, at, d, n)
         ORDER BY u.n
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(bus)
    .bind(&ids)
    .bind(&types)
    .bind(&keys)
    .bind(&at)
    .bind(&data)
    .execute(&mut *conn)
    .await?;
    if let Deliveries::Bound = to {
        sqlx::query(
            "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued)
             SELECT u.id, h.handler, 1, false FROM UNNEST($1::uuid[], $2::text[]) AS u(id, t)
             JOIN tidings_handlers h ON h.bus = $3 AND h.event_type = u.t
             ON CONFLICT (event_id, handler) DO NOTHING",
        )
        .bind(&ids)
        .bind(&types)
        .bind(bus)
        .execute(&mut *conn)
        .await?;
        // An event no handler is registered for is not kept (as a stream
        // with interest retention keeps nothing nobody consumes).
        sqlx::query(
            "DELETE FROM tidings_events e WHERE e.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM tidings_deliveries d WHERE d.event_id = e.id)",
        )
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    let queued = matches!(to, Deliveries::Queued);
    let (mut dids, mut handlers, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
    for e in events {
        for d in &e.deliveries {
            dids.push(e.id);
            handlers.push(d.handler.as_str());
            attempts.push(i32::try_from(d.attempt).unwrap_or(i32::MAX));
        }
    }
    sqlx::query(
        "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued)
         SELECT u.id, u.h, u.a, $4 FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
         ON CONFLICT (event_id, handler) DO NOTHING",
    )
    .bind(&dids)
    .bind(&handlers)
    .bind(&attempts)
    .bind(queued)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Up to `limit` committed deliveries of `bus` not yet queued, or (on a
/// shared bus, `owner` set) queued by an instance that is no longer alive,
/// marked queued and owned (skipping rows another claim holds), grouped by
/// event, oldest first.
///
/// On a shared bus (`bound`: the instance's handlers and their types), only
/// deliveries to those handlers are claimed, and of a keyed event only if
/// no older delivery of its key to the same handler is pending anywhere
/// (claimed or not): a key's deliveries go out one at a time, in order,
/// whichever instance takes each.
///
/// The dead instances are looked up first, and the query that also takes
/// their deliveries runs only when there are some: one condition `OR`ed
/// into the other made PostgreSQL walk every queued delivery of the bus
/// (98 ms a claim with 100 000 of them, once a second), where the
/// unqueued-only query reads its partial index (0.03 ms).
pub(crate) async fn claim(
    conn: &mut PgConnection,
    bus: &str,
    limit: usize,
    owner: Option<uuid::Uuid>,
    bound: Option<&Bound>,
    token: i64,
) -> Result<Claimed, sqlx::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let dead: Vec<uuid::Uuid> = match owner {
        None => Vec::new(),
        Some(me) => sqlx::query_scalar(
            "SELECT id FROM tidings_instances WHERE bus = $1 AND alive_until <= now() AND id <> $2",
        )
        .bind(bus)
        .bind(me)
        .fetch_all(&mut *conn)
        .await?,
    };
    let which = if dead.is_empty() {
        "NOT d.queued"
    } else {
        "(NOT d.queued OR d.owner = ANY($4))"
    };
    // A shared instance claims only while its lease runs: a claim sent
    // before a pause and committed after it (or after the instance died)
    // takes nothing, rather than deliveries nobody alive knows of.
    let alive = if owner.is_some() {
        "AND EXISTS (SELECT 1 FROM tidings_instances i WHERE i.id = $3 AND i.alive_until > now())"
    } else {
        ""
    };
    let (mine, in_order) = if bound.is_some() {
        (
            "AND (d.handler, e.event_type) IN (SELECT * FROM UNNEST($6::text[], $7::text[]))",
            "AND (e.key IS NULL OR NOT EXISTS (
                 SELECT 1 FROM tidings_events e2
                 JOIN tidings_deliveries d2 ON d2.event_id = e2.id AND d2.handler = d.handler
                 WHERE e2.bus = e.bus AND e2.key = e.key AND e2.seq < e.seq))",
        )
    } else {
        ("", "")
    };
    let sql = format!(
        "WITH picked AS (
             SELECT d.event_id, d.handler, d.queued AS was_queued FROM tidings_deliveries d
             JOIN tidings_events e ON e.id = d.event_id
             WHERE e.bus = $1 AND {which} {mine} {in_order} {alive}
             ORDER BY e.seq LIMIT $2
             FOR UPDATE OF d SKIP LOCKED),
         marked AS (
             UPDATE tidings_deliveries d SET queued = true, owner = $3, fence = $5
             FROM picked p
             WHERE d.event_id = p.event_id AND d.handler = p.handler
             RETURNING d.event_id, d.handler, d.attempt, d.begun, p.was_queued, d.fence)
         SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data, m.handler, m.attempt,
                m.begun, m.was_queued, m.fence
         FROM marked m JOIN tidings_events e ON e.id = m.event_id
         ORDER BY e.seq, m.handler"
    );
    // $4 is bound even when the query leaves it out (no dead instances), so
    // that the bound handlers are always $6 and $7; its type is sent with it.
    let mut query = sqlx::query(&sql)
        .bind(bus)
        .bind(limit)
        .bind(owner)
        .bind(&dead)
        .bind(token);
    if let Some(bound) = bound {
        query = query.bind(&bound.handlers).bind(&bound.types);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    claimed_of(rows)
}

/// The deliveries claimed by earlier claims of this store (`owner`, `NULL`
/// for a bus name of its own) with the fencing tokens `tokens`: what a
/// claim whose answer was lost with its connection took. A claim writes
/// its token, chosen by the store, so that the store can find what it
/// took even when it never heard back (else those deliveries would be
/// owned by a live instance that does not know it has them, and a key's
/// next event would wait behind them for ever).
pub(crate) async fn reclaim(
    conn: &mut PgConnection,
    bus: &str,
    owner: Option<uuid::Uuid>,
    tokens: &[i64],
) -> Result<Claimed, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data, d.handler, d.attempt,
                d.begun, true, d.fence
         FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
         WHERE e.bus = $1 AND d.queued AND d.fence = ANY($2) AND d.owner IS NOT DISTINCT FROM $3
         ORDER BY e.seq, d.handler",
    )
    .bind(bus)
    .bind(tokens)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    claimed_of(rows)
}

/// The fencing tokens of the deliveries instance `me` owns: a claim among
/// them that the instance does not hold is one whose answer it never got.
pub(crate) async fn claim_tokens(
    conn: &mut PgConnection,
    me: uuid::Uuid,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT fence FROM tidings_deliveries WHERE owner = $1 AND queued AND fence <> 0",
    )
    .bind(me)
    .fetch_all(&mut *conn)
    .await
}

/// What a claim returns: the events, and for each delivery claimed its
/// event, handler, fencing token, and whether the event has a key.
pub(crate) type Claimed = (Vec<StoredEvent>, Vec<(uuid::Uuid, String, i64, bool)>);

/// Claimed rows (those of [`events_of`], then the fencing token) as a [`Claimed`].
fn claimed_of(rows: Vec<sqlx::postgres::PgRow>) -> Result<Claimed, sqlx::Error> {
    let mut fences = Vec::with_capacity(rows.len());
    for row in &rows {
        let key: Option<&str> = row.try_get(2)?;
        fences.push((
            row.try_get(0)?,
            row.try_get(5)?,
            row.try_get(9)?,
            key.is_some(),
        ));
    }
    Ok((
        events_of(rows).map_err(|e| sqlx::Error::Decode(e.into()))?,
        fences,
    ))
}

/// The handlers of a shared bus's instance, as two columns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bound {
    pub(crate) handlers: Vec<String>,
    pub(crate) types: Vec<String>,
}

/// Registers an instance's handlers on the bus name (a handler name keeps
/// the type it was first bound with: one bound again with another type is
/// refused, in a warning, and not claimed for).
pub(crate) async fn bind(
    conn: &mut PgConnection,
    bus: &str,
    bound: &Bound,
) -> Result<Bound, sqlx::Error> {
    sqlx::query(
        "INSERT INTO tidings_handlers (bus, handler, event_type)
         SELECT $1, u.h, u.t FROM UNNEST($2::text[], $3::text[]) AS u(h, t)
         ON CONFLICT (bus, handler) DO UPDATE SET seen_at = now()
           WHERE tidings_handlers.event_type = EXCLUDED.event_type",
    )
    .bind(bus)
    .bind(&bound.handlers)
    .bind(&bound.types)
    .execute(&mut *conn)
    .await?;
    let known: Vec<(String, String)> =
        sqlx::query_as("SELECT handler, event_type FROM tidings_handlers WHERE bus = $1")
            .bind(bus)
            .fetch_all(&mut *conn)
            .await?;
    let mut kept = Bound::default();
    for (h, t) in bound.handlers.iter().zip(&bound.types) {
        if known.iter().any(|(kh, kt)| kh == h && kt == t) {
            kept.handlers.push(h.clone());
            kept.types.push(t.clone());
        } else {
            tracing::error!(
                handler = h.as_str(),
                event_type = t.as_str(),
                "a handler of this name handles another event type on this bus; this one gets no deliveries (rename it)"
            );
        }
    }
    Ok(kept)
}

/// Deliveries to an instance's handlers not yet done, in any instance.
pub(crate) async fn outstanding(
    conn: &mut PgConnection,
    bus: &str,
    bound: &Bound,
) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
         WHERE e.bus = $1
           AND (d.handler, e.event_type) IN (SELECT * FROM UNNEST($2::text[], $3::text[]))",
    )
    .bind(bus)
    .bind(&bound.handlers)
    .bind(&bound.types)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Says that instance `me` of `bus` is alive for `lease` more (registering
/// it), and that its `handlers` are in use.
pub(crate) async fn alive(
    conn: &mut PgConnection,
    bus: &str,
    me: uuid::Uuid,
    lease: Duration,
    handlers: &[String],
) -> Result<(), sqlx::Error> {
    if !handlers.is_empty() {
        sqlx::query(
            "UPDATE tidings_handlers SET seen_at = now() WHERE bus = $1 AND handler = ANY($2)",
        )
        .bind(bus)
        .bind(handlers)
        .execute(&mut *conn)
        .await?;
    }
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO tidings_instances (id, bus, alive_until)
         VALUES ($1, $2, now() + $3 * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE SET alive_until = EXCLUDED.alive_until",
    )
    .bind(me)
    .bind(bus)
    .bind(ms)
    .execute(&mut *conn)
    .await?;
    // Instances gone whose work has all been taken over.
    sqlx::query(
        "DELETE FROM tidings_instances i WHERE i.bus = $1 AND i.alive_until < now()
           AND NOT EXISTS (SELECT 1 FROM tidings_deliveries d WHERE d.owner = i.id)",
    )
    .bind(bus)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rows of (id, type, key, emitted_at_ns, data, handler, attempt, begun,
/// was_queued), ordered by event, as events with their deliveries.
fn events_of(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events: Vec<StoredEvent> = Vec::new();
    for row in rows {
        let id: uuid::Uuid = row.try_get(0).map_err(crate::store::error)?;
        let at: i32 = row.try_get(6).map_err(crate::store::error)?;
        let begun: i32 = row.try_get(7).map_err(crate::store::error)?;
        let was_queued: bool = row.try_get(8).map_err(crate::store::error)?;
        let delivery = StoredDelivery {
            handler: row.try_get(5).map_err(crate::store::error)?,
            attempt: attempt(at),
            begun: begun_of(at, begun, was_queued),
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

/// The bus's pending deliveries, oldest event first, and its newest dead
/// letters. Every delivery is first marked queued (this bus queues them all
/// now); only those are read, so that an outbox event committed between the
/// two statements is left unqueued, for the relay, and not delivered twice.
/// Each may have been begun by the bus that stopped ([`Begun::Maybe`]; an
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
