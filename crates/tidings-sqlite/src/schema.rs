//! The file's tables, their migration, and reading back what is pending.

use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tidings::store::{Begun, Recovered, StoredDeadLetter, StoredDelivery, StoredEvent};
use tidings::StoreError;
use uuid::Uuid;

/// The schema version this crate writes (`PRAGMA user_version`): 2 added
/// `deliveries.begun`.
pub(crate) const VERSION: i64 = 2;

/// Dead letters listed again at start, the newest.
const DEAD_LETTERS_RECOVERED: i64 = 10_000;

/// Rows refer to events by `seq` (the rowid: no index to keep up); the
/// writer keeps the map from event id to `seq` in memory ([`Index`]). A `seq`
/// freed by a deleted newest event may be used again, which is safe: nothing
/// refers to an event once its row is deleted.
///
/// `deliveries.begun` is the attempt last marked begun (0: none), written
/// before each attempt of a delivery an earlier process may have begun
/// (`tidings::store::Store::begin`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    id         BLOB    NOT NULL,
    event_type TEXT    NOT NULL,
    key        TEXT,
    emitted_at INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq     INTEGER NOT NULL,
    handler TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    begun   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (seq, handler)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq       INTEGER NOT NULL,
    handler   TEXT    NOT NULL,
    attempts  INTEGER NOT NULL,
    error     TEXT    NOT NULL,
    failed_at INTEGER NOT NULL,
    PRIMARY KEY (seq, handler)
) WITHOUT ROWID;
";

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

/// Creates the tables, or checks that the file holds a version this crate reads.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(crate::store::error)?;
    if version > VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema version {version} is newer than this version of tidings-sqlite reads ({VERSION})"
        )));
    }
    conn.execute_batch(SCHEMA).map_err(crate::store::error)?;
    if version == 1 {
        // Version 1's deliveries had no begin marks: none was begun.
        conn.execute_batch("ALTER TABLE deliveries ADD COLUMN begun INTEGER NOT NULL DEFAULT 0")
            .map_err(crate::store::error)?;
    }
    conn.pragma_update(None, "user_version", VERSION)
        .map_err(crate::store::error)?;
    Ok(())
}

/// Nanoseconds since the Unix epoch, as stored.
pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_nanos(n: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

/// What a pending delivery at `attempt`, last marked begun at `begun`, was
/// left as by the process that stopped.
pub(crate) fn begun_of(attempt: i64, begun: i64) -> Begun {
    if begun > 0 && begun >= attempt {
        Begun::Interrupted
    } else {
        Begun::Maybe
    }
}

fn uuid(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
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
