//! [`EventBus`]: emit events; handlers run in the background.

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::envelope::{AnyPayload, Dynamic, Envelope, Meta, Shared, TypeName};
use crate::error::{EmitError, ReplayError};
use crate::event::PayloadType;
use crate::gate::{Gate, Refused};
use crate::mailbox::Mailbox;
use crate::receipt::{Receipt, Status};
use crate::shutdown::{Abandoned, ShutdownReport};
use crate::stats::{BusStats, HandlerCells, TypeCells, Unrouted};
use crate::store::{Change, Store, StoredDelivery, StoredEvent};
use crate::{validate, Event, EventBusBuilder, Overflow};
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
/// retried with backoff; then the delivery becomes a [`DeadLetter`].
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

/// How long a shutdown past its deadline waits for emits that were queueing
/// their events as the workers stopped.
const LATE_SENDS: Duration = Duration::from_secs(1);

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
    /// The store shares deliveries with other processes
    /// ([`Store::shared_delivery`]): emits only append.
    pub(crate) shared_delivery: bool,
    /// Stops the store's relay, if any: at shutdown, or when the bus is dropped.
    pub(crate) stop_relay: CancellationToken,
}

/// An event ready to queue, waiting for room. Built in its final place on
/// the heap, so that queueing it moves two pointers, not the event.
pub(crate) struct Pending<'a, P: AnyPayload> {
    route: &'a Route,
    shared: Arc<Shared<P>>,
}

pub(crate) enum Step<'a, P: AnyPayload> {
    Done(Receipt),
    Admit(Pending<'a, P>),
}

/// Whether an event got its place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It holds a place: dispatch it.
    Taken,
    /// The bus is full and the caller may wait for room.
    Wait,
}

/// Whether an emit may wait for room.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Never wait.
    Try,
    /// Follow the bus's overflow policy.
    Policy,
}

impl Inner {
    /// Where an event goes: its route, or the receipt of an event the bus
    /// drops (disabled) or has no handler for (unrouted), each counted.
    /// A name without a route is checked before it reaches the counters.
    fn route(&self, event_type: &str, id: Uuid) -> Result<Result<&Route, Receipt>, EmitError> {
        if self.gate.is_closed() {
            return Err(EmitError::ShuttingDown);
        }
        let route = self.routes.get(event_type);
        if route.is_none() {
            validate::event_type(event_type)?;
        }
        if let Some(receipt) = self.dropped(event_type, route, id) {
            return Ok(Err(receipt));
        }
        match route {
            Some(route) => Ok(Ok(route)),
            None => {
                self.unrouted.count(event_type, false);
                Ok(Err(Receipt::new(id, Status::Unrouted, 0)))
            }
        }
    }

    /// The receipt of an event the disabled bus drops (counted), or `None`
    /// while the bus is enabled.
    fn dropped(&self, event_type: &str, route: Option<&Route>, id: Uuid) -> Option<Receipt> {
        if self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        match route {
            Some(r) => r.cells.dropped(),
            None => self.unrouted.count(event_type, true),
        }
        Some(Receipt::new(id, Status::Dropped, 0))
    }

