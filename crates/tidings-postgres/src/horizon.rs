//! How far a shared bus's claims may take each key: keyed events still
//! being written hold back the heads of their keys written after them.
//!
//! # Why
//!
//! A key's deliveries to a handler are claimed one at a time, the lowest
//! `seq` pending first (`claims`). But `seq` is drawn when an append runs,
//! and the append is seen when it commits: an emit inside an application's
//! transaction (an [`Outbox`](crate::Outbox)), or a batch of another
//! process's that commits a moment later, can make visible a delivery
//! *older* than the one a claim already took. That one is then the key's
//! head, unclaimed, and was claimed beside the other: two of a key's
//! deliveries running at once, the later first (**tested**:
//! `tests/shared.rs::a_keyed_event_in_an_open_transaction_comes_before_its_keys_later_ones`
//! fails without this module).
//!
//! # How
//!
//! - **An append registers before it draws its `seq`s.** A statement that
//!   writes keyed events to a shared name first takes, for each of 256
//!   buckets its keys fall in, a shared transaction-level advisory lock
//!   ([`register!`]) whose second half is the events' sequence's last value
//!   then (`v`, its low 32 bits): every `seq` it draws is above `v`. Shared
//!   locks never wait for each other: appends do not wait for appends, and
//!   the claims only read them. They are let go at commit or rollback.
//! - **A claim reads the registrations before its snapshot** (in the
//!   statement that looks for dead instances, which every claim sends
//!   first: no round trip more): the sequence's last value `L`, and per
//!   bucket the lowest `v` registered ([`Horizon`]). Its walk then takes a
//!   key's head only if its `seq` is at most `L` and at most its bucket's
//!   `v`.
//!
//! Why that suffices: say an append `A`, uncommitted when the claim's
//! snapshot is taken, holds a delivery of key `k` with `seq` `a` below the
//! head `h` the claim sees. `a` was drawn before `h` (the sequence hands
//! out values in order; it caches none), and `h` before the registrations
//! were read (`h ≤ L`); so `A` registered before they were read, and was
//! still uncommitted: its bucket shows `v < a < h`, and `h` waits. Heads
//! held back are claimed by the claim after the append commits (its
//! notification wakes every instance). Only a head newer than a
//! registration of its own bucket waits: in one process, whose appends run
//! one after another, none does; an open transaction holds back only the
//! keys of its buckets, written after it began to write.
//!
//! `v` travels as its low 32 bits: a registration is told from the last
//! value `L` read with it as long as fewer than 2³¹ events are appended
//! while one append is open.
//!
//! A dead letter replayed on a shared name is written as an append is
//! (`writer::REPLAYED_SHARED`): its key's bucket registered, then a `seq`
//! drawn, unowned. It is its key's newest: it runs after what of its key is
//! pending or running anywhere (kept at its event's old `seq`, it was its
//! key's head at once, claimed beside a later event of its key running in
//! another process: the conformance suite's shared case
//! `a_keyed_dead_letter_replayed_elsewhere_waits_for_its_key`).

/// Buckets an append's keys are registered in (the locks an append may
/// take; see the module docs).
pub(crate) const BUCKETS: i32 = 256;

/// `register!(bus, keys)`: a `MATERIALIZED` CTE body (one row, column `n`)
/// that registers an append of the keys `keys` (an SQL `text[]`, NULLs for
/// unkeyed events) to bus `bus`: a shared advisory lock per bucket of its
/// keys, tagged with the events' sequence's last value. The statement must
/// draw its `seq`s only once it has been read (a one-time filter on it).
macro_rules! register {
    ($bus:literal, $keys:literal) => {
        concat!(
            "SELECT count(pg_advisory_xact_lock_shared(
                        hashtext('tidings-appending:' || ",
            $bus,
            " || ':' || b.b),
                        ((s.v + 2147483648) % 4294967296 - 2147483648)::int4)) AS n
             FROM (SELECT DISTINCT hashtext(k) & 255 AS b FROM UNNEST(",
            $keys,
            ") AS k WHERE k IS NOT NULL) b,
                  (SELECT COALESCE(pg_sequence_last_value('tidings_events_seq_seq'), 0) AS v) s"
        )
    };
}
pub(crate) use register;

/// What a claim may take of the keys (see the module docs): up to `seq`
/// `last`, and in a bucket with appends open, up to the lowest `v` of
/// them (`buckets`: [`BUCKETS`] entries, `None` where none is open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Horizon {
    pub(crate) last: i64,
    pub(crate) buckets: Vec<Option<i64>>,
}

