//! The demo serves the bus's figures at `GET /metrics` in Prometheus text.
//! (Its own test binary: a process has one `metrics` recorder.)

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let served = common::Served::start("metrics-test-admin-token", 1, true).await;
    let r = reqwest::get(format!("{}/metrics", served.base))
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
                && l.contains("event_type=\"test_refused\"")
        })
        .unwrap_or_else(|| panic!("no emitted counter for test_refused:\n{text}"));
    let value: f64 = emitted.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!(value >= 1.0, "{emitted}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tidings_handler_queued{") && l.contains("handler=\"Refuses\"")),
        "the gauges are set at the scrape:\n{text}"
    );
    served.stop().await;
}
