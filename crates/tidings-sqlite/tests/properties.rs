//! The delivery state machine of a durable bus, as a property: whatever the
//! failures and however often the bus is stopped mid-work and reopened, every
//! event ends handled by each handler, or as that handler's dead letter
//! (exactly when its failures outnumber its attempts), and never both.

use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
use tidings_sqlite::SqliteStore;

const ATTEMPTS: u32 = 3;

/// Fails the first `fails[n]` attempts of event `n` (none for `fails` empty),
/// taking a millisecond each time, one event at a time, and records the
/// events it handled.
#[derive(Clone)]
struct Worker {
    name: &'static str,
    fails: Arc<Vec<u32>>,
    handled: Arc<Mutex<BTreeSet<u64>>>,
}

impl EventHandler for Worker {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> HandlerOptions {
        // One at a time, so that a stop of a few milliseconds cuts work short.
        HandlerOptions::default()
            .concurrency(1)
            .attempts(ATTEMPTS)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_u64().unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let fails = self.fails.get(n as usize).copied().unwrap_or(0);
        if event.attempt() <= fails {
            return Err(HandlerError::retryable(format!(
                "attempt {}",
                event.attempt()
            )));
        }
        self.handled.lock().unwrap().insert(n);
        Ok(())
    }
}

fn bus(path: &std::path::Path, workers: &[Worker]) -> EventBus {
    let mut b = EventBus::builder()
        .discover(false)
        .store(SqliteStore::open(path).unwrap());
    for w in workers {
        b = b.handler(w.clone());
    }
    b.build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_event_ends_handled_or_dead_across_stops_and_restarts(
        fails in prop::collection::vec(0u32..5, 1..40),
        stops in prop::collection::vec(0u64..25, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.db");
        let steady = Worker { name: "steady", fails: Arc::new(Vec::new()), handled: Arc::default() };
        let flaky = Worker { name: "flaky", fails: Arc::new(fails.clone()), handled: Arc::default() };
        let workers = [steady.clone(), flaky.clone()];
        let n = fails.len() as u64;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dead: BTreeMap<String, BTreeSet<u64>> = rt.block_on(async {
            let first = bus(&path, &workers);
            for i in 0..n {
                first.emit("job", json!({ "n": i })).await.unwrap();
            }
            let mut current = first;
            // Stop mid-work (a deadline of a few ms abandons what is running
            // or waiting to retry), then reopen: the file carries the rest.
            for ms in &stops {
                current.shutdown(Duration::from_millis(*ms)).await;
                drop(current);
                current = bus(&path, &workers);
            }
            tokio::time::timeout(Duration::from_secs(30), current.wait_idle()).await.unwrap();
            let mut dead: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            for d in current.dead_letters() {
                let fresh = dead
                    .entry(d.handler.clone())
                    .or_default()
                    .insert(d.event.data()["n"].as_u64().unwrap());
                assert!(fresh, "one dead letter per delivery");
            }
            assert!(current.shutdown(Duration::from_secs(5)).await.is_clean());
            dead
        });
        let all: BTreeSet<u64> = (0..n).collect();
        prop_assert_eq!(&*steady.handled.lock().unwrap(), &all);
        prop_assert!(!dead.contains_key("steady"));
        let expected_dead: BTreeSet<u64> =
            (0..n).filter(|i| fails[*i as usize] >= ATTEMPTS).collect();
        let flaky_dead = dead.get("flaky").cloned().unwrap_or_default();
        prop_assert_eq!(&flaky_dead, &expected_dead);
        let handled = flaky.handled.lock().unwrap().clone();
        prop_assert_eq!(handled.union(&flaky_dead).copied().collect::<BTreeSet<_>>(), all);
        prop_assert!(handled.is_disjoint(&flaky_dead), "handled and dead: {:?}", handled.intersection(&flaky_dead).collect::<Vec<_>>());
    }
}
