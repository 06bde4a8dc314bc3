//! [`EventBusBuilder`]: handlers, resources and limits, then `build()`.

use crate::bus::{scope_current, Inner, Route, Slot};
use crate::dead_letter::DeadLetters;
use crate::error::BuildError;
use crate::gate::Gate;
use crate::mailbox::Mailbox;
use crate::registry::registered;
use crate::stats::{HandlerCells, TypeCells, Unrouted};
use crate::store::Delivery;
use crate::validate::{is_valid_event_type, Shown};
use crate::worker::Worker;
use crate::{BoxedHandler, EventBus, EventHandler, Overflow, Resources, Store};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Configures and builds an [`EventBus`].
///
/// Defaults: discovers registered handlers; capacity 65 536 pending events;
/// [`Overflow::Wait`]; payloads up to 1 MiB; 1 000 dead letters kept; no
/// global concurrency limit.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::{EventBus, Overflow};
/// let bus = EventBus::builder()
///     .discover(false)
///     .capacity(10_000)
///     .overflow(Overflow::Reject)
///     .max_payload_bytes(64 * 1024)
///     .max_concurrency(100)
///     .build()
///     .unwrap();
/// # }
/// ```
#[must_use]
pub struct EventBusBuilder {
    discover: bool,
    handlers: Vec<(BoxedHandler, String)>,
    resources: Resources,
    capacity: usize,
    overflow: Overflow,
    max_payload: usize,
    dead_letter_capacity: usize,
    max_concurrency: Option<usize>,
    store: Option<Arc<dyn Store>>,
}

impl Default for EventBusBuilder {
    fn default() -> Self {
        Self {
            discover: true,
            handlers: Vec::new(),
            resources: Resources::default(),
            capacity: 65_536,
            overflow: Overflow::Wait,
            max_payload: 1024 * 1024,
            dead_letter_capacity: 1_000,
            max_concurrency: None,
            store: None,
        }
    }
}

