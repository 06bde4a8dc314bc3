//! # Tidings: an event bus for Rust services
//!
//! Emit an event and move on; the handlers of its type run in the background.
//! This is the design of the seed's Python event system (an `EventBus`,
//! handlers that register themselves, error isolation) made into a Rust
//! library that also fixes what that design admits it lacks: retries and dead
//! letters, per-key ordering, bounded memory, and a clean shutdown.
//!
//! ## What happens to an event
//! - **Delivery.** `emit` validates the event and queues it for every handler
//!   of its type, then returns a [`Receipt`]. It never waits for a handler.
//!   Each handler gets its own copy of the delivery and runs isolated: an
//!   error, a panic or a timeout is that handler's failure alone.
//! - **Retries.** A retryable failure is tried again with exponential backoff
//!   and jitter, up to [`HandlerOptions::max_attempts`] (default 3). Then the
//!   delivery becomes a [`DeadLetter`], which can be listed and replayed.
//!   Handlers may therefore see an event more than once: make them idempotent
//!   on [`Envelope::id`].
//! - **Ordering.** Events emitted with the same key are handled one at a time,
//!   in emit order, by each handler; other keys proceed meanwhile, even while
//!   one key waits to retry. Events without a key run concurrently.
//! - **Memory.** At most `capacity` events are pending. When full, `emit`
//!   waits or fails with [`EmitError::QueueFull`], as configured; nothing is
//!   dropped silently, and every drop is counted in [`EventBus::stats`].
//! - **Shutdown.** [`EventBus::shutdown`] stops intake, drains until a deadline
//!   and reports what it had to abandon, by id.
//! - **Crashes.** The in-memory bus keeps nothing across a crash of the
//!   process: at most once there. A bus with a [`Store`] (a SQLite file with
//!   `tidings-sqlite`, PostgreSQL with `tidings-postgres`, which adds the
//!   transactional outbox and replicas sharing a bus) writes each event
//!   before `emit` returns and is at least once: what `emit` acknowledged
//!   survives a kill of the process. See [`store`] and `docs/GUARANTEES.md`.
//!
//! ## A handler, the seed's way
//! ```
//! use tidings::{Envelope, EventHandler, HandlerError};
//!
//! #[derive(Default)]
//! struct MyEventHandler;
//!
//! impl EventHandler for MyEventHandler {
//!     fn event_type(&self) -> &str {
//!         "my_event"
//!     }
//!     async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
//!         let user_id = &event.data()["user_id"];
//!         tracing::info!("Processing my_event for user {user_id}");
//!         Ok(())
//!     }
//! }
//! tidings::register_handler!(MyEventHandler); // discovered: no list to edit
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = tidings::event_bus();
//! bus.emit("my_event", serde_json::json!({"user_id": 1, "action": "login"})).await.unwrap();
//! # bus.wait_idle().await;
//! # }
//! ```
//!
//! ## A typed handler
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, tidings::Event)]
//! #[event(type = "order_created")]
//! struct OrderCreated { order_id: u64, total: f64 }
//!
//! #[tidings::handler]
//! async fn notify_warehouse(order: &OrderCreated) -> Result<(), tidings::HandlerError> {
//!     tracing::info!("Order {} processed", order.order_id);
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = tidings::EventBus::builder().build().unwrap();
//! bus.publish(OrderCreated { order_id: 1, total: 9.5 }).await.unwrap();
//! bus.wait_idle().await;
//! assert_eq!(bus.stats().handler("notify_warehouse").unwrap().succeeded, 1);
//! # }
//! ```

// Lets the macros' `::tidings::...` paths resolve inside this crate's own tests.
#[allow(unused_extern_crates)]
extern crate self as tidings;

mod builder;
mod bus;
mod clock;
mod dead_letter;
mod emit;
mod envelope;
mod error;
mod event;
mod gate;
mod global;
mod handler;
mod handler_error;
mod id;
pub mod keys;
mod mailbox;
mod options;
mod receipt;
pub mod redact;
mod registry;
mod relay;
mod resources;
mod shutdown;
mod stats;
pub mod store;
mod stored;
pub mod tail;
pub mod testing;
mod time;
mod validate;
mod worker;

pub use builder::EventBusBuilder;
pub use bus::EventBus;
pub use dead_letter::DeadLetter;
pub use emit::{Emit, EmitFuture, Publish};
pub use envelope::{Envelope, EventRef};
pub use error::{BuildError, EmitError, InitError, ReplayError};
pub use event::{Event, PayloadType};
pub use global::{event_bus, init, try_event_bus};
pub use handler::{BoxedHandler, EventHandler};
pub use handler_error::{HandlerError, IntoHandlerResult};
pub use keys::KeyBacklog;
pub use options::{Backoff, HandlerOptions, Overflow};
pub use receipt::{Receipt, Status};
pub use resources::{MissingResource, Resources};
pub use shutdown::{Abandoned, ShutdownReport};
pub use stats::{BusStats, EventTypeStats, HandlerStats, Latency};
pub use store::{Store, StoreError};
pub use tail::{Settled, Tail, TailError, Tiding};
pub use validate::{is_valid_event_type, is_valid_key, Shown, MAX_EVENT_TYPE_LEN, MAX_KEY_LEN};

/// Derives [`Event`] for a payload type: `#[derive(tidings::Event)]` with
/// `#[event(type = "name")]`. The name is checked at compile time.
pub use tidings_macros::Event;

/// Makes an `async fn` an event handler and registers it.
///
/// The first argument is the event: `&T` for a typed event (`T: Event`), or
/// `&Envelope` with `#[handler(event = "name")]`. A typed handler may also take
/// `&Envelope` later on, for the id or attempt. Further arguments `&R` are
/// resources, taken from [`EventBusBuilder::resource`] at build time (a
/// missing one fails `build()`). It returns `()` or `Result<(), E>` with
/// `E: Into<HandlerError>`. Options: `name = "..."`, `attempts = N`,
/// `timeout_ms = N`, `concurrency = N`.
///
/// ```
/// use tidings::{Envelope, HandlerError};
///
/// #[tidings::handler(event = "my_event", attempts = 5)]
/// async fn log_it(event: &Envelope) -> Result<(), HandlerError> {
///     tracing::info!(id = %event.id(), "got my_event");
///     Ok(())
/// }
/// ```
pub use tidings_macros::handler;

#[doc(hidden)]
pub mod __private {
    pub use crate::registry::HandlerRegistration;
    pub use inventory;
}
