//! # tidings-sqlite: the embedded durable store for tidings
//!
//! One SQLite file holds a bus's events until every handler is done with
//! them. Give it to the builder and the bus survives crashes:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("bus.db");
//! use tidings::{Envelope, EventBus, HandlerError};
//!
//! #[tidings::handler(event = "order_created")]
//! async fn notify_warehouse(event: &Envelope) -> Result<(), HandlerError> {
//!     tracing::info!(id = %event.id(), "order {}", event.data()["order_id"]);
//!     Ok(())
//! }
//!
//! let store = tidings_sqlite::SqliteStore::open(&path)?;
//! // notify_warehouse registered itself: the builder discovers it.
//! let bus = EventBus::builder().store(store).build()?;
//! // Returns once the event is in the file: a crash from here on does not lose it.
//! bus.emit("order_created", serde_json::json!({"order_id": 1})).await?;
//! bus.wait_idle().await;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! - **At least once, across kills.** `emit(..).await` returns after the
//!   event and one pending delivery per handler are committed. A delivery is
//!   deleted when its handler succeeds; a process killed at any moment
//!   redelivers, at the next start, every delivery not yet deleted (so a
//!   handler may see an event twice: be idempotent on the event id).
//! - **Durability level.** The file is in WAL mode with `synchronous=NORMAL`
//!   by default: a commit survives the death of the process, not a power cut
//!   of the machine (the last commits before the cut may be lost).
//!   [`Options::power_safe`] makes it `synchronous=FULL`: each commit is
//!   fsynced, slower.
//! - **Group commit.** One writer thread owns the file. It takes everything
//!   queued for it (events from every emitter, handler outcomes), writes it in
//!   one transaction and then answers each emit; so many concurrent emits
//!   share a commit, and a lone emitter waits for one commit per event.
//! - **One bus per file.** The file is opened in exclusive locking mode; a
//!   second process gets [`StoreError::Locked`](tidings::StoreError::Locked)
//!   (after waiting a second for the first to let go).
//! - **Dead letters** are kept in the file until replayed.
//! - **Order.** Recovered events are queued oldest first, before new ones, so
//!   per-key order holds across a restart.

mod recover;
mod schema;
mod store;
mod summary;
mod writer;

pub use store::{Options, SqliteStore};
pub use summary::summarize;
