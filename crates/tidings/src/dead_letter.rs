//! [`DeadLetter`]: a delivery the bus gave up on, kept so that it can be inspected and replayed.
//!
//! The bus lists the most recent ones, up to
//! [`crate::EventBusBuilder::dead_letter_capacity`] (default 1 000); older ones
//! are evicted from the list and counted. In memory they do not survive the
//! process; a bus with a [`crate::Store`] keeps every dead letter there (until
//! it is replayed) and lists the newest again when it starts.

use crate::Envelope;
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