impl std::fmt::Debug for EventBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusBuilder")
            .field("discover", &self.discover)
            .field("handlers", &self.handlers.len())
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl EventBusBuilder {
    /// Whether to add every handler registered with [`crate::register_handler!`]
    /// or `#[tidings::handler]` (default `true`). Turn it off for isolated tests.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert_eq!(bus.handler_count(None), 0);
    /// # }
    /// ```
    pub fn discover(mut self, on: bool) -> Self {
        self.discover = on;
        self
    }

    /// Adds one handler explicitly.
    #[track_caller]
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// struct Ping;
    /// impl EventHandler for Ping {
    ///     fn event_type(&self) -> &str { "ping" }
    ///     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// }
    /// let bus = tidings::EventBus::builder().discover(false).handler(Ping).build().unwrap();
    /// assert_eq!(bus.event_types(), vec!["ping"]);
    /// # }
    /// ```
    pub fn handler<H: EventHandler>(mut self, handler: H) -> Self {
        let at = std::panic::Location::caller();
        self.handlers.push((
            BoxedHandler::new(handler),
            format!("{} added at {at}", std::any::type_name::<H>()),
        ));
        self
    }

    /// Adds a value (a pool, a client) that handler constructors may take.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).resource(String::from("db-url")).build();
    /// assert!(bus.is_ok());
    /// # }
    /// ```
    pub fn resource<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// The most events pending at once (queued, running or waiting to retry).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).capacity(10).build().unwrap();
    /// assert_eq!(bus.stats().capacity, 10);
    /// # }
    /// ```
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// What `emit` does when the bus is full.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).overflow(tidings::Overflow::Reject).build();
    /// assert!(bus.is_ok());
    /// # }
    /// ```
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// The largest dynamic payload accepted, in bytes of JSON.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).max_payload_bytes(8).build().unwrap();
    /// let err = bus.emit("t", serde_json::json!({"too": "large"})).await.unwrap_err();
    /// assert!(matches!(err, tidings::EmitError::PayloadTooLarge { limit: 8 }));
    /// # }
    /// ```
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload = n;
        self
    }

    /// How many dead letters to keep (the newest).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).dead_letter_capacity(100).build();
    /// assert!(bus.is_ok());
    /// # }
    /// ```
    pub fn dead_letter_capacity(mut self, n: usize) -> Self {
        self.dead_letter_capacity = n;
        self
    }

    /// The most handler calls running at once across all handlers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).max_concurrency(8).build();
    /// assert!(bus.is_ok());
    /// # }
    /// ```
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// Makes the bus durable: each event is written to `store` before `emit`
    /// returns, and what is still pending when the bus starts is delivered
    /// then. See [`crate::store`] for the guarantees; `tidings-sqlite` has the
    /// embedded SQLite store, `tidings-postgres` one in PostgreSQL (with the
    /// transactional outbox).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use tidings::store::*;
    /// # use futures_util::future::BoxFuture;
    /// # struct Null;
    /// # impl Store for Null {
    /// #     fn append(&self, _: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> { Box::pin(async { Ok(()) }) }
    /// #     fn settle(&self, _: DeliveryRef<'_>, _: Change) {}
    /// #     fn recover(&self, _: &[BoundHandler], _: Answers) -> Result<Recovered, StoreError> { Ok(Recovered::default()) }
    /// #     fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// let bus = tidings::EventBus::builder().discover(false).store(Null).build().unwrap();
    /// let err = bus.try_emit("t", serde_json::json!({}));
    /// assert!(err.unwrap().is_unrouted(), "no handler: nothing to store");
    /// # }
    /// ```
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Builds the bus and starts one worker task per handler on the current
    /// Tokio runtime (which must have its timer enabled, as `#[tokio::main]`
    /// and `#[tokio::test]` do).
    ///
    /// # Errors
    /// [`BuildError`]: no runtime, two handlers with one name, a missing
    /// resource, an invalid event type or invalid options, a store that
    /// could not be read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build();
    /// assert!(bus.is_ok());
    /// # }
    /// ```
    pub fn build(self) -> Result<EventBus, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        if self.capacity == 0 {
            return Err(BuildError::InvalidConfig(
                "capacity must be at least 1".into(),
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(BuildError::InvalidConfig(
                "max_concurrency must be at least 1".into(),
            ));
        }
        // The cycle counter's calibration (well under a millisecond here, up to
        // 200 ms elsewhere) happens now, not in the first emit.
        crate::clock::now();
        let mut handlers = self.handlers;
        if self.discover {
            for reg in registered() {
                handlers.push((reg.instantiate(&self.resources)?, reg.label()));
            }
        }
        let mut seen: HashMap<String, String> = HashMap::new();
        for (h, site) in &handlers {
            let name = h.name().to_owned();
            if let Some(first) = seen.insert(name.clone(), site.clone()) {
                return Err(BuildError::DuplicateHandler {
                    name,
                    first,
                    second: site.clone(),
                });
            }
            if !is_valid_event_type(h.event_type()) {
                return Err(BuildError::InvalidEventType {
                    handler: name,
                    name: Shown::new(h.event_type()),
                });
            }
            h.0.options()
                .check()
                .map_err(|reason| BuildError::InvalidOptions {
                    handler: name,
                    reason,
                })?;
        }

        // Each handler's figures exist before the store is told of it: the
        // store's answers about refused settles are counted in them.
        let cells: Vec<Arc<HandlerCells>> = handlers
            .iter()
            .map(|(h, _)| Arc::new(HandlerCells::new(h.name())))
            .collect();
        let answers = crate::store::Answers::counting(
            handlers
                .iter()
                .zip(&cells)
                .map(|((h, _), c)| (h.name().into(), c.clone()))
                .collect(),
        );
        // The store learns the handlers and hands back what is pending
        // before the bus exists: nothing is appended before this.
        let (recovered, delivery) = match &self.store {
            Some(store) => {
                let bound: Vec<_> = handlers
                    .iter()
                    .map(|(h, _)| crate::store::BoundHandler {
                        name: h.name().to_owned(),
                        event_type: h.event_type().to_owned(),
                    })
                    .collect();
                (
                    Some(store.recover(&bound, answers.clone())?),
                    store.delivery(),
                )
            }
            None => (None, Delivery::Local),
        };

        let gate = Gate::new(self.capacity);
        let dead = DeadLetters::new(self.dead_letter_capacity);
        let global = self.max_concurrency.map(|n| Arc::new(Semaphore::new(n)));
        let cancel = CancellationToken::new();
        let tail = Arc::new(crate::tail::Hub::new());
        let inner = Arc::new_cyclic(|weak| {
            let mut routes: FxHashMap<Box<str>, (Vec<_>, Vec<crate::PayloadType>)> =
                FxHashMap::default();
            let mut slots = Vec::new();
            let mut workers = Vec::new();
            for ((h, _), cells) in handlers.into_iter().zip(cells) {
                let handler = h.0;
                let name: Arc<str> = handler.name().into();
                let event_type: Arc<str> = handler.event_type().into();
                let mailbox = Mailbox::new(name.clone());
                let route = routes.entry(event_type.as_ref().into()).or_default();
                route.0.push(mailbox.clone());
                if let Some(pt) = handler.payload_type() {
                    if !route.1.iter().any(|p| p.id == pt.id) {
                        route.1.push(pt);
                    }
                }
                let worker = Worker {
                    options: handler.options(),
                    handler,
                    name: name.clone(),
                    event_type: event_type.clone(),
                    cells: cells.clone(),
                    dead: dead.clone(),
                    global: global.clone(),
                    gate: gate.clone(),
                    store: self.store.clone(),
                    tail: tail.clone(),
                };
                let task = runtime.spawn(scope_current(
                    weak.clone(),
                    worker.run(mailbox.clone(), cancel.clone()),
                ));
                workers.push((name.clone(), task));
                tracing::info!(
                    "Registered event handler: {} for '{}' events",
                    name,
                    event_type
                );
                slots.push(Slot {
                    name,
                    event_type,
                    mailbox,
                    cells,
                });
            }
            let routes = routes
                .into_iter()
                .map(|(t, (mailboxes, payload_types))| {
                    let route = Route {
                        name: t.as_ref().into(),
                        mailboxes: mailboxes.into_boxed_slice(),
                        payload_types,
                        cells: TypeCells::new(&t),
                    };
                    (t, route)
                })
                .collect();
            Inner {
                routes,
                slots,
                gate,
                enabled: AtomicBool::new(true),
                overflow: self.overflow,
                max_payload: self.max_payload,
                unrouted: Unrouted::default(),
                dead,
                workers: Mutex::new(workers),
                cancel,
                late: Mutex::new(Vec::new()),
                shared_feed: match &delivery {
                    Delivery::Shared(feed) => Some(feed.clone()),
                    _ => None,
                },
                store: self.store.clone(),
                answers,
                stop_relay: CancellationToken::new(),
                tail,
            }
        });
        if let Some(recovered) = recovered {
            crate::stored::restore(&inner, recovered);
        }
        if let Some(feed) = delivery.feed() {
            let relay = crate::relay::run(
                Arc::downgrade(&inner),
                feed.clone(),
                inner.stop_relay.clone(),
            );
            runtime.spawn(relay);
        }
        Ok(EventBus { inner })
    }
}
