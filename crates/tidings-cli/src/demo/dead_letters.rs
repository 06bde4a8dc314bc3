//! The bus's dead letters: listed without their payloads (which may hold
//! secrets), and replayed or discarded one by one.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// `GET /api/bus/dead-letters`: oldest first; ids, handler, error, attempts, no data.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let letters: Vec<Value> = state
        .bus
        .dead_letters()
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "handler": d.handler,
                "event_id": d.event.id(),
                "event_type": d.event.event_type(),
                "attempts": d.attempts,
                "error": d.error,
                "failed_at": d.failed_at,
            })
        })
        .collect();
    Json(json!({ "dead_letters": letters }))
}

/// A dead letter id from the path.
fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid("a dead letter id is a positive integer"))
}

/// `DELETE /api/bus/dead-letters/{id}`: deletes it for good without
/// replaying it (200 with its event id, 404 unknown id).
pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match state.bus.discard(id) {
        Some(letter) => Ok(Json(
            json!({ "discarded": id, "event_id": letter.event.id() }),
        )),
        None => Err(ApiError::not_found(format!("no dead letter with id {id}"))),
    }
}

/// `POST /api/bus/dead-letters/{id}/replay`: hands the event to its handler
/// again (202), or says why not (404 unknown id, 503 full or stopping).
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    match state.bus.replay(id) {
        Ok(receipt) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "replayed": id, "event_id": receipt.id() })),
        )),
        Err(tidings::ReplayError::NotFound(_)) => {
            Err(ApiError::not_found(format!("no dead letter with id {id}")))
        }
        Err(e) => Err(ApiError::unavailable(e.to_string())),
    }
}
