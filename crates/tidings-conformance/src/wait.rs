//! Emitting and waiting: the suite's small steps.

use serde_json::json;
use std::time::Duration;
use tidings::EventBus;

pub(crate) async fn emit_n(
    bus: &EventBus,
    event_type: &str,
    range: std::ops::Range<i64>,
    key: Option<&str>,
) {
    for n in range {
        let e = bus.emit(event_type, json!({ "n": n }));
        let e = match key {
            Some(k) => e.key(k),
            None => e,
        };
        assert!(e.await.expect("emit").is_queued());
    }
}

pub(crate) async fn idle(bus: &EventBus) {
    tokio::time::timeout(Duration::from_secs(30), bus.wait_idle())
        .await
        .expect("the bus went idle within 30 s");
}

/// Waits (10 s at most, looking every 5 ms) until `done` holds; `what`
/// names it in the failure.
pub(crate) async fn eventually(what: &str, done: impl Fn() -> bool) {
    eventually_within(Duration::from_secs(10), what, done).await;
}

/// Waits until `done` holds, looking every 5 ms, for `limit` at most: for a
/// backend's own tests, which wait for a bus to reach a state.
///
/// # Panics
/// When `done` does not hold within `limit`, naming `what`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let start = std::time::Instant::now();
/// let later = || start.elapsed() > Duration::from_millis(20);
/// tidings_conformance::eventually_within(Duration::from_secs(1), "20 ms passed", later).await;
/// # }
/// ```
pub async fn eventually_within(limit: Duration, what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {limit:?}"));
}

/// Waits until the bus holds `n` events: at once where an emit queues its
/// event, after the relay's claim where deliveries come back through the
/// store (a shared-delivery store: NATS JetStream).
pub(crate) async fn holds(bus: &EventBus, n: usize) {
    eventually("the bus held the events", || bus.pending() >= n).await;
}

/// Waits until `handler`'s figures satisfy `done`.
pub(crate) async fn until(
    bus: &EventBus,
    handler: &str,
    done: impl Fn(&tidings::HandlerStats) -> bool,
) {
    eventually("the handler got there", || {
        bus.stats().handler(handler).is_some_and(&done)
    })
    .await;
}
