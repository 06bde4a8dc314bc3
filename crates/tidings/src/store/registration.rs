//! [`Registration`]: a handler registered on a bus that several processes
//! share, and when a process last had it.

use std::time::SystemTime;

/// A handler registered on a shared bus (a PostgreSQL `connect_shared`
/// name's handler row, a NATS JetStream bus's consumers), for operators:
/// when a process with it last said so, and how many deliveries wait for
/// it. A handler no process has had for a long time (renamed, or removed
/// from the code) still gets every event of its type, which waits for it
/// for ever: prune it (`tidings prune`), which first turns what waits into
/// dead letters.
///
/// ```
/// let r = tidings::store::Registration {
///     handler: "notify".into(),
///     event_type: "order_created".into(),
///     last_seen: std::time::SystemTime::UNIX_EPOCH,
///     pending: 3,
/// };
/// assert_eq!(r.pending, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Registration {
    /// The handler's name.
    pub handler: String,
    /// The event type it handles.
    pub event_type: String,
    /// When a process with it last said it was alive.
    pub last_seen: SystemTime,
    /// Deliveries waiting for it (or held by a process).
    pub pending: u64,
}

/// A handler removed from a shared bus by a prune, and how many of its
/// waiting deliveries became dead letters.
///
/// ```
/// let p = tidings::store::Pruned { handler: "old".into(), event_type: "t".into(), dead_lettered: 2 };
/// assert_eq!(p.dead_lettered, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// The handler's name.
    pub handler: String,
    /// The event type it handled.
    pub event_type: String,
    /// Its waiting deliveries, kept as dead letters (replayable once a
    /// handler of that name is back).
    pub dead_lettered: u64,
}
