//! The writer thread: the only user of the file's connection. It takes every
//! operation queued for it, up to a batch, writes them in one transaction,
//! then answers the emits and flushes waiting on them (group commit).
//!
//! If a batch fails, its operations are written again one by one, each in a
//! transaction of its own, so that one bad operation fails alone.

use crate::schema::to_nanos;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use std::sync::mpsc::Receiver;
use std::time::SystemTime;
use tidings::store::{Change, StoredEvent};
use tidings::StoreError;
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(StoredEvent, Reply),
    Update(Uuid, Box<str>, Change),
    Flush(Reply),
}

/// Runs until every sender is gone and all that was sent is written.
pub(crate) fn run(mut conn: Connection, rx: &Receiver<Op>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match write(&mut conn, &batch) {
            Ok(()) => {
                for op in batch.drain(..) {
                    answer(op, Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(
                    "a batch of {} store writes failed ({e}); writing them one by one",
                    batch.len()
                );
                for op in batch.drain(..) {
                    let result = write(&mut conn, std::slice::from_ref(&op));
                    if let (Err(e), Op::Update(id, handler, _)) = (&result, &op) {
                        tracing::warn!(handler = &**handler, event_id = %id, "a delivery's outcome could not be recorded ({e}); it will be made again");
                    }
                    answer(op, result);
                }
            }
        }
    }
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Flush(reply) => drop(reply.send(result)),
        Op::Update(..) => {}
    }
}

fn write(conn: &mut Connection, ops: &[Op]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(crate::store::error)?;
    for op in ops {
        apply(&tx, op).map_err(crate::store::error)?;
    }
    tx.commit().map_err(crate::store::error)
}

fn apply(tx: &Transaction<'_>, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::Append(e, _) => {
            let id = e.id.as_bytes().as_slice();
            tx.prepare_cached(
                "INSERT INTO events (id, event_type, key, emitted_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, e.event_type, e.key, to_nanos(e.emitted_at), e.data])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO deliveries (event_id, handler, attempt) VALUES (?1, ?2, ?3)",
            )?;
            for d in &e.deliveries {
                insert.execute(params![id, d.handler, d.attempt])?;
            }
        }
        Op::Update(id, handler, change) => {
            let id = id.as_bytes().as_slice();
            let handler = &**handler;
            match change {
                Change::Handled => {
                    delete_delivery(tx, id, handler)?;
                    forget_if_done(tx, id)?;
                }
                Change::Retrying { attempt } => {
                    tx.prepare_cached(
                        "UPDATE deliveries SET attempt = ?3 WHERE event_id = ?1 AND handler = ?2",
                    )?
                    .execute(params![id, handler, attempt])?;
                }
                Change::DeadLettered { attempts, error } => {
                    delete_delivery(tx, id, handler)?;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO dead_letters (event_id, handler, attempts, error, failed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, handler, attempts, error, to_nanos(SystemTime::now())])?;
                }
                Change::Replayed => {
                    tx.prepare_cached(
                        "DELETE FROM dead_letters WHERE event_id = ?1 AND handler = ?2",
                    )?
                    .execute(params![id, handler])?;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO deliveries (event_id, handler, attempt)
                         SELECT id, ?2, 1 FROM events WHERE id = ?1",
                    )?
                    .execute(params![id, handler])?;
                }
                // A change this version does not know: leave the delivery as it is.
                _ => {}
            }
        }
        Op::Flush(_) => {}
    }
    Ok(())
}

fn delete_delivery(tx: &Transaction<'_>, id: &[u8], handler: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM deliveries WHERE event_id = ?1 AND handler = ?2")?
        .execute(params![id, handler])?;
    Ok(())
}

/// Deletes the event once no delivery or dead letter refers to it.
fn forget_if_done(tx: &Transaction<'_>, id: &[u8]) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM events WHERE id = ?1
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE event_id = ?1)",
    )?
    .execute(params![id])?;
    Ok(())
}
