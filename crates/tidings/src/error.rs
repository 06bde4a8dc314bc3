//! The errors of the bus's own operations. Handler failures are [`crate::HandlerError`].

use crate::validate::Shown;

/// Why an emit was refused. Nothing was queued when this is returned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let err = bus.emit("bad type!", serde_json::json!({})).await.unwrap_err();
/// assert!(matches!(err, tidings::EmitError::InvalidEventType { .. }));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The event type is not 1 to 128 characters of `A-Za-z0-9_.:-`.
    #[error("invalid event type {name:?}: expected 1 to 128 characters of A-Za-z0-9_.:-")]
    InvalidEventType {
        /// The offending name, escaped and shortened.
        name: Shown,
    },
    /// The ordering key is empty, longer than 256 bytes, or holds control
    /// characters. The key itself is not shown: keys may be personal data
    /// (an email, an account number).
    #[error("invalid key: {reason}: expected 1 to 256 bytes without control characters")]
    InvalidKey {
        /// What is wrong with it: `empty`, `longer than 256 bytes` or
        /// `holds a control character`.
        reason: &'static str,
    },
    /// A dynamic payload that is not a JSON object.
    #[error("invalid payload: {reason}")]
    InvalidPayload {
        /// What was wrong.
        reason: String,
    },
    /// A dynamic payload does not match the typed event its handlers expect.
    #[error("payload does not match {type_name} for '{event_type}': field `{field}`: {reason}")]
    PayloadMismatch {
        /// The event type emitted.
        event_type: String,
        /// The Rust type the handlers expect.
        type_name: &'static str,
        /// The path of the offending field (`.` for the whole object).
        field: String,
        /// What was expected and the kind of value found, never the value
        /// ([`crate::redact::decode_problem`]).
        reason: String,
    },
    /// The encoded payload is larger than the bus accepts.
    #[error("payload too large: more than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The queue is full and the overflow policy is `Reject` (or this was a `try_emit`).
    #[error("queue full: {capacity} events pending")]
    QueueFull {
        /// The bus's capacity.
        capacity: usize,
    },
    /// The bus is shutting down and takes no new events.
    #[error("the event bus is shutting down")]
    ShuttingDown,
    /// The bus's store could not write the event; it was not queued.
    #[error("the event was not stored: {0}")]
    Store(crate::store::StoreError),
    /// The bus's store could not reach its server within `waited` (a
    /// restart, a failover, a network partition); the store keeps
    /// reconnecting in the background. The emit was not acknowledged: try
    /// again later. (If the connection broke while the event's commit was
    /// on its way, the event may still have been stored; it is then
    /// delivered, as an emit retried after a timeout would be twice.)
    #[error("the event bus's store is unavailable (waited {waited:?}): try again later")]
    Unavailable {
        /// How long the emit waited for the store's server.
        waited: std::time::Duration,
    },
    /// A bus with a store writes each event before queueing it, which
    /// `try_emit` cannot wait for: use `emit(..).await`.
    #[error("this bus stores events before queueing them: use emit(..).await, not try_emit")]
    MustAwait,
}

impl From<crate::store::StoreError> for EmitError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable { waited } => Self::Unavailable { waited },
            e => Self::Store(e),
        }
    }
}

/// Why [`crate::EventBusBuilder::build`] failed.
///
/// ```
/// let err = tidings::EventBus::builder().discover(false).build().unwrap_err();
/// assert!(matches!(err, tidings::BuildError::NoRuntime));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build()` was called outside a Tokio runtime.
    #[error("an event bus must be built inside a Tokio runtime")]
    NoRuntime,
    /// Two handlers share a name.
    #[error("two handlers are named '{name}': {first} and {second}")]
    DuplicateHandler {
        /// The shared name.
        name: String,
        /// Where the first was declared.
        first: String,
        /// Where the second was declared.
        second: String,
    },
    /// A handler's constructor asked for a resource that was not given to the builder.
    #[error("handler {handler} needs resource {resource}, which was not given to the builder (EventBus::builder().resource(...))")]
    MissingResource {
        /// The handler's declaration.
        handler: String,
        /// The missing type.
        resource: &'static str,
    },
    /// A handler listens to an invalid event type name.
    #[error("handler {handler} has an invalid event type {name:?}")]
    InvalidEventType {
        /// The handler's name.
        handler: String,
        /// The offending name, escaped.
        name: Shown,
    },
    /// A handler's options are out of range.
    #[error("handler {handler} has invalid options: {reason}")]
    InvalidOptions {
        /// The handler's name.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// A bus option is out of range.
    #[error("invalid bus configuration: {0}")]
    InvalidConfig(String),
    /// The store could not say what was pending.
    #[error("could not recover the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Why [`crate::init`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let _ = tidings::init(tidings::EventBus::builder());
/// let err = tidings::init(tidings::EventBus::builder()).unwrap_err();
/// assert!(matches!(err, tidings::InitError::AlreadyInitialized));
/// # }
/// ```
pub enum InitError {
    /// The process-wide bus exists already (built by `init` or `event_bus()`).
    #[error("the process-wide event bus is already initialized")]
    AlreadyInitialized,
    /// Building failed.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why a dead letter could not be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// assert_eq!(bus.replay(1).unwrap_err().to_string(), "no dead letter with id 1");
/// # }
/// ```
pub enum ReplayError {
    /// No dead letter has that id (it was replayed already, or evicted).
    #[error("no dead letter with id {0}")]
    NotFound(u64),
    /// The queue is full.
    #[error("queue full: {capacity} events pending")]
    QueueFull {
        /// The bus's capacity.
        capacity: usize,
    },
    /// The bus is shutting down.
    #[error("the event bus is shutting down")]
    ShuttingDown,
}
