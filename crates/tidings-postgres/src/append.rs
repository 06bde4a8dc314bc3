//! Writing events and their deliveries (an emit's batch, the outbox).

use crate::claims::Bound;
use crate::schema::*;
use sqlx::{PgConnection, Row};
use std::sync::LazyLock;
use tidings::store::StoredEvent;

/// Who an event's deliveries go to, as [`insert_events`] writes them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deliveries<'a> {
    /// The event's own list (its bus's handlers), queued by the bus that
    /// writes them.
    Queued,
    /// The event's own list, for the relay to claim (the outbox).
    Unqueued,
    /// Every handler of its type bound to the (shared) bus name, for any
    /// instance's relay to claim; an event with none is not kept. With a
    /// [`Taking`], the writing instance takes those it can at once.
    Bound(Option<Taking<'a>>),
}

/// A shared instance taking its own emits as it writes them: an unkeyed
/// event whose type has one handler bound to the name, one of this
/// instance's, is written claimed by it (`owner`, fencing `token`), if its
/// lease runs when the statement runs (as a claim checks it). Its relay is
/// handed the event without a claim's round trip; the others are not woken
/// for it. Keyed events still wait for the walk of their key, for order
/// across instances.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taking<'a> {
    pub(crate) owner: uuid::Uuid,
    pub(crate) token: i64,
    pub(crate) bound: &'a Bound,
}

/// The deliveries an append took for its own instance ([`Taking`]): their
/// events and handlers.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) ids: Vec<uuid::Uuid>,
    pub(crate) handlers: Vec<String>,
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
/// docs/BENCHMARKS.md section 7, session 20). The batch's keys are
/// registered before any `seq` is drawn (`horizon`: claims hold back the
/// heads of keys written after an append still open).
///
/// An instance taking its own emits ([`Taking`]: `$8` the instance, `$9`
/// the token, `$10`/`$11` its handlers and their types; `$8` NULL takes
/// none) writes the owner and token into the rows it takes, and reads them
/// back (the event and handler of each, two arrays in one row): rows
/// already there (a batch written again) are not among them. It wakes
/// every instance's relay (`pg_notify` on channel `$7`, at commit) only if
/// it left an event untaken: sent on its own, it is a whole batch of emits
/// in one round trip.
pub(crate) const APPEND_BOUND: &str = concat!(
    "WITH reg AS MATERIALIZED (",
    crate::horizon::register!("$1", "$4::text[]"),
    "),
     hs AS MATERIALIZED (
         SELECT h.event_type, array_agg(h.handler) AS handlers,
                CASE WHEN count(*) = 1
                          AND bool_and((h.handler, h.event_type)
                                       IN (SELECT * FROM UNNEST($10::text[], $11::text[])))
                     THEN (SELECT i.id FROM tidings_instances i
                           WHERE i.id = $8 AND i.alive_until > now()) END AS taker
         FROM tidings_handlers h
         WHERE h.bus = $1 GROUP BY h.event_type),
     u AS MATERIALIZED (
         SELECT u.id, u.t, u.k, u.at, u.d, hs.handlers,
                nextval('tidings_events_seq_seq') AS seq,
                CASE WHEN u.k IS NULL THEN hs.taker END AS owner
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[])
              WITH ORDINALITY AS u(id, t, k, at, d, n)
         JOIN hs ON hs.event_type = u.t
         WHERE (SELECT r.n FROM reg r) >= 0
         ORDER BY u.n),
     alone AS (
         INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, bus, seq, key,
                                         event_type, emitted_at_ns, data, owner, fence)
         SELECT u.id, u.handlers[1], 1, true, true, $1, u.seq, u.k, u.t, u.at, u.d,
                u.owner, CASE WHEN u.owner IS NULL THEN 0 ELSE $9::int8 END
         FROM u WHERE cardinality(u.handlers) = 1
         ON CONFLICT (event_id, handler) DO NOTHING
         RETURNING event_id, handler, owner),
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
     SELECT t.ids, t.hs,
            CASE WHEN cardinality(t.ids) < (SELECT count(*) FROM u) THEN pg_notify($7, $1) END
     FROM (SELECT COALESCE(array_agg(a.event_id), '{}') AS ids,
                  COALESCE(array_agg(a.handler), '{}') AS hs
           FROM alone a WHERE a.owner IS NOT NULL) t"
);

/// How an append meets a batch that may be in the table already (its
/// commit cut off with its connection, and the batch written again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The statement commits by itself: it is sent without `ON CONFLICT`
    /// (the arbiter's check and speculative insertion cost 1.6 µs of the
    /// 4.1 µs a row takes the server, measured: docs/BENCHMARKS.md section
    /// 7, session 25), and sent again with it if the server answers that a
    /// row is there already. Only a batch written again meets that answer,
    /// and the statement that met it wrote nothing.
    Alone,
    /// Inside a transaction (the writer's batch with outcomes in it, the
    /// application's own around an outbox emit), which a failed statement
    /// would abort: always with `ON CONFLICT DO NOTHING`.
    InTransaction,
}

