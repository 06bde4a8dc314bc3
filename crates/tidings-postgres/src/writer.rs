//! The writer task: the only user of its connection. It takes every
//! operation queued for it, up to a batch, and writes them in one
//! transaction of a fixed handful of set-based statements over `UNNEST`ed
//! arrays, however large the batch: a thousand acks are one `DELETE`, not a
//! thousand round trips (a first version wrote each run of one kind as a
//! statement; with emits and acks interleaved, a batch of 126 made ~126 round
//! trips and took 20 ms).
//!
//! Reordering is safe because of what a batch can hold: an outcome always
//! refers to an event appended in an earlier batch (an event is queued only
//! after its append committed), so appends go first; and the outcomes of one
//! delivery are folded, in order, into their net effect ([`Net`]), so that
//! each delivery is touched by one statement at most. If a batch fails, its
//! operations are written again one by one, so that one bad operation fails
//! alone.

use crate::schema::{to_nanos, Bound, Deliveries};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use tidings::store::{Change, StoredEvent};
use tidings::StoreError;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(StoredEvent, Reply),
    Update(Uuid, Box<str>, Change),
    /// Marks an attempt begun (`Store::begin`): written last in its batch.
    Begin(Uuid, Box<str>, u32, Reply),
    Flush(Reply),
    /// The relay's claim, run after the batch's transaction.
    Claim(usize, oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>),
    /// A shared bus's instance says it is alive for this long more.
    Renew(std::time::Duration),
    /// A shared bus's instance registers its handlers (before any append).
    Bind(Bound),
    /// Deliveries to a shared bus's handlers not yet done, anywhere.
    Outstanding(oneshot::Sender<Result<u64, StoreError>>),
}

/// What the writer and the claimer share.
#[derive(Default)]
struct Claims {
    /// A shared bus's handlers in this instance, once bound.
    bound: Option<Bound>,
    /// A shared bus's keyed deliveries this instance claimed and has not
    /// settled: settling one lets the key's next go, so it wakes the relays.
    keyed: HashSet<(Uuid, Box<str>)>,
}

fn lock(claims: &Mutex<Claims>) -> MutexGuard<'_, Claims> {
    claims.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs until every sender is gone and all that was sent is written. Claims
/// and counts go to a task of their own, on `claim_conn`, so that they never
/// wait for a write batch nor hold one up.
pub(crate) async fn run(
    mut conn: PgConnection,
    claim_conn: PgConnection,
    bus: String,
    owner: Option<Uuid>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let claims = Arc::new(Mutex::new(Claims::default()));
    let (to_claimer, claimer_rx) = mpsc::unbounded_channel();
    let claimer = tokio::spawn(claimer(
        claim_conn,
        bus.clone(),
        owner,
        claimer_rx,
        claims.clone(),
    ));
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        for op in &batch {
            if let Op::Bind(handlers) = op {
                match crate::schema::bind(&mut conn, &bus, handlers).await {
                    Ok(kept) => lock(&claims).bound = Some(kept),
                    Err(e) => tracing::error!("the store could not register its handlers: {e}"),
                }
            }
        }
        let wake = owner.is_some() && wakes(&batch, &mut lock(&claims).keyed);
        match write(&mut conn, &bus, owner, &batch, wake).await {
            Ok(()) => {
                for op in batch.drain(..) {
                    match op {
                        op @ (Op::Claim(..) | Op::Outstanding(_)) => {
                            // Gone only with the writer; a dropped reply is `Closed`.
                            let _ = to_claimer.send(op);
                        }
                        Op::Renew(lease) => {
                            if let Some(me) = owner {
                                if let Err(e) =
                                    crate::schema::alive(&mut conn, &bus, me, lease).await
                                {
                                    tracing::warn!("the store could not renew its instance: {e}");
                                }
                            }
                        }
                        op => answer(op, Ok(())),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    "a batch of {} store writes failed ({e}); writing them one by one",
                    batch.len()
                );
                for op in batch.drain(..) {
                    let one = std::slice::from_ref(&op);
                    let result = write(&mut conn, &bus, owner, one, owner.is_some()).await;
                    if let (Err(e), Op::Update(id, handler, _)) = (&result, &op) {
                        tracing::warn!(handler = &**handler, event_id = %id, "a delivery's outcome could not be recorded ({e}); it will be made again");
                    }
                    answer(op, result);
                }
            }
        }
    }
    drop(to_claimer);
    let _ = claimer.await;
    if let Some(me) = owner {
        // Gone: what this instance still owns may be claimed by the others at
        // once. (Marked dead, not deleted: claims find a dead instance's
        // deliveries through it; it is deleted once they are all taken over.)
        let _ = sqlx::query(
            "UPDATE tidings_instances SET alive_until = now() - interval '1 millisecond' WHERE id = $1",
        )
        .bind(me)
        .execute(&mut conn)
        .await;
    }
    let _ = conn.close().await;
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Begin(.., reply) | Op::Flush(reply) => {
            drop(reply.send(result));
        }
        // A claim in a failed batch claims nothing this time; the relay asks again.
        Op::Claim(_, reply) => drop(reply.send(result.map(|()| Vec::new()))),
        Op::Outstanding(reply) => drop(reply.send(result.map(|()| 1))),
        Op::Update(..) | Op::Renew(_) | Op::Bind(_) => {}
    }
}

