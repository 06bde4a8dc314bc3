//! [`EventBus`]: emit events; handlers run in the background.

use crate::dead_letter::DeadLetters;
use crate::error::EmitError;
use crate::event::PayloadType;
use crate::gate::Gate;
use crate::mailbox::Mailbox;
use crate::receipt::Receipt;
use crate::shutdown::Abandoned;
use crate::stats::{BusStats, HandlerCells, TypeCells, Unrouted};
use crate::store::{Store, StoredEvent};
use crate::{Event, EventBusBuilder, Overflow};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

tokio::task_local! {
    /// The bus whose worker is running the current task.
    static CURRENT: Weak<Inner>;
}

pub(crate) async fn scope_current<F: std::future::Future>(bus: Weak<Inner>, f: F) -> F::Output {
    CURRENT.scope(bus, f).await
}

/// The event bus: a cheap handle, `Clone` and shared across tasks.
///
/// # Delivery
/// [`emit`](Self::emit) validates the event, queues it for every handler of its
/// type and returns a [`Receipt`]; it never waits for a handler. Each handler
/// runs on its own worker task, isolated: an error, panic or timeout in one
/// handler never reaches the caller or another handler. Failed attempts are
/// retried with backoff; then the delivery becomes a [`DeadLetter`](crate::DeadLetter).
///
/// # Ordering
/// Events with the same key ([`Emit::key`](crate::Emit::key)) are handled one at a time, in emit
/// order, by each handler, while other keys go on, even while a key waits to
/// retry. Events without a key run concurrently, up to the handler's
/// concurrency.
///
/// # Memory and backpressure
/// At most [`capacity`](EventBusBuilder::capacity) events are pending (queued,
/// running or waiting to retry). When full, `emit` waits
/// ([`Overflow::Wait`]) or fails with [`EmitError::QueueFull`]
/// ([`Overflow::Reject`]); [`try_emit`](Self::try_emit) never waits. Every
/// event dropped is counted in [`stats`](Self::stats).
///
/// # Shutdown
/// [`shutdown`](Self::shutdown) stops intake, drains until its deadline and
/// reports exactly what it abandoned. Dropping every handle instead lets the
/// workers finish what is queued in the background while the runtime lives.
/// The memory backend keeps nothing across a crash (at most once); see
/// `docs/GUARANTEES.md`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::{Envelope, EventBus, EventHandler, HandlerError};
///
/// struct OrderCreated;
/// impl EventHandler for OrderCreated {
///     fn event_type(&self) -> &str { "order_created" }
///     async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
///         tracing::info!("Order {} processed", event.data()["order_id"]);
///         Ok(())
///     }
/// }
///
/// let bus = EventBus::builder().discover(false).handler(OrderCreated).build().unwrap();
/// let receipt = bus
///     .emit("order_created", serde_json::json!({"order_id": 1, "user_id": 2, "total": 9.5}))
///     .await
///     .unwrap();
/// assert!(receipt.is_queued());
/// bus.wait_idle().await;
/// # }
/// ```
#[derive(Clone)]
pub struct EventBus {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// The mailboxes of its handlers.
    pub(crate) mailboxes: Box<[Arc<Mailbox>]>,
    pub(crate) payload_types: Vec<PayloadType>,
    pub(crate) cells: TypeCells,
}

pub(crate) struct Slot {
    pub(crate) name: Arc<str>,
    pub(crate) event_type: Arc<str>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) cells: Arc<HandlerCells>,
}

/// A worker task, by handler name; it returns the ids it abandoned.
pub(crate) type WorkerHandle = (Arc<str>, JoinHandle<Vec<Uuid>>);

/// How often [`EventBus::wait_idle`] asks a shared-delivery store whether
/// deliveries are still outstanding.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(10);

