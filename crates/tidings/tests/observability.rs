//! Stats and the metrics facade.

mod common;
use common::{bus, recorder, FnHandler, Log};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use std::time::Duration;
use tidings::{HandlerError, HandlerOptions};

#[tokio::test(start_paused = true)]
async fn stats_count_every_outcome_and_measure_latency() {
    let bus = bus()
        .handler(FnHandler::new("Sleepy", "t", |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        }))
        .handler(
            FnHandler::new("Timeout", "t", |_| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            })
            .options(
                HandlerOptions::default()
                    .attempts(1)
                    .timeout(Duration::from_secs(1)),
            ),
        )
        .build()
        .unwrap();
    for _ in 0..10 {
        bus.emit("t", json!({})).await.unwrap();
    }
    bus.emit("none", json!({})).await.unwrap();
    bus.wait_idle().await;
    let s = bus.stats();
    let sleepy = s.handler("Sleepy").unwrap();
    assert_eq!(sleepy.succeeded, 10);
    assert_eq!(sleepy.latency.count, 10);
    let five_ms = 5_000_000u64;
    assert!(
        sleepy.latency.p50_ns >= five_ms && sleepy.latency.p50_ns < five_ms * 101 / 100,
        "{:?}",
        sleepy.latency
    );
    let t = s.handler("Timeout").unwrap();
    assert_eq!(
        (t.timed_out, t.failed, t.dead_lettered, t.in_flight),
        (10, 10, 10, 0)
    );
    assert_eq!(s.event_type("t").unwrap().emitted, 10);
    assert_eq!(s.event_type("none").unwrap().unrouted, 1);
    assert_eq!(s.pending, 0);
    assert_eq!(s.dead_letters, 10);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["handlers"][0]["name"], "Sleepy");
}

#[test]
fn the_metrics_facade_gets_the_same_figures() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = bus()
                .handler(recorder_handler())
                .handler(FnHandler::new("Bad", "t", |_| async {
                    Err(HandlerError::permanent("x"))
                }))
                .build()
                .unwrap();
            for n in 0..3 {
                bus.emit("t", json!({"n": n})).await.unwrap();
            }
            bus.emit("nobody", json!({})).await.unwrap();
            bus.wait_idle().await;
        });
    });
    let snap = snapshot_map(snapshotter.snapshot().into_vec());
    assert_eq!(
        snap.get("tidings_events_emitted_total{event_type=t}"),
        Some(&3)
    );
    assert_eq!(
        snap.get("tidings_events_unrouted_total{event_type=nobody}"),
        Some(&1)
    );
    assert_eq!(
        snap.get("tidings_handler_calls_total{handler=Rec,outcome=succeeded}"),
        Some(&3)
    );
    assert_eq!(
        snap.get("tidings_handler_calls_total{handler=Bad,outcome=failed}"),
        Some(&3)
    );
    assert_eq!(
        snap.get("tidings_handler_calls_total{handler=Bad,outcome=dead_lettered}"),
        Some(&3)
    );
}

fn recorder_handler() -> common::FnHandler {
    recorder("Rec", "t", Log::default())
}

fn snapshot_map(
    v: Vec<(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>,
) -> std::collections::HashMap<String, u64> {
    v.into_iter()
        .filter_map(|(k, _, _, val)| {
            let key = k.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match val {
                DebugValue::Counter(c) => Some((name, c)),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_counts_each_handlers_unsettled_deliveries() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let bus = bus()
        .handler(FnHandler::new("Held", "t", move |_| {
            let gate = held.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok(())
            }
        }))
        .handler(FnHandler::new("Free", "t", |_| async { Ok(()) }))
        .build()
        .unwrap();
    for n in 0..5 {
        // Three of one key (waiting behind each other), two without.
        let e = bus.emit("t", json!({ "n": n }));
        let e = if n < 3 { e.key("k") } else { e };
        e.await.unwrap();
    }
    let queued = |name: &str| bus.stats().handler(name).unwrap().queued;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while queued("Free") != 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queued("Free"), 0, "all handled");
    assert_eq!(queued("Held"), 5, "running, behind their key, or queued");
    gate.add_permits(5);
    bus.wait_idle().await;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while queued("Held") != 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queued("Held"), 0);
}
