//! Claims of deliveries (the relay's), and what a shared bus name's
//! instances say of themselves: their handlers (`bind`), their leases
//! (`alive`), what is outstanding.

use crate::horizon::Horizon;
use crate::schema::*;
use sqlx::{PgConnection, Row};
use std::time::Duration;
use tidings::store::StoredEvent;

/// Up to `limit` committed deliveries of `bus` not yet queued (an outbox's),
/// marked queued; or, on a shared bus (`owner` set), not yet owned or owned
/// by an instance that is no longer alive, marked owned (skipping rows
/// another claim holds); grouped by event, oldest first.
///
/// On a shared bus (`bound`: the instance's handlers and their types), only
/// deliveries to those handlers are claimed, and of a keyed event only if
/// no older delivery of its key to the same handler is pending anywhere
/// (claimed or not), nor may still appear (an append still open that began
/// before it was written: the [`Horizon`], read in the same first
/// statement, see [`Walk`]): a key's deliveries go out one at a time, in
/// order, whichever instance takes each.
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
    walk: &Walk,
) -> Result<Claimed, sqlx::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (dead, horizon) = match owner {
        None => (Vec::new(), Horizon::closed()),
        Some(me) if walk.keyed => {
            let none = Bound::default();
            let row = sqlx::query(LOOK_FIRST)
                .bind(bus)
                .bind(me)
                .bind(&bound.unwrap_or(&none).handlers)
                .fetch_one(&mut *conn)
                .await?;
            let dead: Vec<uuid::Uuid> = row.try_get(0)?;
            let horizon = match row.try_get::<Option<i64>, _>(1)? {
                Some(last) => {
                    let buckets: Vec<i32> = row.try_get(2)?;
                    let lowest: Vec<i64> = row.try_get(3)?;
                    Horizon::of(last, &buckets, &lowest)
                }
                None => Horizon::closed(),
            };
            (dead, horizon)
        }
        Some(me) => {
            let dead = sqlx::query_scalar(DEAD)
                .bind(bus)
                .bind(me)
                .fetch_one(&mut *conn)
                .await?;
            (dead, Horizon::closed())
        }
    };
    if let (Some(_), Some(bound), true) = (owner, bound, dead.is_empty()) {
        return claim_shared(
            conn,
            bus,
            limit,
            owner,
            bound,
            token,
            (&walk.cursor, &horizon),
        )
        .await;
    }
    let sql = claim_sql(!dead.is_empty(), owner.is_some(), bound.is_some());
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
        if owner.is_some() {
            query = query.bind(horizon.last).bind(&horizon.buckets);
        }
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut claimed = claimed_of(rows)?;
    // (Taking over a dead instance's keyed deliveries needs the horizon too.)
    claimed.again = owner.is_some() && horizon.is_closed();
    Ok(claimed)
}

/// `dead!()`: the instances of bus `$1` but `$2` whose lease ran out.
macro_rules! dead {
    () => {
        "SELECT i.id FROM tidings_instances i
         WHERE i.bus = $1 AND i.alive_until <= now() AND i.id <> $2"
    };
}

/// [`LOOK_FIRST`] without the [`Horizon`].
const DEAD: &str = concat!("SELECT ARRAY(", dead!(), ")");

