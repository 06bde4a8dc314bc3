//! The suite's test handlers: they record what they saw, fail on demand,
//! retry late, or never finish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};

/// One handled delivery: its key, its `n`, its attempt.
pub(crate) type Seen = (Option<String>, i64, u32);

/// Records what a handler saw; fails the first `fail_first` attempts of each
/// event, or panics on events whose `n` is in `panic_on`.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    pub(crate) name: String,
    pub(crate) event_type: String,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    pub(crate) fail_first: u32,
    pub(crate) always_fail: bool,
    pub(crate) panic_on: Vec<i64>,
    pub(crate) attempts: u32,
    pub(crate) slow: Option<Duration>,
}

impl Recorder {
    pub(crate) fn new(name: &str, event_type: &str) -> Self {
        Self {
            name: name.into(),
            event_type: event_type.into(),
            attempts: 3,
            ..Self::default()
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn numbers(&self) -> Vec<i64> {
        let mut n: Vec<i64> = self.seen().into_iter().map(|(_, n, _)| n).collect();
        n.sort_unstable();
        n
    }
}

impl EventHandler for Recorder {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(self.attempts)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        if let Some(d) = self.slow {
            tokio::time::sleep(d).await;
        }
        if self.panic_on.contains(&n) {
            panic!("handler {} panics on {n}", self.name);
        }
        if self.always_fail || event.attempt() <= self.fail_first {
            return Err(HandlerError::retryable(format!(
                "attempt {} fails",
                event.attempt()
            )));
        }
        tokio::task::yield_now().await;
        self.seen
            .lock()
            .unwrap()
            .push((event.key().map(str::to_owned), n, event.attempt()));
        Ok(())
    }
}

/// Per key, the numbers of the events handled, in order, and which bus handled each.
pub(crate) type KeyLog = Arc<Mutex<BTreeMap<String, Vec<(i64, &'static str)>>>>;

/// Logs the "step" events it handles, pausing on every fourth.
#[derive(Clone)]
pub(crate) struct Ordered {
    pub(crate) bus: &'static str,
    pub(crate) log: KeyLog,
}

impl EventHandler for Ordered {
    fn event_type(&self) -> &str {
        "step"
    }
    fn name(&self) -> &str {
        "ordered"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        // Slow enough, now and then, that the other bus would take the
        // key's next event meanwhile if it were free to.
        if n % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let key = event.key().unwrap_or_default().to_owned();
        self.log
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push((n, self.bus));
        Ok(())
    }
}

/// A recorder whose retry waits an hour, so that a restart catches it waiting.
#[derive(Clone)]
pub(crate) struct RetryLater(pub(crate) Recorder);

impl EventHandler for RetryLater {
    fn event_type(&self) -> &str {
        self.0.event_type()
    }
    fn name(&self) -> &str {
        self.0.name()
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(self.0.attempts)
            .backoff(tidings::Backoff::fixed(Duration::from_secs(3600)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0.handle(event).await
    }
}

/// Counts its calls by attempt, and never finishes one: the process it runs
/// in stops in the middle (see [`as_a_process`]).
#[derive(Clone, Default)]
pub(crate) struct Poison {
    pub(crate) attempts: Arc<Mutex<Vec<u32>>>,
}

impl Poison {
    pub(crate) fn calls(&self) -> Vec<u32> {
        self.attempts.lock().unwrap().clone()
    }
}

impl EventHandler for Poison {
    fn event_type(&self) -> &str {
        "poison"
    }
    fn name(&self) -> &str {
        "poison"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.attempts.lock().unwrap().push(event.attempt());
        std::future::pending().await
    }
}

/// When a delivery of event `n` began and ended.
pub(crate) type Span = (i64, std::time::Instant, std::time::Instant);

/// A "job" handler named "worker" that fails its first attempt of event 0
/// for good and runs event 1 for 2.5 s (past a relay's look every second);
/// records when each delivery began and ran, on every bus it serves.
///
/// ```
/// let worker = tidings_conformance::FailsFirst::default();
/// assert!(worker.began.lock().unwrap().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct FailsFirst {
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// The `n` of each event as its delivery began (its replay's included).
    pub began: Arc<Mutex<Vec<i64>>>,
    pub(crate) spans: Arc<Mutex<Vec<Span>>>,
}

impl EventHandler for FailsFirst {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "worker"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        if n == 0 && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(HandlerError::permanent("the first time"));
        }
        self.began.lock().unwrap().push(n);
        let began = std::time::Instant::now();
        if n == 1 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let span = (n, began, std::time::Instant::now());
        self.spans.lock().unwrap().push(span);
        Ok(())
    }
}
