//! The Prometheus endpoint: the bus's figures, scraped and parsed as text.
//! (Its own test binary: a process has one `metrics` recorder.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};
use tower::ServiceExt;

struct Ok1;
impl EventHandler for Ok1 {
    fn event_type(&self) -> &str {
        "signup"
    }
    fn name(&self) -> &str {
        "welcome"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A sample: its name, its labels, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// One sample line: `name{labels} value`.
fn parse(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_owned(), Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let labels = body
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((
                        k.to_owned(),
                        v.strip_prefix('"')?.strip_suffix('"')?.to_owned(),
                    ))
                })
                .collect::<Option<Vec<_>>>()?;
            (name.to_owned(), labels)
        }
    };
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        .then_some((name, labels, value))
}

#[tokio::test]
async fn the_buses_figures_are_served_as_prometheus_text() {
    let handle = tidings_admin::prometheus().expect("the first recorder of this process");
    let bus = EventBus::builder()
        .discover(false)
        .handler(Ok1)
        .build()
        .unwrap();
    for n in 0..7 {
        bus.emit("signup", json!({"n": n})).await.unwrap();
    }
    bus.wait_idle().await;
    let app = tidings_admin::metrics_router(handle, bus.clone());
    let res = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        samples.push(
            parse(line).unwrap_or_else(|| panic!("not a Prometheus sample: {line:?}\n{text}")),
        );
    }
    let value = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.iter().any(|(k, v)| k == label.0 && v == label.1))
            .map(|s| s.2)
    };
    assert!(
        samples.iter().any(|(n, _, _)| n.starts_with("tidings_")),
        "{text}"
    );
    let handled = samples
        .iter()
        .filter(|(n, l, _)| {
            n.starts_with("tidings_") && l.iter().any(|(k, v)| k == "handler" && v == "welcome")
        })
        .count();
    assert!(handled > 0, "a series for the handler: {text}");
    assert!(
        value("tidings_events_emitted_total", ("event_type", "signup")).is_some_and(|v| v >= 7.0),
        "{text}"
    );
    // Gauges, set at the scrape: the queue, and each handler's queued deliveries.
    assert_eq!(
        value("tidings_handler_queued", ("handler", "welcome")),
        Some(0.0),
        "{text}"
    );
    let plain = |name: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.is_empty())
            .map(|s| s.2)
    };
    assert_eq!(plain("tidings_bus_pending"), Some(0.0), "{text}");
    assert!(
        plain("tidings_bus_capacity").is_some_and(|c| c > 0.0),
        "{text}"
    );
}
