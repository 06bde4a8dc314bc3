//! [`DeadLetter`]: a delivery the bus gave up on, kept so that it can be
//! inspected, replayed ([`EventBus::replay`]) or discarded ([`EventBus::discard`]).
//!
//! The bus lists the most recent ones, up to
//! [`crate::EventBusBuilder::dead_letter_capacity`] (default 1 000); older ones
//! are evicted from the list and counted. In memory they do not survive the
//! process; a bus with a [`crate::Store`] keeps every dead letter there (until
//! it is replayed) and lists the newest again when it starts.

use crate::envelope::{Body, Dynamic};
use crate::error::ReplayError;
use crate::gate::Refused;
use crate::receipt::{Receipt, Status};
use crate::store::{Change, Claim, DeliveryRef};
use crate::{Envelope, EventBus};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A delivery that failed every attempt (or failed permanently).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
/// struct Broken;
/// impl EventHandler for Broken {
///     fn event_type(&self) -> &str { "t" }
///     fn options(&self) -> HandlerOptions { HandlerOptions::default().attempts(1) }
///     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
///         Err(HandlerError::permanent("no"))
///     }
/// }
/// let bus = EventBus::builder().discover(false).handler(Broken).build().unwrap();
/// bus.emit("t", serde_json::json!({"n": 1})).await.unwrap();
/// bus.wait_idle().await;
/// let dead = bus.dead_letters();
/// assert_eq!(dead[0].handler, "Broken");
/// assert_eq!(dead[0].error, "no");
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Id of this dead letter, for [`crate::EventBus::replay`].
    pub id: u64,
    /// The handler that gave up.
    pub handler: String,
    /// The event, as the last attempt saw it.
    pub event: Envelope,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the bus gave up.
    pub failed_at: DateTime<Utc>,
}

pub(crate) struct DeadLetters {
    capacity: usize,
    next_id: AtomicU64,
    evicted: AtomicU64,
    list: Mutex<VecDeque<DeadLetter>>,
}