/// Which form of an append statement is sent ([`Commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `ON CONFLICT DO NOTHING` on every insert: a row already there is left.
    Guarded,
    /// Without it: a row already there fails the statement.
    FirstTry,
}

impl Form {
    /// `sql` (a guarded statement) in this form.
    fn of(self, sql: &'static Statements) -> &'static str {
        match self {
            Form::Guarded => sql.guarded,
            Form::FirstTry => &sql.first_try,
        }
    }
}

/// An append statement in both [`Form`]s: the guarded one is written out,
/// the first try is made from it at first use by removing the clauses.
pub(crate) struct Statements {
    pub(crate) guarded: &'static str,
    first_try: LazyLock<String>,
}

macro_rules! statements {
    ($sql:expr) => {
        Statements {
            guarded: $sql,
            first_try: LazyLock::new(|| unguarded($sql)),
        }
    };
}

/// `sql` without its `ON CONFLICT (...) DO NOTHING` clauses.
fn unguarded(sql: &str) -> String {
    sql.replace("ON CONFLICT (event_id, handler) DO NOTHING", "")
        .replace("ON CONFLICT (id) DO NOTHING", "")
}

static BOUND: Statements = statements!(APPEND_BOUND);
static OWN: Statements = statements!(APPEND_OWN);
static ALONE: Statements = statements!(APPEND_ALONE);
static ONE: Statements = statements!(APPEND_ONE);

/// Whether `e` says a row the statement inserts is there already.
fn already_written(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Writes events and their deliveries; returns the deliveries taken by
/// the writing instance ([`Taking`]). Written again (a batch whose commit
/// was cut off with its connection, and is retried), nothing changes: see
/// [`Commit`] for how.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    to: Deliveries<'_>,
    commit: Commit,
) -> Result<Taken, sqlx::Error> {
    if commit == Commit::Alone {
        match insert(conn, bus, events, to, Form::FirstTry).await {
            Err(e) if already_written(&e) => {
                tracing::debug!(bus, "a batch written again meets its rows: written guarded");
            }
            done => return done,
        }
    }
    insert(conn, bus, events, to, Form::Guarded).await
}

async fn insert(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    to: Deliveries<'_>,
    form: Form,
) -> Result<Taken, sqlx::Error> {
    let queued = match to {
        Deliveries::Bound(taking) => {
            let c = Columns::of(events);
            let none = Bound::default();
            let bound = taking.map_or(&none, |t| t.bound);
            let row = c
                .bind(sqlx::query(form.of(&BOUND)), bus)
                .bind(crate::store::CHANNEL)
                .bind(taking.map(|t| t.owner))
                .bind(taking.map_or(0, |t| t.token))
                .bind(&bound.handlers)
                .bind(&bound.types)
                .fetch_one(conn)
                .await?;
            return Ok(Taken {
                ids: row.try_get(0)?,
                handlers: row.try_get(1)?,
            });
        }
        Deliveries::Queued => true,
        Deliveries::Unqueued => false,
    };
    insert_events_at_once(conn, bus, events, queued, form).await?;
    Ok(Taken::default())
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
async fn insert_events_at_once(
    conn: &mut PgConnection,
    bus: &str,
    events: &[&StoredEvent],
    queued: bool,
    form: Form,
) -> Result<(), sqlx::Error> {
    if let ([e], true) = (events, queued) {
        if let [d] = &e.deliveries[..] {
            sqlx::query(form.of(&ONE))
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
        c.bind(sqlx::query(form.of(&ALONE)), bus)
            .bind(queued)
            .bind(&own.alone_handlers)
            .bind(&own.alone_attempts)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    c.bind(sqlx::query(form.of(&OWN)), bus)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::{owner_alive, scratch, OWNER};
    use std::time::SystemTime;

    fn event(event_type: &str, key: Option<&str>) -> StoredEvent {
        StoredEvent {
            id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            key: key.map(Into::into),
            emitted_at: SystemTime::now(),
            data: "{}".into(),
            deliveries: Vec::new(),
        }
    }

    /// Appends `events` to the scratch bus as a statement of its own.
    async fn append(
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        to: Deliveries<'_>,
    ) -> Result<Taken, sqlx::Error> {
        insert_events(conn, "plans", events, to, Commit::Alone).await
    }

    /// The rows of `events`: owner and fencing token, by delivery.
    async fn owners(
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Vec<(uuid::Uuid, String, Option<uuid::Uuid>, i64)> {
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        sqlx::query_as(
            "SELECT event_id, handler, owner, fence FROM tidings_deliveries
             WHERE event_id = ANY($1) ORDER BY seq, handler",
        )
        .bind(&ids)
        .fetch_all(conn)
        .await
        .expect("the rows")
    }

    /// An instance's append takes, of its batch, exactly the unkeyed events
    /// whose type has one handler bound to the name, one of its own, and
    /// only while its lease runs; a batch written again takes nothing twice.
    #[tokio::test]
    async fn an_append_takes_only_what_its_instance_may_take() {
        let Some((mut conn, _schema)) = scratch().await else {
            return;
        };
        // `h` takes `activity_log` (the scratch's); `two` has two handlers;
        // `other`'s is another instance's.
        for sql in [
            "INSERT INTO tidings_handlers (bus, handler, event_type) VALUES
                 ('plans', 'h2', 'two'), ('plans', 'h3', 'two'), ('plans', 'x', 'other')",
        ] {
            sqlx::query(sql).execute(&mut conn).await.expect("handlers");
        }
        owner_alive(&mut conn).await;
        let mine = Bound {
            handlers: vec!["h".into(), "h2".into(), "h3".into()],
            types: vec!["activity_log".into(), "two".into(), "two".into()],
        };
        let taking = Taking {
            owner: OWNER,
            token: 7,
            bound: &mine,
        };
        let batch = [
            event("activity_log", None),
            event("activity_log", Some("k")),
            event("other", None),
            event("two", None),
            event("activity_log", None),
        ];
        let refs: Vec<&StoredEvent> = batch.iter().collect();
        let taken = append(&mut conn, &refs, Deliveries::Bound(Some(taking)))
            .await
            .expect("appended");
        let mut ids = taken.ids.clone();
        ids.sort_unstable();
        assert_eq!(
            ids,
            vec![batch[0].id, batch[4].id],
            "the unkeyed `h` events"
        );
        assert_eq!(taken.handlers, vec!["h", "h"]);
        let rows = owners(&mut conn, &batch).await;
        let owned: Vec<(uuid::Uuid, &str, i64)> = rows
            .iter()
            .filter(|r| r.2.is_some())
            .map(|r| (r.0, r.1.as_str(), r.3))
            .collect();
        assert_eq!(
            owned,
            vec![(batch[0].id, "h", 7), (batch[4].id, "h", 7)],
            "owned under the token: {rows:?}"
        );
        assert!(
            rows.iter().filter(|r| r.2.is_none()).all(|r| r.3 == 0),
            "the others unclaimed: {rows:?}"
        );
        assert_eq!(rows.len(), 6, "every delivery written: {rows:?}");

        // Written again: nothing taken twice.
        let again = append(&mut conn, &refs, Deliveries::Bound(Some(taking)))
            .await
            .expect("appended again");
        assert!(again.ids.is_empty(), "{again:?}");

        // Without taking, or with the lease run out: nothing taken.
        let plain = [event("activity_log", None)];
        let refs: Vec<&StoredEvent> = plain.iter().collect();
        let none = append(&mut conn, &refs, Deliveries::Bound(None))
            .await
            .expect("appended");
        assert!(none.ids.is_empty(), "{none:?}");
        sqlx::query("UPDATE tidings_instances SET alive_until = now() - interval '1 second'")
            .execute(&mut conn)
            .await
            .expect("the lease run out");
        let late = [event("activity_log", None)];
        let refs: Vec<&StoredEvent> = late.iter().collect();
        let lapsed = append(&mut conn, &refs, Deliveries::Bound(Some(taking)))
            .await
            .expect("appended");
        assert!(lapsed.ids.is_empty(), "{lapsed:?}");
        let rows = owners(&mut conn, &late).await;
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].2, rows[0].3), (None, 0), "unclaimed");
    }

    /// Each first try is its statement without `ON CONFLICT` (were the
    /// clause's text and [`unguarded`]'s to differ, the server would check
    /// the arbiter on every row for nothing).
    #[test]
    fn a_first_try_is_its_statement_without_on_conflict() {
        for s in [&BOUND, &OWN, &ALONE, &ONE] {
            assert!(s.guarded.contains("ON CONFLICT"), "{}", s.guarded);
            assert!(!s.first_try.contains("ON CONFLICT"), "{}", *s.first_try);
        }
    }

    /// A batch written again, each statement's way (one event; events in
    /// their delivery's rows alone; an event with two deliveries; the
    /// outbox's unqueued), is refused by its first try and written guarded:
    /// no error, nothing written twice.
    #[tokio::test]
    async fn a_batch_written_again_is_written_once() {
        let Some((mut conn, _schema)) = scratch().await else {
            return;
        };
        let with = |handlers: &[&str]| StoredEvent {
            deliveries: handlers
                .iter()
                .map(|h| tidings::store::StoredDelivery::new(*h, 1))
                .collect(),
            ..event("activity_log", None)
        };
        let batches = [
            vec![with(&["h"])],
            vec![with(&["h"]), with(&["h"])],
            vec![with(&["h"]), with(&["h", "h2"])],
        ];
        let count = async |conn: &mut PgConnection| -> (i64, i64) {
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM tidings_deliveries),
                        (SELECT count(*) FROM tidings_events)",
            )
            .fetch_one(conn)
            .await
            .expect("counted")
        };
        for to in [Deliveries::Queued, Deliveries::Unqueued] {
            for batch in &batches {
                let refs: Vec<&StoredEvent> = batch.iter().collect();
                append(&mut conn, &refs, to).await.expect("written");
                let once = count(&mut conn).await;
                append(&mut conn, &refs, to).await.unwrap_or_else(|e| {
                    panic!("written again ({to:?}, {} events): {e}", batch.len())
                });
                assert_eq!(
                    count(&mut conn).await,
                    once,
                    "{to:?}, {} events",
                    batch.len()
                );
            }
        }
    }
}
