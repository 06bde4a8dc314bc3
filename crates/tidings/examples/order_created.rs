//! The seed's "complete event workflow": an order service emits
//! `order_created`, and three handlers (confirmation email, inventory,
//! warehouse) run in the background, each registered where it is declared.
//!
//! `cargo run -p tidings --example order_created`

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tidings::{EventBus, HandlerError};

/// 1. The event.
#[derive(Debug, Serialize, Deserialize, tidings::Event)]
#[event(type = "order_created")]
struct OrderCreated {
    order_id: u64,
    user_id: u64,
    total: f64,
}

/// 2. Its handlers, each on its own: found at start-up, no list to edit.
#[tidings::handler]
async fn send_confirmation_email(order: &OrderCreated) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(20)).await; // talking to a mail server
    tracing::info!(
        order_id = order.order_id,
        user_id = order.user_id,
        "confirmation email sent"
    );
    Ok(())
}

#[tidings::handler]
async fn update_inventory(order: &OrderCreated) -> Result<(), HandlerError> {
    tracing::info!(order_id = order.order_id, "inventory updated");
    Ok(())
}

#[tidings::handler(attempts = 5)]
async fn notify_warehouse(
    order: &OrderCreated,
    event: &tidings::Envelope,
) -> Result<(), HandlerError> {
    if event.attempt() == 1 {
        // The warehouse API is flaky: the bus retries with backoff.
        return Err(HandlerError::retryable("warehouse API timed out"));
    }
    tracing::info!(
        order_id = order.order_id,
        attempt = event.attempt(),
        "Order {} processed",
        order.order_id
    );
    Ok(())
}

/// 3. The service: do the main work, emit, return at once.
async fn create_order(
    bus: &EventBus,
    user_id: u64,
    total: f64,
    order_id: u64,
) -> anyhow::Result<u64> {
    // ... the order is written to the database here ...
    bus.publish(OrderCreated {
        order_id,
        user_id,
        total,
    })
    .key(format!("order-{order_id}"))
    .await?;
    Ok(order_id) // returns immediately: the handlers run in the background
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let bus = tidings::event_bus();
    println!("event types: {:?}", bus.event_types());
    println!(
        "handlers for order_created: {}",
        bus.handler_count(Some("order_created"))
    );

    for (i, total) in [19.99, 5.00, 42.50].into_iter().enumerate() {
        let id = create_order(&bus, 7, total, 1000 + i as u64).await?;
        println!("order {id} created; the request returns now");
    }
    // The dynamic form of the same event works too, and is checked against the type.
    bus.emit(
        "order_created",
        serde_json::json!({"order_id": 2000, "user_id": 8, "total": 1.0}),
    )
    .await?;
    if let Err(e) = bus
        .emit("order_created", serde_json::json!({"order_id": "oops"}))
        .await
    {
        println!("a wrong payload fails at emit: {e}");
    }

    let report = bus.shutdown(Duration::from_secs(10)).await;
    println!(
        "shut down: {} deliveries finished, {} abandoned",
        report.finished,
        report.abandoned.len()
    );
    for h in bus.stats().handlers {
        println!(
            "  {:<24} succeeded {:>2}  failed {:>2}  retried {:>2}",
            h.name, h.succeeded, h.failed, h.retried
        );
    }
    Ok(())
}
