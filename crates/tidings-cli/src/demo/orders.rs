//! `POST /api/orders`: the seed's order workflow. The order is written in the
//! request (it must exist before we answer); `order_created` then runs three
//! handlers in the background, each idempotent on the event id.

use super::error::ApiError;
use super::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tidings::{Envelope, HandlerError};
use tidings_events::Db;

/// One line of an order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    sku: String,
    quantity: i64,
}

/// A new order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    user_id: i64,
    items: Vec<Item>,
}

/// The seed's `order_created`.
#[derive(Clone, Debug, Serialize, Deserialize, tidings::Event)]
#[event(type = "order_created")]
pub struct OrderCreated {
    /// The order.
    pub order_id: i64,
    /// Who ordered.
    pub user_id: i64,
    /// Its total.
    pub total: f64,
    /// What was ordered.
    pub items: Vec<Item>,
}

/// The answer to a new order.
#[derive(Debug, Serialize)]
pub struct OrderResponse {
    order_id: i64,
    total: f64,
    event_id: uuid::Uuid,
}

fn pool(store: &Db) -> Result<&SqlitePool, HandlerError> {
    match store {
        Db::Sqlite(pool) => Ok(pool),
        Db::Postgres(_) => Err(HandlerError::permanent(
            "the demo's order tables live in SQLite",
        )),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Creates an order, then emits `order_created` and returns at once.
pub async fn create_order(
    State(state): State<AppState>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<OrderResponse>), ApiError> {
    let Json(req) = body?;
    if req.user_id <= 0 {
        return Err(ApiError::invalid("user_id must be a positive integer"));
    }
    if req.items.is_empty() || req.items.len() > 50 {
        return Err(ApiError::invalid("an order has 1 to 50 items"));
    }
    let Db::Sqlite(db) = &state.store else {
        return Err(ApiError::internal("demo needs SQLite"));
    };
    let mut total = 0.0;
    // Refusals name the item by its place in the body, never by what it holds.
    for (i, item) in req.items.iter().enumerate() {
        if !(1..=1000).contains(&item.quantity) {
            return Err(ApiError::invalid(format!(
                "items[{i}].quantity must be 1 to 1000"
            )));
        }
        let price: Option<f64> =
            sqlx::query_scalar("SELECT unit_price FROM products WHERE sku = ?1")
                .bind(&item.sku)
                .fetch_optional(db)
                .await?;
        let Some(price) = price else {
            return Err(ApiError::invalid(format!(
                "items[{i}].sku: no such product"
            )));
        };
        total += price * item.quantity as f64;
    }
    let total = (total * 100.0).round() / 100.0;
    let items = serde_json::to_string(&req.items).map_err(ApiError::internal)?;
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (user_id, total, items, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING order_id",
    )
    .bind(req.user_id)
    .bind(total)
    .bind(items)
    .bind(now())
    .fetch_one(db)
    .await?;
    let receipt = super::overload::emitted(
        state
            .bus
            .publish(OrderCreated {
                order_id,
                user_id: req.user_id,
                total,
                items: req.items,
            })
            .key(format!("order-{order_id}")),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(OrderResponse {
            order_id,
            total,
            event_id: receipt.id(),
        }),
    ))
}

/// Records the confirmation email (the demo's stand-in for sending it).
#[tidings::handler]
async fn send_confirmation_email(
    order: &OrderCreated,
    event: &Envelope,
    store: &Db,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO order_emails (event_id, order_id, recipient, subject, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(event.id().to_string())
    .bind(order.order_id)
    .bind(format!("user-{}@example.com", order.user_id))
    .bind(format!("Your order #{} ({:.2} EUR)", order.order_id, order.total))
    .bind(now())
    .execute(pool(store)?)
    .await?;
    Ok(())
}

/// Takes the ordered items out of stock, once per event (one transaction).
#[tidings::handler]
async fn update_inventory(
    order: &OrderCreated,
    event: &Envelope,
    store: &Db,
) -> Result<(), HandlerError> {
    let mut tx = pool(store)?.begin().await?;
    let first = sqlx::query("INSERT INTO inventory_updates (event_id, order_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
        .bind(event.id().to_string())
        .bind(order.order_id)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if first == 1 {
        for item in &order.items {
            sqlx::query("UPDATE products SET stock = stock - ?1 WHERE sku = ?2")
                .bind(item.quantity)
                .bind(&item.sku)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Notifies the warehouse (recorded as an outgoing notification).
#[tidings::handler]
async fn notify_warehouse(
    order: &OrderCreated,
    event: &Envelope,
    store: &Db,
) -> Result<(), HandlerError> {
    let payload = serde_json::json!({"order_id": order.order_id, "items": order.items}).to_string();
    sqlx::query("INSERT INTO warehouse_notifications (event_id, order_id, payload, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING")
        .bind(event.id().to_string())
        .bind(order.order_id)
        .bind(payload)
        .bind(now())
        .execute(pool(store)?)
        .await?;
    tracing::info!("Order {} processed", order.order_id);
    Ok(())
}
