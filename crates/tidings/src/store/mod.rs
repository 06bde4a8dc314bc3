//! [`Store`]: where a durable bus keeps each event until every handler is done with it.
//!
//! Without a store (the default) the bus lives in memory: at most once across
//! a crash. With one ([`crate::EventBusBuilder::store`]), the bus is at least
//! once:
//!
//! - **Emit.** `emit(..).await` returns only after the store has written the
//!   event with one pending delivery per handler ([`Store::append`]). An `Ok`
//!   receipt is therefore a promise: the event will reach every handler, in
//!   this process or, after a crash, in the next one to open the store.
//!   `try_emit` cannot wait for the write and fails with
//!   [`crate::EmitError::MustAwait`].
//! - **Handled.** Each delivery's end is recorded with [`Store::update`]:
//!   handled (the delivery is deleted), waiting to retry (its attempt count
//!   goes up, so a crash does not reset it), dead-lettered (kept as a dead
//!   letter), or replayed. These writes are not awaited by the handler: if the
//!   process dies first, the delivery is made again. Handlers must therefore be
//!   idempotent on [`crate::Envelope::id`], as for any retry.
//! - **Start.** [`crate::EventBusBuilder::build`] asks the store for what is
//!   still pending ([`Store::recover`]) and queues it, oldest first, before any
//!   new event, each delivery at the attempt it had reached. Those events take
//!   places in the bus like any other (the bus may start over its capacity if
//!   more were pending than it holds; emits wait until it is back under).
//! - **Shutdown.** Deliveries abandoned at the deadline stay pending in the
//!   store, to be made when the bus next starts; `shutdown` also waits for the
//!   store to write the updates it was handed ([`Store::flush`]).
//! - **A delivery that kills the process.** A handler that aborts the process
//!   (an `abort`, an out-of-memory kill, a segfault in a C library) cannot
//!   report its failure, so its delivery would come back at the same attempt
//!   after every restart, for ever. The store therefore says, of each
//!   delivery it hands back, whether an earlier process may have begun it
//!   ([`Begun`]). Before each attempt of such a delivery the bus has the
//!   store mark the attempt begun ([`Store::begin`]) and waits for the write;
//!   a delivery the store hands back with its attempt marked begun and never
//!   ended ([`Begun::Interrupted`]) is counted as a failed attempt: retried at
//!   the next attempt, or dead-lettered once its handler's attempts are spent.
//!   The first crash costs nothing (fresh deliveries are never marked, so the
//!   hot path writes nothing more); a delivery that keeps killing the process
//!   is dead-lettered after at most `attempts + 1` crashes. An attempt a
//!   shutdown abandons at its deadline is not counted ([`Change::Abandoned`]).
//!
//! - **Written by others.** A store may hold events the bus did not write
//!   (the transactional outbox: `tidings_postgres::Outbox` writes them in the
//!   application's own transactions, built by
//!   [`EventBus::outbox_event`](crate::EventBus::outbox_event)). For such a
//!   store ([`Delivery::Relayed`]) the bus runs a relay task: when the store
//!   says something changed, and every second, it claims committed events
//!   ([`Store::claim`]), waits for a place for each (never over capacity) and
//!   queues it as a recovered event. The relay stops at shutdown or when the
//!   bus is dropped.
//!
//! - **Shared by processes.** A store may hand deliveries to whichever
//!   process of the bus claims them first ([`Delivery::Shared`]: NATS
//!   JetStream, a durable consumer per handler; PostgreSQL's `connect_shared`,
//!   handlers registered per bus name). The bus then only appends at
//!   emit (no local handler needed, no place held); every delivery, its own
//!   included, comes back through the relay; `wait_idle` also asks the store
//!   what is still outstanding anywhere ([`Store::outstanding`]); and the
//!   bus tells the store its handlers at `build()` ([`Store::bind`]).
//!
//! Other stores serve one bus at a time. Deliveries are stored by handler name, so
//! renaming a handler leaves its pending deliveries behind (logged at start).

mod health;
mod registration;

pub use health::{Health, StoreHealth};

/// Operating a networked backend's bus names from outside a running bus (the
/// CLI's `inspect`, `purge` and `prune`): each backend gives one, made from
/// its server's URL (`tidings_postgres::PgAdmin`,
/// `tidings_nats::JetStreamAdmin`). Every method takes the bus name, checks
/// it before it reaches the server, and never reads a payload.
///
/// ```
/// fn names(_: &dyn tidings::store::Admin) {} // object safe: one registry holds any backend
/// ```
pub trait Admin: Send + Sync {
    /// Pending deliveries and dead letters by type and handler (a snapshot;
    /// safe while the bus runs).
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn summarize<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<Summary, StoreError>>;
    /// Deletes everything the bus name holds (no process may be using it).
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn purge<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The handlers registered on a shared bus name, with when a process
    /// last had each.
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn registrations<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Registration>, StoreError>>;
    /// Removes the handlers no process has had for `unused_for`, their
    /// waiting deliveries kept as dead letters first.
    ///
    /// # Errors
    /// An invalid name or too short a time, or the server unreachable.
    fn prune<'a>(
        &'a self,
        bus: &'a str,
        unused_for: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<Pruned>, StoreError>>;
}

