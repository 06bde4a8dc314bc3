//! [`ShutdownReport`]: what `EventBus::shutdown` finished and what it had to abandon.

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
