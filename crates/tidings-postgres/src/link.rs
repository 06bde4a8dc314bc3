//! [`Link`]: one connection to the server that comes back after it breaks.
//!
//! A store holds a few connections (the writer's, which also holds the bus
//! name's lock; the claimer's; a shared instance's lease), each owned by
//! one task. When an operation fails because the connection broke (a
//! server restart or failover, `pg_terminate_backend`, a network fault),
//! the task drops the connection ([`broke`]) and the next
//! [`Link::get`] connects again, after a backoff that grows from 50 ms to
//! 2 s. [`Health`] records the loss and the return, for `bus.stats()`.

use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::Duration;
use tidings::store::Health;
use tokio::time::Instant;

/// The shortest and longest waits between two attempts to connect.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// What a fresh connection must do before it is used (take a lock, say);
/// an `Err` closes it, and the next [`Link::get`] tries again later.
pub(crate) type Setup = for<'c> fn(
    &'c mut PgConnection,
    &'c str,
) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>>;

pub(crate) struct Link {
    url: String,
    bus: String,
    conn: Option<PgConnection>,
    setup: Option<Setup>,
    health: Arc<Health>,
    /// The wait before the next attempt to connect (zero: none failed).
    backoff: Duration,
    /// When the next attempt to connect may be made.
    retry_at: Option<Instant>,
}

impl Link {
    /// A link that starts with `conn`, made (and set up) by the caller.
    pub(crate) fn new(
        url: &str,
        bus: &str,
        conn: Option<PgConnection>,
        setup: Option<Setup>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            url: url.to_owned(),
            bus: bus.to_owned(),
            conn,
            setup,
            health,
            backoff: Duration::ZERO,
            retry_at: None,
        }
    }

    /// The connection, connecting (and setting up) again if it broke. Waits
    /// the backoff first if the last attempt failed.
    ///
    /// # Errors
    /// The server is still unreachable (or the setup refused): try again.
    pub(crate) async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if let Some(at) = self.retry_at.filter(|_| self.conn.is_none()) {
            tokio::time::sleep_until(at).await;
        }
        self.try_get().await
    }

    /// As [`get`](Self::get), but fails at once (with a connection error)
    /// if the backoff has not run out: see [`retry_at`](Self::retry_at).
    pub(crate) async fn try_get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(sqlx::Error::PoolTimedOut);
            }
            match self.open().await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.backoff = Duration::ZERO;
                    self.retry_at = None;
                }
                Err(e) => {
                    self.backoff = (self.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.health.lost();
                    return Err(e);
                }
            }
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Whether it holds a connection (one not known to be broken).
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// When the next attempt to connect may be made (`None`: now, or it
    /// is connected).
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.conn.is_none())
    }

    async fn open(&self) -> Result<PgConnection, sqlx::Error> {
        let connecting = dial(&self.url);
        let mut conn = tokio::time::timeout(crate::writer::STALL, connecting)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))?;
        if let Some(setup) = self.setup {
            if let Err(e) = setup(&mut conn, &self.bus).await {
                let _ = conn.close().await;
                return Err(e);
            }
        }
        Ok(conn)
    }

    /// Says how an operation on the connection went: an error that broke
    /// the connection drops it (the next `get` connects again); success
    /// marks the store connected.
    pub(crate) fn outcome<T>(&mut self, result: &Result<T, sqlx::Error>) {
        match result {
            Ok(_) => self.health.connected(),
            Err(e) if broke(e) => {
                self.conn = None;
                self.health.lost();
            }
            Err(_) => self.health.connected(),
        }
    }

    /// Runs `op` on the connection (connecting again first if it broke and
    /// the backoff allows), for `limit` at most: an operation that takes
    /// longer is on a stalled connection, which is dropped. Records the
    /// outcome ([`outcome`](Self::outcome)).
    ///
    /// # Errors
    /// The server unreachable, the operation's error, or
    /// [`sqlx::Error::PoolTimedOut`] for a stall.
    pub(crate) async fn run<T>(
        &mut self,
        limit: Duration,
        op: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let result = match self.try_get().await {
            Ok(conn) => tokio::time::timeout(limit, op(conn))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut)),
            Err(e) => Err(e),
        };
        self.outcome(&result);
        result
    }

    /// Closes the connection (at the end of the task).
    pub(crate) async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Whether an error means the connection is gone (or unusable) rather than