/// The bus itself. When the last handle drops, its `Drop` closes the
/// mailboxes: the workers finish what is queued, then stop (nothing is
/// cancelled).
pub(crate) struct Inner {
    pub(crate) routes: FxHashMap<Box<str>, Route>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) enabled: AtomicBool,
    pub(crate) overflow: Overflow,
    pub(crate) max_payload: usize,
    pub(crate) unrouted: Unrouted,
    pub(crate) dead: Arc<DeadLetters>,
    pub(crate) workers: Mutex<Vec<WorkerHandle>>,
    pub(crate) cancel: CancellationToken,
    /// Deliveries refused after the workers stopped, for the shutdown report.
    pub(crate) late: Mutex<Vec<Abandoned>>,
    /// Where events are written before they are queued, if anywhere.
    pub(crate) store: Option<Arc<dyn Store>>,
    /// Where the store answers refused settles (counted per handler too).
    pub(crate) answers: crate::store::Answers,
    /// The feed of a store that shares deliveries with other processes
    /// ([`Delivery::Shared`](crate::store::Delivery::Shared)): emits only
    /// append, and `wait_idle` asks it what is outstanding.
    pub(crate) shared_feed: Option<Arc<dyn crate::store::Feed>>,
    /// Stops the store's relay, if any: at shutdown, or when the bus is dropped.
    pub(crate) stop_relay: CancellationToken,
    /// Where the tail's tidings go ([`EventBus::tail`]).
    pub(crate) tail: Arc<crate::tail::Hub>,
}

impl Drop for Inner {
    /// The last handle is gone: each worker finishes what is queued, then stops.
    fn drop(&mut self) {
        self.stop_relay.cancel();
        for slot in &self.slots {
            slot.mailbox.close();
        }
    }
}

/// A lock that nothing panics while holding; a poisoned one is still sound.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn in_handler() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

impl EventBus {
    /// A builder: discovers registered handlers by default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).capacity(1_000).build().unwrap();
    /// assert_eq!(bus.stats().capacity, 1_000);
    /// # }
    /// ```
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// The bus whose handler is running on the current task, for emitting
    /// follow-up events. `None` outside a handler.
    ///
    /// ```
    /// assert!(tidings::EventBus::current().is_none());
    /// ```
    pub fn current() -> Option<EventBus> {
        CURRENT
            .try_with(Weak::upgrade)
            .ok()
            .flatten()
            .map(|inner| EventBus { inner })
    }

    /// Emits a dynamic event: `data` must be a JSON object. Add `.key(k)` for
    /// per-key ordering, then `.await`.
    ///
    /// The handlers see `data` with `_event_type` and `_emitted_at` added.
    /// Returns once the event is queued (or dropped while disabled, or found
    /// to have no handler); never waits for a handler.
    ///
    /// # Errors
    /// See [`EmitError`]: invalid type, key or payload; a payload that does not
    /// match the typed handlers of its type; a full queue under
    /// [`Overflow::Reject`]; a bus shutting down; a store that could not write
    /// the event.
    ///
    /// # Durability
    /// On a bus with a [`Store`](crate::Store), `Ok` means the event is
    /// written: it reaches every handler even if the process dies now.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes queues nothing, with one
    /// exception: on a bus with a [`Store`](crate::Store), an event whose write
    /// has begun is written and queued even if the future is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let receipt = bus
    ///     .emit("activity_log", serde_json::json!({"user_id": 1}))
    ///     .key("user-1")
    ///     .await
    ///     .unwrap();
    /// assert!(receipt.is_unrouted());
    /// # }
    /// ```
    pub fn emit<'a>(&'a self, event_type: &'a str, data: Value) -> crate::Emit<'a> {
        crate::Emit::new(self, event_type, data)
    }

    /// Emits a dynamic event without ever waiting: a full queue is
    /// [`EmitError::QueueFull`] whatever the overflow policy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.try_emit("t", serde_json::json!({})).unwrap().is_unrouted());
    /// # }
    /// ```
    pub fn try_emit(&self, event_type: &str, data: Value) -> Result<Receipt, EmitError> {
        self.emit(event_type, data).try_emit()
    }

