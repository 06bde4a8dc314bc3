//! [`EventBus::shutdown`], and its [`ShutdownReport`]: what it finished and
//! what it had to abandon.

use crate::bus::lock;
use crate::EventBus;
use std::time::Duration;
use uuid::Uuid;

/// The result of [`crate::EventBus::shutdown`]: exact counts, and the ids of
/// every delivery the deadline cut off.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let report = bus.shutdown(std::time::Duration::from_secs(1)).await;
/// assert!(report.is_clean());
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events pending when shutdown began.
    pub pending_at_start: usize,
    /// Deliveries (one event for one handler) that finished during shutdown:
    /// succeeded, or given up as dead letters.
    pub finished: u64,
    /// Deliveries abandoned at the deadline: queued, running or waiting to
    /// retry, or queued by an emit that raced the deadline.
    pub abandoned: Vec<Abandoned>,
    /// Whether the abandoned deliveries are kept in the bus's store, to be
    /// made when a bus next opens it (`false` for a bus in memory: they are lost).
    pub kept: bool,
    /// How long shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether everything pending was finished.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let report = bus.shutdown(std::time::Duration::from_secs(1)).await;
    /// assert!(report.is_clean());
    /// assert!(report.abandoned_events().is_empty());
    /// assert!(report.abandoned.iter().all(|a: &tidings::Abandoned| !a.handler.is_empty()));
    /// # }
    /// ```
    pub fn is_clean(&self) -> bool {
        self.abandoned.is_empty()
    }

    /// The distinct events that at least one handler abandoned.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let report = bus.shutdown(std::time::Duration::from_secs(1)).await;
    /// assert!(report.is_clean());
    /// assert!(report.abandoned_events().is_empty());
    /// assert!(report.abandoned.iter().all(|a: &tidings::Abandoned| !a.handler.is_empty()));
    /// # }
    /// ```
    pub fn abandoned_events(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.abandoned.iter().map(|a| a.event_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// One delivery abandoned at shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let report = bus.shutdown(std::time::Duration::from_secs(1)).await;
/// assert!(report.is_clean());
/// assert!(report.abandoned_events().is_empty());
/// assert!(report.abandoned.iter().all(|a: &tidings::Abandoned| !a.handler.is_empty()));
/// # }
/// ```
pub struct Abandoned {
    /// The event.
    pub event_id: Uuid,
    /// The handler that did not finish it.
    pub handler: String,
}

/// How long a shutdown past its deadline waits for emits that were queueing
/// their events as the workers stopped.
const LATE_SENDS: Duration = Duration::from_secs(1);

impl EventBus {
    /// Stops taking events ([`crate::EmitError::ShuttingDown`]), lets the handlers
    /// finish what is pending for up to `timeout`, then stops them and reports
    /// exact counts and the ids of every delivery it had to abandon.
    ///
    /// Calling it again returns an empty report.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let report = bus.shutdown(std::time::Duration::from_secs(5)).await;
    /// assert_eq!(report.finished, 0);
    /// assert!(bus.try_emit("t", serde_json::json!({})).is_err());
    /// # }
    /// ```
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let started = tokio::time::Instant::now();
        let inner = &*self.inner;
        inner.gate.close();
        inner.stop_relay.cancel();
        let pending_at_start = inner.gate.pending();
        let finished_before: u64 = inner.slots.iter().map(|s| s.cells.finished()).sum();
        let drained = tokio::time::timeout(timeout, inner.gate.idle())
            .await
            .is_ok();
        inner.cancel.cancel();
        let workers = std::mem::take(&mut *lock(&inner.workers));
        let mut abandoned = Vec::new();
        for (name, handle) in workers {
            if let Ok(ids) = handle.await {
                abandoned.extend(ids.into_iter().map(|event_id| Abandoned {
                    event_id,
                    handler: name.to_string(),
                }));
            }
        }
        if !drained {
            // An emit that took its place just before the deadline queues it
            // a moment later and finds the workers gone: wait for those (no
            // handler runs any more, so this is short), then name them too.
            let _ = tokio::time::timeout(LATE_SENDS, inner.gate.idle()).await;
        }
        abandoned.append(&mut lock(&inner.late));
        if let Some(store) = &inner.store {
            if let Err(e) = store.flush().await {
                tracing::warn!("the store could not write every update at shutdown (those deliveries will be made again): {e}");
            }
        }
        let finished_after: u64 = inner.slots.iter().map(|s| s.cells.finished()).sum();
        let report = ShutdownReport {
            pending_at_start,
            finished: finished_after - finished_before,
            abandoned,
            kept: inner.store.is_some(),
            elapsed: started.elapsed(),
        };
        if drained {
            tracing::info!(finished = report.finished, "event bus shut down cleanly");
        } else {
            tracing::warn!(
                finished = report.finished,
                abandoned = report.abandoned.len(),
                "event bus shut down at its deadline with deliveries abandoned"
            );
        }
        report
    }
}