    pub(crate) fn prepare_dynamic(
        &self,
        event_type: &str,
        data: Value,
        key: Option<String>,
    ) -> Result<Step<'_, Dynamic>, EmitError> {
        validate::event_type(event_type)?;
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let (id, at) = crate::id::next();
        let raw = validate::encode(&data, event_type, at, self.max_payload)?;
        let route = match self.route(event_type, id)? {
            Ok(route) => route,
            Err(receipt) => return Ok(Step::Done(receipt)),
        };
        let decoded = route.decode(event_type, &data)?;
        // The caller's value is freed here, on its own thread; handlers share the text.
        drop(data);
        let mut meta = Meta::new(
            id,
            at,
            TypeName::Shared(route.name.clone()),
            key.map(String::into_boxed_str),
        );
        meta.raw = Some(raw);
        Ok(Step::Admit(Pending {
            route,
            shared: Shared::new(meta, route.deliveries(), Dynamic(decoded)),
        }))
    }

    pub(crate) fn prepare_typed<T: Event>(
        &self,
        event: T,
        key: Option<String>,
    ) -> Result<Step<'_, crate::envelope::Typed<T>>, EmitError> {
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let (id, at) = crate::id::next();
        let route = match self.route(T::TYPE, id)? {
            Ok(route) => route,
            Err(receipt) => return Ok(Step::Done(receipt)),
        };
        let meta = Meta::new(
            id,
            at,
            TypeName::Static(T::TYPE),
            key.map(String::into_boxed_str),
        );
        Ok(Step::Admit(Pending {
            route,
            shared: Shared::new(meta, route.deliveries(), crate::envelope::Typed(event)),
        }))
    }

    /// Takes a place without waiting, or says why not.
    pub(crate) fn try_admit<P: AnyPayload>(
        &self,
        pending: &Pending<'_, P>,
        mode: Mode,
    ) -> Result<Admission, EmitError> {
        match self.gate.try_acquire() {
            Ok(()) => Ok(Admission::Taken),
            Err(Refused::Closed) => Err(EmitError::ShuttingDown),
            Err(Refused::Full) => {
                // Inside a handler an emit never waits: a full bus of handlers all
                // waiting for room would never drain. The handler fails and retries.
                if mode == Mode::Policy && self.overflow == Overflow::Wait && !in_handler() {
                    Ok(Admission::Wait)
                } else {
                    pending.route.cells.dropped();
                    Err(EmitError::QueueFull {
                        capacity: self.gate.capacity(),
                    })
                }
            }
        }
    }

    pub(crate) async fn admit_waiting(&self) -> Result<(), EmitError> {
        self.gate
            .acquire()
            .await
            .map_err(|_| EmitError::ShuttingDown)
    }

    /// Queues the event, which holds a place, for each of its handlers.
    pub(crate) fn dispatch<P: AnyPayload>(&self, p: Pending<'_, P>) -> Receipt {
        let id = p.shared.meta.id;
        let shared: Arc<Shared> = p.shared;
        let route = p.route;
        route.cells.emitted();
        let n = route.mailboxes.len();
        if let Some((last, rest)) = route.mailboxes.split_last() {
            for mailbox in rest {
                self.send(mailbox, Envelope::first(shared.clone()));
            }
            self.send(last, Envelope::first(shared));
        }
        Receipt::new(id, Status::Queued, n)
    }

    /// An event for a shared-delivery store ([`Store::shared_delivery`]):
    /// checked and encoded as any emit, then only written; the store's
    /// consumers decide who handles it, so no local handler is needed. `Ok`
    /// holds the record and how many handlers of its type this bus has; `Err`
    /// the receipt of an event the disabled bus drops.
    pub(crate) fn shared_record(
        &self,
        event_type: &str,
        data: Result<Value, serde_json::Error>,
        key: Option<String>,
    ) -> Result<Result<(StoredEvent, usize), Receipt>, EmitError> {
        validate::event_type(event_type)?;
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let data = data.map_err(|e| EmitError::InvalidPayload {
            reason: e.to_string(),
        })?;
        if self.gate.is_closed() {
            return Err(EmitError::ShuttingDown);
        }
        let (id, at) = crate::id::next();
        let raw = validate::encode(&data, event_type, at, self.max_payload)?;
        let route = self.routes.get(event_type);
        if let Some(receipt) = self.dropped(event_type, route, id) {
            return Ok(Err(receipt));
        }
        let mut local = 0;
        if let Some(route) = route {
            route.decode(event_type, &data)?;
            route.cells.emitted();
            local = route.mailboxes.len();
        }
        let record = StoredEvent {
            id,
            event_type: event_type.to_owned(),
            key,
            emitted_at: at,
            data: raw.into_string(),
            deliveries: Vec::new(),
        };
        Ok(Ok((record, local)))
    }

    /// The event as the store keeps it: its JSON text (encoded now for a
    /// typed event) and one delivery per handler.
    pub(crate) fn stored<P: AnyPayload>(
        &self,
        p: &Pending<'_, P>,
    ) -> Result<StoredEvent, EmitError> {
        let meta = &p.shared.meta;
        let data = match &meta.raw {
            Some(raw) => raw.to_string(),
            None => {
                let value = p
                    .shared
                    .payload
                    .to_json()
                    .map_err(|e| EmitError::InvalidPayload {
                        reason: e.to_string(),
                    })?;
                let text = validate::encode(
                    &value,
                    meta.event_type.as_str(),
                    meta.emitted_at,
                    self.max_payload,
                )?;
                text.into_string()
            }
        };
        Ok(StoredEvent {
            id: meta.id,
            event_type: meta.event_type.as_str().to_owned(),
            key: meta.key.as_deref().map(str::to_owned),
            emitted_at: meta.emitted_at,
            data,
            deliveries: p
                .route
                .mailboxes
                .iter()
                .map(|m| StoredDelivery::new(m.handler.to_string(), 1))
                .collect(),
        })
    }

    /// Queues one delivery. One that finds its worker gone (an emit that
    /// took its place just before a shutdown's deadline) is settled here, so
    /// that its place is not lost, and named in the shutdown's report.
    pub(crate) fn send(&self, mailbox: &Mailbox, env: Envelope) {
        if let Err(env) = mailbox.send(env) {
            lock(&self.late).push(Abandoned {
                event_id: env.id(),
                handler: mailbox.handler.to_string(),
            });
            if env.shared.settle() {
                self.gate.release(1);
            }
        }
    }
}

