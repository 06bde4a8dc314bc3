//! A handler can emit follow-up events on the bus that delivered it; wait_idle covers them.

mod common;
use common::{bus, recorder, FnHandler, Log};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn follow_ups_run_and_wait_idle_waits_for_them() {
    let log = Log::default();
    let bus = bus()
        .handler(FnHandler::new("Order", "order_created", |e| async move {
            let bus = tidings::EventBus::current().expect("running inside a handler");
            tokio::time::sleep(Duration::from_millis(5)).await;
            bus.emit("email_requested", json!({"n": e.data()["n"].clone()}))
                .await?;
            Ok(())
        }))
        .handler(FnHandler::new("Email", "email_requested", {
            let log = log.clone();
            move |e| {
                let log = log.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let bus = tidings::EventBus::current().unwrap();
                    bus.emit("email_sent", json!({"n": e.data()["n"].clone()}))
                        .await?;
                    log.push(e.data()["n"].as_i64().unwrap());
                    Ok(())
                }
            }
        }))
        .handler(recorder("Sent", "email_sent", log.clone()))
        .build()
        .unwrap();
    for n in 0..3 {
        bus.emit("order_created", json!({"n": n})).await.unwrap();
    }
    bus.wait_idle().await;
    let mut seen = log.get();
    seen.sort();
    assert_eq!(seen, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(bus.pending(), 0);
}
