//! The bearer token: [`AdminConfig`] keeps only its SHA-256 digest, and each
//! request's token is compared digest to digest in constant time.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The shortest token [`AdminConfig::new`] accepts.
const MIN_TOKEN: usize = 16;

/// The admin API's settings: the bearer token every request must carry.
///
/// Its `Debug` never shows the token.
///
/// ```
/// let config = tidings_admin::AdminConfig::new("0123456789abcdef").unwrap();
/// assert!(!format!("{config:?}").contains("0123"));
/// assert!(tidings_admin::AdminConfig::new("short").is_err());
/// ```
#[derive(Clone)]
pub struct AdminConfig {
    digest: [u8; 32],
    pub(crate) payloads: Option<Redact>,
}

/// An application's redaction of the dead letters' data it lets the admin
/// API show (see [`AdminConfig::show_payloads`]).
pub(crate) type Redact =
    Arc<dyn Fn(&str, &serde_json::Value) -> Option<serde_json::Value> + Send + Sync>;

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &"<redacted>")
            .field("shows_payloads", &self.payloads.is_some())
            .finish()
    }
}

/// Why a token was refused by [`AdminConfig::new`] (never its text).
///
/// ```
/// let e = tidings_admin::AdminConfig::new("x").unwrap_err();
/// assert!(e.to_string().contains("16"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Too short to resist guessing.
    #[error("an admin token has at least {MIN_TOKEN} characters")]
    TooShort,
    /// Characters a header cannot carry.
    #[error("an admin token is printable ASCII without spaces")]
    NotPrintable,
}

impl AdminConfig {
    /// Settings whose token is `token`: at least 16 characters of printable
    /// ASCII without spaces (what an `Authorization` header carries).
    ///
    /// # Errors
    /// [`TokenError`] for a token too short or not printable.
    pub fn new(token: impl AsRef<str>) -> Result<Self, TokenError> {
        let token = token.as_ref();
        if token.len() < MIN_TOKEN {
            return Err(TokenError::TooShort);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
            payloads: None,
        })
    }

    /// Lets the dead-letter listing show each letter's data, as `redact`
    /// returns it from the event type and the data: the application decides
    /// what an operator may see (drop secrets, keep ids); `None` shows
    /// nothing for that letter. Without this (the default) no data is ever
    /// shown.
    ///
    /// ```
    /// let config = tidings_admin::AdminConfig::new("0123456789abcdef").unwrap()
    ///     .show_payloads(|event_type, data| {
    ///         (event_type == "order_created").then(|| serde_json::json!({ "order_id": data["order_id"] }))
    ///     });
    /// assert!(format!("{config:?}").contains("shows_payloads: true"));
    /// ```
    #[must_use]
    pub fn show_payloads(
        mut self,
        redact: impl Fn(&str, &serde_json::Value) -> Option<serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        self.payloads = Some(Arc::new(redact));
        self
    }

    /// Whether `presented` is the token, in time independent of both.
    fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// Lets a request through only with `Authorization: Bearer <the token>`.
pub(crate) async fn require_token(
    State(config): State<Arc<AdminConfig>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        None => Err(ApiError::unauthorized(
            "this route needs an Authorization: Bearer <admin token> header",
        )),
        Some(token) if !config.accepts(token) => {
            Err(ApiError::unauthorized("the admin token is not valid"))
        }
        Some(_) => Ok(next.run(request).await),
    }
}
