//! The bus at a glance: its state, queue depth, event types, handlers and
//! store, from [`tidings::EventBus::stats`].

use crate::error::ApiError;
use crate::Admin;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

/// `GET /api/overview`.
pub(crate) async fn overview(State(admin): State<Admin>) -> Json<Value> {
    let stats = admin.bus.stats();
    Json(json!({
        "enabled": stats.enabled,
        "pending": stats.pending,
        "capacity": stats.capacity,
        "dead_letters": stats.dead_letters,
        "dead_letters_evicted": stats.dead_letters_evicted,
        "event_types": admin.bus.event_types(),
        "handlers": stats.handlers.len(),
        "store": stats.store,
        "store_kind": stats.store_kind.unwrap_or("memory"),
    }))
}

/// `GET /api/handlers`: each handler's figures, latency percentiles in ns.
pub(crate) async fn handlers(State(admin): State<Admin>) -> Json<Value> {
    Json(json!({ "handlers": admin.bus.stats().handlers }))
}

/// `GET /api/event-types`.
pub(crate) async fn event_types(State(admin): State<Admin>) -> Json<Value> {
    Json(json!({ "event_types": admin.bus.stats().event_types }))
}

/// `GET /api/handlers/{name}/keys`: the keys holding the handler's
/// deliveries back in this process, the most waiting first (404 for an
/// unknown handler).
pub(crate) async fn keys(
    State(admin): State<Admin>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match admin.bus.pending_keys(&name).await {
        Some(keys) => Ok(Json(json!({ "handler": name, "keys": keys }))),
        None => Err(ApiError::not_found(
            "no such handler, or its worker has stopped",
        )),
    }
}
