//! The durable bus, step by step: run it twice.
//!
//! ```sh
//! cargo run -p tidings-sqlite --example durable_sqlite            # emits 5 orders; the mailer is down
//! cargo run -p tidings-sqlite --example durable_sqlite -- --fixed # the next start delivers them
//! ```
//!
//! The first run's mailer fails every attempt; the bus retries, then keeps
//! each delivery as a dead letter in `orders-bus.db`. The warehouse handler
//! succeeds at once. The second run (mailer fixed) finds the dead letters in
//! the file and replays them. Kill the first run with Ctrl-C while it sleeps
//! and the second run delivers whatever was pending too.

use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};

struct Warehouse;

impl EventHandler for Warehouse {
    fn event_type(&self) -> &str {
        "order_created"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        println!("warehouse: ship order {}", event.data()["order_id"]);
        Ok(())
    }
}

struct Mailer {
    down: bool,
}

impl EventHandler for Mailer {
    fn event_type(&self) -> &str {
        "order_created"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(100)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if self.down {
            return Err(HandlerError::retryable("smtp server unreachable"));
        }
        println!(
            "mailer: confirmation for order {} (attempt {})",
            event.data()["order_id"],
            event.attempt()
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fixed = std::env::args().any(|a| a == "--fixed");
    let store = tidings_sqlite::SqliteStore::open("orders-bus.db")?;
    let bus = EventBus::builder()
        .discover(false)
        .handler(Warehouse)
        .handler(Mailer { down: !fixed })
        .store(store)
        .build()?;
    println!(
        "recovered: {} pending events, {} dead letters",
        bus.pending(),
        bus.dead_letters().len()
    );
    if fixed {
        for letter in bus.dead_letters() {
            println!(
                "replaying the {} delivery of {}",
                letter.handler,
                letter.event.id()
            );
            bus.replay(letter.id)?;
        }
    } else {
        for order_id in 1..=5 {
            // Returns once the event is in the file.
            bus.emit("order_created", serde_json::json!({ "order_id": order_id }))
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bus.wait_idle().await;
    let report = bus.shutdown(Duration::from_secs(5)).await;
    println!(
        "done: {} dead letters kept in orders-bus.db, {} deliveries abandoned{}",
        bus.dead_letters().len(),
        report.abandoned.len(),
        if fixed { "" } else { "; now run with --fixed" }
    );
    Ok(())
}