/// [`claim`]'s statement: `dead` instances' deliveries taken over too
/// (`$4`), an `owner` instance's lease checked (`$3`), only deliveries to
/// the `bound` handlers (`$6`/`$7`) and, of a keyed event, only the first
/// pending of its key, within the [`Horizon`] (`$8`/`$9`, with an owner);
/// `$1` the bus, `$2` the limit, `$5` the token.
///
/// A shared name's deliveries are claimed by their owner alone (see
/// `schema`: their `queued` never changes); a bus name of its own's (the
/// outbox's) by `queued`.
pub(crate) fn claim_sql(dead: bool, owner: bool, bound: bool) -> String {
    let (which, was_queued, mark) = match (owner, dead) {
        (false, _) => ("NOT d.queued", "d.queued", "queued = true, "),
        (true, false) => ("d.shared AND d.owner IS NULL", "d.owner IS NOT NULL", ""),
        (true, true) => (
            "d.shared AND (d.owner IS NULL OR d.owner = ANY($4))",
            "d.owner IS NOT NULL",
            "",
        ),
    };
    // A shared instance claims only while its lease runs: a claim sent
    // before a pause and committed after it (or after the instance died)
    // takes nothing, rather than deliveries nobody alive knows of.
    let alive = if owner {
        "AND EXISTS (SELECT 1 FROM tidings_instances i WHERE i.id = $3 AND i.alive_until > now())"
    } else {
        ""
    };
    let (mine, in_order) = if bound {
        (
            "AND (d.handler, COALESCE(d.event_type, (
                     SELECT e.event_type FROM tidings_events e WHERE e.id = d.event_id)))
                 IN (SELECT * FROM UNNEST($6::text[], $7::text[]))",
            // (The first pending of its key is this one: a subquery run
            // per candidate, which no statistics turn into a join.)
            "AND (d.key IS NULL OR d.seq = (
                 SELECT d2.seq FROM tidings_deliveries d2
                 WHERE d2.bus = d.bus AND d2.handler = d.handler AND d2.key = d.key
                 ORDER BY d2.seq LIMIT 1)",
        )
    } else {
        ("", "")
    };
    let in_order = match (bound, owner) {
        (false, _) => String::new(),
        (true, false) => format!("{in_order})"),
        (true, true) => format!(
            "{in_order} AND {})",
            crate::horizon::claimable!("d", "$8", "$9")
        ),
    };
    // Each delivery carries its event's bus, order and key: the events are
    // looked up only by primary key, and the claimed rows marked by their
    // address (see `CLAIM_SHARED` for why: planned from the statistics of
    // emptied tables, the join with the events read all of them per
    // delivery, 4 s a claim of 256 among 20 000; 6 to 8 ms this way).
    format!(
        "WITH picked AS (
             SELECT d.ctid AS row, {was_queued} AS was_queued FROM tidings_deliveries d
             WHERE d.bus = $1 AND {which} {mine} {in_order} {alive}
             ORDER BY d.seq LIMIT $2
             FOR UPDATE OF d SKIP LOCKED),
         marked AS (
             UPDATE tidings_deliveries d SET {mark}owner = $3, fence = $5
             FROM picked p
             WHERE d.ctid = ANY(ARRAY(SELECT row FROM picked)) AND d.ctid = p.row
             RETURNING d.event_id, d.handler, d.attempt, d.begun, p.was_queued, d.fence, d.seq,
                       d.key, d.event_type, d.emitted_at_ns, d.data)
         SELECT {event}, m.handler, m.attempt, m.begun, m.was_queued, m.fence
         FROM marked m {join} WHERE {found}
         ORDER BY m.seq, m.handler",
        event = event_of!("m"),
        join = event_join!("m"),
        found = event_found!("m"),
    )
}

/// `key_heads!(name, from, until)`: a recursive walk named `name` of the
/// first pending delivery (handler, key, seq, event, owner) of each handler
/// and key of bus `$1`, in (handler, key) order: the first `from` lets
/// through, then each next one, for as long as the last satisfies `until`
/// (a clause on `h`, the last). One index probe per key
/// (`tidings_deliveries_key_order`), however many wait behind each.
macro_rules! key_heads {
    ($name:literal, $from:literal, $until:literal) => {
        concat!(
            $name,
            " AS (
         (SELECT d.handler, d.key, d.seq, d.event_id, d.owner, d.ctid AS at FROM tidings_deliveries d
          WHERE d.bus = $1 AND d.key IS NOT NULL",
            $from,
            "
          ORDER BY d.handler, d.key, d.seq LIMIT 1)
         UNION ALL
         SELECT n.handler, n.key, n.seq, n.event_id, n.owner, n.at FROM ",
            $name,
            " h
         CROSS JOIN LATERAL (
             SELECT d.handler, d.key, d.seq, d.event_id, d.owner, d.ctid AS at FROM tidings_deliveries d
             WHERE d.bus = $1 AND d.key IS NOT NULL AND (d.handler, d.key) > (h.handler, h.key)
             ORDER BY d.handler, d.key, d.seq LIMIT 1) n",
            $until,
            ")"
        )
    };
}

