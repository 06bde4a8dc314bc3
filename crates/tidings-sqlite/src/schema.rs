//! The file's tables, their migration, and how values are stored (times,
//! ids, begin marks).

use rusqlite::Connection;
use std::time::{Duration, SystemTime};
use tidings::store::Begun;
use tidings::StoreError;
use uuid::Uuid;

/// The schema version this crate writes (`PRAGMA user_version`): 2 added
/// `deliveries.begun`.
pub(crate) const VERSION: i64 = 2;

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

pub(crate) fn from_nanos(n: i64) -> SystemTime {
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

pub(crate) fn uuid(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}
