//! What a store keeps and hands back: events, their deliveries, dead
//! letters, and the changes the bus records ([`Change`]).

use super::Claim;
use std::time::SystemTime;
use uuid::Uuid;

/// What a store knows of earlier work on a delivery it hands back (see
/// [`Store::begin`](super::Store::begin) and the [module docs](super)).
///
/// ```
/// use tidings::store::Begun;
/// assert_eq!(Begun::default(), Begun::Never);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Begun {
    /// No process has begun it: a new event, or one the application wrote
    /// (the outbox). Runs at once.
    #[default]
    Never,
    /// A process that stopped may have begun it (it was pending when the
    /// process stopped, or the broker delivered it before). Each attempt is
    /// marked begun ([`Store::begin`](super::Store::begin)) before it runs.
    Maybe,
    /// Its current attempt was marked begun and never ended: the process
    /// that made it stopped in the middle (a crash, a kill). The bus counts
    /// the attempt as failed before going on.
    Interrupted,
}

/// A handler of the bus, as [`Store::recover`](super::Store::recover) is told of it.
///
/// ```
/// let h = tidings::store::BoundHandler { name: "notify".into(), event_type: "order_created".into() };
/// assert_eq!(h.event_type, "order_created");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundHandler {
    /// The handler's name.
    pub name: String,
    /// The event type it handles.
    pub event_type: String,
}

/// An event as a store keeps it.
///
/// ```
/// let e = tidings::store::StoredEvent {
///     id: uuid::Uuid::now_v7(),
///     event_type: "order_created".into(),
///     key: None,
///     emitted_at: std::time::SystemTime::now(),
///     data: r#"{"order_id":1}"#.into(),
///     deliveries: vec![tidings::store::StoredDelivery::new("notify", 1)],
/// };
/// assert_eq!(e.deliveries.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's id (UUIDv7).
    pub id: Uuid,
    /// Its type, already validated.
    pub event_type: String,
    /// Its ordering key.
    pub key: Option<String>,
    /// When it was emitted.
    pub emitted_at: SystemTime,
    /// Its data as JSON text, `_event_type` and `_emitted_at` included.
    pub data: String,
    /// Its pending deliveries: all of its handlers at append, those not yet
    /// done at recovery.
    pub deliveries: Vec<StoredDelivery>,
}

/// One pending delivery: a handler, the attempt it makes next (from 1),
/// and whether an earlier process may have begun it.
///
/// ```
/// use tidings::store::{Begun, StoredDelivery};
/// let d = StoredDelivery::new("notify", 1);
/// assert_eq!((d.attempt, d.begun), (1, Begun::Never));
/// let resumed = StoredDelivery { begun: Begun::Interrupted, ..d };
/// assert_eq!(resumed.handler, "notify");
/// let claimed = StoredDelivery::new("notify", 1).claimed(tidings::store::Claim::new(9));
/// assert_eq!(claimed.claim.token(), Some(9));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDelivery {
    /// The handler's name.
    pub handler: String,
    /// The attempt it makes next, from 1.
    pub attempt: u32,
    /// What the store knows of earlier work on it: always
    /// [`Begun::Never`] at append.
    pub begun: Begun,
    /// What the store needs to settle it, handed back with each settle
    /// ([`super::DeliveryRef`]); [`Claim::NONE`] at append.
    pub claim: Claim,
}

impl StoredDelivery {
    /// A delivery to `handler` at `attempt` that no process has begun.
    ///
    /// ```
    /// let d = tidings::store::StoredDelivery::new("notify", 2);
    /// assert_eq!(d.attempt, 2);
    /// ```
    pub fn new(handler: impl Into<String>, attempt: u32) -> Self {
        Self {
            handler: handler.into(),
            attempt,
            begun: Begun::Never,
            claim: Claim::NONE,
        }
    }

    /// The same delivery, handed out with `claim`.
    ///
    /// ```
    /// use tidings::store::{Claim, StoredDelivery};
    /// assert_eq!(StoredDelivery::new("notify", 1).claimed(Claim::new(3)).claim, Claim::new(3));
    /// ```
    #[must_use]
    pub fn claimed(self, claim: Claim) -> Self {
        Self { claim, ..self }
    }
}

/// A dead letter as a store keeps it.
///
/// ```
/// # let event = tidings::store::StoredEvent { id: uuid::Uuid::now_v7(), event_type: "t".into(),
/// #     key: None, emitted_at: std::time::SystemTime::now(), data: "{}".into(), deliveries: vec![] };
/// let d = tidings::store::StoredDeadLetter {
///     event,
///     handler: "notify".into(),
///     attempts: 3,
///     error: "smtp down".into(),
///     failed_at: std::time::SystemTime::now(),
/// };
/// assert_eq!(d.attempts, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// The event (its `deliveries` are not used).
    pub event: StoredEvent,
    /// The handler that gave up.
    pub handler: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the bus gave up.
    pub failed_at: SystemTime,
}

/// What a store held when the bus started.
///
/// ```
/// let r = tidings::store::Recovered::default();
/// assert!(r.events.is_empty() && r.dead_letters.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Events with pending deliveries, oldest first.
    pub events: Vec<StoredEvent>,
    /// Dead letters, oldest first.
    pub dead_letters: Vec<StoredDeadLetter>,
}

/// What became of one delivery, for [`Store::settle`](super::Store::settle).
///
/// ```
/// let c = tidings::store::Change::Retrying { attempt: 2 };
/// assert_eq!(format!("{c:?}"), "Retrying { attempt: 2 }");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The handler succeeded: the delivery is done.
    Handled,
    /// An attempt failed; `attempt` is the next one.
    Retrying {
        /// The attempt made next, from 2.
        attempt: u32,
    },
    /// The bus gave up: keep it as a dead letter.
    DeadLettered {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// A dead letter was replayed: pending again, from attempt 1.
    Replayed,
    /// A dead letter was discarded ([`crate::EventBus::discard`]): deleted
    /// for good, with the event if nothing else refers to it.
    Discarded,
    /// A shutdown abandoned the attempt at its deadline: the delivery stays
    /// pending at that attempt, and its begin mark ([`Store::begin`](super::Store::begin)), if
    /// any, is cleared, since the process did not die of it.
    Abandoned {
        /// The attempt that was cut short.
        attempt: u32,
    },
}
