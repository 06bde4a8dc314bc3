//! # The seed's built-in events, for tidings
//!
//! Three events, each in its own file, each with a handler that registers
//! itself and writes through sqlx to SQLite (the default) or PostgreSQL:
//!
//! | event type | payload | handler writes |
//! |---|---|---|
//! | `activity_log` | [`ActivityLog`] (severity: [`Severity`]) | `activity_logs` |
//! | `message_save` | [`MessageSave`] | `messages` |
//! | `semantic_cache` | [`SemanticCacheStore`] | `semantic_cache` (with the query's embedding) |
//!
//! Every handler is idempotent on the event id: a redelivered event writes
//! once. The handlers need a [`Db`] among the bus's resources; the semantic
//! cache also takes a [`SharedEmbedder`] (default: [`HashingEmbedder`]).
//! A dynamic emit of these types is checked against the payload at emit time.
//! The deprecated [`emit_activity_log`] still works.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings_events::{MessageSave, Role, Db};
//! let store = Db::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//! let bus = tidings::EventBus::builder().resource(store.clone()).build()?;
//! assert_eq!(bus.handler_count(Some("message_save")), 1);
//!
//! bus.publish(MessageSave::new("conv-1", 7, Role::User, "hello")).await?;
//! bus.wait_idle().await;
//! assert_eq!(tidings_events::conversation(&store, "conv-1").await?.len(), 1);
//! # Ok(()) }
//! ```

mod activity_log;
mod db;
mod embedder;
mod message_save;
mod semantic_cache;

#[allow(deprecated)]
pub use activity_log::emit_activity_log;
pub use activity_log::{list_activity, ActivityLog, Severity, StoredActivity};
pub use db::{Db, DbError};
pub use embedder::{cosine, Embedder, HashingEmbedder, SharedEmbedder};
pub use message_save::{
    conversation, conversation_page, save as save_message_now, MessageSave, Role, StoredMessage,
};
pub use semantic_cache::{CacheHit, SemanticCache, SemanticCacheHandler, SemanticCacheStore};