/// that the server refused one statement: I/O and protocol errors, and the
/// SQLSTATE classes 08 (connection exception) and 57P (operator
/// intervention: `pg_terminate_backend`, a shutdown).
pub(crate) fn broke(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_) => false,
        _ => true,
    }
}

/// The settings of the bus's own connections ([`dial`]).
///
/// Statements are planned once and reused (`plan_cache_mode =
/// force_generic_plan`): left to choose, PostgreSQL planned the settle's
/// event delete and the shared claim again at every execution (0.9 ms and
/// 1.6 ms of planning against 0.1 ms of work, measured in the server's
/// log), since their arrays make a custom plan look cheaper.
///
/// No sequential scan where an index or a row address can find the rows
/// (`enable_seqscan = off`), and so no JIT (its cost threshold is passed by
/// the penalty the planner gives a sequential scan left with no other way,
/// and compiling costs more than such a statement's work). A plan kept for
/// a connection's life is made at its first execution, from the size the
/// tables have then: made while autovacuum had just truncated a queue's
/// emptied table, the settle looked up each event by scanning
/// `tidings_events`, which then grew by thousands of pages while the plan
/// was kept (the `connect` store's handled-delete ran 4 min 53 s at one
/// core, a shared settle 154 s; docs/BENCHMARKS.md, section 7, session 15;
/// `plans.rs` tests it).
pub(crate) const SESSION: [(&str, &str); 3] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("jit", "off"),
];

/// Set on each of the bus's connections after [`SESSION`]'s: while the
/// server runs one of the bus's statements, it checks every second that the
/// bus is still connected, and ends the statement if not. The store gives a
/// statement a few seconds and then drops its connection (a stalled
/// connection, [`Link::run`]); without this, the server ran such a
/// statement on to its end (minutes, in the collapse of session 15), holding
/// its locks and the vacuum horizon, and the store's retry queued behind
/// it. (Rather than a `statement_timeout`: no limit that a long statement
/// the store still waits for could hit, such as a start's recovery over
/// millions of deliveries or a purge.) PostgreSQL 14 or later on Linux,
/// macOS or a BSD; elsewhere the server refuses it and runs without.
const GONE_CHECK: &str = "SET client_connection_check_interval = 1000";

/// Opens one of the bus's own connections, with [`SESSION`]'s settings and
/// [`GONE_CHECK`]. Every query of the bus is driven by an index or a row
/// address.
pub(crate) async fn dial(url: &str) -> Result<PgConnection, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let options = options.options(SESSION);
    let mut conn = sqlx::ConnectOptions::connect(&options).await?;
    if let Err(e) = sqlx::query(GONE_CHECK).execute(&mut conn).await {
        if broke(&e) {
            return Err(e);
        }
        tracing::debug!(
            "the server cannot end a statement whose client has gone (it needs PostgreSQL 14 or later on Linux, macOS or a BSD): {e}"
        );
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_break_the_connection_and_refusals_do_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(broke(&io));
        assert!(broke(&sqlx::Error::Protocol("eof".into())));
        assert!(!broke(&sqlx::Error::RowNotFound));
    }

    /// A statement the store gave up on (its connection dropped, as
    /// [`Link::run`] drops a stalled one) ends on the server too: it does
    /// not run on, holding its locks. Against `TIDINGS_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn the_server_ends_a_statement_the_bus_gave_up_on() {
        let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
            eprintln!("TIDINGS_TEST_POSTGRES_URL is not set: not run");
            return;
        };
        let mut conn = dial(&url)
            .await
            .expect("TIDINGS_TEST_POSTGRES_URL is set but the server does not answer");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let given_up = tokio::time::timeout(
            Duration::from_millis(300),
            sqlx::query("SELECT pg_sleep(60)").execute(&mut conn),
        )
        .await;
        assert!(given_up.is_err(), "the statement is still running");
        drop(conn);
        let mut watch = PgConnection::connect(&url).await.unwrap();
        let started = Instant::now();
        loop {
            let running: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&mut watch)
                    .await
                    .unwrap();
            if !running {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the server still runs a statement whose client has gone"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
