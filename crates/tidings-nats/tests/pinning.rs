//! Which kind of key partition consumers a bus makes: pinned to one process
//! at a time when asked (`Options::pin_key_partitions`, the default) and the
//! server can (nats-server 2.11 or later), one delivery at a time otherwise
//! (the machine's own nats-server in CI is 2.9.10; `.ci/run` runs this file
//! again on 2.15.1). Either way a key's events reach the handler
//! in order. Run against `TIDINGS_TEST_NATS_URL`; not run when unset.

mod common;

use futures_util::StreamExt;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};
use tidings_nats::{JetStreamStore, Options, PINNED_WINDOW};

/// Records each delivery's key and number, in the order handled.
struct Ordered(Arc<Mutex<Vec<(String, u64)>>>);

impl EventHandler for Ordered {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "ordered"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let key = event.key().unwrap_or_default().to_owned();
        let n = event.data()["n"].as_u64().unwrap_or(u64::MAX);
        self.0.lock().unwrap().push((key, n));
        Ok(())
    }
}

/// Whether nats-server `version` has pinned-client priority groups (2.11).
fn pins(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 11)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_for_pinned_partitions_a_bus_makes_them_where_the_server_can() {
    consumers_made(Options::default().pin_key_partitions(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_bus_pins_its_partitions_where_the_server_can() {
    assert!(Options::default().pin_key_partitions);
    consumers_made(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_for_one_at_a_time_a_bus_hands_out_a_partition_one_delivery_at_a_time() {
    consumers_made(Options::default().pin_key_partitions(false)).await;
}

/// A bus with `options` keeps 5 keys × 40 events in order, and its 16
/// partition consumers are pinned (window [`PINNED_WINDOW`]) if it asked
/// and the server can, `max_ack_pending` 1 otherwise.
async fn consumers_made(options: Options) {
    let Some(test) = common::TestBus::new("pinning") else {
        return;
    };
    let asked = options.pin_key_partitions;
    let store = JetStreamStore::connect_with(&test.url, &test.name, options)
        .await
        .expect("TIDINGS_TEST_NATS_URL is set but the store does not connect");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = EventBus::builder()
        .discover(false)
        .store(store)
        .handler(Ordered(seen.clone()))
        .build()
        .unwrap();
    for n in 0..40u64 {
        for k in 0..5 {
            bus.emit("job", json!({ "n": n }))
                .key(format!("key-{k}"))
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(60), bus.wait_idle())
        .await
        .expect("the keyed events are handled");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200);
    for k in 0..5 {
        let key = format!("key-{k}");
        let order: Vec<u64> = seen
            .iter()
            .filter(|(s, _)| *s == key)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, (0..40).collect::<Vec<_>>(), "{key} out of order");
    }

    // The handler's partition consumers, as the server has them.
    let client = async_nats::connect(&test.url).await.unwrap();
    let version = client.server_info().version;
    let js = async_nats::jetstream::new(client);
    let keyed = js
        .get_stream(format!("TIDINGSK_{}", test.name))
        .await
        .unwrap();
    let mut consumers = keyed.consumers();
    let mut partitions = 0;
    while let Some(info) = consumers.next().await {
        let info = info.unwrap();
        partitions += 1;
        if asked && pins(&version) {
            assert_eq!(
                info.config.priority_policy,
                async_nats::jetstream::consumer::PriorityPolicy::PinnedClient,
                "{} on nats-server {version}",
                info.name
            );
            assert_eq!(info.config.max_ack_pending, PINNED_WINDOW as i64);
        } else {
            assert_eq!(
                info.config.max_ack_pending, 1,
                "{} on nats-server {version}: one delivery at a time",
                info.name
            );
        }
    }
    assert_eq!(partitions, Options::default().key_partitions);
    bus.shutdown(Duration::from_secs(5)).await;
}
