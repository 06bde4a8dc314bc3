//! A handler no process has had for a while (renamed, or removed from the
//! code): listed with when it was last seen and what waits for it, and
//! pruned: what waited in its consumers becomes dead letters, then the
//! consumers go. Run against `TIDINGS_TEST_NATS_URL`; not run when unset.

mod common;

use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};
use tidings_nats::JetStreamStore;

struct Named(&'static str);

impl EventHandler for Named {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        self.0
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

async fn bus(test: &common::TestBus, handler: Option<Named>) -> EventBus {
    let mut builder = common::builder(test).await;
    if let Some(h) = handler {
        builder = builder.handler(h);
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_handler_is_listed_then_pruned_into_dead_letters() {
    let Some(test) = common::TestBus::new("prune") else {
        return;
    };
    let old = bus(&test, Some(Named("old"))).await;
    old.emit("warmup", json!({})).await.unwrap(); // its consumers exist once it has emitted
    old.shutdown(Duration::from_secs(5)).await;
    drop(old);
    let current = bus(&test, Some(Named("current"))).await;
    let front = bus(&test, None).await;
    for n in 0..5 {
        front.emit("job", json!({ "n": n })).await.unwrap();
    }
    current.wait_idle().await;
    let listed = JetStreamStore::registrations(&test.url, &test.name)
        .await
        .unwrap();
    let old_row = listed
        .iter()
        .find(|r| r.handler == "old")
        .expect("old is listed");
    assert_eq!(old_row.pending, 5, "{listed:?}");
    assert!(
        JetStreamStore::prune(&test.url, &test.name, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    // "old" said it was alive two hours ago (as if it had); "current" says so now.
    let client = async_nats::connect(&test.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = js
        .get_key_value(format!("TIDINGS_{}_handlers", test.name))
        .await
        .unwrap();
    let two_hours_ago = (std::time::SystemTime::now() - Duration::from_secs(7200))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let keys: Vec<String> = bucket
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    for key in keys {
        let v: serde_json::Value =
            serde_json::from_slice(&bucket.get(&key).await.unwrap().unwrap()).unwrap();
        if v["handler"] == "old" {
            let aged = json!({"handler": "old", "event_type": "job", "seen_at_ns": two_hours_ago.to_string()});
            bucket.put(&key, aged.to_string().into()).await.unwrap();
        }
    }
    let pruned = JetStreamStore::prune(&test.url, &test.name, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert_eq!(
        (pruned[0].handler.as_str(), pruned[0].dead_lettered),
        ("old", 5)
    );
    let summary = JetStreamStore::summarize(&test.url, &test.name)
        .await
        .unwrap();
    assert!(summary.pending.is_empty(), "{summary:?}");
    assert_eq!(summary.dead_letters.len(), 1, "{summary:?}");
    assert_eq!(summary.dead_letters[0].handler, "old");
    assert_eq!(summary.dead_letters[0].count, 5);
    let left = JetStreamStore::registrations(&test.url, &test.name)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].handler, "current");
    for bus in [current, front] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}
