//! [`SqliteStore`]: opening the file, and the [`Store`] methods the bus calls.

use crate::writer::{self, Op};
use futures_util::future::BoxFuture;
use rusqlite::{Connection, ErrorCode};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::thread::JoinHandle;
use tidings::store::{request, Change, DeliveryRef, Recovered, Reply, Store, StoredEvent};
use tidings::StoreError;

/// A bus's events in one SQLite file. See the [crate docs](crate) for the guarantees.
///
/// Dropping it (with the bus that holds it) lets its writer finish what it
/// was handed, closes the file and releases its lock.
///
/// ```
/// # fn main() -> Result<(), tidings::StoreError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = tidings_sqlite::SqliteStore::open(dir.path().join("bus.db"))?;
/// drop(store);
/// // The lock is released: the file opens again.
/// let again = tidings_sqlite::SqliteStore::open(dir.path().join("bus.db"));
/// assert!(again.is_ok());
/// # Ok(()) }
/// ```
pub struct SqliteStore {
    ops: Mutex<Option<Sender<Op>>>,
    writer: Option<JoinHandle<()>>,
    recovered: Mutex<Option<Recovered>>,
}

/// How long `open` waits for another holder of the file to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How the file is opened.
///
/// ```
/// let opts = tidings_sqlite::Options::default().power_safe(true).max_batch(512);
/// # let dir = tempfile::tempdir().unwrap();
/// assert!(tidings_sqlite::SqliteStore::open_with(dir.path().join("bus.db"), opts).is_ok());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Fsync every commit (`synchronous=FULL`) so that commits survive a
    /// power cut, not only a crash of the process. Default `false`.
    pub power_safe: bool,
    /// The most operations written in one transaction. Default 4 096.
    pub max_batch: usize,
    /// How long the writer keeps looking for work after a commit before it
    /// sleeps. Waking a sleeping thread costs tens of microseconds on a VM,
    /// more than a commit: lingering 50 µs (the default) cut a lone emitter's
    /// median emit from 72 µs to 23 µs here, at the cost of up to 50 µs of
    /// one busy core after each commit. `Duration::ZERO` never spins.
    pub linger: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            power_safe: false,
            max_batch: 4_096,
            linger: std::time::Duration::from_micros(50),
        }
    }
}

impl Options {
    /// Sets [`Options::power_safe`].
    ///
    /// ```
    /// assert!(tidings_sqlite::Options::default().power_safe(true).power_safe);
    /// ```
    #[must_use]
    pub fn power_safe(mut self, on: bool) -> Self {
        self.power_safe = on;
        self
    }

    /// Sets [`Options::linger`].
    ///
    /// ```
    /// let o = tidings_sqlite::Options::default().linger(std::time::Duration::ZERO);
    /// assert!(o.linger.is_zero());
    /// ```
    #[must_use]
    pub fn linger(mut self, linger: std::time::Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`Options::max_batch`] (at least 1).
    ///
    /// ```
    /// assert_eq!(tidings_sqlite::Options::default().max_batch(0).max_batch, 1);
    /// ```
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

impl SqliteStore {
    /// Opens (or creates) the file with the default [`Options`], reads what
    /// is pending in it, and starts its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process (or store) still has it
    /// open after a second;
    /// [`StoreError::Corrupt`] if it was written by a newer version;
    /// [`StoreError::Backend`] for I/O errors and files that are not SQLite.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("not.db"), b"hello, not a database").unwrap();
    /// let err = tidings_sqlite::SqliteStore::open(dir.path().join("not.db")).err().unwrap();
    /// assert!(matches!(err, tidings::StoreError::Backend(_)));
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Options::default())
    }

    /// Opens the file with the given [`Options`]. See [`SqliteStore::open`].
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let opts = tidings_sqlite::Options::default().power_safe(true);
    /// let store = tidings_sqlite::SqliteStore::open_with(dir.path().join("bus.db"), opts);
    /// assert!(store.is_ok());
    /// ```
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self, StoreError> {
        let conn = Connection::open(path.as_ref()).map_err(error)?;
        // A process that is just exiting may still hold the file for a moment.
        conn.busy_timeout(LOCK_WAIT).map_err(error)?;
        // Exclusive first, so that WAL mode never needs the shared-memory file
        // and a second process is refused rather than interleaved.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(error)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(
                format!("the file could not be put in WAL mode (it is in {mode} mode)").into(),
            ));
        }
        let sync = if options.power_safe { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(error)?;
        crate::schema::migrate(&conn)?;
        let recovered = crate::recover::recover(&conn)?;
        let index = crate::recover::index(&conn)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let linger = options.linger;
        let writer = std::thread::Builder::new()
            .name("tidings-sqlite".into())
            .spawn(move || writer::run(conn, index, &rx, max_batch, linger))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            ops: Mutex::new(Some(tx)),
            writer: Some(writer),
            recovered: Mutex::new(Some(recovered)),
        })
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ops.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    fn request(
        &self,
        make: impl FnOnce(Reply<()>) -> Op,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        request(|op| self.send(op).is_ok(), make)
    }
}

impl Store for SqliteStore {
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|done| Op::Append(event, done))
    }

    fn settle(&self, delivery: DeliveryRef<'_>, change: Change) {
        let DeliveryRef {
            event_id, handler, ..
        } = delivery;
        if self
            .send(Op::Update(event_id, handler.into(), change))
            .is_err()
        {
            tracing::warn!(handler, %event_id, "the store is closed: this delivery's outcome is not recorded and it will be made again");
        }
    }

    fn recover(
        &self,
        _: &[tidings::store::BoundHandler],
        _: tidings::store::Answers,
    ) -> Result<Recovered, StoreError> {
        Ok(self
            .recovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default())
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Op::Flush)
    }

    fn begin(
        &self,
        delivery: DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|done| Op::Begin(delivery.event_id, delivery.handler.into(), attempt, done))
    }
}

impl Drop for SqliteStore {
    /// Waits for the writer to write what it was handed and close the file
    /// (so that the file can be opened again at once).
    fn drop(&mut self) {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// A SQLite error as a store error: a busy or locked file is [`StoreError::Locked`].
pub(crate) fn error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Locked(e.to_string())
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}
