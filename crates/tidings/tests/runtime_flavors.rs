//! The bus works on the multi-thread and current-thread runtimes, and under a paused clock.

mod common;
use common::{bus, FnHandler, Log};
use serde_json::json;
use std::time::Duration;
use tidings::{Backoff, HandlerError, HandlerOptions};

async fn exercise() {
    let log = Log::default();
    let l = log.clone();
    let bus = bus()
        .handler(
            FnHandler::new("H", "t", move |e| {
                let l = l.clone();
                async move {
                    if e.attempt() == 1 && e.data()["n"].as_i64().unwrap() % 7 == 0 {
                        return Err(HandlerError::retryable("again"));
                    }
                    tokio::task::yield_now().await;
                    l.push(e.data()["n"].as_i64().unwrap());
                    Ok(())
                }
            })
            .options(HandlerOptions::default().backoff(Backoff::fixed(Duration::from_millis(1)))),
        )
        .build()
        .unwrap();
    let mut emitters = Vec::new();
    for t in 0..4 {
        let bus = bus.clone();
        emitters.push(tokio::spawn(async move {
            for n in 0..250 {
                bus.emit("t", json!({"n": t * 250 + n})).await.unwrap();
            }
        }));
    }
    for e in emitters {
        e.await.unwrap();
    }
    bus.wait_idle().await;
    let mut seen = log.get();
    seen.sort();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    let report = bus.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime() {
    exercise().await;
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_runtime() {
    exercise().await;
}

#[tokio::test(start_paused = true)]
async fn paused_clock() {
    exercise().await;
}

#[test]
fn the_process_wide_bus_is_built_once_and_init_after_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = tidings::event_bus();
        let b = tidings::try_event_bus().unwrap();
        a.disable();
        assert!(!b.is_enabled(), "both handles are the same bus");
        a.enable();
        assert!(matches!(
            tidings::init(tidings::EventBus::builder()),
            Err(tidings::InitError::AlreadyInitialized)
        ));
    });
}
