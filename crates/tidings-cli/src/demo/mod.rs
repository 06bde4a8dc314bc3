//! The demo service: a small chat-assistant API in the seed's world, built on
//! tidings and its built-in events, over an embedded SQLite file.
//!
//! - `POST /api/chat`: answers from the semantic cache when a similar question
//!   was answered before, else from a small knowledge base with per-document
//!   clearances. A question above the caller's clearance is refused and logged
//!   through `activity_log`. Both messages are saved through `message_save`
//!   (in the background; `--inline-saves` writes them in the request instead,
//!   to measure the difference); new answers are remembered through `semantic_cache`.
//! - `POST /api/orders`: the seed's order workflow (three handlers).
//! - `GET /api/conversations/{id}`, `/api/orders`.
//! - Operators: the admin API ([`tidings_admin`]) at `/admin/api/...` and
//!   `GET /api/activity`, both behind the admin token
//!   (`Authorization: Bearer ...`); `GET /metrics` in Prometheus text when
//!   the service installed the recorder.
//!
//! Under overload ([`overload`]): at most 256 API requests at once, each
//! answered within 10 s; beyond that, and when the bus stays full for 2 s,
//! `503` with `Retry-After`.
//!
//! Ctrl-C or SIGTERM stops intake, drains the bus and reports what it finished.

mod chat;
mod error;
mod knowledge;
mod orders;
pub mod overload;
mod reads;
pub mod users;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tidings::{EventBus, EventBusBuilder};
use tidings_events::{Db, SemanticCache};

pub use knowledge::Clearance;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The database URL (`sqlite:` file by default).
    pub database_url: String,
    /// Save chat messages inside the request instead of through `message_save`.
    pub inline_saves: bool,
    /// How long shutdown may take to drain the bus.
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite:tidings-demo.db".into(),
            inline_saves: false,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What the request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The event bus.
    pub bus: EventBus,
    /// The database.
    pub store: Db,
    /// Remembered answers.
    pub cache: SemanticCache,
    /// The knowledge base.
    pub knowledge: std::sync::Arc<knowledge::KnowledgeBase>,
    /// Whether messages are saved inline.
    pub inline_saves: bool,
    /// The admin token's settings (the admin API and the activity log).
    pub admin: tidings_admin::AdminConfig,
    /// The Prometheus recorder's handle, if the service installed one.
    pub metrics: Option<tidings_admin::PrometheusHandle>,
    /// What the API serves at once, and how long a request may take
    /// ([`overload`]).
    pub limits: overload::Limits,
}

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Connects and migrates the database: the built-in events' tables and the demo's.
pub async fn open_store(url: &str) -> anyhow::Result<Db> {
    let store = Db::connect(url).await?;
    store.migrate().await?;
    let Db::Sqlite(pool) = &store else {
        anyhow::bail!("the demo service runs on SQLite (give a sqlite: URL)");
    };
    sqlx::migrate!("./migrations")
        .set_ignore_missing(true)
        .run(pool)
        .await?;
    Ok(store)
}

/// The bus the service uses: every registered handler, with the store as a resource.
pub fn bus_builder(store: &Db) -> EventBusBuilder {
    EventBus::builder()
        .resource(store.clone())
        .capacity(100_000)
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    let private = tidings_admin::protect(
        Router::new().route("/api/activity", get(reads::activity)),
        state.admin.clone(),
    );
    let api = Router::new()
        .route("/api/chat", post(chat::chat))
        .route("/api/orders", post(orders::create_order).get(reads::orders))
        .route("/api/conversations/{id}", get(reads::conversation))
        .merge(private)
        .route_layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            overload::guard,
        ));
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state.clone())
        .nest(
            "/admin",
            tidings_admin::router(state.bus.clone(), state.admin.clone()),
        );
    if let Some(handle) = state.metrics {
        app = app.merge(tidings_admin::metrics_router(handle, state.bus.clone()));
    }
    app
}

/// The demo's SQLite pool (the service runs on SQLite only).
fn sqlite(state: &AppState) -> Result<&sqlx::SqlitePool, error::ApiError> {
    match &state.store {
        Db::Sqlite(pool) => Ok(pool),
        _ => Err(error::ApiError::internal("the demo runs on SQLite")),
    }
}

/// Builds the state around an existing bus, with the admin token's
/// settings; no metrics endpoint (see [`AppState::metrics`]).
pub fn state(
    bus: EventBus,
    store: Db,
    inline_saves: bool,
    admin: tidings_admin::AdminConfig,
) -> AppState {
    AppState {
        cache: SemanticCache::new(store.clone()),
        knowledge: std::sync::Arc::new(knowledge::KnowledgeBase::builtin()),
        bus,
        store,
        inline_saves,
        admin,
        metrics: None,
        limits: overload::Limits::default(),
    }
}

/// A fresh admin token: 32 random letters and digits, for a service started
/// without `TIDINGS_ADMIN_TOKEN`.
pub fn generated_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Serves on `listener` until `shutdown` resolves, then drains the bus.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    drain_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tidings::ShutdownReport> {
    let bus = state.bus.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(bus.shutdown(drain_timeout).await)
}
