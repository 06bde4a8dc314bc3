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
//! - **Handled.** Each delivery's end is recorded with [`Store::settle`]:
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
//!   ([`Feed::claim`]), waits for a place for each (never over capacity) and
//!   queues it as a recovered event. The relay stops at shutdown or when the
//!   bus is dropped.
//!
//! - **Shared by processes.** A store may hand deliveries to whichever
//!   process of the bus claims them first ([`Delivery::Shared`]: NATS
//!   JetStream, a durable consumer per handler; PostgreSQL's `connect_shared`,
//!   handlers registered per bus name). The bus then only appends at
//!   emit (no local handler needed, no place held); every delivery, its own
//!   included, comes back through the relay; `wait_idle` also asks the store
//!   what is still outstanding anywhere ([`Feed::outstanding`]); and the
//!   bus tells the store its handlers at `build()` ([`Store::recover`]).
//!
//! Other stores serve one bus at a time. Deliveries are stored by handler name, so
//! renaming a handler leaves its pending deliveries behind (logged at start).

mod admin;
mod error;
mod feed;
mod health;
mod record;
mod registration;
mod request;
mod settle;

pub use admin::{Admin, Count, Summary};
pub use error::StoreError;
pub use feed::{Delivery, Feed};
pub use health::{Health, StoreHealth};
pub use record::{
    Begun, BoundHandler, Change, Recovered, StoredDeadLetter, StoredDelivery, StoredEvent,
};
pub use registration::{Pruned, Registration};
pub use request::{request, Reply};
pub use settle::{Answers, Claim, DeliveryRef};

use futures_util::future::BoxFuture;