/// `walk_lock!(bus, handlers)`: the key of the transaction advisory lock
/// an instance of shared bus `bus` holds while it walks the heads of the
/// keys for its bound `handlers` (an SQL `text[]`), as an SQL `bigint`.
/// Instances with the same handlers share it; see [`CLAIM_SHARED`].
macro_rules! walk_lock {
    ($bus:literal, $handlers:literal) => {
        concat!(
            "hashtextextended('tidings-keys:' || ",
            $bus,
            " || ':' || COALESCE((SELECT string_agg(h, ',' ORDER BY h) FROM UNNEST(",
            $handlers,
            "::text[]) AS h), ''), 0)"
        )
    };
}
#[cfg(test)]
pub(crate) use walk_lock;

/// The statement a shared instance's claim sends first (`$1` the bus, `$2`
/// the instance, `$3` its bound handlers): the instances of the bus whose
/// lease ran out, and the [`Horizon`] of its keys, read before the claim's
/// snapshot is taken — only if no other instance walks the keys for the
/// same handlers at that moment (else NULLs: that claim's walk is most
/// likely left out, and the lock table is not read for nothing; one that
/// walks after all takes no head, and asks for the next claim at once).
const LOOK_FIRST: &str = concat!(
    "SELECT ARRAY(",
    dead!(),
    "), x.* FROM (SELECT pg_try_advisory_xact_lock(",
    walk_lock!("$1", "$3"),
    ") AS free) w
     LEFT JOIN LATERAL (SELECT ",
    crate::horizon::read!(),
    " WHERE w.free) x ON true"
);

/// [`claim_shared`]'s statement (`$1` the bus, `$2` the limit, `$3` the
/// instance, `$4` its token, `$5`/`$6` the bound handlers and their
/// types, `$7`/`$8` the handler and key its walk of the keys goes on
/// from: a [`Cursor`]; `$9`/`$10` the [`Horizon`]). Each row is a claimed
/// delivery (none: one row of NULLs) with, after the columns of
/// [`events_of`], its `seq`, whether the walk was left out, and where the
/// next walk goes on from. A key's head is locked by the address the walk
/// read it at (a TID scan: the lock follows the row if it was updated
/// meanwhile, and skips it unless it is still the same unowned version;
/// looked up by primary key again, the claims took 12 % more of the
/// server: 724-773 against 648-709 ms for 60 000 keyed events, 2.47-2.75
/// against 2.27-2.38 ms a claim of about 210; four alternated pairs,
/// `pg_stat_statements`, docs/BENCHMARKS.md section 7, session 26). Every other lookup
/// of a row named by another is a `LATERAL` subquery by primary key, and
/// the claimer's connection plans without sorts where an index gives the
/// order ([`set_up_claimer`]): planned from statistics that said the queue
/// was empty, the join with the events scanned all of them per claimed
/// delivery, and each step of the keyed skip scan sorted every later key's
/// deliveries (3 to 21 s a claim; docs/BENCHMARKS.md section 7, session
/// 13).
pub(crate) const CLAIM_SHARED: &str = concat!(
    "WITH RECURSIVE ",
    key_heads!("after", " AND (d.handler, d.key) > ($7, $8)", ""),
    ",
     ",
    key_heads!("before", "", " WHERE (h.handler, h.key) < ($7, $8)"),
    ",
     alive AS (
         SELECT 1 FROM tidings_instances i WHERE i.id = $3 AND i.alive_until > now()),
     walker AS (SELECT pg_try_advisory_xact_lock(",
    walk_lock!("$1", "$5"),
    ") AS ok),
     mine AS (SELECT * FROM UNNEST($5::text[], $6::text[]) AS m(handler, event_type)),
     unkeyed AS (
         SELECT d.ctid AS row, d.event_id, d.handler, d.seq, d.event_type
         FROM tidings_deliveries d
         WHERE d.bus = $1 AND d.shared AND d.key IS NULL AND d.owner IS NULL
           AND d.handler = ANY($5)
           AND EXISTS (SELECT 1 FROM alive)
         ORDER BY d.seq LIMIT $2
         FOR UPDATE OF d SKIP LOCKED),
     keyed AS (
         SELECT d.row, d.event_id, d.handler, d.seq, d.event_type
         FROM (SELECT h.at FROM (
                   SELECT * FROM after
                   UNION ALL
                   SELECT * FROM before b WHERE (b.handler, b.key) <= ($7, $8)) h
               WHERE h.owner IS NULL AND h.handler = ANY($5) AND EXISTS (SELECT 1 FROM alive)
                 AND ",
    crate::horizon::claimable!("h", "$9", "$10"),
    "
                 AND EXISTS (SELECT 1 FROM walker WHERE ok)
               LIMIT $2) c
         CROSS JOIN LATERAL (
             SELECT x.ctid AS row, x.event_id, x.handler, x.seq, x.event_type
             FROM tidings_deliveries x
             WHERE x.ctid = c.at AND x.owner IS NULL
             FOR UPDATE OF x SKIP LOCKED) d),
     picked AS (
         SELECT p.row, p.seq FROM (SELECT * FROM unkeyed UNION ALL SELECT * FROM keyed) p
         LEFT JOIN LATERAL (SELECT e.event_type FROM tidings_events e
                            WHERE e.id = p.event_id AND p.event_type IS NULL OFFSET 0) e ON true
         JOIN mine m ON m.handler = p.handler
                    AND m.event_type = COALESCE(p.event_type, e.event_type)
         ORDER BY p.seq LIMIT $2),
     marked AS (
         UPDATE tidings_deliveries d SET owner = $3, fence = $4
         WHERE d.ctid = ANY(ARRAY(SELECT row FROM picked))
         RETURNING d.event_id, d.handler, d.attempt, d.begun, d.fence, d.seq,
                   d.key, d.event_type, d.emitted_at_ns, d.data)
     SELECT c.*, NOT w.ok AND EXISTS (
                SELECT 1 FROM tidings_deliveries k WHERE k.bus = $1 AND k.key IS NOT NULL),
            (SELECT ARRAY[m.handler, m.key] FROM marked m WHERE m.key IS NOT NULL
             ORDER BY (m.handler, m.key) <= ($7, $8) DESC, m.handler DESC, m.key DESC LIMIT 1),
            EXISTS (SELECT 1 FROM tidings_deliveries k WHERE k.bus = $1 AND k.key IS NOT NULL)
     FROM walker w LEFT JOIN (SELECT ",
    event_of!("m"),
    ", m.handler, m.attempt, m.begun, false, m.fence, m.seq
         FROM marked m ",
    event_join!("m"),
    " WHERE ",
    event_found!("m"),
    ") c ON true
     ORDER BY c.seq, c.handler"
);

/// The claimer connection's set-up: no sort where an index gives the
/// order, no JIT, and commits that do not wait for the disk (below).
/// Planned from statistics that say the queue is empty (autovacuum's
/// `ANALYZE` between bursts), sorting "one row" looks free, and each step
/// of [`CLAIM_SHARED`]'s skip scan sorted every later key's deliveries
/// instead of reading the next from the index: 21 s a claim
/// with 1 000 keys and 20 000 pending, 20 ms with this set-up (and
/// unchanged, 5 to 8 ms, with true statistics). JIT goes with it: the
/// planner's penalty for a sort pushes a plan's cost past `jit_above_cost`,
/// and compiling it took 400 ms a claim.
///
/// Its claims commit without waiting for the disk (`synchronous_commit =
/// off`). A claim the server loses in a crash leaves its deliveries
/// unowned, as they were: claimed again, and the first claim's settles
/// refused by their fencing token (the same as after a pause past the
/// lease). Whatever depends on a claim and must survive (a begin mark) is
/// written by a commit that waits for the disk, which flushes the claim
/// before it (the WAL is written in order). Waiting, each claim held its
/// rows' locks and the server's WAL flush while appends queued for the
/// same flush (`pg_stat_activity` under load: claims in `WALSync` and
/// `WALWrite` a quarter of their time; docs/BENCHMARKS.md section 7,
/// session 22).
pub(crate) fn set_up_claimer<'c>(
    conn: &'c mut PgConnection,
    _bus: &'c str,
) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlx::query("SET enable_sort = off")
            .execute(&mut *conn)
            .await?;
        sqlx::query("SET jit = off").execute(&mut *conn).await?;
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

/// A shared instance's claim while no instance is dead (the common case),
/// reading only what it may take: the oldest unowned deliveries without a
/// key (the index `tidings_deliveries_shared_unkeyed`, in order, past the
/// claimed ones still in flight: the claim writes no indexed column, so
/// their entries stay), and the
/// first pending delivery of each handler and key, where it is unclaimed
/// (`tidings_deliveries_key_order`, read one handler and key at a time by a
/// recursive skip scan: one index probe per key with pending deliveries,
/// however many wait behind each). Up to `limit` of both are claimed, the
/// oldest first.
///
/// The walk of the keys goes on from where the instance's last claim
/// stopped (its [`Cursor`]: the last key it took), round past the last key
/// to it, and stops once it has found `limit` unclaimed heads: a claim
/// takes keys in turn, not the oldest heads of all keys, which it could
/// find only by walking every key (a claim of 20 read 1 103 rows with
/// 1 000 keys claimable, and 121 this way: `plans.rs`). Every key is
/// reached within a round of the walk; a key whose next delivery is
/// claimable again at once does not keep the keys after it waiting. One
/// instance alone with 1 000 keys moved 18-26 k events/s before, 22-30 k
/// after (docs/BENCHMARKS.md, section 7, session 22).
///
/// One instance at a time walks the keys for the same handlers: the walk
/// takes [`walk_lock!`] if it is free, and is left out if it is not (the
/// instance holding it is claiming the same keys' heads for the same
/// handlers at that moment). Every instance hears every append and
/// claimed at once, all walking every key's head to find the same few
/// claimable deliveries, which all but one then found taken (`EXPLAIN
/// ANALYZE` of a claim under load with 4 instances: 216 heads walked, 64
/// claimable, 0 taken). An instance whose walk was left out, while keyed
/// deliveries are pending, is told so ([`Claimed::walk_busy`]) and claims
/// again after the claim gap: what the other took is then owned, and what
/// became claimable since is not missed.
///
/// The general query joined every pending delivery of the bus with its event
/// and sorted them: 49 ms a claim with 20 000 pending and none of them
/// keyed, and 280 ms with 1 000 keys (a `NOT EXISTS` probe for each), where
/// this one reads 1 256 and 1 000 index entries (measured with `EXPLAIN
/// ANALYZE` on PostgreSQL 15; docs/BENCHMARKS.md).
async fn claim_shared(
    conn: &mut PgConnection,
    bus: &str,
    limit: i64,
    owner: Option<uuid::Uuid>,
    bound: &Bound,
    token: i64,
    (cursor, horizon): (&Cursor, &Horizon),
) -> Result<Claimed, sqlx::Error> {
    // (A delivery is only taken for a handler bound here with its event's type.)
    let mut rows = sqlx::query(CLAIM_SHARED)
        .bind(bus)
        .bind(limit)
        .bind(owner)
        .bind(token)
        .bind(&bound.handlers)
        .bind(&bound.types)
        .bind(&cursor.0)
        .bind(&cursor.1)
        .bind(horizon.last)
        .bind(&horizon.buckets)
        .fetch_all(&mut *conn)
        .await?;
    // Every row says whether the walk was left out; with nothing claimed,
    // one row of NULLs says it.
    let (walk_busy, gone_on, keyed) = match rows.first() {
        Some(row) => (
            row.try_get::<bool, _>(BUSY)?,
            row.try_get::<Option<Vec<String>>, _>(GONE_ON)?,
            row.try_get::<bool, _>(KEYED)?,
        ),
        None => (false, None, true),
    };
    rows.retain(|row| !matches!(row.try_get::<Option<uuid::Uuid>, _>(0), Ok(None)));
    let mut claimed = claimed_of(rows)?;
    claimed.walk_busy = walk_busy;
    claimed.keyed = keyed;
    // (Left out of the walk, it claims again after the gap, as it would.)
    claimed.again = keyed && horizon.is_closed() && !walk_busy;
    claimed.cursor = gone_on.and_then(|hk| match <[String; 2]>::try_from(hk) {
        Ok([handler, key]) => Some((handler, key)),
        Err(_) => None,
    });
    Ok(claimed)
}

/// [`reclaim`]'s statement on a bus name of its own: `$1` the bus, `$2`
/// the tokens, `$3` NULL. Its events are looked up by primary key (joined,
/// the events were read once per delivery under an emptied queue's
/// statistics: `plans.rs`).
pub(crate) const RECLAIM: &str =
    "SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data, d.handler, d.attempt,
            d.begun, true, d.fence
     FROM tidings_deliveries d CROSS JOIN LATERAL (
         SELECT e.id, e.event_type, e.key, e.emitted_at_ns, e.data FROM tidings_events e
         WHERE e.id = d.event_id OFFSET 0) e
     WHERE d.bus = $1 AND d.queued AND d.fence = ANY($2) AND d.owner IS NOT DISTINCT FROM $3
     ORDER BY d.seq, d.handler";

/// `owned!(bus, owner, columns, condition)`: the deliveries of shared bus
/// `bus` owned by instance `owner` (placeholders) that meet `condition`,
/// read through the two indexes that hold a shared bus's deliveries
/// (without and with a key) — no index names the owner (a claim writes no
/// indexed column: see `schema`).
macro_rules! owned {
    ($bus:literal, $owner:literal, $columns:literal, $condition:literal) => {
        concat!(
            "(SELECT ",
            $columns,
            " FROM tidings_deliveries d
              WHERE d.bus = ",
            $bus,
            " AND d.shared AND d.key IS NULL AND d.owner = ",
            $owner,
            " AND ",
            $condition,
            " UNION ALL
              SELECT ",
            $columns,
            " FROM tidings_deliveries d
              WHERE d.bus = ",
            $bus,
            " AND d.key IS NOT NULL AND d.owner = ",
            $owner,
            " AND ",
            $condition,
            ")"
        )
    };
}

/// [`reclaim`]'s statement on a shared bus (`$3` the instance).
pub(crate) const RECLAIM_OWNED: &str = concat!(
    "SELECT ",
    event_of!("d"),
    ", d.handler, d.attempt, d.begun, true, d.fence FROM ",
    owned!(
        "$1",
        "$3",
        "d.event_id, d.handler, d.attempt, d.begun, d.fence, d.seq,
         d.key, d.event_type, d.emitted_at_ns, d.data",
        "d.fence = ANY($2)"
    ),
    " d ",
    event_join!("d"),
    " WHERE ",
    event_found!("d"),
    " ORDER BY d.seq, d.handler"
);

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
    let sql = if owner.is_some() {
        RECLAIM_OWNED
    } else {
        RECLAIM
    };
    let rows = sqlx::query(sql)
        .bind(bus)
        .bind(tokens)
        .bind(owner)
        .fetch_all(&mut *conn)
        .await?;
    claimed_of(rows)
}

/// [`claim_tokens`]' statement (`$1` the bus, `$2` the instance).
pub(crate) const CLAIM_TOKENS: &str = concat!(
    "SELECT DISTINCT o.fence FROM ",
    owned!("$1", "$2", "d.fence", "d.fence <> 0"),
    " o"
);

/// The fencing tokens of the deliveries instance `me` of shared bus `bus`
/// owns: a claim among them that the instance does not hold is one whose
/// answer it never got.
pub(crate) async fn claim_tokens(
    conn: &mut PgConnection,
    bus: &str,
    me: uuid::Uuid,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(CLAIM_TOKENS)
        .bind(bus)
        .bind(me)
        .fetch_all(&mut *conn)
        .await
}

/// What a claim took: events, each delivery carrying its claim's fencing
/// token as its [`Claim`](tidings::store::Claim), for its settles.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    pub(crate) events: Vec<StoredEvent>,
    /// A shared claim left out the walk of the keys' heads: another
    /// instance with the same handlers was walking them (see
    /// [`claim_shared`]). The instance claims again after the claim gap.
    pub(crate) walk_busy: bool,
    /// Where a shared claim's walk of the keys is to go on from next time
    /// (`None`: where it started).
    pub(crate) cursor: Option<Cursor>,
    /// Keyed deliveries were pending (or may have been: a claim that does
    /// not look says so): the next claim reads the [`Horizon`].
    pub(crate) keyed: bool,
    /// The claim read no [`Horizon`], so took no key's head, keyed
    /// deliveries are pending, and no other instance was walking them: the
    /// next claim is due at once.
    pub(crate) again: bool,
}

/// What a shared instance's claims carry from one to the next about its
/// walk of the keys' heads.
#[derive(Clone, Debug)]
pub(crate) struct Walk {
    /// Where the next walk starts.
    pub(crate) cursor: Cursor,
    /// Whether the last claim saw keyed deliveries pending (at first: may
    /// have). The [`Horizon`] costs a read of the server's lock table
    /// (`pg_locks`, about 0.1 ms whatever it holds): a claim reads it only
    /// then, and otherwise takes no key's head.
    pub(crate) keyed: bool,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            cursor: Cursor::default(),
            keyed: true,
        }
    }
}

