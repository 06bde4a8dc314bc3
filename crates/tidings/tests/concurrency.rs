//! Concurrency limits: per handler and across the bus.

mod common;
use common::{bus, FnHandler};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings::HandlerOptions;

fn tracked(name: &str, active: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> FnHandler {
    FnHandler::new(name, "t", move |_| {
        let (active, peak) = (active.clone(), peak.clone());
        async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            active.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_handler_runs_at_most_its_concurrency_at_once() {
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bus = bus()
        .handler(
            tracked("H", active, peak.clone()).options(HandlerOptions::default().concurrency(3)),
        )
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    for _ in 0..12 {
        bus.emit("t", json!({})).await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(40),
        "12 events, 3 at a time, 10 ms each"
    );
}

#[tokio::test(start_paused = true)]
async fn the_global_limit_caps_all_handlers_together() {
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bus = bus()
        .max_concurrency(2)
        .handler(tracked("A", active.clone(), peak.clone()))
        .handler(tracked("B", active.clone(), peak.clone()))
        .handler(tracked("C", active, peak.clone()))
        .build()
        .unwrap();
    for _ in 0..5 {
        bus.emit("t", json!({})).await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    let s = bus.stats();
    assert_eq!(s.handlers.iter().map(|h| h.succeeded).sum::<u64>(), 15);
}
