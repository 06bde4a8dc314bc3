//! `JetStreamStore::summarize` (what `tidings inspect --nats` prints) counts
//! a live bus's outstanding deliveries and dead letters by type and handler,
//! and `purge` removes the bus. Run against `TIDINGS_TEST_NATS_URL`; not run
//! when it is unset.

mod common;

use serde_json::json;
use std::time::{Duration, SystemTime};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};
use tidings_nats::JetStreamStore;

struct Stuck;

impl EventHandler for Stuck {
    fn event_type(&self) -> &str {
        "s"
    }
    fn name(&self) -> &str {
        "stuck"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

struct Fails;

impl EventHandler for Fails {
    fn event_type(&self) -> &str {
        "f.v2"
    }
    fn name(&self) -> &str {
        "fails"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().attempts(1)
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_counts_what_is_outstanding_and_dead_then_purge_removes_it() {
    let Some(test) = common::TestBus::new("admin") else {
        return;
    };
    let before = SystemTime::now();
    let bus = common::builder(&test)
        .await
        .handler(Stuck)
        .handler(Fails)
        .build()
        .unwrap();
    for n in 0..5 {
        bus.emit("s", json!({ "n": n })).await.unwrap();
    }
    for n in 0..2 {
        bus.emit("f.v2", json!({ "n": n })).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while bus.dead_letters().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("two dead letters");
    bus.shutdown(Duration::from_millis(10)).await;
    drop(bus);
    let s = JetStreamStore::summarize(&test.url, &test.name)
        .await
        .unwrap();
    assert_eq!(s.pending.len(), 1, "{s:?}");
    let p = &s.pending[0];
    assert_eq!(
        (p.event_type.as_str(), p.handler.as_str(), p.count),
        ("s", "stuck", 5)
    );
    assert!(p.oldest >= before - Duration::from_secs(1) && p.oldest <= SystemTime::now());
    assert_eq!(s.dead_letters.len(), 1, "{s:?}");
    let d = &s.dead_letters[0];
    assert_eq!(
        (d.event_type.as_str(), d.handler.as_str(), d.count),
        ("f.v2", "fails", 2)
    );

    JetStreamStore::purge(&test.url, &test.name).await.unwrap();
    assert!(JetStreamStore::summarize(&test.url, &test.name)
        .await
        .is_err());
    assert!(matches!(
        JetStreamStore::summarize(&test.url, "no.such>bus").await,
        Err(tidings::StoreError::InvalidConfig(_))
    ));
}