impl<'a, P: AnyPayload> Pending<'a, P> {
    /// The route's name and the event: what a task that outlives the borrow
    /// of the bus needs to make the `Pending` again.
    pub(crate) fn into_parts(self) -> (Arc<str>, Arc<Shared<P>>) {
        (self.route.name.clone(), self.shared)
    }

    pub(crate) fn from_parts(inner: &'a Inner, name: &str, shared: Arc<Shared<P>>) -> Option<Self> {
        let route = inner.routes.get(name)?;
        Some(Self { route, shared })
    }
}

impl Route {
    /// Deliveries per event: one per handler.
    fn deliveries(&self) -> u32 {
        u32::try_from(self.mailboxes.len()).unwrap_or(u32::MAX)
    }

    /// A dynamic payload decoded as each typed handler's payload type: the
    /// first decoded value (it rides along for them), or the first mismatch.
    fn decode(
        &self,
        event_type: &str,
        data: &Value,
    ) -> Result<Option<Box<dyn AnyPayload>>, EmitError> {
        let mut decoded = None;
        for pt in &self.payload_types {
            match (pt.decode)(data) {
                Ok(v) => {
                    decoded.get_or_insert(v);
                }
                Err((field, reason)) => {
                    return Err(EmitError::PayloadMismatch {
                        event_type: event_type.to_owned(),
                        type_name: pt.type_name(),
                        field,
                        reason,
                    })
                }
            }
        }
        Ok(decoded)
    }
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
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn in_handler() -> bool {
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
    /// deliveries between processes, [`Store::shared_delivery`](crate::Store::shared_delivery),
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
        let inner = &*self.inner;
        if inner.shared_delivery {
            let record = inner.shared_record(event_type, Ok(data), key.map(str::to_owned))?;
            return Ok(record.ok().map(|(event, _)| event));
        }
        match inner.prepare_dynamic(event_type, data, key.map(str::to_owned))? {
            Step::Done(_) => Ok(None),
            Step::Admit(p) => {
                let record = inner.stored(&p)?;
                p.route.cells.emitted();
                Ok(Some(record))
            }
        }
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
    /// ([`Store::shared_delivery`], NATS JetStream), it also waits until the
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
            let Some(store) = inner.store.as_ref().filter(|_| inner.shared_delivery) else {
                return;
            };
            match store.outstanding().await {
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
            .map(|s| s.cells.snapshot(&s.name, &s.event_type))
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
            store: inner.store.as_ref().and_then(|s| s.health()),
        }
    }

