//! [`summarize`]: what a bus file holds, for operators (never the payloads).

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tidings::store::{Count, Summary};
use tidings::StoreError;

/// Reads what the bus file at `path` holds, without changing it. The file
/// must not be in use: a running bus holds it.
///
/// # Errors
/// [`StoreError::Locked`] while a bus holds the file; [`StoreError::Backend`]
/// if it is missing or not a bus file.
///
/// ```
/// # fn main() -> Result<(), tidings::StoreError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("bus.db");
/// drop(tidings_sqlite::SqliteStore::open(&path)?);
/// let summary = tidings_sqlite::summarize(&path)?;
/// assert!(summary.pending.is_empty() && summary.dead_letters.is_empty());
/// # Ok(()) }
/// ```
pub fn summarize(path: impl AsRef<Path>) -> Result<Summary, StoreError> {
    let conn = Connection::open_with_flags(
        path.as_ref(),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(crate::store::error)?;
    // A running bus holds the file: say so at once rather than wait for it.
    conn.busy_timeout(Duration::ZERO)
        .map_err(crate::store::error)?;
    let counts = |table: &str| -> Result<Vec<Count>, StoreError> {
        let sql = format!(
            "SELECT e.event_type, t.handler, count(*), min(e.emitted_at)
             FROM {table} t JOIN events e ON e.seq = t.seq
             GROUP BY e.event_type, t.handler ORDER BY e.event_type, t.handler"
        );
        let mut stmt = conn.prepare(&sql).map_err(crate::store::error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Count {
                    event_type: r.get(0)?,
                    handler: r.get(1)?,
                    count: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    oldest: SystemTime::UNIX_EPOCH
                        + Duration::from_nanos(u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0)),
                })
            })
            .map_err(crate::store::error)?;
        rows.collect::<Result<_, _>>().map_err(crate::store::error)
    };
    Ok(Summary {
        pending: counts("deliveries")?,
        dead_letters: counts("dead_letters")?,
    })
}