/// What the outcomes of one delivery in a batch amount to, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Net {
    delivery: Row,
    dead: Dead,
    /// Its begin mark is cleared if it is still this attempt's (a shutdown
    /// abandoned the attempt).
    unbegun: Option<u32>,
}

/// The delivery's row after the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Row {
    /// Untouched.
    #[default]
    Same,
    /// Deleted (handled or dead-lettered).
    Deleted,
    /// Its attempt set, if the row exists.
    Attempt(u32),
    /// Inserted (replayed) at this attempt, if its event exists.
    Inserted(u32),
}

/// The delivery's dead letter after the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Dead {
    #[default]
    Same,
    Deleted,
    Kept {
        attempts: u32,
        error: String,
    },
}

impl Net {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Handled => self.delivery = Row::Deleted,
            Change::Retrying { attempt } => {
                self.delivery = match self.delivery {
                    Row::Deleted => Row::Deleted,
                    Row::Inserted(_) => Row::Inserted(*attempt),
                    Row::Same | Row::Attempt(_) => Row::Attempt(*attempt),
                }
            }
            Change::DeadLettered { attempts, error } => {
                self.delivery = Row::Deleted;
                self.dead = Dead::Kept {
                    attempts: *attempts,
                    error: error.clone(),
                };
            }
            Change::Replayed => {
                self.dead = Dead::Deleted;
                self.delivery = Row::Inserted(1);
            }
            Change::Discarded => self.dead = Dead::Deleted,
            Change::Abandoned { attempt } => self.unbegun = Some(*attempt),
            // A change this version does not know: leave the delivery as it is.
            _ => {}
        }
    }
}

/// The net effect of each delivery's outcomes in `ops`, in order of first appearance.
fn net(ops: &[Op]) -> Vec<((Uuid, &str), Net)> {
    let mut out: Vec<((Uuid, &str), Net)> = Vec::new();
    let mut at: HashMap<(Uuid, &str), usize> = HashMap::new();
    for op in ops {
        if let Op::Update(id, handler, change) = op {
            let i = match at.entry((*id, &**handler)) {
                Entry::Occupied(i) => *i.get(),
                Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push(((*id, handler), Net::default()));
                    out.len() - 1
                }
            };
            out[i].1.apply(change);
        }
    }
    out
}

/// Runs the relay's claims and `wait_idle`'s counts on a connection of its
/// own, until the writer stops.
async fn claimer(
    mut conn: PgConnection,
    bus: String,
    owner: Option<Uuid>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    claims: Arc<Mutex<Claims>>,
) {
    while let Some(op) = rx.recv().await {
        let bound = lock(&claims).bound.clone();
        match op {
            Op::Claim(limit, reply) => {
                // A shared store claims only for its own handlers: nothing
                // before they are registered.
                if owner.is_some() && bound.is_none() {
                    let _ = reply.send(Ok(Vec::new()));
                    continue;
                }
                let claimed =
                    crate::schema::claim(&mut conn, &bus, limit, owner, bound.as_ref()).await;
                if let (Ok(events), Some(_)) = (&claimed, owner) {
                    let keyed = &mut lock(&claims).keyed;
                    for e in events.iter().filter(|e| e.key.is_some()) {
                        for d in &e.deliveries {
                            keyed.insert((e.id, d.handler.as_str().into()));
                        }
                    }
                }
                let _ = reply.send(claimed);
            }
            Op::Outstanding(reply) => {
                let n = match &bound {
                    Some(b) => crate::schema::outstanding(&mut conn, &bus, b)
                        .await
                        .map_err(crate::store::error),
                    None => Ok(0),
                };
                let _ = reply.send(n);
            }
            _ => {}
        }
    }
    let _ = conn.close().await;
}