/// `read!()`: the columns that read the [`Horizon`] of bus `$1`, with the `FROM`
/// clause that ends them: `L` (`bigint`), then the buckets with appends
/// open (`int4[]`) and the lowest full `v` of each (`bigint[]`, in the same
/// order). To be put after the `SELECT` of a statement that reads nothing
/// of the bus's tables the claim depends on: its values are read as it
/// runs, before the next statement's snapshot.
macro_rules! read {
    () => {
        "
    h.last, COALESCE(m.bs, '{}'), COALESCE(m.vs, '{}')
    FROM (SELECT COALESCE(pg_sequence_last_value('tidings_events_seq_seq'), 0) AS last) h
    CROSS JOIN LATERAL (
        SELECT array_agg(x.b) AS bs, array_agg(x.v) AS vs FROM (
            SELECT b.b, min(h.last - ((h.last - l.objid::int8) & 4294967295)) AS v
            FROM (SELECT l.classid, l.objid FROM pg_locks l
                  WHERE l.locktype = 'advisory' AND l.objsubid = 2
                    AND l.database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())
                  OFFSET 0) l
            JOIN generate_series(0, 255) AS b(b)
              ON l.classid = hashtext('tidings-appending:' || $1 || ':' || b.b)::oid
            GROUP BY b.b) x) m"
    };
}
pub(crate) use read;

impl Horizon {
    /// Takes no key's head (a claim that did not read the registrations).
    pub(crate) fn closed() -> Self {
        Self {
            last: 0,
            buckets: Vec::new(),
        }
    }

    /// Whether it takes no key's head.
    pub(crate) fn is_closed(&self) -> bool {
        self.last == 0 && self.buckets.is_empty()
    }

    /// From [`read!`]'s columns: the last value, and the buckets with their
    /// lowest registration.
    pub(crate) fn of(last: i64, buckets: &[i32], lowest: &[i64]) -> Self {
        let mut dense = vec![None; BUCKETS as usize];
        for (b, v) in buckets.iter().zip(lowest) {
            if let Some(slot) = usize::try_from(*b).ok().and_then(|b| dense.get_mut(b)) {
                *slot = Some(*v);
            }
        }
        Self {
            last,
            buckets: dense,
        }
    }
}

/// `claimable!(row, last, buckets)`: the condition that keyed delivery
/// `row` (an alias with `seq` and `key`) is within the [`Horizon`] bound
/// as `last` (`bigint`) and `buckets` (`bigint[]`).
macro_rules! claimable {
    ($row:literal, $last:literal, $buckets:literal) => {
        concat!(
            "(",
            $row,
            ".seq <= ",
            $last,
            " AND ",
            $row,
            ".seq <= COALESCE((",
            $buckets,
            "::int8[])[(hashtext(",
            $row,
            ".key) & 255) + 1], ",
            $last,
            "))"
        )
    };
}
pub(crate) use claimable;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, PgConnection, Row};

    /// The horizon of bus `plans` as a claim reads it.
    async fn read(conn: &mut PgConnection) -> Horizon {
        let row = sqlx::query(concat!("SELECT ", read!()))
            .bind("plans")
            .fetch_one(conn)
            .await
            .expect("the horizon");
        let buckets: Vec<i32> = row.get(1);
        let lowest: Vec<i64> = row.get(2);
        Horizon::of(row.get(0), &buckets, &lowest)
    }

    /// An append open on key `a` shows in `a`'s bucket with the sequence's
    /// value when it registered, across the wrap of its low 32 bits, until
    /// it ends; no other bucket shows anything.
    #[tokio::test]
    async fn an_open_append_shows_in_its_keys_bucket_until_it_ends() {
        let Some((mut conn, schema)) = crate::plans::scratch().await else {
            return;
        };
        let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").expect("set");
        let mut other = PgConnection::connect(&url).await.expect("a connection");
        sqlx::query(&format!("SET search_path TO {schema}"))
            .execute(&mut other)
            .await
            .expect("the schema");
        let registered: i64 = (1 << 32) + (1 << 31) + 7;
        sqlx::query("SELECT setval('tidings_events_seq_seq', $1)")
            .bind(registered)
            .execute(&mut conn)
            .await
            .expect("the sequence");
        let mut open = other.begin().await.expect("a transaction");
        sqlx::query(concat!(
            "WITH reg AS MATERIALIZED (",
            register!("$1", "$2::text[]"),
            ") SELECT n FROM reg"
        ))
        .bind("plans")
        .bind(vec![Some("a"), None, Some("a")])
        .execute(&mut *open)
        .await
        .expect("registered");
        for _ in 0..10 {
            sqlx::query("SELECT nextval('tidings_events_seq_seq')")
                .execute(&mut conn)
                .await
                .expect("drawn");
        }
        let bucket: i32 = sqlx::query_scalar("SELECT hashtext('a') & 255")
            .fetch_one(&mut conn)
            .await
            .expect("a's bucket");
        let seen = read(&mut conn).await;
        open.commit().await.expect("committed");
        let after = read(&mut conn).await;
        crate::plans::drop_schema(conn, &schema).await;
        let mut expected = vec![None; BUCKETS as usize];
        expected[usize::try_from(bucket).expect("a bucket")] = Some(registered);
        assert_eq!(
            seen,
            Horizon {
                last: registered + 10,
                buckets: expected
            }
        );
        assert_eq!(
            after,
            Horizon {
                last: registered + 10,
                buckets: vec![None; BUCKETS as usize]
            },
            "nothing open"
        );
    }
}
