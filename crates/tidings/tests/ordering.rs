//! Per-key ordering: one at a time per key and handler, in emit order; other keys go on.

mod common;
use common::{bus, FnHandler, Log};
use serde_json::json;
use std::time::Duration;
use tidings::{Backoff, HandlerError, HandlerOptions};

#[tokio::test(start_paused = true)]
async fn same_key_runs_one_at_a_time_in_emit_order() {
    let log = Log::default();
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (l, a) = (log.clone(), active.clone());
    let bus = bus()
        .handler(FnHandler::new("H", "t", move |e| {
            let (l, a) = (l.clone(), a.clone());
            async move {
                let now = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(now, 0, "two events of one key ran at once");
                // Later events sleep less: without ordering they would overtake.
                let n = e.data()["n"].as_u64().unwrap();
                tokio::time::sleep(Duration::from_millis(100 - n)).await;
                l.push(n);
                a.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        }))
        .build()
        .unwrap();
    for n in 0..20 {
        bus.emit("t", json!({"n": n})).key("k").await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(log.get(), (0..20).collect::<Vec<u64>>());
}

#[tokio::test(start_paused = true)]
async fn events_without_a_key_run_concurrently() {
    let log = Log::default();
    let l = log.clone();
    let bus = bus()
        .handler(FnHandler::new("H", "t", move |e| {
            let l = l.clone();
            async move {
                let n = e.data()["n"].as_u64().unwrap();
                tokio::time::sleep(Duration::from_millis(100 - n * 10)).await;
                l.push(n);
                Ok(())
            }
        }))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    for n in 0..5 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(log.get(), vec![4, 3, 2, 1, 0]);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_key_waiting_to_retry_holds_up_only_itself() {
    let log = Log::default();
    let l = log.clone();
    let bus = bus()
        .handler(
            FnHandler::new("H", "t", move |e| {
                let l = l.clone();
                async move {
                    let key = e.key().unwrap().to_owned();
                    let n = e.data()["n"].as_u64().unwrap();
                    if key == "slow" && n == 0 && e.attempt() == 1 {
                        return Err(HandlerError::retryable("try later"));
                    }
                    l.push((key, n, tokio::time::Instant::now()));
                    Ok(())
                }
            })
            .options(
                HandlerOptions::default()
                    .concurrency(1)
                    .backoff(Backoff::fixed(Duration::from_secs(10))),
            ),
        )
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    bus.emit("t", json!({"n": 0})).key("slow").await.unwrap();
    bus.emit("t", json!({"n": 1})).key("slow").await.unwrap();
    for n in 0..3 {
        bus.emit("t", json!({"n": n})).key("fast").await.unwrap();
    }
    bus.wait_idle().await;
    let seen = log.get();
    let order: Vec<(String, u64)> = seen.iter().map(|(k, n, _)| (k.clone(), *n)).collect();
    assert_eq!(
        order,
        vec![
            ("fast".into(), 0),
            ("fast".into(), 1),
            ("fast".into(), 2),
            ("slow".into(), 0),
            ("slow".into(), 1)
        ]
    );
    // The fast key finished at once, even with concurrency 1; the slow one after its backoff.
    assert!(seen[2].2 - start < Duration::from_millis(1));
    assert_eq!(seen[3].2 - start, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn order_holds_per_handler_even_when_one_handler_fails() {
    let a = Log::default();
    let b = Log::default();
    let (a2, b2) = (a.clone(), b.clone());
    let bus = bus()
        .handler(
            FnHandler::new("A", "t", move |e| {
                let a2 = a2.clone();
                async move {
                    let n = e.data()["n"].as_u64().unwrap();
                    if n % 3 == 0 && e.attempt() == 1 {
                        return Err(HandlerError::retryable("flaky"));
                    }
                    a2.push(n);
                    Ok(())
                }
            })
            .options(HandlerOptions::default().backoff(Backoff::fixed(Duration::from_millis(50)))),
        )
        .handler(FnHandler::new("B", "t", move |e| {
            let b2 = b2.clone();
            async move {
                b2.push(e.data()["n"].as_u64().unwrap());
                Ok(())
            }
        }))
        .build()
        .unwrap();
    for n in 0..10 {
        bus.emit("t", json!({"n": n})).key("same").await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(a.get(), (0..10).collect::<Vec<u64>>());
    assert_eq!(b.get(), (0..10).collect::<Vec<u64>>());
}
