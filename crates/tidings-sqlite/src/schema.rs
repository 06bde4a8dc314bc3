//! The file's tables, their migration, and reading back what is pending.

use rusqlite::{params, Connection};
use std::time::{Duration, SystemTime};
use tidings::store::{Recovered, StoredDeadLetter, StoredDelivery, StoredEvent};
use tidings::StoreError;
use uuid::Uuid;

/// The schema version this crate writes (`PRAGMA user_version`).
pub(crate) const VERSION: i64 = 1;

/// Dead letters listed again at start, the newest.
const DEAD_LETTERS_RECOVERED: i64 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    id         BLOB    NOT NULL UNIQUE,
    event_type TEXT    NOT NULL,
    key        TEXT,
    emitted_at INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id BLOB    NOT NULL,
    handler  TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    PRIMARY KEY (event_id, handler)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    event_id  BLOB    NOT NULL,
    handler   TEXT    NOT NULL,
    attempts  INTEGER NOT NULL,
    error     TEXT    NOT NULL,
    failed_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, handler)
) WITHOUT ROWID;
";

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

fn uuid(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

/// Everything pending, oldest event first, and the newest dead letters.
/// Rows that cannot be read (a malformed id) are skipped and counted in a warning.
pub(crate) fn recover(conn: &Connection) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let mut skipped = 0usize;
    let mut stmt = conn
        .prepare(
            "SELECT e.id, e.event_type, e.key, e.emitted_at, e.data, d.handler, d.attempt
             FROM deliveries d JOIN events e ON e.id = d.event_id
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
        let delivery = StoredDelivery {
            handler: row.get(5).map_err(crate::store::error)?,
            attempt: u32::try_from(row.get::<_, i64>(6).map_err(crate::store::error)?).unwrap_or(1),
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
             FROM dead_letters l JOIN events e ON e.id = l.event_id
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
