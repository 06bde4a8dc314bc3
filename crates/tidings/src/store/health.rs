//! [`StoreHealth`]: whether a networked store reaches its server, and
//! [`Health`], the cell a store keeps it in.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

/// What a store says of its link to its server, in
/// [`BusStats::store`](crate::BusStats::store) (`None` for a store with no
/// server: memory, SQLite).
///
/// ```
/// let h = tidings::store::Health::new();
/// let now: tidings::store::StoreHealth = h.snapshot();
/// assert!(now.connected && now.reconnects == 0 && now.stale_settles == 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Whether the store reaches its server now (its last operation
    /// succeeded, or it reconnected since it last failed).
    pub connected: bool,
    /// Since when `connected` has had its value.
    pub since: SystemTime,
    /// How many times the store has connected again after losing its server.
    pub reconnects: u64,
    /// Outcomes of deliveries this process no longer held when it wrote
    /// them (a pause past its lease: another process had taken the delivery
    /// over), refused by the store and changing nothing. Counted by the bus
    /// from the store's [`Answers`](super::Answers) (each handler's share
    /// is in [`HandlerStats::stale_settles`](crate::HandlerStats::stale_settles));
    /// a store's own [`Health::snapshot`] says 0.
    pub stale_settles: u64,
}

/// A store's [`StoreHealth`], updated from its tasks without locks.
///
/// ```
/// let h = tidings::store::Health::new();
/// h.lost();
/// assert!(!h.snapshot().connected);
/// h.connected();
/// let s = h.snapshot();
/// assert!(s.connected && s.reconnects == 1);
/// ```
#[derive(Debug)]
pub struct Health {
    connected: AtomicBool,
    since_ns: AtomicI64,
    reconnects: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Connected, since now.
    pub fn new() -> Self {
        Self {
            connected: AtomicBool::new(true),
            since_ns: AtomicI64::new(now_ns()),
            reconnects: AtomicU64::new(0),
        }
    }

    /// The server was lost (a no-op if it was lost already).
    pub fn lost(&self) {
        if self.connected.swap(false, Relaxed) {
            self.since_ns.store(now_ns(), Relaxed);
            metrics::gauge!("tidings_store_connected").set(0.0);
        }
    }

    /// The server is reached again after [`lost`](Self::lost) (a no-op if
    /// it was not lost).
    pub fn connected(&self) {
        if !self.connected.swap(true, Relaxed) {
            self.since_ns.store(now_ns(), Relaxed);
            self.reconnects.fetch_add(1, Relaxed);
            metrics::gauge!("tidings_store_connected").set(1.0);
            metrics::counter!("tidings_store_reconnects_total").increment(1);
        }
    }

    /// Whether the server is reached now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// The figures now.
    pub fn snapshot(&self) -> StoreHealth {
        let ns = self.since_ns.load(Relaxed);
        StoreHealth {
            connected: self.connected.load(Relaxed),
            since: SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0)),
            reconnects: self.reconnects.load(Relaxed),
            stale_settles: 0,
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
