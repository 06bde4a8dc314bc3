//! Bounded memory: capacity, Wait and Reject, try_emit, and emits from inside handlers.

mod common;
use common::{bus, FnHandler, Log};
use serde_json::json;
use std::sync::Arc;
use tidings::{EmitError, HandlerError, HandlerOptions, Overflow};
use tokio::sync::Semaphore;

/// A handler that blocks until the test adds permits.
fn gated(gate: Arc<Semaphore>, log: Log<i64>) -> FnHandler {
    FnHandler::new("Gated", "t", move |e| {
        let (gate, log) = (gate.clone(), log.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            log.push(e.data()["n"].as_i64().unwrap());
            Ok(())
        }
    })
    .options(HandlerOptions::default().no_timeout())
}

#[tokio::test]
async fn reject_policy_fails_with_queue_full_and_counts_the_drop() {
    let gate = Arc::new(Semaphore::new(0));
    let log = Log::default();
    let bus = bus()
        .capacity(4)
        .overflow(Overflow::Reject)
        .handler(gated(gate.clone(), log.clone()))
        .build()
        .unwrap();
    for n in 0..4 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    let err = bus.emit("t", json!({"n": 4})).await.unwrap_err();
    assert!(matches!(err, EmitError::QueueFull { capacity: 4 }));
    assert_eq!(bus.pending(), 4);
    assert_eq!(bus.stats().event_type("t").unwrap().dropped, 1);
    gate.add_permits(100);
    bus.wait_idle().await;
    assert_eq!(log.get(), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn wait_policy_blocks_the_emitter_until_there_is_room() {
    let gate = Arc::new(Semaphore::new(0));
    let log = Log::default();
    let bus = bus()
        .capacity(2)
        .handler(gated(gate.clone(), log.clone()))
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 0})).await.unwrap();
    bus.emit("t", json!({"n": 1})).await.unwrap();
    let b2 = bus.clone();
    let third = tokio::spawn(async move { b2.emit("t", json!({"n": 2})).await });
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert!(!third.is_finished(), "emit must wait while the bus is full");
    assert!(matches!(
        bus.try_emit("t", json!({"n": 9})),
        Err(EmitError::QueueFull { .. })
    ));
    gate.add_permits(1);
    third.await.unwrap().unwrap();
    gate.add_permits(100);
    bus.wait_idle().await;
    assert_eq!(log.get(), vec![0, 1, 2]);
    assert!(bus.pending() <= 2);
}

#[tokio::test]
async fn the_queue_never_grows_past_its_capacity() {
    let gate = Arc::new(Semaphore::new(0));
    let bus = bus()
        .capacity(100)
        .handler(gated(gate.clone(), Log::default()))
        .build()
        .unwrap();
    let mut accepted = 0;
    for n in 0..1000 {
        if bus.try_emit("t", json!({"n": n})).is_ok() {
            accepted += 1;
        }
        assert!(bus.pending() <= 100);
    }
    assert_eq!(accepted, 100);
    assert_eq!(bus.stats().event_type("t").unwrap().dropped, 900);
    gate.add_permits(1000);
    bus.wait_idle().await;
}

#[tokio::test]
async fn a_cancelled_waiting_emit_queues_nothing() {
    let gate = Arc::new(Semaphore::new(0));
    let log = Log::default();
    let bus = bus()
        .capacity(1)
        .handler(gated(gate.clone(), log.clone()))
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 0})).await.unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        bus.emit("t", json!({"n": 1})),
    )
    .await;
    assert!(r.is_err(), "timed out while waiting");
    gate.add_permits(10);
    bus.wait_idle().await;
    assert_eq!(log.get(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn an_emit_inside_a_handler_never_waits_on_a_full_bus() {
    // Capacity 1 and the only place is held by the event whose handler emits:
    // waiting would deadlock. The follow-up fails with QueueFull instead, the
    // handler's `?` makes it a retryable failure, and it ends as a dead letter.
    let bus = bus()
        .capacity(1)
        .handler(
            FnHandler::new("Chain", "t", |_| async {
                let bus = tidings::EventBus::current().expect("inside a handler");
                bus.emit("next", json!({})).await?;
                Ok::<_, HandlerError>(())
            })
            .options(HandlerOptions::default().attempts(2)),
        )
        .handler(FnHandler::new("Next", "next", |_| async { Ok(()) }))
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.wait_idle().await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.starts_with("queue full"), "{}", dead[0].error);
    assert_eq!(bus.stats().event_type("next").unwrap().dropped, 2);
}

#[tokio::test]
async fn a_handler_that_keeps_the_envelope_does_not_keep_its_place() {
    let kept: Log<tidings::Envelope> = Log::default();
    let k = kept.clone();
    let keeper = FnHandler::new("Keeper", "t", move |e| {
        k.push(e);
        async { Ok(()) }
    });
    let bus = bus().capacity(2).handler(keeper).build().unwrap();
    for n in 0..10 {
        // With room for two, ten emits only pass if each settled event frees its place.
        bus.try_emit("t", json!({"n": n})).ok();
        tokio::time::timeout(std::time::Duration::from_secs(5), bus.wait_idle())
            .await
            .expect("the bus goes idle once the handler has returned");
    }
    assert_eq!(kept.len(), 10);
    assert_eq!(bus.pending(), 0);
}

#[tokio::test]
async fn places_freed_together_wake_every_waiting_emitter() {
    // The handler's calls are inline and its worker frees places once per
    // batch: several emitters waiting on a full bus must all get in.
    let gate = Arc::new(Semaphore::new(0));
    let log = Log::default();
    let bus = bus()
        .capacity(4)
        .handler(gated(gate.clone(), log.clone()))
        .build()
        .unwrap();
    for n in 0..4 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    let waiting: Vec<_> = (4..10)
        .map(|n| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.emit("t", json!({"n": n})).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert!(waiting.iter().all(|w| !w.is_finished()));
    gate.add_permits(100);
    for w in waiting {
        tokio::time::timeout(std::time::Duration::from_secs(5), w)
            .await
            .expect("every waiting emit gets in")
            .unwrap()
            .unwrap();
    }
    bus.wait_idle().await;
    let mut seen = log.get();
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<i64>>());
}
