//! Several processes on one bus, beyond the conformance suite's shared case
//! (each delivery to one of them): what a dead process held goes to another
//! once `ack_wait` has passed, and what a live one works on stays with it. Each "process" is a bus with its own
//! connection (and, where it must die, its own runtime). Run against
//! `TIDINGS_TEST_NATS_URL`; not run when it is unset.

mod common;

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};

/// Counts, per event number, how often the handler of bus `who` saw it.
#[derive(Clone)]
struct Worker {
    who: &'static str,
    seen: Arc<Mutex<BTreeMap<i64, Vec<&'static str>>>>,
    pause: Duration,
}

impl EventHandler for Worker {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "worker"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        tokio::time::sleep(self.pause).await;
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        self.seen
            .lock()
            .unwrap()
            .entry(n)
            .or_default()
            .push(self.who);
        Ok(())
    }
}

/// Waits (30 s at most) until none of `buses` has anything outstanding.
async fn idle(buses: &[&EventBus]) {
    tokio::time::timeout(Duration::from_secs(30), async {
        for bus in buses {
            bus.wait_idle().await;
        }
    })
    .await
    .expect("idle within 30 s");
}

async fn bus_with(test: &common::TestBus, worker: Option<Worker>) -> EventBus {
    let mut b = common::builder(test).await;
    if let Some(w) = worker {
        b = b.handler(w);
    }
    b.build().unwrap()
}

#[test]
fn a_dead_process_s_deliveries_go_to_another() {
    let Some(test) = common::TestBus::new("takeover") else {
        return;
    };
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    // The first process claims the events and is stuck in its handler when
    // it dies: its runtime (connection, tasks, all) is dropped, no shutdown.
    let doomed = tokio::runtime::Runtime::new().unwrap();
    doomed.block_on(async {
        let stuck = Worker {
            who: "dead",
            seen: seen.clone(),
            pause: Duration::from_secs(3600),
        };
        let bus = bus_with(&test, Some(stuck)).await;
        for n in 0..50 {
            bus.emit("job", json!({ "n": n })).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while bus.pending() < 50 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first process claimed all 50");
    });
    drop(doomed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let survivor = Worker {
            who: "survivor",
            seen: seen.clone(),
            pause: Duration::ZERO,
        };
        let bus = bus_with(&test, Some(survivor)).await;
        // ack_wait is 2 s in these tests.
        tokio::time::timeout(Duration::from_secs(20), bus.wait_idle())
            .await
            .expect("the survivor took over within 20 s");
        bus.shutdown(Duration::from_secs(5)).await;
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 50);
    assert!(seen.values().all(|w| w == &["survivor"]), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_worked_on_longer_than_ack_wait_is_not_made_twice() {
    let Some(test) = common::TestBus::new("progress") else {
        return;
    };
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let slow = |who| Worker {
        who,
        seen: seen.clone(),
        // Longer than the tests' 2 s ack_wait: the store's progress reports
        // keep the delivery with this process.
        pause: Duration::from_millis(3500),
    };
    let a = bus_with(&test, Some(slow("a"))).await;
    let b = bus_with(&test, Some(slow("b"))).await;
    a.emit("job", json!({ "n": 1 })).await.unwrap();
    idle(&[&a, &b]).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.get(&1).map(Vec::len), Some(1), "{seen:?}");
}
