//! The read-back routes.

use super::error::ApiError;
use super::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidings_events::{Db, Severity};

/// `GET /api/conversations/{id}`: the messages, oldest first.
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::invalid(
            "conversation_id is at most 64 characters",
        ));
    }
    let messages = tidings_events::conversation(&state.store, &id).await?;
    if messages.is_empty() {
        return Err(ApiError::not_found("no such conversation"));
    }
    Ok(Json(json!({"conversation_id": id, "messages": messages})))
}

/// Filters of `GET /api/activity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    user_id: Option<i64>,
    severity: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/activity?user_id=&severity=&limit=`: newest first.
pub async fn activity(
    State(state): State<AppState>,
    query: Result<Query<ActivityQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let severity = match &q.severity {
        None => None,
        Some(s) => Some(
            s.parse::<Severity>()
                .map_err(|e| ApiError::invalid(format!("severity: {e}")))?,
        ),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = tidings_events::list_activity(&state.store, q.user_id, severity, limit).await?;
    Ok(Json(json!({"entries": entries})))
}

/// Filters of `GET /api/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    user_id: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct OrderRow {
    order_id: i64,
    user_id: i64,
    total: f64,
    items: String,
    created_at: String,
    email_sent: bool,
    inventory_updated: bool,
    warehouse_notified: bool,
}

/// `GET /api/orders?user_id=`: orders with how far their workflow got.
pub async fn orders(
    State(state): State<AppState>,
    query: Result<Query<OrdersQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let Db::Sqlite(db) = &state.store else {
        return Err(ApiError::internal("demo needs SQLite"));
    };
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.order_id, o.user_id, o.total, o.items, o.created_at, \
         EXISTS (SELECT 1 FROM order_emails e WHERE e.order_id = o.order_id) AS email_sent, \
         EXISTS (SELECT 1 FROM inventory_updates i WHERE i.order_id = o.order_id) AS inventory_updated, \
         EXISTS (SELECT 1 FROM warehouse_notifications w WHERE w.order_id = o.order_id) AS warehouse_notified \
         FROM orders o WHERE (?1 IS NULL OR o.user_id = ?1) ORDER BY o.order_id DESC LIMIT 100",
    )
    .bind(q.user_id)
    .fetch_all(db)
    .await?;
    let orders: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let items: Value = serde_json::from_str(&r.items).unwrap_or(Value::Null);
            json!({
                "order_id": r.order_id, "user_id": r.user_id, "total": r.total, "items": items,
                "created_at": r.created_at, "email_sent": r.email_sent,
                "inventory_updated": r.inventory_updated, "warehouse_notified": r.warehouse_notified,
            })
        })
        .collect();
    Ok(Json(json!({"orders": orders})))
}

/// `GET /api/bus/stats`: handler counts, event types and per-handler figures.
pub async fn bus_stats(State(state): State<AppState>) -> Json<Value> {
    let bus = &state.bus;
    Json(json!({
        "handler_count": bus.handler_count(None),
        "event_types": bus.event_types(),
        "stats": bus.stats(),
    }))
}