/// How a store's deliveries reach the bus's handlers: the store's delivery
/// mode ([`Store::delivery`]), one of three, so that no invalid mix exists.
///
/// ```
/// use tidings::store::Delivery;
/// assert_eq!(Delivery::default(), Delivery::Local);
/// assert!(Delivery::Shared.relayed() && Delivery::Shared.shared());
/// assert!(Delivery::Relayed.relayed() && !Delivery::Relayed.shared());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The bus queues the deliveries of the events it appends, and only
    /// those (SQLite; PostgreSQL `connect` when nothing else writes).
    #[default]
    Local,
    /// As `Local`, and others write events for this bus too (the
    /// transactional outbox): the bus runs a relay that calls
    /// [`Store::claim`] whenever [`Store::changed`] resolves, and at least
    /// every second, and queues what it claims.
    Relayed,
    /// Deliveries are shared by the bus's processes, each to whichever
    /// claims it first (NATS JetStream; PostgreSQL `connect_shared`). The bus
    /// tells the store its handlers first ([`Store::bind`], before
    /// [`Store::recover`] and any append); an emit only appends (no local
    /// handler needed, no place held); every delivery, its own included,
    /// comes back through the relay; and [`crate::EventBus::wait_idle`] also
    /// waits until [`Store::outstanding`] is zero.
    Shared,
}

impl Delivery {
    /// Whether the bus runs a relay (claims from the store).
    pub fn relayed(self) -> bool {
        !matches!(self, Self::Local)
    }

    /// Whether deliveries are shared by the bus's processes.
    pub fn shared(self) -> bool {
        matches!(self, Self::Shared)
    }
}
pub use registration::{Pruned, Registration};

use futures_util::future::BoxFuture;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Durable storage for a bus's events, their pending deliveries and dead letters.
///
/// Methods are called from any thread and must not block: `update` only hands
/// the change over; the writes happen elsewhere (the SQLite store has a writer
/// thread that commits in batches).
///
/// ```
/// use tidings::store::{Change, Recovered, Store, StoreError, StoredEvent};
/// use futures_util::future::BoxFuture;
/// use std::sync::Mutex;
///
/// /// Keeps nothing: a store that only logs, to show the shape.
/// #[derive(Default)]
/// struct Forgetful(Mutex<Vec<String>>);
///
/// impl Store for Forgetful {
///     fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
///         self.0.lock().unwrap().push(format!("append {}", event.event_type));
///         Box::pin(async { Ok(()) })
///     }
///     fn update(&self, _event_id: uuid::Uuid, handler: &str, change: Change) {
///         self.0.lock().unwrap().push(format!("{handler}: {change:?}"));
///     }
///     fn recover(&self) -> Result<Recovered, StoreError> {
///         Ok(Recovered::default())
///     }
///     fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// ```
pub trait Store: Send + Sync + 'static {
    /// Writes one event with a pending delivery for each of
    /// [`StoredEvent::deliveries`]. Resolves once the write is durable; the bus
    /// queues the event only then.
    ///
    /// # Errors
    /// The write failed or the store is closed; the event is not queued and
    /// the emit fails with [`crate::EmitError::Store`].
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Records what became of one delivery. Must not block or fail: a change
    /// that is lost (the process died before it was written) means the
    /// delivery is made again, which at-least-once allows.
    fn update(&self, event_id: Uuid, handler: &str, change: Change);

    /// What is still pending, oldest event first, and the dead letters kept.
    /// Called once, by `build()`.
    ///
    /// # Errors
    /// The store could not be read; `build()` fails with
    /// [`crate::BuildError::Store`].
    fn recover(&self) -> Result<Recovered, StoreError>;

    /// Resolves once every change handed to [`update`](Self::update) so far is written.
    ///
    /// # Errors
    /// The store failed or is closed.
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>>;

    /// How this store's deliveries reach the bus's handlers ([`Delivery`]):
    /// queued by the bus that appended them (the default), also claimed
    /// from events others write (the outbox), or shared by the bus's
    /// processes. The bus asks once, at `build()`.
    fn delivery(&self) -> Delivery {
        Delivery::Local
    }

    /// Up to `limit` committed events with deliveries this bus has not
    /// queued yet, oldest first, each marked as queued (so that no later
    /// claim returns it again; recovery at start returns it again if it is
    /// still pending then). Default: none.
    ///
    /// # Errors
    /// The store could not be read; the relay tries again later.
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        let _ = limit;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Resolves when [`claim`](Self::claim) may find something new (a
    /// notification from the database, say). Default: never.
    fn changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// The handlers of the bus being built, told once by `build()` before
    /// [`recover`](Self::recover) and before any append (a shared-delivery
    /// store subscribes each one). Default: ignored.
    fn bind(&self, handlers: &[BoundHandler]) {
        let _ = handlers;
    }

    /// Deliveries of this bus's handlers not yet done anywhere (not yet
    /// claimed, or claimed and not yet handled or dead-lettered). Asked by
    /// `wait_idle` of a [`Delivery::Shared`] store only.
    /// Default: zero.
    ///
    /// # Errors
    /// The store could not be asked; `wait_idle` asks again.
    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    /// Marks attempt `attempt` of a delivery as begun; resolves once the
    /// mark is durable. The bus calls it, and waits for it, before each
    /// attempt of a delivery the store handed back as [`Begun::Maybe`] or
    /// [`Begun::Interrupted`], never for a fresh one. Until the attempt ends
    /// ([`Store::update`]: handled, retrying, dead-lettered or abandoned), a
    /// recovery or claim of the delivery reports it
    /// [`Begun::Interrupted`]. Default: nothing is written (a store that
    /// never hands back a delivery as begun).
    ///
    /// # Errors
    /// The mark could not be written. The bus runs the attempt anyway (the
    /// event is not lost) and warns: if this attempt kills the process, it
    /// is not counted.
    fn begin(
        &self,
        event_id: Uuid,
        handler: &str,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let _ = (event_id, handler, attempt);
        Box::pin(async { Ok(()) })
    }

    /// Whether the store reaches its server, since when, how many times it
    /// connected again, and how many stale settles it refused: shown in
    /// [`crate::BusStats::store`]. Default: `None` (no server: memory, a
    /// file).
    fn health(&self) -> Option<StoreHealth> {
        None
    }
}

