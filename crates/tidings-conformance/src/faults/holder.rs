//! [`Holder`]: a handler that holds a key's first event until released, and
//! the [`Journal`] of when each process started and ended each delivery:
//! for the tests of a process paused (or cut off) past its lease while
//! another takes its delivery over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};

/// Whether an entry of the journal is a start or an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The handler was called.
    Start,
    /// The handler returned.
    End,
}

/// One entry of a [`Journal`]: (event number, process, step, when).
pub type Entry = (u64, &'static str, Step, Instant);

/// When each process started and ended each delivery.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    fn push(&self, n: u64, who: &'static str, step: Step) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, who, step, Instant::now()));
    }

    /// When process `who` took `step` of event `n`, if it did.
    pub fn when(&self, who: &str, n: u64, step: Step) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(m, w, s, _)| *m == n && *w == who && *s == step)
            .map(|e| e.3)
    }

    /// Whether process `who` took `step` of event `n`.
    pub fn did(&self, who: &str, n: u64, step: Step) -> bool {
        self.when(who, n, step).is_some()
    }

    /// Everything, for a failure message.
    pub fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The handler "slow" of `job` events (`{"n": <number>}`): journals each
/// delivery's start and end as process `who`, and holds event 1 until
/// `release` is set. No timeout.
#[derive(Clone, Debug)]
pub struct Holder {
    /// The process it runs in, as the journal names it.
    pub who: &'static str,
    /// Shared by the processes of a test.
    pub journal: Journal,
    /// Lets event 1 end.
    pub release: Arc<AtomicBool>,
}

impl EventHandler for Holder {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "slow"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().no_timeout()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"]
            .as_u64()
            .ok_or_else(|| HandlerError::permanent("no field n"))?;
        self.journal.push(n, self.who, Step::Start);
        if n == 1 {
            while !self.release.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.journal.push(n, self.who, Step::End);
        Ok(())
    }
}
