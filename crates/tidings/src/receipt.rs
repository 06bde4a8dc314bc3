//! [`Receipt`]: what `emit` tells the caller.

use uuid::Uuid;

/// Proof that an emit was taken care of. It never waits for handlers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// bus.disable();
/// let receipt = bus.emit("t", serde_json::json!({})).await.unwrap();
/// assert!(receipt.is_dropped());
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    id: Uuid,
    status: Status,
    handlers: usize,
}

/// What became of an emitted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
/// assert_eq!(r.status(), tidings::Status::Unrouted);
/// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
/// assert_eq!(r.handlers(), 0);
/// assert_eq!(r.id().get_version_num(), 7);
/// # }
/// ```
pub enum Status {
    /// Queued for its handlers.
    Queued,
    /// Dropped because the bus is disabled; counted in the stats.
    Dropped,
    /// No handler listens to this type; counted in the stats.
    Unrouted,
}

impl Receipt {
    pub(crate) fn new(id: Uuid, status: Status, handlers: usize) -> Self {
        Self {
            id,
            status,
            handlers,
        }
    }

    /// The event's id (also `Envelope::id` in the handlers).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// What became of the event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        self.status
    }

    /// How many handlers it was queued for.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn handlers(&self) -> usize {
        self.handlers
    }

    /// Whether it was queued for at least one handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn is_queued(&self) -> bool {
        self.status == Status::Queued
    }

    /// Whether it was dropped because the bus is disabled.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn is_dropped(&self) -> bool {
        self.status == Status::Dropped
    }

    /// Whether no handler listens to its type.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("nobody", serde_json::json!({})).await.unwrap();
    /// assert_eq!(r.status(), tidings::Status::Unrouted);
    /// assert!(r.is_unrouted() && !r.is_queued() && !r.is_dropped());
    /// assert_eq!(r.handlers(), 0);
    /// assert_eq!(r.id().get_version_num(), 7);
    /// # }
    /// ```
    pub fn is_unrouted(&self) -> bool {
        self.status == Status::Unrouted
    }
}