/// Durable storage for a bus's events, their pending deliveries and dead letters.
///
/// Methods are called from any thread and must not block: `settle` only hands
/// the change over; the writes happen elsewhere (the SQLite store has a writer
/// thread that commits in batches).
///
/// The journal of a bus: a store whose deliveries may also be written
/// elsewhere says so with its [`Delivery`] mode, which carries the [`Feed`]
/// the bus claims them from.
///
/// **Settles carry their claim; stale ones are refused.** Each delivery a
/// store hands out may carry a [`Claim`] (a fencing token, the number of a
/// broker's message it keeps); the bus hands it back with every
/// [`settle`](Store::settle) and [`begin`](Store::begin) of that delivery
/// ([`DeliveryRef`]). On a store whose deliveries are claimed
/// ([`Delivery::Shared`]), a claim can be lost to another process (this one
/// paused past its lease, or was cut off): a settle of such a delivery must
/// then change nothing. The store checks the claim when it writes, refuses
/// what no longer belongs to this process, and answers through the
/// [`Answers`] given at [`recover`](Store::recover); the bus counts it per
/// handler. The bus never waits for that answer (a settle is fire and
/// forget on the hot path); the other owner makes the delivery again, which
/// at-least-once allows.
///
/// ```
/// use tidings::store::{
///     Answers, BoundHandler, Change, DeliveryRef, Recovered, Store, StoreError, StoredEvent,
/// };
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
///     fn settle(&self, delivery: DeliveryRef<'_>, change: Change) {
///         self.0.lock().unwrap().push(format!("{}: {change:?}", delivery.handler));
///     }
///     fn recover(&self, _: &[BoundHandler], _: Answers) -> Result<Recovered, StoreError> {
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

    /// Records what became of one delivery, named with the claim it was
    /// handed out with. Must not block or fail: a change that is lost (the
    /// process died before it was written) means the delivery is made
    /// again, which at-least-once allows. A store whose claims can be lost
    /// writes nothing for a delivery this process no longer holds, and says
    /// so with [`Answers::stale`].
    fn settle(&self, delivery: DeliveryRef<'_>, change: Change);

    /// What is still pending, oldest event first, and the dead letters
    /// kept. Called once, by `build()`, with the handlers of the bus being
    /// built, before the bus appends anything: a store that shares
    /// deliveries ([`Delivery::Shared`]) subscribes each one here; a store
    /// that does not may ignore them. `answers` is where the store reports
    /// the settles it refuses, for as long as it lives.
    ///
    /// Reading takes no I/O here: `build()` stays synchronous (a bus is
    /// built the way the seed builds its process-wide bus, in one plain
    /// call), so a store that needs its server does its I/O in its own
    /// async constructor (`PgStore::connect(..).await`,
    /// `JetStreamStore::connect(..).await`) and hands what it read over
    /// here. A store whose pending deliveries change after it connected
    /// (shared ones) hands them out through its [`Feed`] instead.
    ///
    /// # Errors
    /// The store could not be read; `build()` fails with
    /// [`crate::BuildError::Store`].
    fn recover(&self, handlers: &[BoundHandler], answers: Answers)
        -> Result<Recovered, StoreError>;

    /// Resolves once every change handed to [`settle`](Self::settle) so far is written.
    ///
    /// # Errors
    /// The store failed or is closed.
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>>;

    /// How this store's deliveries reach the bus's handlers ([`Delivery`]):
    /// queued by the bus that appended them (the default), also claimed
    /// from a [`Feed`] of events others write (the outbox), or shared by the
    /// bus's processes through a feed. The bus asks once, at `build()`,
    /// after [`recover`](Self::recover).
    fn delivery(&self) -> Delivery {
        Delivery::Local
    }

    /// Marks attempt `attempt` of a delivery as begun; resolves once the
    /// mark is durable. The bus calls it, and waits for it, before each
    /// attempt of a delivery the store handed back as [`Begun::Maybe`] or
    /// [`Begun::Interrupted`], never for a fresh one. Until the attempt ends
    /// ([`Store::settle`]: handled, retrying, dead-lettered or abandoned), a
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
        delivery: DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let _ = (delivery, attempt);
        Box::pin(async { Ok(()) })
    }

    /// Whether this process may start an attempt of `delivery` (the bus
    /// asks before each attempt of a claimed delivery, never for one it
    /// queued itself). A store whose
    /// deliveries can move to another process while this one holds them
    /// queued (NATS's key partitions pinned to a process) says no for one
    /// it may have lost: the bus then drops the delivery without running it
    /// or settling it, and the store lets it go (the backend gives it to its
    /// holder now, or back to this process after its lease) and tells
    /// [`Answers::not_started`]. Must be cheap: no I/O. Default: yes.
    fn admits(&self, delivery: DeliveryRef<'_>) -> bool {
        let _ = delivery;
        true
    }

    /// Where a replayed dead letter ([`EventBus::replay`](crate::EventBus::replay))
    /// runs. `false` (the default): in the process that replays it, queued
    /// at once, the store told with [`Change::Replayed`]. `true`, for a
    /// store whose deliveries are [`Delivery::Shared`]: the bus only tells
    /// the store, which makes the delivery pending again for whichever
    /// process claims it from the [`Feed`], like any other, so that a keyed
    /// one keeps its key's one-at-a-time order across processes (written as
    /// its key's newest, it runs after what of its key is pending or
    /// running anywhere). Ignored for a store that does not share its
    /// deliveries. A shared store that says `false` fails the conformance
    /// suite's shared case `a_keyed_dead_letter_replayed_elsewhere_waits_for_its_key`.
    fn claims_replays(&self) -> bool {
        false
    }

    /// A short name of the backend, for operators (`BusStats::store_kind`,
    /// the admin API): `"sqlite"`, `"postgres"`, `"nats-jetstream"`.
    /// Default: `"custom"`.
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// Whether the store reaches its server, since when, and how many times
    /// it connected again: shown in [`crate::BusStats::store`] (with the
    /// stale settles the bus counted). Default: `None` (no server: memory, a
    /// file).
    fn health(&self) -> Option<StoreHealth> {
        None
    }
}
