//! `EventBus::pending_keys`: the keys holding a handler's deliveries back.

use serde_json::json;
use std::sync::Arc;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, KeyBacklog};
use tokio::sync::Semaphore;

/// Waits for a permit per event.
struct Held(Arc<Semaphore>);

impl EventHandler for Held {
    fn event_type(&self) -> &str {
        "t"
    }
    fn name(&self) -> &str {
        "held"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        self.0.acquire().await.unwrap().forget();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_says_which_keys_hold_its_deliveries() {
    let gate = Arc::new(Semaphore::new(0));
    let bus = EventBus::builder()
        .discover(false)
        .handler(Held(gate.clone()))
        .build()
        .unwrap();
    assert_eq!(
        bus.pending_keys("held").await,
        Some(vec![]),
        "idle: asked and answered"
    );
    for key in ["a", "a", "a", "b"] {
        bus.emit("t", json!({})).key(key).await.unwrap();
    }
    bus.emit("t", json!({})).await.unwrap();
    // The worker takes them in; until then a report may be short.
    let want = vec![KeyBacklog::new("a", 3), KeyBacklog::new("b", 1)];
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut got = bus.pending_keys("held").await;
    while got.as_ref() != Some(&want) && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        got = bus.pending_keys("held").await;
    }
    assert_eq!(got, Some(want));
    gate.add_permits(5);
    bus.wait_idle().await;
    assert_eq!(bus.pending_keys("held").await, Some(vec![]));
    assert_eq!(bus.pending_keys("nobody").await, None);
}
