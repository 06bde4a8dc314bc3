//! # tidings-postgres: a PostgreSQL store for tidings
//!
//! The bus's events live in three tables of the application's own database
//! (`tidings_events`, `tidings_deliveries`, `tidings_dead_letters`), scoped
//! by a bus name, so that several services can share one database.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let store = tidings_postgres::PgStore::connect("postgres://postgres@127.0.0.1/app", "orders").await?;
//! let bus = tidings::EventBus::builder().store(store).build()?;
//! // Returns once the event is committed in PostgreSQL.
//! bus.emit("order_created", serde_json::json!({"order_id": 1})).await?;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! The same as every store (see `tidings::store`): `emit(..).await` returns
//! after the commit; handled deliveries are deleted, failed attempts counted,
//! dead letters kept until replayed; at the next start, whatever was pending
//! is delivered, oldest first; **at least once** across a crash of the
//! process. PostgreSQL's own durability applies (`synchronous_commit`).
//!
//! - **Group commit.** One writer task with its own connection takes every
//!   operation queued for it (emits and handler outcomes of all tasks),
//!   writes them in one transaction with a handful of set-based statements
//!   (`UNNEST` arrays, not a statement per row), then answers the emits.
//! - **One bus per name.** A store holds a session advisory lock on its bus
//!   name for its life; a second store with that name, in any process, gets
//!   [`StoreError::Locked`](tidings::StoreError::Locked). The lock is
//!   released when the store is dropped (after its writer has finished) or
//!   when its process dies.
//! - **Not yet**: emitting inside the application's own transaction (the
//!   transactional outbox) and several processes sharing one bus name
//!   (`FOR UPDATE SKIP LOCKED` claims). Both need the bus to pick up events
//!   it did not write itself, a seam `tidings::store` does not have yet.

mod schema;
mod store;
mod writer;

pub use store::PgStore;
