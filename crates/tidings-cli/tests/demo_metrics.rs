//! The demo serves the bus's figures at `GET /metrics` in Prometheus text.
//! (Its own test binary: a process has one `metrics` recorder.)

use std::time::Duration;
use tidings_cli::demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let handle = tidings_admin::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("demo.db").display());
    let store = demo::open_store(&url).await.unwrap();
    let bus = demo::bus_builder(&store).build().unwrap();
    bus.emit("activity_log", serde_json::json!({"user_id": 1, "incident_type": "LOGIN", "severity": "LOW", "description": "signed in"}))
        .await
        .unwrap();
    bus.wait_idle().await;
    let admin = tidings_admin::AdminConfig::new("metrics-test-admin-token").unwrap();
    let mut state = demo::state(bus, store, false, admin);
    state.metrics = Some(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(demo::serve(
        listener,
        state,
        Duration::from_secs(5),
        async move {
            let _ = stopped.await;
        },
    ));
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let emitted = text
        .lines()
        .find(|l| {
            l.starts_with("tidings_events_emitted_total{")
                && l.contains("event_type=\"activity_log\"")
        })
        .unwrap_or_else(|| panic!("no emitted counter for activity_log:\n{text}"));
    let value: f64 = emitted.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!(value >= 1.0, "{emitted}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
