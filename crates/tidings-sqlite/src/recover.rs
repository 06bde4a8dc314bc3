//! Reading back what the file holds at start: what is pending and the
//! dead letters (the bus's recovery), and the index of event rows the
//! writer keeps.

use crate::schema::{begun_of, from_nanos, uuid};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use tidings::store::{Recovered, StoredDeadLetter, StoredDelivery, StoredEvent};
use tidings::StoreError;
use uuid::Uuid;

/// Dead letters listed again at start, the newest.
const DEAD_LETTERS_RECOVERED: i64 = 10_000;

/// What the writer knows of each event still in the file: its `seq`, and how
/// many deliveries and dead letters still refer to it (the row is deleted
/// when both reach zero).
#[derive(Default)]
pub(crate) struct Index(pub(crate) HashMap<Uuid, Entry>);

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Entry {
    pub(crate) seq: i64,
    pub(crate) pending: u32,
    pub(crate) dead: u32,
}

/// The index of every event row, read from the file.
pub(crate) fn index(conn: &Connection) -> Result<Index, StoreError> {
    let mut index = Index::default();
    let mut stmt = conn
        .prepare(
            "SELECT e.id, e.seq,
                    (SELECT count(*) FROM deliveries d WHERE d.seq = e.seq),
                    (SELECT count(*) FROM dead_letters l WHERE l.seq = e.seq)
             FROM events e",
        )
        .map_err(crate::store::error)?;
    let mut rows = stmt.query([]).map_err(crate::store::error)?;
    while let Some(row) = rows.next().map_err(crate::store::error)? {
        let id: Vec<u8> = row.get(0).map_err(crate::store::error)?;
        let Some(id) = uuid(&id) else { continue };
        let count = |i| -> Result<u32, StoreError> {
            let n: i64 = row.get(i).map_err(crate::store::error)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        index.0.insert(
            id,
            Entry {
                seq: row.get(1).map_err(crate::store::error)?,
                pending: count(2)?,
                dead: count(3)?,
            },
        );
    }
    Ok(index)
}

/// Everything pending, oldest event first, and the newest dead letters.
/// Rows that cannot be read (a malformed id) are skipped and counted in a warning.
///
/// Every pending delivery may have been begun by the process that left it
/// ([`Begun::Maybe`]); one whose attempt was marked begun was interrupted.
pub(crate) fn recover(conn: &Connection) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let mut skipped = 0usize;
    let mut stmt = conn
        .prepare(
            "SELECT e.id, e.event_type, e.key, e.emitted_at, e.data, d.handler, d.attempt, d.begun
             FROM deliveries d JOIN events e ON e.seq = d.seq
             ORDER BY e.seq, d.handler",
        )
        .map_err(crate::store::error)?;
    let mut rows = stmt.query([]).map_err(crate::store::error)?;
    while let Some(row) = rows.next().map_err(crate::store::error)? {
        let id: Vec<u8> = row.get(0).map_err(crate::store::error)?;
        let Some(id) = uuid(&id) else {
            skipped += 1;
            continue;
        };
        let attempt: i64 = row.get(6).map_err(crate::store::error)?;
        let begun: i64 = row.get(7).map_err(crate::store::error)?;
        let delivery = StoredDelivery {
            handler: row.get(5).map_err(crate::store::error)?,
            attempt: u32::try_from(attempt).unwrap_or(1),
            begun: begun_of(attempt, begun),
            claim: tidings::store::Claim::NONE,
        };
        match out.events.last_mut() {
            Some(last) if last.id == id => last.deliveries.push(delivery),
            _ => out.events.push(StoredEvent {
                id,
                event_type: row.get(1).map_err(crate::store::error)?,
                key: row.get(2).map_err(crate::store::error)?,
                emitted_at: from_nanos(row.get(3).map_err(crate::store::error)?),
                data: row.get(4).map_err(crate::store::error)?,
                deliveries: vec![delivery],
            }),
        }
    }
    drop(rows);
    let mut stmt = conn
        .prepare(
            "SELECT e.id, e.event_type, e.key, e.emitted_at, e.data,
                    l.handler, l.attempts, l.error, l.failed_at
             FROM dead_letters l JOIN events e ON e.seq = l.seq
             ORDER BY l.failed_at DESC LIMIT ?1",
        )
        .map_err(crate::store::error)?;
    let mut rows = stmt
        .query(params![DEAD_LETTERS_RECOVERED])
        .map_err(crate::store::error)?;
    while let Some(row) = rows.next().map_err(crate::store::error)? {
        let id: Vec<u8> = row.get(0).map_err(crate::store::error)?;
        let Some(id) = uuid(&id) else {
            skipped += 1;
            continue;
        };
        out.dead_letters.push(StoredDeadLetter {
            event: StoredEvent {
                id,
                event_type: row.get(1).map_err(crate::store::error)?,
                key: row.get(2).map_err(crate::store::error)?,
                emitted_at: from_nanos(row.get(3).map_err(crate::store::error)?),
                data: row.get(4).map_err(crate::store::error)?,
                deliveries: Vec::new(),
            },
            handler: row.get(5).map_err(crate::store::error)?,
            attempts: u32::try_from(row.get::<_, i64>(6).map_err(crate::store::error)?)
                .unwrap_or(0),
            error: row.get(7).map_err(crate::store::error)?,
            failed_at: from_nanos(row.get(8).map_err(crate::store::error)?),
        });
    }
    out.dead_letters.reverse();
    if skipped > 0 {
        tracing::warn!(
            rows = skipped,
            "skipped store rows with a malformed event id"
        );
    }
    Ok(out)
}
