//! One handler's error or panic never touches another handler or the caller.

mod common;
use common::{bus, recorder, FnHandler, Log};
use serde_json::json;
use tidings::{HandlerError, HandlerOptions};

#[tokio::test]
async fn a_panicking_and_a_failing_handler_leave_a_third_untouched() {
    let good = Log::default();
    let bus = bus()
        .handler(
            FnHandler::new("Panics", "order_created", |_| async { panic!("boom") })
                .options(HandlerOptions::default().attempts(1)),
        )
        .handler(
            FnHandler::new("Fails", "order_created", |_| async {
                Err(HandlerError::retryable("db down"))
            })
            .options(HandlerOptions::default().attempts(1)),
        )
        .handler(recorder("Good", "order_created", good.clone()))
        .build()
        .unwrap();
    for n in 0..10 {
        let r = bus.emit("order_created", json!({"n": n})).await;
        assert!(r.is_ok(), "the caller never sees a handler's failure");
    }
    bus.wait_idle().await;
    assert_eq!(good.get(), (0..10).collect::<Vec<_>>());
    let s = bus.stats();
    assert_eq!(s.handler("Good").unwrap().succeeded, 10);
    assert_eq!(s.handler("Good").unwrap().failed, 0);
    assert_eq!(s.handler("Panics").unwrap().panicked, 10);
    assert_eq!(s.handler("Panics").unwrap().dead_lettered, 10);
    assert_eq!(s.handler("Fails").unwrap().failed, 10);
    assert_eq!(s.handler("Fails").unwrap().panicked, 0);
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 20);
    assert!(dead
        .iter()
        .any(|d| d.handler == "Panics" && d.error == "panicked: boom"));
    assert!(dead
        .iter()
        .any(|d| d.handler == "Fails" && d.error == "db down"));
}

#[tokio::test]
async fn a_panic_after_an_await_is_caught_too() {
    let good = Log::default();
    let bus = bus()
        .handler(
            FnHandler::new("LatePanic", "t", |_| async {
                tokio::task::yield_now().await;
                panic!("late");
            })
            .options(HandlerOptions::default().attempts(1)),
        )
        .handler(recorder("Good", "t", good.clone()))
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 1})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(good.get(), vec![1]);
    assert_eq!(bus.stats().handler("LatePanic").unwrap().panicked, 1);
    // The worker survived its panic: it still handles events.
    bus.emit("t", json!({"n": 2})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(bus.stats().handler("LatePanic").unwrap().panicked, 2);
}

#[tokio::test]
async fn a_blocked_handler_does_not_hold_up_another() {
    let good = Log::default();
    let bus = bus()
        .handler(
            FnHandler::new("Stuck", "t", |_| {
                std::future::pending::<Result<(), HandlerError>>()
            })
            .options(HandlerOptions::default().concurrency(1).no_timeout()),
        )
        .handler(recorder("Good", "t", good.clone()))
        .build()
        .unwrap();
    for n in 0..5 {
        bus.emit("t", json!({"n": n})).await.unwrap();
    }
    for _ in 0..100 {
        if good.len() == 5 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(good.get(), vec![0, 1, 2, 3, 4]);
    assert_eq!(bus.pending(), 5, "Stuck still holds all five");
}
