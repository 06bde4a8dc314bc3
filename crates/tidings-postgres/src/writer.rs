//! The writer task: the only user of its connection. It takes every
//! operation queued for it, up to a batch, and writes them in one
//! transaction: consecutive operations of one kind become one set-based
//! statement over `UNNEST`ed arrays, so a batch of a thousand acks is one
//! `DELETE`, not a thousand round trips. Order is kept: runs are written in
//! the order the operations came. If a batch fails, its operations are
//! written again one by one, so that one bad operation fails alone.

use crate::schema::to_nanos;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use std::collections::hash_map::{Entry, HashMap};
use std::time::SystemTime;
use tidings::store::{Change, StoredEvent};
use tidings::StoreError;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(StoredEvent, Reply),
    Update(Uuid, Box<str>, Change),
    Flush(Reply),
    /// The relay's claim, run after the batch's transaction.
    Claim(usize, oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Append,
    Handled,
    Retrying,
    DeadLettered,
    Replayed,
    Nothing,
}

fn kind(op: &Op) -> Kind {
    match op {
        Op::Append(..) => Kind::Append,
        Op::Update(_, _, Change::Handled) => Kind::Handled,
        Op::Update(_, _, Change::Retrying { .. }) => Kind::Retrying,
        Op::Update(_, _, Change::DeadLettered { .. }) => Kind::DeadLettered,
        Op::Update(_, _, Change::Replayed) => Kind::Replayed,
        // Flushes, and changes this version does not know.
        _ => Kind::Nothing,
    }
}

/// Runs until every sender is gone and all that was sent is written.
pub(crate) async fn run(
    mut conn: PgConnection,
    bus: String,
    mut rx: mpsc::UnboundedReceiver<Op>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match write(&mut conn, &bus, &batch).await {
            Ok(()) => {
                for op in batch.drain(..) {
                    match op {
                        Op::Claim(limit, reply) => {
                            let _ = reply.send(crate::schema::claim(&mut conn, &bus, limit).await);
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
                    let result = write(&mut conn, &bus, std::slice::from_ref(&op)).await;
                    if let (Err(e), Op::Update(id, handler, _)) = (&result, &op) {
                        tracing::warn!(handler = &**handler, event_id = %id, "a delivery's outcome could not be recorded ({e}); it will be made again");
                    }
                    answer(op, result);
                }
            }
        }
    }
    let _ = conn.close().await;
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Flush(reply) => drop(reply.send(result)),
        // A claim in a failed batch claims nothing this time; the relay asks again.
        Op::Claim(_, reply) => drop(reply.send(result.map(|()| Vec::new()))),
        Op::Update(..) => {}
    }
}

async fn write(conn: &mut PgConnection, bus: &str, ops: &[Op]) -> Result<(), StoreError> {
    let mut tx = conn.begin().await.map_err(crate::store::error)?;
    let mut touched = Vec::new();
    let mut start = 0;
    while start < ops.len() {
        let k = kind(&ops[start]);
        let end = ops[start..]
            .iter()
            .position(|op| kind(op) != k)
            .map_or(ops.len(), |n| start + n);
        apply(&mut tx, bus, k, &ops[start..end], &mut touched)
            .await
            .map_err(crate::store::error)?;
        start = end;
    }
    if !touched.is_empty() {
        // Events no delivery or dead letter refers to any more.
        sqlx::query(
            "DELETE FROM tidings_events e WHERE e.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM tidings_deliveries d WHERE d.event_id = e.id)
               AND NOT EXISTS (SELECT 1 FROM tidings_dead_letters l WHERE l.event_id = e.id)",
        )
        .bind(&touched)
        .execute(&mut *tx)
        .await
        .map_err(crate::store::error)?;
    }
    tx.commit().await.map_err(crate::store::error)
}

/// The (event, handler) pairs of a run of updates, the last change of each pair kept.
fn pairs(ops: &[Op]) -> Vec<(Uuid, &str, &Change)> {
    let mut out: Vec<(Uuid, &str, &Change)> = Vec::with_capacity(ops.len());
    let mut at: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(ops.len());
    for op in ops {
        if let Op::Update(id, handler, change) = op {
            match at.entry((*id, handler)) {
                Entry::Occupied(i) => out[*i.get()].2 = change,
                Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push((*id, handler, change));
                }
            }
        }
    }
    out
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

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    bus: &str,
    kind: Kind,
    ops: &[Op],
    touched: &mut Vec<Uuid>,
) -> Result<(), sqlx::Error> {
    match kind {
        Kind::Append => {
            let events: Vec<&StoredEvent> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Append(e, _) => Some(e),
                    _ => None,
                })
                .collect();
            crate::schema::insert_events(tx, bus, &events, true).await?;
        }
        Kind::Handled | Kind::DeadLettered => {
            let pairs = pairs(ops);
            let ids: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
            let handlers: Vec<&str> = pairs.iter().map(|p| p.1).collect();
            delete_pairs(tx, Table::Deliveries, &ids, &handlers).await?;
            if kind == Kind::DeadLettered {
                let now = to_nanos(SystemTime::now());
                let (mut counts, mut errors) = (Vec::new(), Vec::new());
                for (_, _, change) in &pairs {
                    if let Change::DeadLettered { attempts, error } = change {
                        counts.push(i32::try_from(*attempts).unwrap_or(i32::MAX));
                        errors.push(error.as_str());
                    }
                }
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
                .bind(now)
                .execute(&mut **tx)
                .await?;
            } else {
                touched.extend(ids);
            }
        }
        Kind::Retrying => {
            let pairs = pairs(ops);
            let ids: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
            let handlers: Vec<&str> = pairs.iter().map(|p| p.1).collect();
            let next: Vec<i32> = pairs
                .iter()
                .map(|p| match p.2 {
                    Change::Retrying { attempt } => i32::try_from(*attempt).unwrap_or(i32::MAX),
                    _ => 1,
                })
                .collect();
            sqlx::query(
                "UPDATE tidings_deliveries d SET attempt = u.a
                 FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
                 WHERE d.event_id = u.id AND d.handler = u.h",
            )
            .bind(&ids)
            .bind(&handlers)
            .bind(&next)
            .execute(&mut **tx)
            .await?;
        }
        Kind::Replayed => {
            let pairs = pairs(ops);
            let ids: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
            let handlers: Vec<&str> = pairs.iter().map(|p| p.1).collect();
            delete_pairs(tx, Table::DeadLetters, &ids, &handlers).await?;
            sqlx::query(
                "INSERT INTO tidings_deliveries (event_id, handler, attempt)
                 SELECT u.id, u.h, 1 FROM UNNEST($1::uuid[], $2::text[]) AS u(id, h)
                 JOIN tidings_events e ON e.id = u.id
                 ON CONFLICT DO NOTHING",
            )
            .bind(&ids)
            .bind(&handlers)
            .execute(&mut **tx)
            .await?;
        }
        Kind::Nothing => {}
    }
    Ok(())
}
