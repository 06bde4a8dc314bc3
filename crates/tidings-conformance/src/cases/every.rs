//! The cases every backend passes, in memory or durable.

use crate::handlers::*;
use crate::wait::*;
use crate::Backend;
use serde_json::json;
use std::time::Duration;

/// Two handlers of one type each handle every event exactly once.
pub async fn every_handler_gets_every_event_once(b: &impl Backend) {
    let (a, c) = (Recorder::new("a", "t"), Recorder::new("c", "t"));
    let bus = b
        .builder()
        .await
        .handler(a.clone())
        .handler(c.clone())
        .build()
        .unwrap();
    emit_n(&bus, "t", 0..200, None).await;
    idle(&bus).await;
    let all: Vec<i64> = (0..200).collect();
    assert_eq!(a.numbers(), all);
    assert_eq!(c.numbers(), all);
    assert_eq!(bus.stats().handler("a").unwrap().succeeded, 200);
}

/// Events of one key reach a handler in emit order, even when some fail first.
pub async fn one_key_is_handled_in_emit_order(b: &impl Backend) {
    let mut h = Recorder::new("ordered", "k");
    h.fail_first = 1;
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    for n in 0..50 {
        let key = if n % 2 == 0 { "even" } else { "odd" };
        bus.emit("k", json!({ "n": n })).key(key).await.unwrap();
    }
    idle(&bus).await;
    let seen = h.seen();
    for key in ["even", "odd"] {
        let order: Vec<i64> = seen
            .iter()
            .filter(|(k, _, _)| k.as_deref() == Some(key))
            .map(|(_, n, _)| *n)
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "key {key} in emit order");
        assert_eq!(order.len(), 25);
    }
}

/// A handler that always fails is retried up to its attempts, then dead-lettered;
/// the other handler of the type is unaffected.
pub async fn a_failing_handler_is_retried_then_dead_lettered_alone(b: &impl Backend) {
    let mut bad = Recorder::new("bad", "f");
    bad.always_fail = true;
    let good = Recorder::new("good", "f");
    let bus = b
        .builder()
        .await
        .handler(bad.clone())
        .handler(good.clone())
        .build()
        .unwrap();
    emit_n(&bus, "f", 0..5, None).await;
    idle(&bus).await;
    assert_eq!(good.numbers(), vec![0, 1, 2, 3, 4]);
    let stats = bus.stats();
    let s = stats.handler("bad").unwrap();
    assert_eq!((s.failed, s.retried, s.dead_lettered), (15, 10, 5));
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 5);
    assert!(dead.iter().all(|d| d.handler == "bad" && d.attempts == 3));
}

/// Replaying a dead letter hands the event to its handler again, from attempt 1.
pub async fn a_replayed_dead_letter_is_handled(b: &impl Backend) {
    let mut h = Recorder::new("flaky", "r");
    h.attempts = 1;
    h.fail_first = 1;
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    emit_n(&bus, "r", 7..8, None).await;
    idle(&bus).await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    // Attempt 1 fails by design; the replay is attempt 1 again, so it fails
    // again and a new dead letter is made: the replay reached the handler.
    let receipt = bus.replay(dead[0].id).unwrap();
    assert_eq!(receipt.id(), dead[0].event.id());
    idle(&bus).await;
    assert_eq!(bus.stats().handler("flaky").unwrap().failed, 2);
    assert_eq!(bus.dead_letters().len(), 1);
    assert!(
        bus.replay(dead[0].id).is_err(),
        "a replayed dead letter is gone"
    );
}

/// A panic in one handler is that handler's failure alone.
pub async fn a_panicking_handler_touches_nobody(b: &impl Backend) {
    let mut p = Recorder::new("panics", "p");
    p.panic_on = vec![1];
    p.attempts = 1;
    let calm = Recorder::new("calm", "p");
    let bus = b
        .builder()
        .await
        .handler(p.clone())
        .handler(calm.clone())
        .build()
        .unwrap();
    emit_n(&bus, "p", 0..3, None).await;
    idle(&bus).await;
    assert_eq!(calm.numbers(), vec![0, 1, 2]);
    assert_eq!(p.numbers(), vec![0, 2]);
    assert_eq!(bus.stats().handler("panics").unwrap().panicked, 1);
}

/// Hostile names, keys and payloads are typed errors, and nothing is queued.
pub async fn invalid_input_is_a_typed_error(b: &impl Backend) {
    let h = Recorder::new("h", "t");
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    let e = bus
        .emit("t'; DROP TABLE events;--", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, tidings::EmitError::InvalidEventType { .. }),
        "{e}"
    );
    let e = bus.emit("t", json!({})).key("a\u{0}b").await.unwrap_err();
    assert!(matches!(e, tidings::EmitError::InvalidKey { .. }), "{e}");
    let e = bus.emit("t", json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(e, tidings::EmitError::InvalidPayload { .. }),
        "{e}"
    );
    idle(&bus).await;
    assert_eq!(bus.pending(), 0);
    assert!(h.seen().is_empty());
}

/// A shutdown past its deadline names every delivery it abandons; durable
/// backends say they kept them.
pub async fn shutdown_names_what_it_abandons(b: &impl Backend) {
    let mut h = Recorder::new("slow", "s");
    h.slow = Some(Duration::from_secs(60));
    let bus = b.builder().await.handler(h).build().unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(bus.emit("s", json!({ "n": n })).await.unwrap().id());
    }
    holds(&bus, 3).await;
    let report = bus.shutdown(Duration::from_millis(50)).await;
    ids.sort_unstable();
    assert_eq!(report.abandoned_events(), ids);
    assert_eq!(report.kept, b.features().durable);
}