/// A handler and key: the next walk of the keys' heads starts after it, and
/// goes round to it ([`CLAIM_SHARED`]). Compared by the server (its
/// collation orders the keys), never here.
pub(crate) type Cursor = (String, String);

/// [`CLAIM_SHARED`]'s column saying whether the walk was left out.
const BUSY: usize = 11;
/// [`CLAIM_SHARED`]'s column with where its walk is to go on from.
const GONE_ON: usize = 12;
/// [`CLAIM_SHARED`]'s column saying whether keyed deliveries are pending.
const KEYED: usize = 13;

/// Claimed rows (those of [`events_of`], then the fencing token) as [`Claimed`].
fn claimed_of(rows: Vec<sqlx::postgres::PgRow>) -> Result<Claimed, sqlx::Error> {
    let events = events_of(rows).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(Claimed {
        events,
        walk_busy: false,
        cursor: None,
        keyed: true,
        again: false,
    })
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

/// [`outstanding`]'s statement (`$1` the bus, `$2` the handlers): counted
/// in the two indexes that hold a shared bus's deliveries (without and with
/// a key). Counted in one pass, the planner read the whole primary key
/// index for the handlers: 135 ms a call in a busy table, twice at the end
/// of every `wait_idle` (docs/BENCHMARKS.md section 7, session 20).
pub(crate) const OUTSTANDING: &str = "SELECT (SELECT count(*) FROM tidings_deliveries d
             WHERE d.bus = $1 AND d.shared AND d.key IS NULL AND d.handler = ANY($2))
          + (SELECT count(*) FROM tidings_deliveries d
             WHERE d.bus = $1 AND d.key IS NOT NULL AND d.handler = ANY($2))";