/// What a store knows of earlier work on a delivery it hands back (see
/// [`Store::begin`] and the [module docs](self)).
///
/// ```
/// use tidings::store::Begun;
/// assert_eq!(Begun::default(), Begun::Never);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Begun {
    /// No process has begun it: a new event, or one the application wrote
    /// (the outbox). Runs at once.
    #[default]
    Never,
    /// A process that stopped may have begun it (it was pending when the
    /// process stopped, or the broker delivered it before). Each attempt is
    /// marked begun ([`Store::begin`]) before it runs.
    Maybe,
    /// Its current attempt was marked begun and never ended: the process
    /// that made it stopped in the middle (a crash, a kill). The bus counts
    /// the attempt as failed before going on.
    Interrupted,
}

/// A handler of the bus, as [`Store::bind`] is told of it.
///
/// ```
/// let h = tidings::store::BoundHandler { name: "notify".into(), event_type: "order_created".into() };
/// assert_eq!(h.event_type, "order_created");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundHandler {
    /// The handler's name.
    pub name: String,
    /// The event type it handles.
    pub event_type: String,
}

/// An event as a store keeps it.
///
/// ```
/// let e = tidings::store::StoredEvent {
///     id: uuid::Uuid::now_v7(),
///     event_type: "order_created".into(),
///     key: None,
///     emitted_at: std::time::SystemTime::now(),
///     data: r#"{"order_id":1}"#.into(),
///     deliveries: vec![tidings::store::StoredDelivery::new("notify", 1)],
/// };
/// assert_eq!(e.deliveries.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's id (UUIDv7).
    pub id: Uuid,
    /// Its type, already validated.
    pub event_type: String,
    /// Its ordering key.
    pub key: Option<String>,
    /// When it was emitted.
    pub emitted_at: SystemTime,
    /// Its data as JSON text, `_event_type` and `_emitted_at` included.
    pub data: String,
    /// Its pending deliveries: all of its handlers at append, those not yet
    /// done at recovery.
    pub deliveries: Vec<StoredDelivery>,
}

/// One pending delivery: a handler, the attempt it makes next (from 1),
/// and whether an earlier process may have begun it.
///
/// ```
/// use tidings::store::{Begun, StoredDelivery};
/// let d = StoredDelivery::new("notify", 1);
/// assert_eq!((d.attempt, d.begun), (1, Begun::Never));
/// let resumed = StoredDelivery { begun: Begun::Interrupted, ..d };
/// assert_eq!(resumed.handler, "notify");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDelivery {
    /// The handler's name.
    pub handler: String,
    /// The attempt it makes next, from 1.
    pub attempt: u32,
    /// What the store knows of earlier work on it: always
    /// [`Begun::Never`] at append.
    pub begun: Begun,
}

