//! The bus's capacity: how many events may be pending (queued, running or
//! waiting to retry) at once, and the notice that the bus went idle.
//!
//! A small counting gate rather than `tokio::sync::Semaphore`, because the bus
//! also needs to know when the count reaches zero (`wait_idle`), and releasing
//! here takes no lock.
//!
//! A place is taken at emit and handed back by the worker that settles the
//! event's last delivery ([`crate::envelope::Body::settle`]). Workers hand
//! places back in batches, one atomic operation per batch rather than per
//! event, after recording the batch's figures, so that a bus seen idle has
//! counted everything it did.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Keeps the count that emitters and workers both write on a cache line of its
/// own, away from the fields they only read.
#[repr(align(128))]
struct OwnLine<T>(T);

pub(crate) struct Gate {
    pending: OwnLine<AtomicUsize>,
    capacity: usize,
    /// Waiting emitters are woken once pending falls to this mark, not on
    /// every release: waking a blocked emitter for each freed place would make
    /// it and the handlers take turns, one event at a time.
    low_water: usize,
    waiters: AtomicUsize,
    closed: AtomicBool,
    space: Notify,
    idle: Notify,
}

pub(crate) enum Refused {
    Full,
    Closed,
}

impl Gate {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            low_water: capacity - (capacity / 16).max(1),
            pending: OwnLine(AtomicUsize::new(0)),
            waiters: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            space: Notify::new(),
            idle: Notify::new(),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.0.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.space.notify_waiters();
    }

    /// Takes one place, or says why not. The place must reach a delivery
    /// (which hands it back when settled) or be [`release`](Self::release)d.
    pub(crate) fn try_acquire(&self) -> Result<(), Refused> {
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        let mut cur = self.pending.0.load(Ordering::Relaxed);
        loop {
            if cur >= self.capacity {
                return Err(Refused::Full);
            }
            match self.pending.0.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes `n` places whatever the capacity: for events recovered from a
    /// store at start, which are already accepted.
    pub(crate) fn take_over(&self, n: usize) {
        self.pending.0.fetch_add(n, Ordering::AcqRel);
    }

    /// Waits for room. Cancel safe: dropping the future takes no place.
    pub(crate) async fn acquire(&self) -> Result<(), Refused> {
        match self.try_acquire() {
            Err(Refused::Full) => {}
            other => return other,
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _guard = WaiterGuard(&self.waiters);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_acquire() {
                Err(Refused::Full) => notified.await,
                other => return other,
            }
        }
    }

    /// Hands back `n` places.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let prev = self.pending.0.fetch_sub(n, Ordering::SeqCst);
        if prev - n <= self.low_water {
            let waiters = self.waiters.load(Ordering::SeqCst);
            for _ in 0..n.min(waiters) {
                self.space.notify_one();
            }
        }
        if prev == n {
            self.idle.notify_waiters();
        }
    }

    /// Resolves when nothing is pending.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