/// Deliveries to an instance's handlers not yet done, in any instance.
pub(crate) async fn outstanding(
    conn: &mut PgConnection,
    bus: &str,
    bound: &Bound,
) -> Result<u64, sqlx::Error> {
    // A delivery carries its bus: no join with the events (which made this
    // count 45 to 150 ms a call with 50 000 pending, measured).
    let n: i64 = sqlx::query_scalar(OUTSTANDING)
        .bind(bus)
        .bind(&bound.handlers)
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Instances of bus `$1` gone whose work has all been taken over, deleted
/// (each gone one's deliveries looked for among the bus's: no index names
/// the owner, see `schema`).
pub(crate) const INSTANCES_GONE: &str = concat!(
    "DELETE FROM tidings_instances i WHERE i.bus = $1 AND i.alive_until < now()
       AND NOT EXISTS (SELECT 1 FROM ",
    owned!("$1", "i.id", "1", "true"),
    " o)"
);

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
    sqlx::query(INSTANCES_GONE)
        .bind(bus)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::PgStore;
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tidings::{Envelope, EventBus, EventHandler, HandlerError};
    use tidings_conformance::scratch::{Purging, ScratchBus, Server};

    struct Pg;
    impl Server for Pg {
        const URL_VAR: &'static str = "TIDINGS_TEST_POSTGRES_URL";
        fn purge(url: String, bus: String) -> Purging {
            Box::pin(async move { PgStore::purge(&url, &bus).await })
        }
    }

    /// Records the `n` of each event it handles.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<i64>>>);

    impl EventHandler for Seen {
        fn event_type(&self) -> &str {
            "job"
        }
        fn name(&self) -> &str {
            "worker"
        }
        async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
            let n = event.data()["n"].as_i64().unwrap_or(-1);
            self.0.lock().unwrap().push(n);
            Ok(())
        }
    }

    impl Seen {
        fn has(&self, n: i64) -> bool {
            self.0.lock().unwrap().contains(&n)
        }

        /// How long until event `n` is handled (at most `limit`).
        async fn wait_for(&self, n: i64, limit: Duration) -> Duration {
            let from = Instant::now();
            while !self.has(n) && from.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            from.elapsed()
        }
    }

    /// The claimer's connection commits its claims without waiting for the
    /// disk (a lost claim only leaves its deliveries unclaimed; see
    /// [`crate::claims::set_up_claimer`]), and plans without sorts or JIT.
    #[tokio::test]
    async fn the_claimers_connection_is_set_up_for_claims() {
        let Some(url) = ScratchBus::<Pg>::url() else {
            return;
        };
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
        crate::claims::set_up_claimer(&mut conn, "any")
            .await
            .unwrap();
        for (setting, want) in [
            ("synchronous_commit", "off"),
            ("enable_sort", "off"),
            ("jit", "off"),
        ] {
            let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(value, want, "{setting}");
        }
    }

    /// While another instance with the same handlers holds the walk of the
    /// keys (here: the test, holding its lock), an instance claims no keyed
    /// delivery and still claims unkeyed ones; once the walk is free, it
    /// claims the keyed one within its claim gap, without a notification
    /// (none comes: the emit's was heard while the walk was held), where
    /// the relay's next look is a second later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_that_finds_the_walk_taken_claims_again_once_it_is_free() {
        let Some(test_bus) = ScratchBus::<Pg>::new("walk") else {
            return;
        };
        let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
        let seen = Seen::default();
        let store = PgStore::connect_shared(&url, &name, Duration::from_secs(10))
            .await
            .unwrap();
        let bus = EventBus::builder()
            .discover(false)
            .handler(seen.clone())
            .store(store)
            .build()
            .unwrap();
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
        for round in 0..3 {
            let (keyed, unkeyed) = (2 * round, 2 * round + 1);
            let mut walking = sqlx::Connection::begin(&mut conn).await.unwrap();
            sqlx::query(concat!(
                "SELECT pg_advisory_xact_lock(",
                walk_lock!("$1", "$2"),
                ")"
            ))
            .bind(&name)
            .bind(vec!["worker"])
            .execute(&mut *walking)
            .await
            .unwrap();
            bus.emit("job", json!({ "n": keyed }))
                .key("k")
                .await
                .unwrap();
            bus.emit("job", json!({ "n": unkeyed })).await.unwrap();
            let took = seen.wait_for(unkeyed, Duration::from_secs(5)).await;
            assert!(seen.has(unkeyed), "unkeyed not claimed in {took:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !seen.has(keyed),
                "a keyed delivery claimed while the walk was held"
            );
            walking.commit().await.unwrap();
            let took = seen.wait_for(keyed, Duration::from_secs(5)).await;
            assert!(
                took < Duration::from_millis(250),
                "round {round}: the keyed delivery was claimed {took:?} after the walk was free"
            );
        }
        bus.shutdown(Duration::from_secs(5)).await;
    }
}
