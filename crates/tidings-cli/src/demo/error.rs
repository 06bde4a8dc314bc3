//! Errors as JSON: `{"error": "<code>", "message": "..."}` with a 4xx or 5xx status.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A 422: the request was understood but a field is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// A 401: no valid user token; says how to send one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }

    /// A 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// A 503, with `Retry-After`: the service or its bus is full, or stopping.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }

    /// A 500; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(super::overload::RETRY_AFTER_SECS),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
            _ => "bad_request",
        };
        let message = match &r {
            // serde's text quotes the value: name the field instead.
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                match decode_failure(&r) {
                    Some((path, problem)) if path == "." => format!("invalid body: {problem}"),
                    Some((path, problem)) => format!("invalid body: `{path}`: {problem}"),
                    None => "invalid body".to_owned(),
                }
            }
            // Fixed texts (no content type, too large).
            _ => r.body_text(),
        };
        Self {
            status,
            code,
            message,
        }
    }
}

/// The path and the value-free problem of a body that did not decode,
/// found in the rejection's chain of causes.
fn decode_failure(r: &JsonRejection) -> Option<(String, String)> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(r);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            return Some((
                tidings::redact::one_line(&e.path().to_string(), 256),
                tidings::redact::decode_problem(&e.inner().to_string()),
            ));
        }
        cause = e.source();
    }
    None
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        // "Failed to deserialize query string: <serde's text>": that text
        // may quote the value (an unknown variant).
        let text = r.body_text();
        let message = match text.split_once(": ") {
            Some((what, why)) => format!("{what}: {}", tidings::redact::decode_problem(why)),
            None => "invalid query".to_owned(),
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }
}

impl From<tidings::EmitError> for ApiError {
    fn from(e: tidings::EmitError) -> Self {
        match e {
            tidings::EmitError::QueueFull { .. }
            | tidings::EmitError::ShuttingDown
            | tidings::EmitError::Unavailable { .. }
            | tidings::EmitError::Store(_) => Self::unavailable(e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<tidings_events::DbError> for ApiError {
    fn from(e: tidings_events::DbError) -> Self {
        Self::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
