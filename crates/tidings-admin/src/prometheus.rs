//! Prometheus text from the `metrics` facade (through
//! `metrics-exporter-prometheus`).

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;
use tidings::EventBus;

/// Installs a Prometheus recorder as the process's `metrics` recorder, and
/// returns the handle [`metrics_router`] renders. Call it once, before the
/// bus is built; it also keeps histograms trimmed (a task on the current
/// Tokio runtime every 5 s).
///
/// # Errors
/// A recorder is already installed in this process.
pub fn prometheus() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let upkeep = handle.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
    }
    Ok(handle)
}

/// `GET /metrics`: the figures as Prometheus text (version 0.0.4), the
/// bus's gauges (queue depth, queued per handler, dead letters) set just
/// before ([`tidings::EventBus::record_gauges`]).
///
/// ```no_run
/// # async fn f(bus: tidings::EventBus) {
/// let handle = tidings_admin::prometheus().unwrap();
/// let app: axum::Router = axum::Router::new().merge(tidings_admin::metrics_router(handle, bus));
/// # let _ = app;
/// # }
/// ```
pub fn metrics_router(handle: PrometheusHandle, bus: EventBus) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            bus.record_gauges();
            let text = handle.render();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}
