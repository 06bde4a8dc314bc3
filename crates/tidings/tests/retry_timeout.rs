//! Retries with backoff, timeouts, permanent errors, dead letters and replay,
//! timed on tokio's paused clock.

mod common;
use common::{bus, FnHandler, Log};
use serde_json::json;
use std::time::Duration;
use tidings::{Backoff, HandlerError, HandlerOptions};
use tokio::time::Instant;

fn fixed(ms: u64) -> Backoff {
    Backoff::fixed(Duration::from_millis(ms))
}

#[tokio::test(start_paused = true)]
async fn retries_wait_the_backoff_then_succeed() {
    let times = Log::default();
    let t = times.clone();
    let start = Instant::now();
    let bus = bus()
        .handler(
            FnHandler::new("Flaky", "t", move |e| {
                let t = t.clone();
                async move {
                    t.push((e.attempt(), start.elapsed()));
                    if e.attempt() < 3 {
                        Err(HandlerError::retryable("not yet"))
                    } else {
                        Ok(())
                    }
                }
            })
            .options(
                HandlerOptions::default().attempts(3).backoff(
                    Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
                        .with_jitter(0.0),
                ),
            ),
        )
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.wait_idle().await;
    let seen = times.get();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(seen[1].1 - seen[0].1, Duration::from_millis(100));
    assert_eq!(seen[2].1 - seen[1].1, Duration::from_millis(200));
    let s = bus.stats();
    let h = s.handler("Flaky").unwrap();
    assert_eq!(
        (h.succeeded, h.failed, h.retried, h.dead_lettered),
        (1, 2, 2, 0)
    );
    assert!(bus.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_within_its_ceiling() {
    let times = Log::default();
    let t = times.clone();
    let bus = bus()
        .handler(
            FnHandler::new("Flaky", "t", move |_| {
                let t = t.clone();
                async move {
                    t.push(Instant::now());
                    Err(HandlerError::retryable("no"))
                }
            })
            .options(HandlerOptions::default().attempts(4).backoff(
                Backoff::exponential(Duration::from_millis(100), Duration::from_millis(250)),
            )),
        )
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.wait_idle().await;
    let t = times.get();
    assert_eq!(t.len(), 4);
    let ceilings = [100, 200, 250];
    for (i, c) in ceilings.iter().enumerate() {
        let gap = t[i + 1] - t[i];
        assert!(gap <= Duration::from_millis(*c), "gap {i} = {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_become_a_dead_letter_with_the_last_error() {
    let bus = bus()
        .handler(
            FnHandler::new("Down", "t", |e| async move {
                Err(HandlerError::retryable(format!("attempt {}", e.attempt())))
            })
            .options(HandlerOptions::default().attempts(3).backoff(fixed(10))),
        )
        .build()
        .unwrap();
    let r = bus.emit("t", json!({"n": 1})).await.unwrap();
    bus.wait_idle().await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.id(), r.id());
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].error, "attempt 3");
    assert_eq!(dead[0].event.data()["n"], 1);
    assert_eq!(bus.stats().handler("Down").unwrap().dead_lettered, 1);
    assert_eq!(
        bus.pending(),
        0,
        "a dead letter holds no place in the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_skips_the_remaining_attempts() {
    let calls = Log::default();
    let c = calls.clone();
    let bus = bus()
        .handler(
            FnHandler::new("Bad", "t", move |e| {
                c.push(e.attempt());
                async { Err(HandlerError::permanent("invalid payload")) }
            })
            .options(HandlerOptions::default().attempts(5)),
        )
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(calls.get(), vec![1]);
    assert_eq!(bus.dead_letters()[0].attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn question_mark_on_any_error_is_retryable() {
    async fn parse(e: tidings::Envelope) -> Result<(), HandlerError> {
        let _n: u32 = e.data()["n"].as_str().unwrap_or("x").parse()?;
        Ok(())
    }
    let bus = bus()
        .handler(
            FnHandler::new("Parse", "t", parse)
                .options(HandlerOptions::default().attempts(2).backoff(fixed(1))),
        )
        .build()
        .unwrap();
    bus.emit("t", json!({"n": "nope"})).await.unwrap();
    bus.wait_idle().await;
    let h = bus.stats().handler("Parse").unwrap().clone();
    assert_eq!((h.failed, h.retried, h.dead_lettered), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let start = Instant::now();
    let ends = Log::default();
    let e2 = ends.clone();
    let bus = bus()
        .handler(
            FnHandler::new("Slow", "t", move |e| {
                let e2 = e2.clone();
                async move {
                    if e.attempt() == 1 {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    e2.push((e.attempt(), start.elapsed()));
                    Ok(())
                }
            })
            .options(
                HandlerOptions::default()
                    .timeout(Duration::from_secs(2))
                    .backoff(fixed(500)),
            ),
        )
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(ends.get(), vec![(2, Duration::from_millis(2500))]);
    let h = bus.stats().handler("Slow").unwrap().clone();
    assert_eq!((h.timed_out, h.failed, h.succeeded), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_can_be_replayed_to_its_handler() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Log::default();
    let (h2, ok2) = (healthy.clone(), ok.clone());
    let bus = bus()
        .handler(
            FnHandler::new("Mailer", "t", move |e| {
                let (h2, ok2) = (h2.clone(), ok2.clone());
                async move {
                    if h2.load(std::sync::atomic::Ordering::SeqCst) {
                        ok2.push((e.id(), e.attempt(), e.data()["n"].clone()));
                        Ok(())
                    } else {
                        Err(HandlerError::retryable("smtp down"))
                    }
                }
            })
            .options(HandlerOptions::default().attempts(2).backoff(fixed(5))),
        )
        .handler(FnHandler::new("Other", "t", |_| async { Ok(()) }))
        .build()
        .unwrap();
    let r = bus.emit("t", json!({"n": 9})).await.unwrap();
    bus.wait_idle().await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let replayed = bus.replay(dead[0].id).unwrap();
    assert_eq!(replayed.id(), r.id());
    bus.wait_idle().await;
    assert_eq!(ok.get(), vec![(r.id(), 1, json!(9))]);
    assert!(bus.dead_letters().is_empty());
    assert!(matches!(
        bus.replay(dead[0].id),
        Err(tidings::ReplayError::NotFound(_))
    ));
    assert_eq!(
        bus.stats().handler("Other").unwrap().succeeded,
        1,
        "replay goes to the failed handler only"
    );
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_bounded_and_evictions_counted() {
    let bus = bus()
        .dead_letter_capacity(3)
        .handler(FnHandler::new("No", "t", |_| async {
            Err(HandlerError::permanent("no"))
        }))
        .build()
        .unwrap();
    for n in 0..5 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    bus.wait_idle().await;
    let dead = bus.dead_letters();
    assert_eq!(
        dead.iter()
            .map(|d| d.event.data()["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(bus.stats().dead_letters_evicted, 2);
}
