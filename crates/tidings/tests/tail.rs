//! The bus's tail: each emit and each delivery's outcome, as metadata only.

use serde_json::json;
use std::time::Duration;
use tidings::{
    Envelope, EventBus, EventHandler, HandlerError, HandlerOptions, Settled, TailError, Tiding,
};

struct Picky;

impl EventHandler for Picky {
    fn event_type(&self) -> &str {
        "signup"
    }
    fn name(&self) -> &str {
        "picky"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, e: &Envelope) -> Result<(), HandlerError> {
        if e.data()["ok"] == true {
            Ok(())
        } else {
            Err(HandlerError::retryable("not today"))
        }
    }
}

#[tokio::test]
async fn the_tail_tells_each_emit_and_outcome_without_data() {
    let bus = EventBus::builder()
        .discover(false)
        .handler(Picky)
        .build()
        .unwrap();
    bus.emit("signup", json!({"ok": true, "password": "hunter2"}))
        .await
        .unwrap();
    bus.wait_idle().await;
    // Nothing from before listening.
    let mut tail = bus.tail();
    let good = bus
        .emit("signup", json!({"ok": true, "password": "hunter2"}))
        .key("u-1")
        .await
        .unwrap();
    bus.wait_idle().await;
    let bad = bus.emit("signup", json!({"ok": false})).await.unwrap();
    bus.wait_idle().await;
    let mut seen = Vec::new();
    while let Ok(Ok(t)) = tokio::time::timeout(Duration::from_millis(100), tail.recv()).await {
        assert!(!serde_json::to_string(&t).unwrap().contains("hunter2"));
        seen.push(t);
    }
    let settled = |id, attempt, outcome| Tiding::Settled {
        event_type: "signup".into(),
        event_id: id,
        handler: "picky".into(),
        attempt,
        outcome,
    };
    assert_eq!(
        seen,
        vec![
            Tiding::Emitted {
                event_type: "signup".into(),
                event_id: good.id(),
                key: Some("u-1".into())
            },
            settled(good.id(), 1, Settled::Handled),
            Tiding::Emitted {
                event_type: "signup".into(),
                event_id: bad.id(),
                key: None
            },
            settled(bad.id(), 1, Settled::Retrying),
            settled(bad.id(), 2, Settled::DeadLettered),
        ]
    );
}

#[tokio::test]
async fn a_listener_that_falls_behind_is_told_how_far() {
    let bus = EventBus::builder()
        .discover(false)
        .handler(Picky)
        .capacity(20_000)
        .build()
        .unwrap();
    let mut tail = bus.tail();
    for _ in 0..5_000 {
        bus.emit("signup", json!({"ok": true})).await.unwrap();
    }
    bus.wait_idle().await;
    // 10 000 tidings into a buffer of 4 096: the oldest are skipped, and said so.
    match tail.recv().await {
        Err(TailError::Lagged(n)) => assert_eq!(n, 10_000 - tidings::tail::BUFFER as u64),
        other => panic!("{other:?}"),
    }
    assert!(tail.recv().await.is_ok(), "then it goes on with the newest");
    drop(bus);
    let mut rest = 0;
    loop {
        match tail.recv().await {
            Ok(_) => rest += 1,
            Err(TailError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(rest, tidings::tail::BUFFER - 1);
}