impl DeadLetters {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            next_id: AtomicU64::new(1),
            evicted: AtomicU64::new(0),
            list: Mutex::new(VecDeque::new()),
        })
    }

    pub(crate) fn push(&self, handler: &str, event: &Envelope, error: String) {
        let letter = DeadLetter {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            handler: handler.to_owned(),
            event: event.detached(),
            error,
            attempts: event.attempt(),
            failed_at: Utc::now(),
        };
        let Ok(mut list) = self.list.lock() else {
            return;
        };
        if self.capacity == 0 {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if list.len() >= self.capacity {
            list.pop_front();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        list.push_back(letter);
    }

    /// Lists a dead letter kept by the bus's store, under a new id.
    pub(crate) fn restore(&self, mut letter: DeadLetter) {
        letter.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(mut list) = self.list.lock() else {
            return;
        };
        if list.len() >= self.capacity {
            list.pop_front();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        if self.capacity > 0 {
            list.push_back(letter);
        }
    }

    pub(crate) fn list(&self) -> Vec<DeadLetter> {
        self.list
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.list.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub(crate) fn take(&self, id: u64) -> Option<DeadLetter> {
        let mut list = self.list.lock().ok()?;
        let pos = list.iter().position(|d| d.id == id)?;
        list.remove(pos)
    }

    pub(crate) fn put_back(&self, letter: DeadLetter) {
        if let Ok(mut list) = self.list.lock() {
            let pos = list
                .iter()
                .position(|d| d.id > letter.id)
                .unwrap_or(list.len());
            list.insert(pos, letter);
        }
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl EventBus {
    /// The dead letters held now, oldest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.dead_letters().is_empty());
    /// # }
    /// ```
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead.list()
    }

    /// Replays a dead letter: its handler gets the event again, from attempt 1.
    /// The dead letter is removed; if the replay fails too, a new one is made.
    /// On a bus whose processes share deliveries through a store that
    /// claims replays ([`Store::claims_replays`](crate::store::Store::claims_replays):
    /// PostgreSQL's shared buses, NATS JetStream), the delivery is pending again for
    /// whichever process claims it, after what of its key is pending or
    /// running anywhere, rather than queued here.
    ///
    /// # Errors
    /// [`ReplayError::NotFound`] for an unknown id; `QueueFull` (never waits)
    /// or `ShuttingDown` otherwise, and the dead letter stays.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(matches!(bus.replay(42), Err(tidings::ReplayError::NotFound(42))));
    /// # }
    /// ```
    pub fn replay(&self, id: u64) -> Result<Receipt, ReplayError> {
        let inner = &*self.inner;
        let letter = inner.dead.take(id).ok_or(ReplayError::NotFound(id))?;
        let Some(slot) = inner.slots.iter().find(|s| *s.name == *letter.handler) else {
            inner.dead.put_back(letter);
            return Err(ReplayError::NotFound(id));
        };
        let id_of_event = letter.event.shared.meta.id;
        if let Some(store) = inner
            .store
            .as_ref()
            .filter(|s| inner.shared_feed.is_some() && s.claims_replays())
        {
            // Pending again for whichever process claims it (see
            // `Store::claims_replays`): nothing is queued here.
            if inner.gate.is_closed() {
                inner.dead.put_back(letter);
                return Err(ReplayError::ShuttingDown);
            }
            store.settle(
                DeliveryRef::new(id_of_event, &slot.name, Claim::NONE),
                Change::Replayed,
            );
            tracing::info!(handler = &*slot.name, event_id = %id_of_event, "replaying dead letter {id}: pending for the bus's processes");
            return Ok(Receipt::new(id_of_event, Status::Queued, 1));
        }
        match inner.gate.try_acquire() {
            Ok(()) => {}
            Err(refused) => {
                inner.dead.put_back(letter);
                return Err(match refused {
                    Refused::Full => ReplayError::QueueFull {
                        capacity: inner.gate.capacity(),
                    },
                    Refused::Closed => ReplayError::ShuttingDown,
                });
            }
        };
        let meta = letter.event.shared.meta.clone();
        let shared = Body::new(meta, 1, Dynamic(None));
        if let Some(store) = &inner.store {
            store.settle(
                DeliveryRef::new(id_of_event, &slot.name, Claim::NONE),
                Change::Replayed,
            );
        }
        inner.send(&slot.mailbox, Envelope::first(shared));
        tracing::info!(handler = &*slot.name, event_id = %id_of_event, "replaying dead letter {id}");
        Ok(Receipt::new(id_of_event, Status::Queued, 1))
    }

    /// Deletes a dead letter without replaying it, here and in the store, for
    /// good: for an event no attempt can fix (a payload its handler rejects,
    /// or one whose handling kills the process). Returns it, or `None` for
    /// an unknown id (replayed or discarded already, or evicted).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
    /// struct Refuse;
    /// impl EventHandler for Refuse {
    ///     fn event_type(&self) -> &str { "t" }
    ///     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
    ///         Err(HandlerError::permanent("never"))
    ///     }
    /// }
    /// let bus = EventBus::builder().discover(false).handler(Refuse).build().unwrap();
    /// bus.emit("t", serde_json::json!({})).await.unwrap();
    /// bus.wait_idle().await;
    /// let id = bus.dead_letters()[0].id;
    /// assert_eq!(bus.discard(id).map(|d| d.id), Some(id));
    /// assert!(bus.dead_letters().is_empty());
    /// assert!(bus.discard(id).is_none());
    /// # }
    /// ```
    pub fn discard(&self, id: u64) -> Option<DeadLetter> {
        let inner = &*self.inner;
        let letter = inner.dead.take(id)?;
        if let Some(store) = &inner.store {
            store.settle(
                DeliveryRef::new(letter.event.id(), &letter.handler, Claim::NONE),
                Change::Discarded,
            );
        }
        tracing::info!(handler = letter.handler.as_str(), event_id = %letter.event.id(), "discarded dead letter {id}");
        Some(letter)
    }
}
