//! [`EventBus::tail`]: a live feed of what happens on the bus, for
//! dashboards and `tidings tail`.
//!
//! - **What it shows.** Each event an emit of this process queued (or, on
//!   a shared store, wrote) ([`Tiding::Emitted`]: type, id, key) and each delivery's outcome as it
//!   happens ([`Tiding::Settled`]: handled, retrying, dead-lettered, with the
//!   handler and the attempt). Metadata only: never an event's data, never
//!   an error text (which may quote data).
//! - **Cost.** While nobody listens, one relaxed atomic load per emit and per
//!   settled delivery. While someone does, one broadcast send each.
//! - **Falling behind.** A listener has a buffer of [`BUFFER`] tidings; one
//!   that falls further behind loses the oldest and is told how many
//!   ([`TailError::Lagged`]), the bus never waits for it.
//! - **End.** [`Tail::recv`] answers [`TailError::Closed`] once the bus is
//!   dropped.

use crate::EventBus;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Tidings a listener may fall behind by before it loses the oldest.
pub const BUFFER: usize = 4_096;

/// One thing that happened on the bus (see the [module docs](self)).
///
/// ```
/// let t = tidings::Tiding::Emitted {
///     event_type: "signup".into(),
///     event_id: uuid::Uuid::nil(),
///     key: None,
/// };
/// assert_eq!(serde_json::to_value(&t).unwrap()["kind"], "emitted");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Tiding {
    /// An event was queued for this process's handlers.
    Emitted {
        /// Its type.
        event_type: String,
        /// Its id.
        event_id: Uuid,
        /// Its ordering key.
        key: Option<String>,
    },
    /// An attempt of a delivery ended.
    Settled {
        /// The event's type.
        event_type: String,
        /// The event's id.
        event_id: Uuid,
        /// The handler.
        handler: String,
        /// The attempt that ended, from 1.
        attempt: u32,
        /// What became of the delivery.
        outcome: Settled,
    },
}

/// What became of a delivery after an attempt.
///
/// ```
/// assert_eq!(serde_json::to_value(tidings::Settled::DeadLettered).unwrap(), "dead_lettered");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Settled {
    /// The handler succeeded.
    Handled,
    /// The attempt failed; another follows after the backoff.
    Retrying,
    /// The attempts are spent (or the error was permanent): a dead letter.
    DeadLettered,
}

/// Why [`Tail::recv`] gave no tiding.
///
/// ```
/// assert!(tidings::TailError::Lagged(3).to_string().contains('3'));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// The listener fell behind by more than [`BUFFER`]: this many of the
    /// oldest were skipped. The next `recv` goes on with the newest.
    #[error("the tail fell behind: {0} tidings skipped")]
    Lagged(u64),
    /// The bus is gone.
    #[error("the bus is gone")]
    Closed,
}

/// A listener on the bus's tail (see [`EventBus::tail`]). Dropping it stops
/// the listening.
#[derive(Debug)]
pub struct Tail {
    rx: broadcast::Receiver<Tiding>,
    _listening: Listening,
}

impl Tail {
    /// The next tiding.
    ///
    /// # Errors
    /// [`TailError::Lagged`] after falling behind, [`TailError::Closed`]
    /// once the bus is gone.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Tiding, TailError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => TailError::Lagged(n),
            broadcast::error::RecvError::Closed => TailError::Closed,
        })
    }
}

/// Counts a listener while it lives.
#[derive(Debug)]
struct Listening(Arc<AtomicUsize>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The bus's side: where tidings are sent, if anybody listens.
pub(crate) struct Hub {
    tx: broadcast::Sender<Tiding>,
    listeners: Arc<AtomicUsize>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::Sender::new(BUFFER),
            listeners: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether somebody listens.
    #[inline]
    pub(crate) fn listening(&self) -> bool {
        self.listeners.load(Relaxed) > 0
    }

    /// Sends what `make` builds, only if somebody listens.
    #[inline]
    pub(crate) fn tell(&self, make: impl FnOnce() -> Tiding) {
        if self.listeners.load(Relaxed) > 0 {
            let _ = self.tx.send(make());
        }
    }
}

impl EventBus {
    /// Listens to what happens on the bus from now on: each event this
    /// process queues and each delivery's outcome, as metadata (see
    /// [`Tiding`] and the [module docs](crate::tail)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # struct Welcome;
    /// # impl tidings::EventHandler for Welcome {
    /// #     fn event_type(&self) -> &str { "signup" }
    /// #     async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> { Ok(()) }
    /// # }
    /// let bus = tidings::EventBus::builder().discover(false).handler(Welcome).build().unwrap();
    /// let mut tail = bus.tail();
    /// bus.emit("signup", serde_json::json!({"password": "never shown"})).await.unwrap();
    /// assert!(matches!(tail.recv().await, Ok(tidings::Tiding::Emitted { .. })));
    /// let settled = tail.recv().await.unwrap();
    /// assert!(matches!(settled, tidings::Tiding::Settled { outcome: tidings::Settled::Handled, .. }));
    /// # }
    /// ```
    pub fn tail(&self) -> Tail {
        let hub = &self.inner.tail;
        hub.listeners.fetch_add(1, Relaxed);
        Tail {
            rx: hub.tx.subscribe(),
            _listening: Listening(hub.listeners.clone()),
        }
    }
}