    /// The dead letters held now, oldest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.dead_letters().is_empty());
    /// # }
    /// ```
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead.list()
    }

    /// Replays a dead letter: its handler gets the event again, from attempt 1.
    /// The dead letter is removed; if the replay fails too, a new one is made.
    ///
    /// # Errors
    /// [`ReplayError::NotFound`] for an unknown id; `QueueFull` (never waits)
    /// or `ShuttingDown` otherwise, and the dead letter stays.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(matches!(bus.replay(42), Err(tidings::ReplayError::NotFound(42))));
    /// # }
    /// ```
    pub fn replay(&self, id: u64) -> Result<Receipt, ReplayError> {
        let inner = &*self.inner;
        let letter = inner.dead.take(id).ok_or(ReplayError::NotFound(id))?;
        let Some(slot) = inner.slots.iter().find(|s| *s.name == *letter.handler) else {
            return Err(ReplayError::NotFound(id));
        };
        match inner.gate.try_acquire() {
            Ok(()) => {}
            Err(refused) => {
                inner.dead.put_back(letter);
                return Err(match refused {
                    Refused::Full => ReplayError::QueueFull {
                        capacity: inner.gate.capacity(),
                    },
                    Refused::Closed => ReplayError::ShuttingDown,
                });
            }
        };
        let meta = letter.event.shared.meta.clone();
        let id_of_event = meta.id;
        let shared = Shared::new(meta, 1, Dynamic(None));
        if let Some(store) = &inner.store {
            store.update(id_of_event, &slot.name, Change::Replayed);
        }
        inner.send(&slot.mailbox, Envelope::first(shared));
        tracing::info!(handler = &*slot.name, event_id = %id_of_event, "replaying dead letter {id}");
        Ok(Receipt::new(id_of_event, Status::Queued, 1))
    }

    /// Deletes a dead letter without replaying it, here and in the store, for
    /// good: for an event no attempt can fix (a payload its handler rejects,
    /// or one whose handling kills the process). Returns it, or `None` for
    /// an unknown id (replayed or discarded already, or evicted).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
    /// struct Refuse;
    /// impl EventHandler for Refuse {
    ///     fn event_type(&self) -> &str { "t" }
    ///     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
    ///         Err(HandlerError::permanent("never"))
    ///     }
    /// }
    /// let bus = EventBus::builder().discover(false).handler(Refuse).build().unwrap();
    /// bus.emit("t", serde_json::json!({})).await.unwrap();
    /// bus.wait_idle().await;
    /// let id = bus.dead_letters()[0].id;
    /// assert_eq!(bus.discard(id).map(|d| d.id), Some(id));
    /// assert!(bus.dead_letters().is_empty());
    /// assert!(bus.discard(id).is_none());
    /// # }
    /// ```
    pub fn discard(&self, id: u64) -> Option<DeadLetter> {
        let inner = &*self.inner;
        let letter = inner.dead.take(id)?;
        if let Some(store) = &inner.store {
            store.update(letter.event.id(), &letter.handler, Change::Discarded);
        }
        tracing::info!(handler = letter.handler.as_str(), event_id = %letter.event.id(), "discarded dead letter {id}");
        Some(letter)
    }

    /// Stops taking events ([`EmitError::ShuttingDown`]), lets the handlers
    /// finish what is pending for up to `timeout`, then stops them and reports
    /// exact counts and the ids of every delivery it had to abandon.
    ///
    /// Calling it again returns an empty report.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let report = bus.shutdown(std::time::Duration::from_secs(5)).await;
    /// assert_eq!(report.finished, 0);
    /// assert!(bus.try_emit("t", serde_json::json!({})).is_err());
    /// # }
    /// ```
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let started = tokio::time::Instant::now();
        let inner = &*self.inner;
        inner.gate.close();
        inner.stop_relay.cancel();
        let pending_at_start = inner.gate.pending();
        let finished_before: u64 = inner.slots.iter().map(|s| s.cells.finished()).sum();
        let drained = tokio::time::timeout(timeout, inner.gate.idle())
            .await
            .is_ok();
        inner.cancel.cancel();
        let workers = std::mem::take(&mut *lock(&inner.workers));
        let mut abandoned = Vec::new();
        for (name, handle) in workers {
            if let Ok(ids) = handle.await {
                abandoned.extend(ids.into_iter().map(|event_id| Abandoned {
                    event_id,
                    handler: name.to_string(),
                }));
            }
        }
        if !drained {
            // An emit that took its place just before the deadline queues it
            // a moment later and finds the workers gone: wait for those (no
            // handler runs any more, so this is short), then name them too.
            let _ = tokio::time::timeout(LATE_SENDS, inner.gate.idle()).await;
        }
        abandoned.append(&mut lock(&inner.late));
        if let Some(store) = &inner.store {
            if let Err(e) = store.flush().await {
                tracing::warn!("the store could not write every update at shutdown (those deliveries will be made again): {e}");
            }
        }
        let finished_after: u64 = inner.slots.iter().map(|s| s.cells.finished()).sum();
        let report = ShutdownReport {
            pending_at_start,
            finished: finished_after - finished_before,
            abandoned,
            kept: inner.store.is_some(),
            elapsed: started.elapsed(),
        };
        if drained {
            tracing::info!(finished = report.finished, "event bus shut down cleanly");
        } else {
            tracing::warn!(
                finished = report.finished,
                abandoned = report.abandoned.len(),
                "event bus shut down at its deadline with deliveries abandoned"
            );
        }
        report
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
