//! A handler whose consumer has `max_ack_pending` deliveries out (the server
//! then keeps pull requests for it waiting) never holds up the other
//! handlers of the bus. Run against `TIDINGS_TEST_NATS_URL`; not run when
//! it is unset.

mod common;

use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings::{Envelope, EventHandler, HandlerError};
use tidings_conformance::eventually_within;
use tidings_nats::{JetStreamStore, Options};

struct Counts(Arc<AtomicUsize>);

impl EventHandler for Counts {
    fn event_type(&self) -> &str {
        "fast"
    }
    fn name(&self) -> &str {
        "counts"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_handler_does_not_hold_up_the_others() {
    let Some(test) = common::TestBus::new("saturated") else {
        return;
    };
    let store = || async {
        let mut options = Options::default().ack_wait(common::ACK_WAIT);
        options.max_ack_pending = 20;
        JetStreamStore::connect_with(&test.url, &test.name, options)
            .await
            .unwrap()
    };
    let builder = || tidings::EventBus::builder().discover(false);
    // One process takes 20 "slow" deliveries and keeps them: the handler's
    // consumer is saturated, and the server keeps any pull request for it
    // waiting.
    let a = builder()
        .store(store().await)
        .handler(common::Stuck("slow"))
        .build()
        .unwrap();
    for n in 0..30 {
        a.emit("slow", json!({ "n": n })).await.unwrap();
    }
    let holds = || a.pending() >= 20;
    eventually_within(Duration::from_secs(10), "the first process holds 20", holds).await;
    // Another process with the same handler (it holds none, so it asks)
    // and one more: the one more is not held up.
    let handled = Arc::new(AtomicUsize::new(0));
    let b = builder()
        .store(store().await)
        .handler(common::Stuck("slow"))
        .handler(Counts(handled.clone()))
        .build()
        .unwrap();
    for round in 0..5 {
        for n in 0..20 {
            b.emit("fast", json!({ "n": n })).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100 * round)).await;
    }
    let all = || handled.load(Ordering::Relaxed) >= 100;
    eventually_within(
        Duration::from_secs(15),
        "the 100 \"fast\" events handled",
        all,
    )
    .await;
    for bus in [a, b] {
        bus.shutdown(Duration::from_millis(10)).await;
    }
}
