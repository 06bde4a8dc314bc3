//! [`StoreError`]: why a store failed.

use std::time::Duration;

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
