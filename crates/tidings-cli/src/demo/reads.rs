//! The read-back routes.

use super::error::ApiError;
use super::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidings_events::{Db, Severity};

/// `GET /api/conversations/{id}?after=&limit=`: the caller's own
/// conversation's messages, oldest first, a page at a time (404 for anyone
/// else's).
pub async fn conversation(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = query?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit is from 1 to 500"));
    }
    let db = super::sqlite(&state)?;
    let user = super::users::authenticate(db, &headers).await?;
    if id.len() > 64 {
        return Err(ApiError::invalid(
            "conversation_id is at most 64 characters",
        ));
    }
    super::users::owns(db, &user, &id).await?;
    let messages =
        tidings_events::conversation_page(&state.store, &id, page.after.as_deref(), limit + 1)
            .await?;
    let more = messages.len() > limit as usize;
    let messages: Vec<_> = messages.into_iter().take(limit as usize).collect();
    let next = more
        .then(|| messages.last().map(|m| m.message_id.clone()))
        .flatten();
    Ok(Json(
        json!({"conversation_id": id, "messages": messages, "next": next}),
    ))
}

/// A page of a conversation: after the message `after` (the previous
/// page's `next`), at most `limit` (1 to 500, default 100) messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    after: Option<String>,
    limit: Option<u32>,
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
