//! What the demo does when asked for more than it can serve.
//!
//! - **At most [`MAX_IN_FLIGHT`] requests of the API are worked on at
//!   once**; one more is answered `503 Service Unavailable` with
//!   `Retry-After: 1` at once, before any work (load shedding: the queue of
//!   waiting requests cannot grow without bound).
//! - **A request gets its answer within [`REQUEST_TIMEOUT`]**, or a `503`
//!   with `Retry-After` then; what it had emitted before stays emitted.
//! - **An emit waits at most [`EMIT_WAIT`] for room on a full bus**, then
//!   the request is answered `503` with `Retry-After`. (An emit cut short
//!   while its event was being written may still be delivered: a `503`
//!   promises nothing either way.)
//!
//! Nothing answered `2xx` is lost: its events were acknowledged by the bus
//! before the answer (on the durable bus, written to its file).
//! `/healthz`, `/metrics` and the admin API are not limited.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests of the API worked on at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// The longest a request of the API takes before it is answered `503`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest an emit waits for room on a full bus.
pub const EMIT_WAIT: Duration = Duration::from_secs(2);

/// What `Retry-After` says, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The limits' state, shared by the requests.
#[derive(Clone, Debug)]
pub struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    /// At most `in_flight` requests at once, each answered within `timeout`.
    pub fn new(in_flight: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(in_flight)),
            timeout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT, REQUEST_TIMEOUT)
    }
}

/// The middleware: sheds a request beyond the limit, and answers one that
/// takes too long.
pub async fn guard(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire() else {
        metrics::counter!("tidings_demo_shed_total").increment(1);
        return ApiError::unavailable("the service is at capacity; try again").into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("tidings_demo_timed_out_total").increment(1);
            ApiError::unavailable("the service did not answer in time; try again").into_response()
        }
    }
}

/// An emit (or publish) that waits at most [`EMIT_WAIT`] for room.
///
/// # Errors
/// `503` when the bus stayed full, or the bus's own refusal.
pub async fn emitted<T, E>(
    emit: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    match tokio::time::timeout(EMIT_WAIT, emit.into_future()).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::unavailable("the event bus is full; try again")),
    }
}
