//! What the bus finds on the server is untrusted: messages that are not its
//! events, or that claim a type other than their subject's, are dropped with
//! a warning (never handled, never held); a handler name reused for another
//! event type is a typed error, not a consumer taken over. Run against
//! `TIDINGS_TEST_NATS_URL`; not run when it is unset.

mod common;

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventHandler, HandlerError};

#[derive(Clone)]
struct Jobs {
    event_type: &'static str,
    seen: Arc<Mutex<Vec<i64>>>,
}

impl EventHandler for Jobs {
    fn event_type(&self) -> &str {
        self.event_type
    }
    fn name(&self) -> &str {
        "jobs"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        self.seen.lock().unwrap().push(n);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_are_dropped_not_handled_nor_held() {
    let Some(test) = common::TestBus::new("hostile") else {
        return;
    };
    let jobs = Jobs {
        event_type: "job",
        seen: Arc::default(),
    };
    let bus = common::builder(&test)
        .await
        .handler(jobs.clone())
        .build()
        .unwrap();
    bus.emit("job", json!({ "n": 1 })).await.unwrap();
    let client = async_nats::connect(&test.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = format!("tidings.{}.ev.job", test.name);
    // No headers at all.
    js.publish(subject.clone(), r#"{"n": 2}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Headers that say another type than the subject's.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string());
    h.insert("Tidings-Type", "payroll");
    h.insert("Tidings-Emitted-At", "0");
    js.publish_with_headers(subject.clone(), h, r#"{"n": 3}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A frame that says another type than the subject's, and one cut short.
    let id = uuid::Uuid::now_v7();
    for payload in [
        format!("tidings/1 {id} 0 payroll\n{{\"n\": 5}}"),
        format!("tidings/1 {id} 0 job"),
    ] {
        js.publish(subject.clone(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    bus.emit("job", json!({ "n": 4 })).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), bus.wait_idle())
        .await
        .expect("idle: the foreign messages are not left outstanding");
    let mut seen = jobs.seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_emit_cannot_wait_for_the_server_even_without_a_local_handler() {
    let Some(test) = common::TestBus::new("try") else {
        return;
    };
    let bus = common::builder(&test).await.build().unwrap();
    for event_type in ["job", "nobody_here"] {
        let e = bus.try_emit(event_type, json!({})).unwrap_err();
        assert!(matches!(e, tidings::EmitError::MustAwait), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_name_reused_for_another_type_is_a_typed_error() {
    let Some(test) = common::TestBus::new("renamed") else {
        return;
    };
    let first = common::builder(&test)
        .await
        .handler(Jobs {
            event_type: "job",
            seen: Arc::default(),
        })
        .build()
        .unwrap();
    first.emit("job", json!({ "n": 1 })).await.unwrap();
    first.wait_idle().await;
    first.shutdown(Duration::from_secs(5)).await;
    drop(first);
    let second = common::builder(&test)
        .await
        .handler(Jobs {
            event_type: "other",
            seen: Arc::default(),
        })
        .build()
        .unwrap();
    let err = second.emit("other", json!({ "n": 2 })).await.unwrap_err();
    assert!(
        matches!(
            err,
            tidings::EmitError::Store(tidings::StoreError::InvalidConfig(_))
        ),
        "{err}"
    );
}