impl StoredDelivery {
    /// A delivery to `handler` at `attempt` that no process has begun.
    ///
    /// ```
    /// let d = tidings::store::StoredDelivery::new("notify", 2);
    /// assert_eq!(d.attempt, 2);
    /// ```
    pub fn new(handler: impl Into<String>, attempt: u32) -> Self {
        Self {
            handler: handler.into(),
            attempt,
            begun: Begun::Never,
        }
    }
}

/// A dead letter as a store keeps it.
///
/// ```
/// # let event = tidings::store::StoredEvent { id: uuid::Uuid::now_v7(), event_type: "t".into(),
/// #     key: None, emitted_at: std::time::SystemTime::now(), data: "{}".into(), deliveries: vec![] };
/// let d = tidings::store::StoredDeadLetter {
///     event,
///     handler: "notify".into(),
///     attempts: 3,
///     error: "smtp down".into(),
///     failed_at: std::time::SystemTime::now(),
/// };
/// assert_eq!(d.attempts, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// The event (its `deliveries` are not used).
    pub event: StoredEvent,
    /// The handler that gave up.
    pub handler: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the bus gave up.
    pub failed_at: SystemTime,
}

/// What a store held when the bus started.
///
/// ```
/// let r = tidings::store::Recovered::default();
/// assert!(r.events.is_empty() && r.dead_letters.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Events with pending deliveries, oldest first.
    pub events: Vec<StoredEvent>,
    /// Dead letters, oldest first.
    pub dead_letters: Vec<StoredDeadLetter>,
}

/// What a store holds, for operators: pending deliveries and dead letters,
/// counted by event type and handler. Never the payloads.
///
/// ```
/// let s = tidings::store::Summary::default();
/// assert!(s.pending.is_empty() && s.dead_letters.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pending deliveries, by event type and handler.
    pub pending: Vec<Count>,
    /// Dead letters, by event type and handler.
    pub dead_letters: Vec<Count>,
}

/// How many rows of one event type for one handler, and when the oldest was emitted.
///
/// ```
/// let c = tidings::store::Count {
///     event_type: "order_created".into(),
///     handler: "notify".into(),
///     count: 3,
///     oldest: std::time::SystemTime::UNIX_EPOCH,
/// };
/// assert_eq!(c.count, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// The event type.
    pub event_type: String,
    /// The handler.
    pub handler: String,
    /// How many.
    pub count: u64,
    /// When the oldest of them was emitted.
    pub oldest: SystemTime,
}

/// What became of one delivery, for [`Store::update`].
///
/// ```
/// let c = tidings::store::Change::Retrying { attempt: 2 };
/// assert_eq!(format!("{c:?}"), "Retrying { attempt: 2 }");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The handler succeeded: the delivery is done.
    Handled,
    /// An attempt failed; `attempt` is the next one.
    Retrying {
        /// The attempt made next, from 2.
        attempt: u32,
    },
    /// The bus gave up: keep it as a dead letter.
    DeadLettered {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// A dead letter was replayed: pending again, from attempt 1.
    Replayed,
    /// A dead letter was discarded ([`crate::EventBus::discard`]): deleted
    /// for good, with the event if nothing else refers to it.
    Discarded,
    /// A shutdown abandoned the attempt at its deadline: the delivery stays
    /// pending at that attempt, and its begin mark ([`Store::begin`]), if
    /// any, is cleared, since the process did not die of it.
    Abandoned {
        /// The attempt that was cut short.
        attempt: u32,
    },
}

/// Why a store failed.
///
/// ```
/// let e = tidings::store::StoreError::Closed;
/// assert_eq!(e.to_string(), "the store is closed");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is closed (its writer stopped).
    #[error("the store is closed")]
    Closed,
    /// Another process holds the store.
    #[error("the store is in use by another process: {0}")]
    Locked(String),
    /// The store was given a setting it cannot use (an invalid name, say).
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The store's data does not have the shape this version expects.
    #[error("the store holds data this version cannot read: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, disk full, a broken connection).
    #[error("store failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store has reached a configured limit (the NATS stream's
    /// `max_bytes`): the event was refused, nothing stored was dropped.
    /// Emits succeed again once handlers catch up.
    #[error("the store is full: {0}")]
    Full(String),
    /// The store's server could not be reached for `waited` (the store
    /// keeps connecting again in the background). An emit that gets this
    /// was not acknowledged: try it again later.
    #[error("the store's server is unreachable (waited {waited:?})")]
    Unavailable {
        /// How long the operation waited for the server.
        waited: Duration,
    },
}
