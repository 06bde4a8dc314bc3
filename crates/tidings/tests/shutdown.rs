//! Shutdown: intake stops, work drains until the deadline, the rest is reported by id.

mod common;
use common::{bus, recorder, FnHandler, Log};
use serde_json::json;
use std::time::Duration;
use tidings::{EmitError, HandlerOptions};

#[tokio::test]
async fn shutdown_drains_what_is_pending_and_reports_it() {
    let log = Log::default();
    let l = log.clone();
    let bus = bus()
        .handler(FnHandler::new("Slowish", "t", move |e| {
            let l = l.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                l.push(e.data()["n"].as_i64().unwrap());
                Ok(())
            }
        }))
        .handler(recorder("Fast", "t", Log::default()))
        .build()
        .unwrap();
    for n in 0..20 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    let report = bus.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean());
    // On the current-thread runtime no handler ran before shutdown began.
    assert_eq!(report.pending_at_start, 20);
    assert_eq!(report.finished, 40);
    assert_eq!(log.len(), 20);
    assert!(matches!(
        bus.emit("t", json!({})).await,
        Err(EmitError::ShuttingDown)
    ));
    assert!(matches!(
        bus.emit("unrouted", json!({})).await,
        Err(EmitError::ShuttingDown)
    ));
}

#[tokio::test(start_paused = true)]
async fn shutdown_counts_exactly_and_names_what_it_abandons() {
    let bus = bus()
        .handler(
            FnHandler::new("Stuck", "t", |e| async move {
                if e.data()["n"].as_i64().unwrap() >= 3 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
            .options(HandlerOptions::default().concurrency(2).no_timeout()),
        )
        .handler(FnHandler::new("Quick", "t", |_| async { Ok(()) }))
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(bus.emit("t", json!({"n": n})).await.unwrap().id());
    }
    let report = bus.shutdown(Duration::from_secs(5)).await;
    // Events 0..3 finish for both handlers; 3..6 never finish for Stuck.
    assert_eq!(report.pending_at_start, 6);
    assert_eq!(report.finished, 3 + 6);
    let mut abandoned = report.abandoned_events();
    abandoned.sort();
    assert_eq!(abandoned, ids[3..].to_vec());
    assert!(report.abandoned.iter().all(|a| a.handler == "Stuck"));
    assert_eq!(report.elapsed, Duration::from_secs(5));
    assert_eq!(bus.pending(), 0, "abandoned events free their places");
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_events_waiting_to_retry() {
    let bus = bus()
        .handler(
            FnHandler::new("Retry", "t", |_| async {
                Err(tidings::HandlerError::retryable("later"))
            })
            .options(
                HandlerOptions::default().backoff(tidings::Backoff::fixed(Duration::from_secs(60))),
            ),
        )
        .build()
        .unwrap();
    let id = bus.emit("t", json!({})).await.unwrap().id();
    let report = bus.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.abandoned_events(), vec![id]);
    assert_eq!(report.finished, 0);
}

#[tokio::test]
async fn a_second_shutdown_is_empty() {
    let bus = bus()
        .handler(recorder("A", "t", Log::default()))
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 1})).await.unwrap();
    let first = bus.shutdown(Duration::from_secs(1)).await;
    assert_eq!(first.finished + first.abandoned.len() as u64, 1);
    let second = bus.shutdown(Duration::from_secs(1)).await;
    assert_eq!((second.finished, second.abandoned.len()), (0, 0));
}

/// Emits from other threads while a shutdown with no time to drain stops the
/// workers: every event `emit` accepted is, for each handler, either handled
/// or named as abandoned, never both, never neither; and no place is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_racing_a_shutdown_is_handled_or_named_never_lost() {
    use std::collections::{HashMap, HashSet};
    for round in 0..20 {
        let slow = Log::default();
        let fast = Log::default();
        let s = slow.clone();
        let bus = bus()
            .handler(FnHandler::new("Slow", "t", move |e| {
                let s = s.clone();
                async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    s.push(e.data()["n"].as_i64().unwrap());
                    Ok(())
                }
            }))
            .handler(recorder("Fast", "t", fast.clone()))
            .build()
            .unwrap();
        let emitters: Vec<_> = (0..2i64)
            .map(|t| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    let mut accepted = HashMap::new();
                    for i in 0..2_000i64 {
                        let n = t * 1_000_000 + i;
                        match bus.try_emit("t", json!({ "n": n })) {
                            Ok(r) if r.is_queued() => {
                                accepted.insert(r.id(), n);
                            }
                            Ok(_) | Err(EmitError::QueueFull { .. }) => {}
                            Err(EmitError::ShuttingDown) => break,
                            Err(e) => panic!("unexpected: {e}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(300 * round)).await;
        let mut report = bus.shutdown(Duration::ZERO).await;
        let mut accepted = HashMap::new();
        for e in emitters {
            accepted.extend(e.join().unwrap());
        }
        // Emits still running when the report was made are named in a later one.
        let late = bus.shutdown(Duration::ZERO).await;
        report.abandoned.extend(late.abandoned);
        for (name, handled) in [("Slow", &slow), ("Fast", &fast)] {
            let handled: HashSet<i64> = handled.get().into_iter().collect();
            let abandoned: HashSet<i64> = report
                .abandoned
                .iter()
                .filter(|a| a.handler == name)
                .map(|a| accepted[&a.event_id])
                .collect();
            assert!(handled.is_disjoint(&abandoned), "round {round}, {name}");
            let all: HashSet<i64> = accepted.values().copied().collect();
            let seen: HashSet<i64> = handled.union(&abandoned).copied().collect();
            assert_eq!(
                seen, all,
                "round {round}, {name}: accepted but neither handled nor named"
            );
        }
        assert_eq!(bus.pending(), 0, "round {round}");
    }
}
