//! The writer thread: the only user of the file's connection. It takes every
//! operation queued for it, up to a batch, writes them in one transaction,
//! then answers the emits and flushes waiting on them (group commit).
//!
//! Its statements are prepared once, for the life of the thread (a cached
//! statement is looked up by hashing its SQL text: a tenth of the writer's
//! time in a profile). If a batch fails, it is rolled back and its operations
//! are written again one by one, each in a transaction of its own, so that one
//! bad operation fails alone.

use crate::recover::{Entry, Index};
use crate::schema::to_nanos;
use rusqlite::{params, Connection, Statement};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime};
use tidings::store::{Change, StoredEvent};
use tidings::StoreError;
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(StoredEvent, Reply),
    Update(Uuid, Box<str>, Change),
    /// Marks an attempt begun (`Store::begin`).
    Begin(Uuid, Box<str>, u32, Reply),
    Flush(Reply),
}

/// Every statement the writer runs.
struct Statements<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    rollback: Statement<'c>,
    insert_event: Statement<'c>,
    insert_delivery: Statement<'c>,
    delete_delivery: Statement<'c>,
    set_attempt: Statement<'c>,
    set_begun: Statement<'c>,
    clear_begun: Statement<'c>,
    insert_dead: Statement<'c>,
    delete_dead: Statement<'c>,
    revive: Statement<'c>,
    delete_event: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            begin: conn.prepare("BEGIN IMMEDIATE")?,
            commit: conn.prepare("COMMIT")?,
            rollback: conn.prepare("ROLLBACK")?,
            insert_event: conn.prepare(
                "INSERT INTO events (id, event_type, key, emitted_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            insert_delivery: conn
                .prepare("INSERT INTO deliveries (seq, handler, attempt) VALUES (?1, ?2, ?3)")?,
            delete_delivery: conn
                .prepare("DELETE FROM deliveries WHERE seq = ?1 AND handler = ?2")?,
            set_attempt: conn
                .prepare("UPDATE deliveries SET attempt = ?3 WHERE seq = ?1 AND handler = ?2")?,
            set_begun: conn
                .prepare("UPDATE deliveries SET begun = ?3 WHERE seq = ?1 AND handler = ?2")?,
            clear_begun: conn.prepare(
                "UPDATE deliveries SET begun = 0 WHERE seq = ?1 AND handler = ?2 AND begun = ?3",
            )?,
            insert_dead: conn.prepare(
                "INSERT OR REPLACE INTO dead_letters (seq, handler, attempts, error, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            delete_dead: conn.prepare("DELETE FROM dead_letters WHERE seq = ?1 AND handler = ?2")?,
            revive: conn.prepare(
                "INSERT OR IGNORE INTO deliveries (seq, handler, attempt) VALUES (?1, ?2, 1)",
            )?,
            delete_event: conn.prepare("DELETE FROM events WHERE seq = ?1")?,
        })
    }
}

