//! The seed's "Event Bus API" section: emit, handler_count, event_types, disable/enable, metadata.

mod common;
use common::{bus, recorder, FnHandler, Log};
use serde_json::json;
use tidings::{EventBus, Status};

#[tokio::test]
async fn emit_runs_every_handler_of_the_type_in_the_background() {
    let a = Log::default();
    let b = Log::default();
    let bus = bus()
        .handler(recorder("A", "my_event", a.clone()))
        .handler(recorder("B", "my_event", b.clone()))
        .build()
        .unwrap();
    let receipt = bus.emit("my_event", json!({"n": 1})).await.unwrap();
    assert_eq!(receipt.status(), Status::Queued);
    assert_eq!(receipt.handlers(), 2);
    bus.wait_idle().await;
    assert_eq!(a.get(), vec![1]);
    assert_eq!(b.get(), vec![1]);
}

#[tokio::test]
async fn emit_returns_before_a_slow_handler_finishes() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = std::sync::Mutex::new(Some(rx));
    let bus = bus()
        .handler(FnHandler::new("Slow", "t", move |_| {
            let rx = rx.lock().unwrap().take();
            async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                Ok(())
            }
        }))
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    // The handler is still blocked, and emit has returned.
    tokio::task::yield_now().await;
    assert_eq!(bus.pending(), 1);
    assert_eq!(bus.stats().handler("Slow").unwrap().in_flight, 1);
    tx.send(()).unwrap();
    bus.wait_idle().await;
    assert_eq!(bus.stats().handler("Slow").unwrap().succeeded, 1);
}

#[tokio::test]
async fn handler_count_and_event_types() {
    let bus = bus()
        .handler(recorder("A", "order_created", Log::default()))
        .handler(recorder("B", "order_created", Log::default()))
        .handler(recorder("C", "activity_log", Log::default()))
        .build()
        .unwrap();
    assert_eq!(bus.handler_count(None), 3);
    assert_eq!(bus.handler_count(Some("order_created")), 2);
    assert_eq!(bus.handler_count(Some("activity_log")), 1);
    assert_eq!(bus.handler_count(Some("unknown")), 0);
    assert_eq!(
        bus.event_types(),
        vec!["activity_log".to_string(), "order_created".to_string()]
    );
}

#[tokio::test]
async fn disabled_bus_drops_and_counts_and_enable_resumes() {
    let log = Log::default();
    let bus = bus()
        .handler(recorder("A", "t", log.clone()))
        .build()
        .unwrap();
    bus.disable();
    assert!(!bus.is_enabled());
    let r = bus.emit("t", json!({"n": 1})).await.unwrap();
    assert!(r.is_dropped());
    let r = bus.emit("nobody", json!({"n": 1})).await.unwrap();
    assert!(r.is_dropped());
    bus.enable();
    bus.emit("t", json!({"n": 2})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(log.get(), vec![2]);
    let stats = bus.stats();
    assert_eq!(stats.event_type("t").unwrap().dropped, 1);
    assert_eq!(stats.event_type("t").unwrap().emitted, 1);
    assert_eq!(stats.event_type("nobody").unwrap().dropped, 1);
}

#[tokio::test]
async fn unrouted_emit_succeeds_and_is_counted() {
    let bus = bus().build().unwrap();
    let r = bus.emit("nobody_listens", json!({})).await.unwrap();
    assert!(r.is_unrouted());
    assert_eq!(r.handlers(), 0);
    assert_eq!(
        bus.stats().event_type("nobody_listens").unwrap().unrouted,
        1
    );
}

#[tokio::test]
async fn dynamic_events_carry_metadata_and_envelope_fields() {
    let seen = Log::default();
    let s = seen.clone();
    let bus = bus()
        .handler(FnHandler::new("M", "my_event", move |e| {
            let s = s.clone();
            async move {
                s.push((
                    e.id(),
                    e.data().clone(),
                    e.emitted_at(),
                    e.attempt(),
                    e.key().map(String::from),
                ));
                Ok(())
            }
        }))
        .build()
        .unwrap();
    let before = chrono::Utc::now();
    let r = bus
        .emit("my_event", json!({"user_id": 1, "action": "x"}))
        .key("user-1")
        .await
        .unwrap();
    bus.wait_idle().await;
    let (id, data, at, attempt, key) = seen.get().pop().unwrap();
    assert_eq!(id, r.id());
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(data["user_id"], 1);
    assert_eq!(data["_event_type"], "my_event");
    let stamped =
        chrono::DateTime::parse_from_rfc3339(data["_emitted_at"].as_str().unwrap()).unwrap();
    assert!(data["_emitted_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stamped.timestamp_micros(), at.timestamp_micros());
    assert!(at >= before - chrono::Duration::milliseconds(1));
    assert_eq!(attempt, 1);
    assert_eq!(key.as_deref(), Some("user-1"));
}

#[tokio::test]
async fn ids_sort_by_emit_order() {
    let bus = bus().build().unwrap();
    let mut last = bus.emit("t", json!({})).await.unwrap().id();
    for _ in 0..100 {
        let id = bus.emit("t", json!({})).await.unwrap().id();
        assert!(id > last);
        last = id;
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<EventBus>();
    both::<tidings::Envelope>();
    both::<tidings::EmitError>();
    both::<tidings::BuildError>();
    both::<tidings::Receipt>();
    both::<tidings::DeadLetter>();
    both::<tidings::BusStats>();
    both::<tidings::ShutdownReport>();
    both::<tidings::HandlerOptions>();
    both::<tidings::EventBusBuilder>();
    fn send<T: Send>() {}
    send::<tidings::HandlerError>();
    send::<tidings::Emit<'static>>();
}
