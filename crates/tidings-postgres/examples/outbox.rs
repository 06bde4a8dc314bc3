//! The transactional outbox: an order and its `order_created` event are
//! written in one PostgreSQL transaction, so there is never an order without
//! its event, nor an event for an order that was rolled back.
//!
//! ```sh
//! TIDINGS_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p tidings-postgres --example outbox
//! ```

use anyhow::Context;
use sqlx::Connection;
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};

struct NotifyWarehouse;

impl EventHandler for NotifyWarehouse {
    fn event_type(&self) -> &str {
        "order_created"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        println!("warehouse: ship order {}", event.data()["order_id"]);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_POSTGRES_URL")
        .context("set TIDINGS_POSTGRES_URL to a PostgreSQL database")?;
    let store = tidings_postgres::PgStore::connect(&url, "outbox-example").await?;
    let outbox = store.outbox();
    let bus = EventBus::builder()
        .discover(false)
        .handler(NotifyWarehouse)
        .store(store)
        .build()?;

    let mut db = sqlx::PgConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS example_orders (id BIGINT PRIMARY KEY, total NUMERIC)")
        .execute(&mut db)
        .await?;
    for (order_id, commit) in [(1, true), (2, false), (3, true)] {
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO example_orders (id, total) VALUES ($1, 9.5) ON CONFLICT DO NOTHING",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
        let data = serde_json::json!({ "order_id": order_id, "total": 9.5 });
        outbox
            .emit(&mut tx, &bus, "order_created", data, None)
            .await?;
        if commit {
            tx.commit().await?;
            println!("order {order_id}: committed (its event will be delivered)");
        } else {
            tx.rollback().await?;
            println!("order {order_id}: rolled back (no order, no event)");
        }
    }
    // The relay is woken by the commit's notification; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bus.wait_idle().await;
    let report = bus.shutdown(Duration::from_secs(5)).await;
    println!("done: {} abandoned", report.abandoned.len());
    drop(bus);
    sqlx::query("DROP TABLE example_orders")
        .execute(&mut db)
        .await?;
    tidings_postgres::PgStore::purge(&url, "outbox-example").await?;
    Ok(())
}