/// Whether a shared bus's batch is to wake every instance's relay: it
/// writes new events, or settles a keyed delivery (the key's next may go).
fn wakes(ops: &[Op], keyed: &mut HashSet<(Uuid, Box<str>)>) -> bool {
    let mut wake = false;
    for op in ops {
        match op {
            Op::Append(..) => wake = true,
            Op::Update(id, handler, Change::Handled | Change::DeadLettered { .. }) => {
                // `remove` for every one: the set must not keep settled ones.
                wake |= keyed.remove(&(*id, handler.clone()));
            }
            _ => {}
        }
    }
    wake
}

/// Writes `ops` in one transaction; `wake`: with a notification to every
/// instance's relay.
async fn write(
    conn: &mut PgConnection,
    bus: &str,
    owner: Option<Uuid>,
    ops: &[Op],
    wake: bool,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await.map_err(crate::store::error)?;
    apply(&mut tx, bus, owner, ops, wake)
        .await
        .map_err(crate::store::error)?;
    tx.commit().await.map_err(crate::store::error)
}

/// Collects the (event, handler) pairs of the nets that `pick` selects, with a value.
fn select<'a, T>(
    nets: &'a [((Uuid, &'a str), Net)],
    pick: impl Fn(&'a Net) -> Option<T>,
) -> (Vec<Uuid>, Vec<&'a str>, Vec<T>) {
    let (mut ids, mut handlers, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for ((id, handler), n) in nets {
        if let Some(v) = pick(n) {
            ids.push(*id);
            handlers.push(*handler);
            values.push(v);
        }
    }
    (ids, handlers, values)
}

fn attempt(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    bus: &str,
    owner: Option<Uuid>,
    ops: &[Op],
    wake: bool,
) -> Result<(), sqlx::Error> {
    let events: Vec<&StoredEvent> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Append(e, _) => Some(e),
            _ => None,
        })
        .collect();
    // A shared bus's events go to every handler of their type bound to the
    // name, in whichever instance claims each delivery.
    let to = match owner {
        Some(_) => Deliveries::Bound,
        None => Deliveries::Queued,
    };
    if !events.is_empty() {
        crate::schema::insert_events(tx, bus, &events, to).await?;
    }
    let nets = net(ops);
    if !nets.is_empty() {
        apply_nets(tx, owner, &nets).await?;
    }
    if wake {
        // Wakes every instance's relay: new deliveries, or the next of a key.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::store::CHANNEL)
            .bind(bus)
            .execute(&mut **tx)
            .await?;
    }
    // Begin marks last: a delivery replayed (inserted) in this batch is
    // there to be marked. (A mark and the end of its attempt are never in
    // one batch: the attempt starts once its mark is written.)
    let (mut ids, mut handlers, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        if let Op::Begin(id, handler, a, _) = op {
            ids.push(*id);
            handlers.push(&**handler);
            attempts.push(attempt(*a));
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE tidings_deliveries d SET begun = u.a
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
             WHERE d.event_id = u.id AND d.handler = u.h",
        )
        .bind(&ids)
        .bind(&handlers)
        .bind(&attempts)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Writes the net effect of the batch's delivery outcomes.
async fn apply_nets(
    tx: &mut Transaction<'_, Postgres>,
    owner: Option<Uuid>,
    nets: &[((Uuid, &str), Net)],
) -> Result<(), sqlx::Error> {
    let (ids, handlers, _) = select(nets, |n| (n.delivery == Row::Deleted).then_some(()));
    if !ids.is_empty() {
        delete_pairs(tx, Table::Deliveries, &ids, &handlers).await?;
    }
    let mut touched = ids;
    let (ids, handlers, attempts) = select(nets, |n| match n.delivery {
        Row::Attempt(a) => Some(attempt(a)),
        _ => None,
    });
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE tidings_deliveries d SET attempt = u.a
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
             WHERE d.event_id = u.id AND d.handler = u.h",
        )
        .bind(&ids)
        .bind(&handlers)
        .bind(&attempts)
        .execute(&mut **tx)
        .await?;
    }
    let (ids, handlers, attempts) = select(nets, |n| n.unbegun.map(attempt));
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE tidings_deliveries d SET begun = 0
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
             WHERE d.event_id = u.id AND d.handler = u.h AND d.begun = u.a",
        )
        .bind(&ids)
        .bind(&handlers)
        .bind(&attempts)
        .execute(&mut **tx)
        .await?;
    }
    let (ids, handlers, _) = select(nets, |n| (n.dead == Dead::Deleted).then_some(()));
    if !ids.is_empty() {
        delete_pairs(tx, Table::DeadLetters, &ids, &handlers).await?;
        // A discarded dead letter may have been the event's last row.
        touched.extend(ids);
    }
    let (ids, handlers, kept) = select(nets, |n| match &n.dead {
        Dead::Kept { attempts, error } => Some((attempt(*attempts), error.as_str())),
        _ => None,
    });
    if !ids.is_empty() {
        let (counts, errors): (Vec<i32>, Vec<&str>) = kept.into_iter().unzip();
        sqlx::query(
            "INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
             SELECT u.id, u.h, u.a, u.e, $5
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::text[]) AS u(id, h, a, e)
             ON CONFLICT (event_id, handler) DO UPDATE
               SET attempts = EXCLUDED.attempts, error = EXCLUDED.error,
                   failed_at_ns = EXCLUDED.failed_at_ns",
        )
        .bind(&ids)
        .bind(&handlers)
        .bind(&counts)
        .bind(&errors)
        .bind(to_nanos(SystemTime::now()))
        .execute(&mut **tx)
        .await?;
    }
    let (ids, handlers, attempts) = select(nets, |n| match n.delivery {
        Row::Inserted(a) => Some(attempt(a)),
        _ => None,
    });
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO tidings_deliveries (event_id, handler, attempt, owner)
             SELECT u.id, u.h, u.a, $4 FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
             JOIN tidings_events e ON e.id = u.id
             ON CONFLICT (event_id, handler) DO UPDATE
               SET attempt = EXCLUDED.attempt, owner = EXCLUDED.owner",
        )
        .bind(&ids)
        .bind(&handlers)
        .bind(&attempts)
        .bind(owner)
        .execute(&mut **tx)
        .await?;
    }
    if !touched.is_empty() {
        // Events no delivery or dead letter refers to any more.
        sqlx::query(
            "DELETE FROM tidings_events e WHERE e.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM tidings_deliveries d WHERE d.event_id = e.id)
               AND NOT EXISTS (SELECT 1 FROM tidings_dead_letters l WHERE l.event_id = e.id)",
        )
        .bind(&touched)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The tables rows of (event, handler) live in.
#[derive(Clone, Copy)]
enum Table {
    Deliveries,
    DeadLetters,
}

/// Deletes the rows of the given (event, handler) pairs from `table`.
async fn delete_pairs(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    ids: &[Uuid],
    handlers: &[&str],
) -> Result<(), sqlx::Error> {
    let sql = match table {
        Table::Deliveries => {
            "DELETE FROM tidings_deliveries t USING UNNEST($1::uuid[], $2::text[]) AS u(id, h)
             WHERE t.event_id = u.id AND t.handler = u.h"
        }
        Table::DeadLetters => {
            "DELETE FROM tidings_dead_letters t USING UNNEST($1::uuid[], $2::text[]) AS u(id, h)
             WHERE t.event_id = u.id AND t.handler = u.h"
        }
    };
    sqlx::query(sql)
        .bind(ids)
        .bind(handlers)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: Uuid, change: Change) -> Op {
        Op::Update(id, "h".into(), change)
    }

    #[test]
    fn outcomes_of_one_delivery_fold_in_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let dead = Change::DeadLettered {
            attempts: 3,
            error: "e".into(),
        };
        let ops = [
            update(a, Change::Retrying { attempt: 2 }),
            update(b, Change::Handled),
            update(a, dead.clone()),
            update(a, Change::Replayed),
            update(a, Change::Retrying { attempt: 2 }),
        ];
        let nets = net(&ops);
        assert_eq!(nets.len(), 2);
        assert_eq!(
            nets[0].1,
            Net {
                delivery: Row::Inserted(2),
                dead: Dead::Deleted,
                unbegun: None,
            }
        );
        assert_eq!(
            nets[1].1,
            Net {
                delivery: Row::Deleted,
                dead: Dead::Same,
                unbegun: None,
            }
        );
        let ops = [update(a, Change::Replayed), update(a, Change::Handled)];
        let nets = net(&ops);
        assert_eq!(nets[0].1.delivery, Row::Deleted, "replayed, then handled");
        assert_eq!(nets[0].1.dead, Dead::Deleted);
        let ops = [
            update(a, Change::Handled),
            update(a, Change::Retrying { attempt: 4 }),
        ];
        let nets = net(&ops);
        assert_eq!(
            nets[0].1.delivery,
            Row::Deleted,
            "a late retry does not revive it"
        );
        let ops = [update(a, dead)];
        let nets = net(&ops);
        assert_eq!(
            nets[0].1.dead,
            Dead::Kept {
                attempts: 3,
                error: "e".into()
            }
        );
    }
}
