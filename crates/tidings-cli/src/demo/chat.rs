//! `POST /api/chat`.

use super::error::ApiError;
use super::knowledge::Clearance;
use super::users;
use super::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tidings_events::{ActivityLog, MessageSave, Role, SemanticCacheStore, Severity};

/// A question: the conversation and the message. The user and the
/// clearance come from the `Authorization` token; a body that still names
/// them is refused (422, naming the field), so that no client believes it
/// chose them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    conversation_id: String,
    message: String,
    #[serde(default)]
    user_id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    clearance: Option<serde::de::IgnoredAny>,
}

/// An answer.
#[derive(Debug, Serialize)]
pub struct ChatResponse {
    conversation_id: String,
    /// The saved question (the caller's message).
    question_id: uuid::Uuid,
    /// The saved answer.
    message_id: uuid::Uuid,
    answer: String,
    /// `cache`, `knowledge_base` or `none`.
    source: &'static str,
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<&'static str>,
}

/// Similarity above which a remembered answer is served.
pub const CACHE_THRESHOLD: f32 = 0.8;
const MAX_MESSAGE_CHARS: usize = 2000;

fn validate(req: &ChatRequest) -> Result<(), ApiError> {
    for (field, given) in [
        ("user_id", req.user_id.is_some()),
        ("clearance", req.clearance.is_some()),
    ] {
        if given {
            return Err(ApiError::invalid(format!(
                "`{field}` is not accepted: the user and the clearance come from the Authorization token"
            )));
        }
    }
    let id_ok = !req.conversation_id.is_empty()
        && req.conversation_id.len() <= 64
        && req
            .conversation_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(ApiError::invalid(
            "conversation_id must be 1 to 64 characters of A-Za-z0-9_-",
        ));
    }
    let chars = req.message.chars().count();
    if req.message.trim().is_empty() || chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid(format!(
            "message must be 1 to {MAX_MESSAGE_CHARS} characters"
        )));
    }
    Ok(())
}

async fn save(state: &AppState, message: MessageSave) -> Result<uuid::Uuid, ApiError> {
    let id = message.message_id;
    if state.inline_saves {
        tidings_events::save_message_now(&state.store, &message, &id.to_string()).await?;
    } else {
        super::overload::emitted(state.bus.publish(message).key(id.to_string())).await?;
    }
    Ok(id)
}

/// Answers a question; see the module docs of `demo`.
pub async fn chat(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Json<ChatResponse>, ApiError> {
    let db = super::sqlite(&state)?;
    let user = users::authenticate(db, &headers).await?;
    let Json(req) = body?;
    validate(&req)?;
    users::claim_conversation(db, &user, &req.conversation_id).await?;
    let (user_id, clearance) = (user.id, user.clearance);
    let question_id = save(
        &state,
        MessageSave::new(&req.conversation_id, user_id, Role::User, &req.message),
    )
    .await?;

    let allowed = |required: Option<&str>| match required {
        None => true,
        Some(r) => Clearance::parse(r).is_some_and(|r| r <= clearance),
    };
    if let Some(hit) = state
        .cache
        .lookup(&req.message, CACHE_THRESHOLD, allowed)
        .await?
    {
        let message_id = save(
            &state,
            MessageSave::new(&req.conversation_id, user_id, Role::Assistant, &hit.answer),
        )
        .await?;
        return Ok(Json(ChatResponse {
            conversation_id: req.conversation_id,
            question_id,
            message_id,
            answer: hit.answer,
            source: "cache",
            cached: true,
            similarity: Some(hit.similarity),
            document: None,
        }));
    }

    let Some((doc, similarity)) = state.knowledge.best_match(&req.message) else {
        let answer = "I don't know about that yet.".to_string();
        let message_id = save(
            &state,
            MessageSave::new(&req.conversation_id, user_id, Role::Assistant, &answer),
        )
        .await?;
        return Ok(Json(ChatResponse {
            conversation_id: req.conversation_id,
            question_id,
            message_id,
            answer,
            source: "none",
            cached: false,
            similarity: None,
            document: None,
        }));
    };

    if doc.clearance > clearance {
        let mut entry = ActivityLog::new(
            user_id,
            "UNAUTHORIZED_ACCESS",
            if doc.clearance == Clearance::Secret {
                Severity::Critical
            } else {
                Severity::High
            },
            "User attempted to access restricted resource",
        );
        entry.user_clearance_level = Some(clearance.as_str().into());
        entry.required_clearance_level = Some(doc.clearance.as_str().into());
        entry.access_granted = Some(false);
        entry.user_query = Some(req.message.clone());
        entry.ip_address = Some(peer.ip().to_string());
        entry.user_agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        entry.details = Some(serde_json::Map::from_iter([(
            "document".to_string(),
            serde_json::Value::from(doc.id),
        )]));
        super::overload::emitted(state.bus.publish(entry).key(format!("user-{}", user_id))).await?;
        let refusal = "You do not have clearance for that information.";
        save(
            &state,
            MessageSave::new(&req.conversation_id, user_id, Role::Assistant, refusal),
        )
        .await?;
        return Err(ApiError::forbidden(format!(
            "this needs {} clearance; yours is {}",
            doc.clearance.as_str(),
            clearance.as_str()
        )));
    }

    let answer = doc.body.to_string();
    let mut remember = SemanticCacheStore::new(&req.message, &answer);
    remember.required_clearance = Some(doc.clearance.as_str().into());
    super::overload::emitted(state.bus.publish(remember)).await?;
    let message_id = save(
        &state,
        MessageSave::new(&req.conversation_id, user_id, Role::Assistant, &answer),
    )
    .await?;
    Ok(Json(ChatResponse {
        conversation_id: req.conversation_id,
        question_id,
        message_id,
        answer,
        source: "knowledge_base",
        cached: false,
        similarity: Some(similarity),
        document: Some(doc.id),
    }))
}
