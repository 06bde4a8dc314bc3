//! [`Admin`]: operating a networked backend's bus names from outside a
//! running bus, and what it reports ([`Summary`], [`Count`]).

use super::{Pruned, Registration, StoreError};
use futures_util::future::BoxFuture;
use std::time::SystemTime;

/// Operating a networked backend's bus names from outside a running bus (the
/// CLI's `inspect`, `purge`, `prune` and `upgrade`): each backend gives one, made from
/// its server's URL (`tidings_postgres::PgAdmin`,
/// `tidings_nats::JetStreamAdmin`). Every method takes the bus name, checks
/// it before it reaches the server, and never reads a payload.
///
/// ```
/// fn names(_: &dyn tidings::store::Admin) {} // object safe: one registry holds any backend
/// ```
pub trait Admin: Send + Sync {
    /// Pending deliveries and dead letters by type and handler (a snapshot;
    /// safe while the bus runs).
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn summarize<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<Summary, StoreError>>;
    /// Deletes everything the bus name holds (no process may be using it).
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn purge<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The handlers registered on a shared bus name, with when a process
    /// last had each.
    ///
    /// # Errors
    /// An invalid name, or the server unreachable.
    fn registrations<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Registration>, StoreError>>;
    /// Removes the handlers no process has had for `unused_for`, their
    /// waiting deliveries kept as dead letters first.
    ///
    /// # Errors
    /// An invalid name or too short a time, or the server unreachable.
    fn prune<'a>(
        &'a self,
        bus: &'a str,
        unused_for: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<Pruned>, StoreError>>;
    /// What a rolling upgrade leaves for an operator to do on the bus name
    /// once no process of an earlier version uses it, said for people
    /// (`None`: nothing; most upgrades are done by the first process of the
    /// new version to connect). Changes nothing. Provided: nothing left (a
    /// backend with such a step overrides both this and
    /// [`finish_upgrade`](Self::finish_upgrade)).
    ///
    /// # Errors
    /// An invalid name, no such bus, or the server unreachable.
    fn upgrade_left<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let _ = bus;
        Box::pin(std::future::ready(Ok(None)))
    }
    /// Does what [`upgrade_left`](Self::upgrade_left) says, and says what it
    /// did (`None`: nothing was left). Run it only once every process of the
    /// bus runs this version: one of an earlier version may not read what
    /// the bus writes after it. Doing it twice changes nothing. Provided:
    /// nothing to do.
    ///
    /// # Errors
    /// An invalid name, no such bus, or the server unreachable.
    fn finish_upgrade<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let _ = bus;
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// What a store holds, for operators: pending deliveries and dead letters,
/// counted by event type and handler. Never the payloads.
///
/// ```
/// let s = tidings::store::Summary::default();
/// assert!(s.pending.is_empty() && s.dead_letters.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pending deliveries, by event type and handler.
    pub pending: Vec<Count>,
    /// Dead letters, by event type and handler.
    pub dead_letters: Vec<Count>,
}

/// How many rows of one event type for one handler, and when the oldest was emitted.
///
/// ```
/// let c = tidings::store::Count {
///     event_type: "order_created".into(),
///     handler: "notify".into(),
///     count: 3,
///     oldest: std::time::SystemTime::UNIX_EPOCH,
/// };
/// assert_eq!(c.count, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// The event type.
    pub event_type: String,
    /// The handler.
    pub handler: String,
    /// How many.
    pub count: u64,
    /// When the oldest of them was emitted.
    pub oldest: SystemTime,
}
