//! [`EventBus::pending_keys`]: which keys hold a handler's deliveries back
//! in this process, and how many wait on each.
//!
//! A key's deliveries to a handler run one at a time; the others wait in the
//! handler's worker. The worker owns that state, so the question goes to
//! it: the bus raises a flag and wakes the worker, which answers at its next
//! turn (at once when it is idle; after its current batch when busy). While
//! nobody asks, the worker pays one relaxed atomic load per turn.

use crate::EventBus;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// The most keys a report lists (the ones with the most waiting).
pub const MAX_KEYS: usize = 100;

/// How long [`EventBus::pending_keys`] waits for the worker's answer.
const ANSWER: Duration = Duration::from_secs(2);

/// One key holding a handler's deliveries: its delivery in progress (or
/// waiting to retry) and the ones waiting behind it.
///
/// ```
/// let k = tidings::KeyBacklog::new("user-7", 3);
/// assert_eq!(serde_json::to_value(&k).unwrap()["pending"], 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyBacklog {
    /// The key.
    pub key: String,
    /// Its deliveries not yet settled in this process: the current one
    /// and those waiting behind it.
    pub pending: usize,
}

impl KeyBacklog {
    /// A key and its count.
    ///
    /// ```
    /// assert_eq!(tidings::KeyBacklog::new("k", 2).pending, 2);
    /// ```
    pub fn new(key: impl Into<String>, pending: usize) -> Self {
        Self {
            key: key.into(),
            pending,
        }
    }
}

/// A handler's side of the question (in its figures, shared with its worker).
#[derive(Default)]
pub(crate) struct Probe {
    asked: AtomicBool,
    report: Mutex<Vec<KeyBacklog>>,
    answered: Notify,
}

impl Probe {
    /// Whether the bus asks (the worker's check, once per turn).
    #[inline]
    pub(crate) fn asked(&self) -> bool {
        self.asked.load(Relaxed)
    }

    /// The worker's answer: every key it holds and how many wait on each.
    pub(crate) fn answer(&self, mut keys: Vec<KeyBacklog>) {
        keys.sort_by(|a, b| b.pending.cmp(&a.pending).then_with(|| a.key.cmp(&b.key)));
        keys.truncate(MAX_KEYS);
        *self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        self.asked.store(false, Relaxed);
        self.answered.notify_waiters();
    }
}

impl EventBus {
    /// The keys holding `handler`'s deliveries back in this process, the
    /// most waiting first ([`MAX_KEYS`] at most), or `None` for an unknown
    /// handler or a worker that did not answer within 2 s (it stopped).
    /// Deliveries without a key are not listed. On a shared store, only
    /// what this process claimed. See the [module docs](crate::keys).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # struct Audit;
    /// # impl tidings::EventHandler for Audit {
    /// #     fn event_type(&self) -> &str { "login" }
    /// #     async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> { Ok(()) }
    /// # }
    /// let bus = tidings::EventBus::builder().discover(false).handler(Audit).build().unwrap();
    /// assert_eq!(bus.pending_keys("Audit").await, Some(vec![]));
    /// assert_eq!(bus.pending_keys("nobody").await, None);
    /// # }
    /// ```
    pub async fn pending_keys(&self, handler: &str) -> Option<Vec<KeyBacklog>> {
        let slot = self.inner.slots.iter().find(|s| &*s.name == handler)?;
        let probe = &slot.cells.keys;
        let answered = probe.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        probe.asked.store(true, Relaxed);
        slot.mailbox.poke();
        tokio::time::timeout(ANSWER, answered).await.ok()?;
        Some(
            probe
                .report
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}
