//! [`PgStore`]: connecting, the bus-name lock, and the [`Store`] methods the bus calls.

use crate::writer::{self, Op};
use futures_util::future::BoxFuture;
use sqlx::{Connection, PgConnection};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tidings::store::{Change, Recovered, Store, StoredEvent};
use tidings::StoreError;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most operations written in one transaction.
const MAX_BATCH: usize = 4_096;

/// How long `connect` waits for another holder of the bus name to let go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// A bus's events in PostgreSQL. See the [crate docs](crate) for the guarantees.
///
/// Dropping it (with the bus that holds it) lets its writer finish what it
/// was handed, then releases the bus name.
pub struct PgStore {
    ops: mpsc::UnboundedSender<Op>,
    recovered: Mutex<Option<Recovered>>,
}

impl PgStore {
    /// Connects, takes the bus name (one live store per name), creates the
    /// tables if missing, reads what the name's last bus left pending, and
    /// starts the writer task on the current Tokio runtime.
    ///
    /// The bus name follows the rules of event type names (1 to 128
    /// characters of `A-Za-z0-9_.:-`).
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name;
    /// [`StoreError::Locked`] if another store holds the name for more than
    /// two seconds; [`StoreError::Backend`] if the server is unreachable or
    /// refuses.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = tidings_postgres::PgStore::connect("postgres://127.0.0.1/x", "no spaces").await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn connect(url: &str, bus: &str) -> Result<Self, StoreError> {
        if !tidings::is_valid_event_type(bus) {
            return Err(StoreError::InvalidConfig(format!(
                "bus name {:?}: expected 1 to 128 characters of A-Za-z0-9_.:-",
                bus.chars().take(64).collect::<String>()
            )));
        }
        let mut lock = PgConnection::connect(url).await.map_err(error)?;
        hold(&mut lock, bus).await?;
        let mut conn = PgConnection::connect(url).await.map_err(error)?;
        crate::schema::migrate(&mut conn).await?;
        let recovered = crate::schema::recover(&mut conn, bus).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer::run(conn, bus.to_owned(), rx, MAX_BATCH));
        // The name is released only once the writer has written everything:
        // the next store of this name then recovers an up-to-date state.
        tokio::spawn(async move {
            let _ = writer.await;
            let _ = lock.close().await;
        });
        Ok(Self {
            ops: tx,
            recovered: Mutex::new(Some(recovered)),
        })
    }

    fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Op,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (done, answer) = oneshot::channel();
        let sent = self.ops.send(make(done)).map_err(|_| StoreError::Closed);
        Box::pin(async move {
            sent?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }
}

/// Takes the session advisory lock of `bus`, waiting up to [`LOCK_WAIT`].
async fn hold(lock: &mut PgConnection, bus: &str) -> Result<(), StoreError> {
    let until = Instant::now() + LOCK_WAIT;
    loop {
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('tidings-bus:' || $1, 0))",
        )
        .bind(bus)
        .fetch_one(&mut *lock)
        .await
        .map_err(error)?;
        if got {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(StoreError::Locked(format!(
                "bus {bus} is held by another store"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Store for PgStore {
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|done| Op::Append(event, done))
    }

    fn update(&self, event_id: Uuid, handler: &str, change: Change) {
        if self
            .ops
            .send(Op::Update(event_id, handler.into(), change))
            .is_err()
        {
            tracing::warn!(handler, %event_id, "the store is closed: this delivery's outcome is not recorded and it will be made again");
        }
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        Ok(self
            .recovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default())
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Op::Flush)
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// A database error as a store error.
pub(crate) fn error(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}
