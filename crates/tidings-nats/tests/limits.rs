//! The bus's stream has limits: when `Options::max_bytes` is reached, an
//! emit fails with a typed error (`StoreError::Full`) and nothing stored is
//! dropped; the limits are applied to an existing stream at connect. Run
//! against `TIDINGS_TEST_NATS_URL`; not run when it is unset.

mod common;

use serde_json::json;
use std::time::Duration;
use tidings::{EmitError, StoreError};
use tidings_nats::{JetStreamStore, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_emits_with_a_typed_error_and_keeps_what_it_holds() {
    let Some(test) = common::TestBus::new("limits") else {
        return;
    };
    let options = Options::default().max_bytes(16 * 1024);
    let store = JetStreamStore::connect_with(&test.url, &test.name, options)
        .await
        .expect("TIDINGS_TEST_NATS_URL is set but the store does not connect");
    let bus = tidings::EventBus::builder()
        .discover(false)
        .handler(common::Stuck("job"))
        .store(store)
        .build()
        .unwrap();
    let mut stored = 0;
    let refused = loop {
        match bus
            .emit("job", json!({ "n": stored, "pad": "x".repeat(200) }))
            .await
        {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10_000, "16 KiB never filled");
    };
    assert!(
        matches!(refused, EmitError::Store(StoreError::Full(_))),
        "{refused}"
    );
    assert!(stored > 10, "{stored} events stored before the limit");
    let summary = JetStreamStore::summarize(&test.url, &test.name)
        .await
        .unwrap();
    let held: u64 = summary.pending.iter().map(|c| c.count).sum();
    assert_eq!(held, stored, "what was stored is all still there");
    bus.shutdown(Duration::from_secs(1)).await;
    // A later connect with other limits applies them to the stream.
    let roomy = Options::default().max_bytes(1 << 20);
    let store = JetStreamStore::connect_with(&test.url, &test.name, roomy)
        .await
        .unwrap();
    let bus = tidings::EventBus::builder()
        .discover(false)
        .handler(common::Stuck("job"))
        .store(store)
        .build()
        .unwrap();
    bus.emit("job", json!({ "n": stored }))
        .await
        .expect("room again");
    bus.shutdown(Duration::from_secs(1)).await;
}
