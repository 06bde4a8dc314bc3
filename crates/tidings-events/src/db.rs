//! [`Db`]: where the built-in handlers write, SQLite (the default) or PostgreSQL.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;

/// A database pool for the built-in events: SQLite or PostgreSQL, same handlers.
///
/// Queries are written once, PostgreSQL-style (`$1`), and run unchanged on
/// PostgreSQL and as `?1` on SQLite. Migrations are embedded.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidings_events::DbError> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub enum Db {
    /// An embedded SQLite file (or memory).
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// A storage failure. Retryable from a handler's point of view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// assert_eq!(store.kind(), "sqlite");
/// let err = tidings_events::Db::connect("mysql://x").await.unwrap_err();
/// assert!(matches!(err, tidings_events::DbError::UnsupportedUrl));
/// # Ok(()) }
/// ```
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL scheme (expected sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The database said no.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrating the schema failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl Db {
    /// Connects to `sqlite:path` (created if missing; WAL; `synchronous=NORMAL`
    /// unless the URL says `?synchronous=full` or `off`) or `postgres://...`.
    /// The URL is never logged: it may hold a password.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// assert_eq!(store.kind(), "sqlite");
    /// let err = tidings_events::Db::connect("mysql://x").await.unwrap_err();
    /// assert!(matches!(err, tidings_events::DbError::UnsupportedUrl));
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            let (url, synchronous) = split_synchronous(url);
            let options = SqliteConnectOptions::from_str(&url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(std::time::Duration::from_secs(5));
            // Each connection to `:memory:` would be a database of its own.
            let connections = if url.contains(":memory:") { 1 } else { 8 };
            let pool = SqlitePoolOptions::new()
                .max_connections(connections)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Db::Postgres(
                PgPoolOptions::new().max_connections(8).connect(url).await?,
            ))
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }

    /// Creates the tables of the built-in events, if missing (migrations 1 to 999
    /// are ours; migrations this crate does not know are left alone).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// assert_eq!(store.kind(), "sqlite");
    /// let err = tidings_events::Db::connect("mysql://x").await.unwrap_err();
    /// assert!(matches!(err, tidings_events::DbError::UnsupportedUrl));
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            // Applications keep their own migrations in the same table (versions
            // from 1000 up, say): ours ignore theirs.
            Db::Sqlite(pool) => {
                sqlx::migrate!("./migrations/sqlite")
                    .set_ignore_missing(true)
                    .run(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::migrate!("./migrations/postgres")
                    .set_ignore_missing(true)
                    .run(pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Which database this is, for logs and stats.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// assert_eq!(store.kind(), "sqlite");
    /// let err = tidings_events::Db::connect("mysql://x").await.unwrap_err();
    /// assert!(matches!(err, tidings_events::DbError::UnsupportedUrl));
    /// # Ok(()) }
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// Takes our `synchronous=` parameter out of a SQLite URL (sqlx does not read it).
fn split_synchronous(url: &str) -> (String, SqliteSynchronous) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), SqliteSynchronous::Normal);
    };
    let mut sync = SqliteSynchronous::Normal;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some(("synchronous", v)) => {
                sync = match v.to_ascii_lowercase().as_str() {
                    "full" => SqliteSynchronous::Full,
                    "extra" => SqliteSynchronous::Extra,
                    "off" => SqliteSynchronous::Off,
                    _ => SqliteSynchronous::Normal,
                };
                false
            }
            _ => true,
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), sync)
    } else {
        (format!("{base}?{}", rest.join("&")), sync)
    }
}

/// `$1` placeholders as SQLite's numbered `?1`. Our statements hold no `$` in literals.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs one statement with the same binds on either database.
macro_rules! execute {
    ($store:expr, $sql:expr $(, $bind:expr)* $(,)?) => {{
        match $store {
            $crate::db::Db::Sqlite(pool) => {
                let sql = $crate::db::sqlite_sql($sql);
                sqlx::query(&sql)$(.bind($bind))*.execute(pool).await.map(|r| r.rows_affected())
            }
            $crate::db::Db::Postgres(pool) => {
                sqlx::query($sql)$(.bind($bind))*.execute(pool).await.map(|r| r.rows_affected())
            }
        }
    }};
}
pub(crate) use execute;

/// Runs one query with the same binds on either database and reads every row
/// into the `FromRow` type the caller names.
macro_rules! fetch_all {
    ($store:expr, $sql:expr $(, $bind:expr)* $(,)?) => {{
        match $store {
            $crate::db::Db::Sqlite(pool) => {
                let sql = $crate::db::sqlite_sql($sql);
                sqlx::query_as(&sql)$(.bind($bind))*.fetch_all(pool).await
            }
            $crate::db::Db::Postgres(pool) => sqlx::query_as($sql)$(.bind($bind))*.fetch_all(pool).await,
        }
    }};
}
pub(crate) use fetch_all;

#[cfg(test)]
mod tests {
    #[test]
    fn synchronous_is_read_from_the_url() {
        use sqlx::sqlite::SqliteSynchronous::*;
        let (u, s) = super::split_synchronous("sqlite:a.db?synchronous=full&mode=rwc");
        assert_eq!(
            (u.as_str(), format!("{s:?}")),
            ("sqlite:a.db?mode=rwc", format!("{Full:?}"))
        );
        let (u, s) = super::split_synchronous("sqlite:a.db");
        assert_eq!(
            (u.as_str(), format!("{s:?}")),
            ("sqlite:a.db", format!("{Normal:?}"))
        );
    }

    #[test]
    fn placeholders_translate() {
        assert_eq!(super::sqlite_sql("SELECT $1, $12"), "SELECT ?1, ?12");
    }
}