    /// Publishes a typed event. Typed handlers receive it as `&T`, with no JSON
    /// in between. Add `.key(k)` for per-key ordering, then `.await`.
    ///
    /// # Errors
    /// As [`emit`](Self::emit), less the payload checks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// #[event(type = "order_created")]
    /// struct OrderCreated { order_id: u64 }
    ///
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.publish(OrderCreated { order_id: 7 }).await.unwrap();
    /// # }
    /// ```
    pub fn publish<T: Event>(&self, event: T) -> crate::Publish<'_, T> {
        crate::Publish::new(self, event)
    }

    /// Publishes a typed event without ever waiting.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping {}
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.try_publish(Ping {}).is_ok());
    /// # }
    /// ```
    pub fn try_publish<T: Event>(&self, event: T) -> Result<Receipt, EmitError> {
        self.publish(event).try_publish()
    }

    /// The event as a [`Store`](crate::Store) keeps it, for writing in the
    /// application's own transaction (the transactional outbox: the event
    /// exists if and only if that transaction commits). It is validated and
    /// counted as [`emit`](Self::emit) would; `Ok(None)` when the bus would
    /// drop it (disabled) or has no handler for it (on a store that shares
    /// deliveries between processes, [`Delivery::Shared`](crate::store::Delivery::Shared),
    /// the handlers may be in other processes: the event is made with no
    /// deliveries, which the store adds). The bus delivers it once its
    /// store's relay finds it committed (`tidings_postgres::Outbox` writes
    /// and announces it).
    ///
    /// # Errors
    /// As [`emit`](Self::emit): invalid type, key or payload.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// # struct Ship;
    /// # impl EventHandler for Ship {
    /// #     fn event_type(&self) -> &str { "order_created" }
    /// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let bus = tidings::EventBus::builder().discover(false).handler(Ship).build().unwrap();
    /// let e = bus.outbox_event("order_created", serde_json::json!({"order_id": 1}), None).unwrap().unwrap();
    /// assert_eq!(e.deliveries[0].handler, "Ship");
    /// assert!(e.data.contains(r#""_event_type":"order_created""#));
    /// assert!(bus.outbox_event("nobody_listens", serde_json::json!({}), None).unwrap().is_none());
    /// assert!(bus.outbox_event("bad type", serde_json::json!({}), None).is_err());
    /// # }
    /// ```
    pub fn outbox_event(
        &self,
        event_type: &str,
        data: Value,
        key: Option<&str>,
    ) -> Result<Option<StoredEvent>, EmitError> {
        self.inner.outbox_record(event_type, data, key)
    }

    /// The number of handlers: all of them (`None`), or those of one event type.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert_eq!(bus.handler_count(None), 0);
    /// assert_eq!(bus.handler_count(Some("my_event")), 0);
    /// # }
    /// ```
    pub fn handler_count(&self, event_type: Option<&str>) -> usize {
        match event_type {
            None => self.inner.slots.len(),
            Some(t) => self.inner.routes.get(t).map_or(0, |r| r.mailboxes.len()),
        }
    }

    /// The event types that have at least one handler, sorted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.event_types().is_empty());
    /// # }
    /// ```
    pub fn event_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.inner.routes.keys().map(|k| k.to_string()).collect();
        types.sort_unstable();
        types
    }

    /// Drops every event emitted from now on (each counted, each emit `Ok`
    /// with a receipt that says so), until [`enable`](Self::enable). Events
    /// already queued still run.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.disable();
    /// assert!(!bus.is_enabled());
    /// bus.enable();
    /// assert!(bus.is_enabled());
    /// # }
    /// ```
    pub fn disable(&self) {
        self.inner.enabled.store(false, Ordering::Relaxed);
        tracing::info!("event bus disabled: events will be dropped");
    }

    /// Resumes accepting events.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.disable();
    /// bus.enable();
    /// assert!(bus.is_enabled());
    /// # }
    /// ```
    pub fn enable(&self) {
        self.inner.enabled.store(true, Ordering::Relaxed);
        tracing::info!("event bus enabled");
    }

    /// Whether the bus accepts events.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.is_enabled());
    /// # }
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// Events pending now: queued, running or waiting to retry.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert_eq!(bus.pending(), 0);
    /// # }
    /// ```
    pub fn pending(&self) -> usize {
        self.inner.gate.pending()
    }

    /// Resolves when nothing is queued, running or waiting to retry,
    /// follow-up events included. Meant for tests and for orderly stops.
    ///
    /// With a store that shares deliveries between processes
    /// ([`Delivery::Shared`](crate::store::Delivery::Shared), NATS JetStream), it also waits until the
    /// store has no outstanding delivery for this bus's handlers, in any
    /// process (it asks every 10 ms while some are left).
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.wait_idle().await;
    /// # }
    /// ```
    pub async fn wait_idle(&self) {
        let inner = &*self.inner;
        loop {
            inner.gate.idle().await;
            let Some(feed) = &inner.shared_feed else {
                return;
            };
            match feed.outstanding().await {
                Ok(0) if inner.gate.pending() == 0 => return,
                Ok(_) => {}
                Err(e) => tracing::warn!("wait_idle could not ask the store: {e}"),
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    /// A snapshot of the bus's figures. See [`BusStats`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.emit("t", serde_json::json!({})).await.unwrap();
    /// assert_eq!(bus.stats().event_type("t").unwrap().unrouted, 1);
    /// # }
    /// ```
    pub fn stats(&self) -> BusStats {
        let inner = &*self.inner;
        let mut event_types: Vec<_> = inner
            .routes
            .values()
            .map(|r| crate::EventTypeStats {
                event_type: r.name.to_string(),
                emitted: r.cells.emitted.load(Ordering::Relaxed),
                dropped: r.cells.dropped.load(Ordering::Relaxed),
                unrouted: 0,
            })
            .collect();
        event_types.extend(inner.unrouted.snapshot());
        event_types.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        let mut handlers: Vec<_> = inner
            .slots
            .iter()
            .map(|s| s.cells.snapshot(&s.name, &s.event_type, s.mailbox.queued()))
            .collect();
        handlers.sort_by(|a, b| a.name.cmp(&b.name));
        BusStats {
            enabled: self.is_enabled(),
            pending: inner.gate.pending(),
            capacity: inner.gate.capacity(),
            dead_letters: inner.dead.len(),
            dead_letters_evicted: inner.dead.evicted(),
            event_types,
            handlers,
            store: inner.store.as_ref().and_then(|s| s.health()).map(|h| {
                crate::store::StoreHealth {
                    stale_settles: inner.answers.stale_settles(),
                    ..h
                }
            }),
            store_kind: inner.store.as_ref().map(|s| s.kind()),
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("handlers", &self.inner.slots.len())
            .field("pending", &self.inner.gate.pending())
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Envelope, EventBus, EventHandler, HandlerError};
    use std::time::Duration;

    struct Noop;
    impl EventHandler for Noop {
        fn event_type(&self) -> &str {
            "t"
        }
        async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    /// The race this covers is a few hundred nanoseconds wide: an emit takes
    /// its place, a shutdown's deadline passes and the workers stop, then the
    /// emit queues its event. Here the worker's mailbox is closed by hand
    /// between the two.
    #[tokio::test]
    async fn an_event_queued_after_the_workers_stopped_is_named_and_frees_its_place() {
        let bus = EventBus::builder()
            .discover(false)
            .handler(Noop)
            .build()
            .unwrap();
        bus.inner.slots[0].mailbox.close();
        let receipt = bus.try_emit("t", serde_json::json!({})).unwrap();
        assert_eq!(bus.pending(), 0, "its place is free again");
        let report = bus.shutdown(Duration::ZERO).await;
        assert_eq!(report.abandoned_events(), vec![receipt.id()]);
        assert_eq!(report.abandoned[0].handler, "Noop");
    }
}