/// Runs until every sender is gone and all that was sent is written.
pub(crate) fn run(
    conn: Connection,
    mut index: Index,
    rx: &Receiver<Op>,
    max_batch: usize,
    linger: Duration,
) {
    let mut st = match Statements::new(&conn) {
        Ok(st) => st,
        Err(e) => {
            tracing::error!("the store's writer could not prepare its statements: {e}");
            // Every request is answered with the error, not left hanging.
            while let Ok(op) = rx.recv() {
                answer(op, Err(crate::store::error(rusqlite::Error::InvalidQuery)));
            }
            return;
        }
    };
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = next(rx, linger) {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match write(&conn, &mut st, &mut index, &batch) {
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
                    let result = write(&conn, &mut st, &mut index, std::slice::from_ref(&op));
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

/// The next operation: looked for during `linger` (see
/// [`Options::linger`](crate::Options::linger)), then waited for. `None`
/// once every sender is gone.
fn next(rx: &Receiver<Op>, linger: Duration) -> Option<Op> {
    let until = Instant::now() + linger;
    loop {
        match rx.try_recv() {
            Ok(op) => return Some(op),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < until => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// The index as the file has it, after a transaction was rolled back.
fn reindex(conn: &Connection) -> Index {
    crate::recover::index(conn).unwrap_or_else(|e| {
        tracing::error!("the store could not re-read its index ({e}); outcomes of older events will not be recorded");
        Index::default()
    })
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Begin(.., reply) | Op::Flush(reply) => {
            drop(reply.send(result));
        }
        Op::Update(..) => {}
    }
}

/// Writes `ops` in one transaction, keeping `index` in step. On an error the
/// transaction is rolled back and `index` may be ahead of the file: the
/// caller re-reads it.
fn write(
    conn: &Connection,
    st: &mut Statements<'_>,
    index: &mut Index,
    ops: &[Op],
) -> Result<(), StoreError> {
    st.begin.execute([]).map_err(crate::store::error)?;
    let applied = ops
        .iter()
        .try_for_each(|op| apply(conn, st, index, op))
        .and_then(|()| st.commit.execute([]).map(drop));
    if let Err(e) = applied {
        if !conn.is_autocommit() {
            if let Err(r) = st.rollback.execute([]) {
                tracing::error!("the store could not roll a failed batch back: {r}");
            }
        }
        return Err(crate::store::error(e));
    }
    Ok(())
}

fn apply(
    conn: &Connection,
    st: &mut Statements<'_>,
    index: &mut Index,
    op: &Op,
) -> rusqlite::Result<()> {
    match op {
        Op::Append(e, _) => {
            st.insert_event.execute(params![
                e.id.as_bytes().as_slice(),
                e.event_type,
                e.key,
                to_nanos(e.emitted_at),
                e.data
            ])?;
            let seq = conn.last_insert_rowid();
            for d in &e.deliveries {
                st.insert_delivery
                    .execute(params![seq, d.handler, d.attempt])?;
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
                    let deleted = st.delete_delivery.execute(params![seq, handler])?;
                    entry.pending = entry.pending.saturating_sub(u32::from(deleted > 0));
                }
                Change::Retrying { attempt } => {
                    st.set_attempt.execute(params![seq, handler, attempt])?;
                }
                Change::DeadLettered { attempts, error } => {
                    let deleted = st.delete_delivery.execute(params![seq, handler])?;
                    entry.pending = entry.pending.saturating_sub(u32::from(deleted > 0));
                    let added = st.insert_dead.execute(params![
                        seq,
                        handler,
                        attempts,
                        error,
                        to_nanos(SystemTime::now())
                    ])?;
                    entry.dead += u32::from(added > 0);
                }
                Change::Replayed => {
                    let removed = st.delete_dead.execute(params![seq, handler])?;
                    entry.dead = entry.dead.saturating_sub(u32::from(removed > 0));
                    let added = st.revive.execute(params![seq, handler])?;
                    entry.pending += u32::from(added > 0);
                }
                Change::Discarded => {
                    let removed = st.delete_dead.execute(params![seq, handler])?;
                    entry.dead = entry.dead.saturating_sub(u32::from(removed > 0));
                }
                Change::Abandoned { attempt } => {
                    st.clear_begun.execute(params![seq, handler, attempt])?;
                }
                // A change this version does not know: leave the delivery as it is.
                _ => {}
            }
            if entry.pending == 0 && entry.dead == 0 {
                st.delete_event.execute(params![seq])?;
                index.0.remove(id);
            }
        }
        Op::Begin(id, handler, attempt, _) => {
            // An event the file no longer holds: nothing to mark.
            if let Some(entry) = index.0.get(id) {
                st.set_begun
                    .execute(params![entry.seq, &**handler, attempt])?;
            }
        }
        Op::Flush(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings::store::StoredDelivery;

    fn event(event_type: &str) -> StoredEvent {
        StoredEvent {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            key: None,
            emitted_at: SystemTime::now(),
            data: "{}".into(),
            deliveries: vec![StoredDelivery::new("h", 1)],
        }
    }

    /// One operation of a batch fails (a trigger refuses it): the batch is
    /// rolled back and written again one by one, so only that one fails, and
    /// the index still matches the file (the later outcome of another event
    /// in the batch is recorded).
    #[test]
    fn a_failing_operation_fails_alone() {
        let path = std::env::temp_dir().join(format!("tidings-writer-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let conn = Connection::open(&path).unwrap();
        crate::schema::migrate(&conn).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event_type = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let (ok1, boom, ok2) = (event("a"), event("boom"), event("b"));
        let ok1_id = ok1.id;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut answers = Vec::new();
        for e in [ok1, boom, ok2] {
            let (reply, answer) = oneshot::channel();
            tx.send(Op::Append(e, reply)).unwrap();
            answers.push(answer);
        }
        tx.send(Op::Update(ok1_id, "h".into(), Change::Handled))
            .unwrap();
        drop(tx);
        // Everything is queued before the writer starts: one batch.
        run(conn, Index::default(), &rx, 64, Duration::ZERO);
        let results: Vec<bool> = answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap().is_ok())
            .collect();
        assert_eq!(results, [true, false, true]);
        let conn = Connection::open(&path).unwrap();
        let types: Vec<String> = conn
            .prepare("SELECT event_type FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            types,
            ["b"],
            "a was handled and deleted, boom never written"
        );
        let deliveries: i64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(deliveries, 1);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
}
