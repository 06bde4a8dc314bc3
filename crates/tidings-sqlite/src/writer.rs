//! The writer thread: the only user of the file's connection. It takes every
//! operation queued for it, up to a batch, writes them in one transaction,
//! then answers the emits and flushes waiting on them (group commit).
//!
//! If a batch fails, its operations are written again one by one, each in a
//! transaction of its own, so that one bad operation fails alone.

use crate::schema::{to_nanos, Entry, Index};
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
pub(crate) fn run(mut conn: Connection, mut index: Index, rx: &Receiver<Op>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match write(&mut conn, &mut index, &batch) {
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
                index = reindex(&conn);
                for op in batch.drain(..) {
                    let result = write(&mut conn, &mut index, std::slice::from_ref(&op));
                    if let Err(e) = &result {
                        index = reindex(&conn);
                        if let Op::Update(id, handler, _) = &op {
                            tracing::warn!(handler = &**handler, event_id = %id, "a delivery's outcome could not be recorded ({e}); it will be made again");
                        }
                    }
                    answer(op, result);
                }
            }
        }
    }
}

/// The index as the file has it, after a transaction was rolled back.
fn reindex(conn: &Connection) -> Index {
    crate::schema::index(conn).unwrap_or_else(|e| {
        tracing::error!("the store could not re-read its index ({e}); outcomes of older events will not be recorded");
        Index::default()
    })
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Flush(reply) => drop(reply.send(result)),
        Op::Update(..) => {}
    }
}

/// Writes `ops` in one transaction, keeping `index` in step. On an error the
/// transaction is rolled back and `index` may be ahead of the file: the
/// caller re-reads it.
fn write(conn: &mut Connection, index: &mut Index, ops: &[Op]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(crate::store::error)?;
    for op in ops {
        apply(&tx, index, op).map_err(crate::store::error)?;
    }
    tx.commit().map_err(crate::store::error)
}

fn apply(tx: &Transaction<'_>, index: &mut Index, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::Append(e, _) => {
            tx.prepare_cached(
                "INSERT INTO events (id, event_type, key, emitted_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.id.as_bytes().as_slice(),
                e.event_type,
                e.key,
                to_nanos(e.emitted_at),
                e.data
            ])?;
            let seq = tx.last_insert_rowid();
            let mut insert = tx.prepare_cached(
                "INSERT INTO deliveries (seq, handler, attempt) VALUES (?1, ?2, ?3)",
            )?;
            for d in &e.deliveries {
                insert.execute(params![seq, d.handler, d.attempt])?;
            }
            index.0.insert(
                e.id,
                Entry {
                    seq,
                    pending: u32::try_from(e.deliveries.len()).unwrap_or(u32::MAX),
                    dead: 0,
                },
            );
        }
        Op::Update(id, handler, change) => {
            // An event the file does not hold (its append failed): nothing to record.
            let Some(entry) = index.0.get_mut(id) else {
                return Ok(());
            };
            let seq = entry.seq;
            let handler = &**handler;
            match change {
                Change::Handled => {
                    let deleted = delete_delivery(tx, seq, handler)?;
                    entry.pending = entry.pending.saturating_sub(u32::from(deleted));
                }
                Change::Retrying { attempt } => {
                    tx.prepare_cached(
                        "UPDATE deliveries SET attempt = ?3 WHERE seq = ?1 AND handler = ?2",
                    )?
                    .execute(params![seq, handler, attempt])?;
                }
                Change::DeadLettered { attempts, error } => {
                    let deleted = delete_delivery(tx, seq, handler)?;
                    entry.pending = entry.pending.saturating_sub(u32::from(deleted));
                    let added = tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO dead_letters (seq, handler, attempts, error, failed_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![seq, handler, attempts, error, to_nanos(SystemTime::now())])?;
                    entry.dead += u32::from(added > 0);
                }
                Change::Replayed => {
                    let removed = tx
                        .prepare_cached("DELETE FROM dead_letters WHERE seq = ?1 AND handler = ?2")?
                        .execute(params![seq, handler])?;
                    entry.dead = entry.dead.saturating_sub(u32::from(removed > 0));
                    let added = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO deliveries (seq, handler, attempt) VALUES (?1, ?2, 1)",
                        )?
                        .execute(params![seq, handler])?;
                    entry.pending += u32::from(added > 0);
                }
                // A change this version does not know: leave the delivery as it is.
                _ => {}
            }
            if entry.pending == 0 && entry.dead == 0 {
                tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?
                    .execute(params![seq])?;
                index.0.remove(id);
            }
        }
        Op::Flush(_) => {}
    }
    Ok(())
}

/// Deletes one delivery; whether it was there.
fn delete_delivery(tx: &Transaction<'_>, seq: i64, handler: &str) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM deliveries WHERE seq = ?1 AND handler = ?2")?
        .execute(params![seq, handler])?;
    Ok(n > 0)
}
