//! Several stores on one bus name (`PgStore::connect_shared`): each handles
//! what it emitted; what an instance leaves pending when it stops, or dies,
//! the others claim (against `TIDINGS_TEST_POSTGRES_URL`; not run when unset).

use serde_json::json;
mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
use tidings_postgres::PgStore;

#[derive(Clone, Default)]
struct Seen {
    n: Arc<Mutex<Vec<i64>>>,
    slow: bool,
}

impl EventHandler for Seen {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "worker"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().no_timeout()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if self.slow {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.n
            .lock()
            .unwrap()
            .push(event.data()["n"].as_i64().unwrap_or(-1));
        Ok(())
    }
}

const LEASE: Duration = Duration::from_secs(2);

async fn shared_bus(url: &str, name: &str, handler: Seen) -> EventBus {
    let store = PgStore::connect_shared(url, name, LEASE).await.unwrap();
    EventBus::builder()
        .discover(false)
        .handler(handler)
        .store(store)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_name_each_handle_their_own_events_once() {
    let Some(test_bus) = common::TestBus::new("shared") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let (a_seen, b_seen) = (Seen::default(), Seen::default());
    let a = shared_bus(&url, &name, a_seen.clone()).await;
    let b = shared_bus(&url, &name, b_seen.clone()).await;
    for n in 0..100 {
        a.emit("job", json!({ "n": n })).await.unwrap();
        b.emit("job", json!({ "n": 1000 + n })).await.unwrap();
    }
    a.wait_idle().await;
    b.wait_idle().await;
    // Long enough for either relay to steal something if it wrongly could.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let a_n: Vec<i64> = a_seen.n.lock().unwrap().clone();
    let b_n: Vec<i64> = b_seen.n.lock().unwrap().clone();
    assert_eq!(a_n.len(), 100);
    assert_eq!(b_n.len(), 100);
    assert!(a_n.iter().all(|n| *n < 1000) && b_n.iter().all(|n| *n >= 1000));
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stopped_instance_left_pending_is_claimed_by_another() {
    let Some(test_bus) = common::TestBus::new("shared") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let stuck = Seen {
        slow: true,
        ..Seen::default()
    };
    let a = shared_bus(&url, &name, stuck).await;
    let live = Seen::default();
    let b = shared_bus(&url, &name, live.clone()).await;
    for n in 0..20 {
        a.emit("job", json!({ "n": n })).await.unwrap();
    }
    let report = a.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.abandoned.len(), 20);
    assert!(report.kept);
    drop(a);
    // B's relay looks every second; A's instance is gone at once.
    let started = std::time::Instant::now();
    while live.n.lock().unwrap().len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.wait_idle().await;
    let got: BTreeSet<i64> = live.n.lock().unwrap().iter().copied().collect();
    assert_eq!(got, (0..20).collect::<BTreeSet<_>>());
    assert_eq!(live.n.lock().unwrap().len(), 20, "each once");
    b.shutdown(Duration::from_secs(5)).await;
}
