//! # tidings-admin: operate a running bus from inside your own axum app
//!
//! [`router`] gives an [`axum::Router`] that any application nests where it
//! likes (the demo service nests it at `/admin`):
//!
//! | route | what it does |
//! |---|---|
//! | `GET  /api/overview` | enabled, queue depth and capacity, dead letters, event types, the store's health |
//! | `GET  /api/handlers` | per-handler figures: succeeded, failed, retried, dead-lettered, latency percentiles |
//! | `GET  /api/handlers/{name}/keys` | the keys holding a handler's deliveries back in this process, the most waiting first |
//! | `GET  /api/event-types` | per-type figures: emitted, dropped while disabled, unrouted |
//! | `GET  /api/dead-letters` | dead letters, oldest first, paged by cursor, filtered ([`DeadLetterFilter`]); never their payloads |
//! | `POST /api/dead-letters/replay` | replays a list of ids, or everything a filter matches; `dry_run` counts only |
//! | `POST /api/dead-letters/discard` | the same, deleting for good |
//! | `POST /api/dead-letters/{id}/replay`, `DELETE /api/dead-letters/{id}` | one at a time |
//! | `GET  /api/tail` | a live tail, Server-Sent Events: each emit and each delivery's outcome, metadata only |
//!
//! **Dashboard.** `GET /` (the demo: `/admin/`) is an HTML dashboard, its
//! script and style embedded in the binary: it asks for the token once
//! (kept in the tab's `sessionStorage`), then shows the queue, the store,
//! handled per second by handler over the last minutes, the handlers'
//! figures and latency percentiles, the dead letters (filter, select,
//! replay or discard after a confirmation that shows the count) and the
//! live tail. The page itself holds no data and needs no token.
//!
//! **Auth.** Every API route needs `Authorization: Bearer <token>`, the token the
//! application gives in [`AdminConfig`]. The comparison takes the same time
//! whatever the token (digests compared in constant time). Without the
//! header, or with a wrong token: `401` with a JSON error and
//! `WWW-Authenticate: Bearer`. Reads are `GET`; changes only `POST` or
//! `DELETE`. No cookies are read or set, so there is no CSRF surface.
//!
//! **What it shows.** Names, ids, counts, times and the handlers' error
//! texts; never an event's data, unless the application opts in with a
//! redaction of its own ([`AdminConfig::show_payloads`]). Every error is JSON, `{"error": "<code>",
//! "message": "..."}`, naming the field at fault, never echoing its value.
//!
//! **Prometheus.** [`prometheus`] installs the process's `metrics` recorder
//! (every figure the bus records: `tidings_*` counters per event type and
//! handler outcome, latency histograms, queue depth, the store's connection
//! and reconnects) and [`metrics_router`] serves it as Prometheus text at
//! `GET /metrics`, unauthenticated as scrapers expect (it holds names and
//! figures only).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = tidings::EventBus::builder().build()?;
//! let config = tidings_admin::AdminConfig::new("a-long-random-admin-token")?;
//! let app = axum::Router::new().nest("/admin", tidings_admin::router(bus, config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod auth;
mod dashboard;
mod dead_letters;
mod error;
mod overview;
mod prometheus;
mod tail;

pub use auth::{AdminConfig, TokenError};
pub use dead_letters::{Bulk, BulkReport, DeadLetterFilter, DeadLetterPage};
pub use prometheus::{metrics_router, prometheus, PrometheusHandle};

use axum::routing::{delete, get, post};
use axum::Router;
use tidings::EventBus;

/// What every route is given: the bus.
#[derive(Clone)]
struct Admin {
    bus: EventBus,
    /// The application's redaction, if it lets data be shown.
    payloads: Option<auth::Redact>,
}

/// The admin API over `bus`, behind `config`'s token: nest it where the
/// application wants it (`Router::nest("/admin", ..)`). See the [crate
/// docs](crate) for its routes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let config = tidings_admin::AdminConfig::new("0123456789abcdef").unwrap();
/// let app: axum::Router = axum::Router::new().nest("/admin", tidings_admin::router(bus, config));
/// # let _ = app;
/// # }
/// ```
pub fn router(bus: EventBus, config: AdminConfig) -> Router {
    let api = Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/handlers", get(overview::handlers))
        .route("/api/handlers/{name}/keys", get(overview::keys))
        .route("/api/event-types", get(overview::event_types))
        .route("/api/dead-letters", get(dead_letters::list))
        .route("/api/dead-letters/replay", post(dead_letters::replay_many))
        .route(
            "/api/dead-letters/discard",
            post(dead_letters::discard_many),
        )
        .route(
            "/api/dead-letters/{id}/replay",
            post(dead_letters::replay_one),
        )
        .route("/api/dead-letters/{id}", delete(dead_letters::discard_one))
        .route("/api/tail", get(tail::tail))
        .fallback(error::not_found)
        .with_state(Admin {
            bus,
            payloads: config.payloads.clone(),
        });
    protect(api, config).merge(dashboard::routes())
}

/// Puts `routes` of the application's own behind the same bearer token
/// (the demo's activity log, say): each needs `Authorization: Bearer
/// <token>`, else `401`.
///
/// ```
/// use axum::routing::get;
/// let config = tidings_admin::AdminConfig::new("0123456789abcdef").unwrap();
/// let private: axum::Router = tidings_admin::protect(
///     axum::Router::new().route("/api/activity", get(|| async { "who did what" })),
///     config,
/// );
/// # let _ = private;
/// ```
pub fn protect<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    config: AdminConfig,
) -> Router<S> {
    routes.layer(axum::middleware::from_fn_with_state(
        std::sync::Arc::new(config),
        auth::require_token,
    ))
}
