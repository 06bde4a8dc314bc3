//! The admin API over a real bus: the token, the dead-letter listing and the
//! bulk actions by filter, through the router as an app would nest it.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token-0123456789";

/// Fails while `failing` is set; counts its calls.
#[derive(Clone)]
struct Flaky {
    name: &'static str,
    event_type: &'static str,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Flaky {
    fn new(name: &'static str, event_type: &'static str) -> Self {
        Self {
            name,
            event_type,
            failing: Arc::new(AtomicBool::new(true)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl EventHandler for Flaky {
    fn event_type(&self) -> &str {
        self.event_type
    }
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().attempts(1)
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            Err(HandlerError::permanent("smtp timeout"))
        } else {
            Ok(())
        }
    }
}

fn app(bus: &EventBus) -> Router {
    let config = tidings_admin::AdminConfig::new(TOKEN).unwrap();
    Router::new().nest("/admin", tidings_admin::router(bus.clone(), config))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, challenge)
}

/// A bus whose `notify` handler dead-letters 5 `signup`s and `audit` 3 `login`s.
async fn bus_with_dead_letters() -> (EventBus, Flaky, Flaky) {
    let notify = Flaky::new("notify", "signup");
    let audit = Flaky::new("audit", "login");
    let bus = EventBus::builder()
        .discover(false)
        .handler(notify.clone())
        .handler(audit.clone())
        .build()
        .unwrap();
    for n in 0..5 {
        bus.emit("signup", json!({"n": n, "password": "hunter2-secret"}))
            .await
            .unwrap();
    }
    for n in 0..3 {
        bus.emit("login", json!({"n": n}))
            .key("user-7")
            .await
            .unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(bus.dead_letters().len(), 8);
    (bus, notify, audit)
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let (bus, _, _) = bus_with_dead_letters().await;
    let app = app(&bus);
    for (method, uri) in [
        ("GET", "/admin/api/overview"),
        ("GET", "/admin/api/handlers"),
        ("GET", "/admin/api/dead-letters"),
        ("POST", "/admin/api/dead-letters/replay"),
        ("POST", "/admin/api/dead-letters/discard"),
        ("DELETE", "/admin/api/dead-letters/1"),
        ("GET", "/admin/api/no-such-route"),
    ] {
        let (status, body, challenge) = call(&app, method, uri, None, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} without a token"
        );
        assert_eq!(body["error"], "unauthorized");
        assert!(
            body["message"].as_str().unwrap().contains("Bearer"),
            "{body}"
        );
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        let (status, body, _) =
            call(&app, method, uri, Some("test-admin-token-0123456780"), None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} with a wrong token"
        );
        assert_eq!(body["message"], "the admin token is not valid");
    }
    // Nothing was discarded by the refused calls.
    assert_eq!(bus.dead_letters().len(), 8);
    let (status, body, _) = call(&app, "GET", "/admin/api/overview", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dead_letters"], 8);
    assert_eq!(body["handlers"], 2);
    assert_eq!(body["store_kind"], "memory");
    let (status, body, _) = call(&app, "GET", "/admin/api/handlers", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    let notify = body["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "notify")
        .unwrap();
    assert_eq!(notify["dead_lettered"], 5);
}

#[tokio::test]
async fn dead_letters_are_listed_by_filter_and_cursor_without_their_data() {
    let (bus, _, _) = bus_with_dead_letters().await;
    let app = app(&bus);
    let (status, body, _) = call(
        &app,
        "GET",
        "/admin/api/dead-letters?handler=notify&limit=2",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 5);
    assert!(!body.to_string().contains("hunter2"), "no payload: {body}");
    let mut seen: Vec<u64> = Vec::new();
    let mut page = body;
    loop {
        for d in page["dead_letters"].as_array().unwrap() {
            assert_eq!(d["handler"], "notify");
            assert_eq!(d["error"], "smtp timeout");
            seen.push(d["id"].as_u64().unwrap());
        }
        let Some(next) = page["next"].as_u64() else {
            break;
        };
        let uri = format!("/admin/api/dead-letters?handler=notify&limit=2&after={next}");
        page = call(&app, "GET", &uri, Some(TOKEN), None).await.1;
    }
    assert_eq!(seen.len(), 5, "every letter once: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seen:?}"
    );
    // Error text, case-insensitive; a type; a time range.
    let q = |uri: &str| {
        let uri = uri.to_owned();
        let app = app.clone();
        async move { call(&app, "GET", &uri, Some(TOKEN), None).await }
    };
    assert_eq!(q("/admin/api/dead-letters?error=SMTP").await.1["total"], 8);
    assert_eq!(
        q("/admin/api/dead-letters?event_type=login").await.1["total"],
        3
    );
    assert_eq!(
        q("/admin/api/dead-letters?since=2999-01-01T00:00:00Z")
            .await
            .1["total"],
        0
    );
    assert_eq!(
        q("/admin/api/dead-letters?until=2999-01-01T00:00:00Z")
            .await
            .1["total"],
        8
    );
    // Refusals name the field, not the value.
    let (status, body, _) = q("/admin/api/dead-letters?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("limit"));
    let (status, body, _) = q("/admin/api/dead-letters?colour=SECRET-VALUE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().contains("SECRET-VALUE"), "{body}");
    let long = "x".repeat(300);
    let (status, _, _) = q(&format!("/admin/api/dead-letters?error={long}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_replay_and_discard_by_filter_with_a_dry_run() {
    let (bus, notify, audit) = bus_with_dead_letters().await;
    let app = app(&bus);
    let post = |uri: &'static str, body: Value| call(&app, "POST", uri, Some(TOKEN), Some(body));

    // A dry run counts and touches nothing.
    let (status, report, _) = post(
        "/admin/api/dead-letters/replay",
        json!({"filter": {"handler": "notify"}, "dry_run": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["matched"].as_u64(), report["done"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(bus.dead_letters().len(), 8);
    assert_eq!(notify.calls.load(Ordering::SeqCst), 5);

    // Replay everything the filter matches: each handled again, once.
    notify.failing.store(false, Ordering::SeqCst);
    let (_, report, _) = post(
        "/admin/api/dead-letters/replay",
        json!({"filter": {"handler": "notify"}}),
    )
    .await;
    assert_eq!(
        (
            report["matched"].as_u64(),
            report["done"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(5), Some(5), Some(0)),
        "{report}"
    );
    bus.wait_idle().await;
    assert_eq!(notify.calls.load(Ordering::SeqCst), 10);
    assert_eq!(bus.dead_letters().len(), 3);

    // Discard two by id (one unknown id is not counted), then the rest by filter.
    let ids: Vec<u64> = bus.dead_letters().iter().map(|d| d.id).take(2).collect();
    let (_, report, _) = post(
        "/admin/api/dead-letters/discard",
        json!({"ids": [ids[0], ids[1], 999_999]}),
    )
    .await;
    assert_eq!(
        (report["matched"].as_u64(), report["done"].as_u64()),
        (Some(2), Some(2)),
        "{report}"
    );
    let (_, report, _) = post(
        "/admin/api/dead-letters/discard",
        json!({"filter": {}, "dry_run": true}),
    )
    .await;
    assert_eq!(report["matched"], 1);
    let (_, report, _) = post(
        "/admin/api/dead-letters/discard",
        json!({"filter": {"event_type": "login"}}),
    )
    .await;
    assert_eq!(report["done"], 1);
    assert!(bus.dead_letters().is_empty());
    assert_eq!(
        audit.calls.load(Ordering::SeqCst),
        3,
        "discarded, never replayed"
    );

    // A body naming both, or neither, or an unknown field: 400.
    for body in [
        json!({"ids": [1], "filter": {}}),
        json!({}),
        json!({"filter": {"colour": "x"}}),
    ] {
        let (status, _, _) = post("/admin/api/dead-letters/replay", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    // A value of the wrong type is named by its place, never quoted.
    let (status, err, _) = post(
        "/admin/api/dead-letters/replay",
        json!({"ids": [1, "hunter2-secret"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("`ids[1]`") && !message.contains("hunter2"),
        "{message}"
    );
}

#[tokio::test]
async fn one_dead_letter_is_replayed_or_discarded_by_id() {
    let (bus, notify, _) = bus_with_dead_letters().await;
    notify.failing.store(false, Ordering::SeqCst);
    let app = app(&bus);
    let id = bus.dead_letters()[0].id;
    let (status, body, _) = call(
        &app,
        "POST",
        &format!("/admin/api/dead-letters/{id}/replay"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/admin/api/dead-letters/{id}/replay"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = bus.dead_letters()[0].id;
    let (status, _, _) = call(
        &app,
        "DELETE",
        &format!("/admin/api/dead-letters/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &app,
        "DELETE",
        "/admin/api/dead-letters/not-a-number",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // GET cannot change anything.
    let (status, _, _) = call(
        &app,
        "GET",
        "/admin/api/dead-letters/replay",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_tail_streams_event_metadata_as_server_sent_events() {
    let (bus, notify, _) = bus_with_dead_letters().await;
    notify.failing.store(false, Ordering::SeqCst);
    let app = app(&bus);
    let req = |token: Option<&str>| {
        let mut r = Request::get("/admin/api/tail");
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let res = app.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.clone().oneshot(req(Some(TOKEN))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body();
    let id = bus
        .emit("signup", json!({"password": "hunter2-secret"}))
        .key("user-9")
        .await
        .unwrap()
        .id();
    let mut text = String::new();
    while !text.contains("\"settled\"") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("a tiding within 5 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let tidings: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(tidings[0]["kind"], "emitted");
    assert_eq!(tidings[0]["event_id"], id.to_string());
    assert_eq!(tidings[0]["key"], "user-9");
    assert_eq!(tidings[1]["kind"], "settled");
    assert_eq!(tidings[1]["handler"], "notify");
    assert_eq!(tidings[1]["outcome"], "handled");
    assert!(!text.contains("hunter2"), "no data: {text}");
}

#[tokio::test]
async fn data_is_shown_only_through_the_applications_redaction() {
    let (bus, _, _) = bus_with_dead_letters().await;
    let config = tidings_admin::AdminConfig::new(TOKEN)
        .unwrap()
        .show_payloads(|event_type, data| {
            (event_type == "signup").then(|| json!({ "n": data["n"] }))
        });
    let redacting = Router::new().nest("/admin", tidings_admin::router(bus.clone(), config));
    let (_, body, _) = call(
        &redacting,
        "GET",
        "/admin/api/dead-letters",
        Some(TOKEN),
        None,
    )
    .await;
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    let signup = letters
        .iter()
        .find(|d| d["event_type"] == "signup")
        .unwrap();
    assert_eq!(signup["data"], json!({"n": 0}));
    let login = letters.iter().find(|d| d["event_type"] == "login").unwrap();
    assert!(
        login["data"].is_null(),
        "the redaction showed nothing: {login}"
    );
    // Without one, no `data` at all.
    let (_, body, _) = call(
        &app(&bus),
        "GET",
        "/admin/api/dead-letters",
        Some(TOKEN),
        None,
    )
    .await;
    assert!(body["dead_letters"][0].get("data").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_keys_are_listed_per_handler() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    struct Held(Arc<tokio::sync::Semaphore>);
    impl EventHandler for Held {
        fn event_type(&self) -> &str {
            "t"
        }
        fn name(&self) -> &str {
            "held"
        }
        async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
            self.0.acquire().await.unwrap().forget();
            Ok(())
        }
    }
    let bus = EventBus::builder()
        .discover(false)
        .handler(Held(gate.clone()))
        .build()
        .unwrap();
    for _ in 0..4 {
        bus.emit("t", json!({})).key("user-1").await.unwrap();
    }
    let app = app(&bus);
    let mut body = Value::Null;
    for _ in 0..200 {
        body = call(
            &app,
            "GET",
            "/admin/api/handlers/held/keys",
            Some(TOKEN),
            None,
        )
        .await
        .1;
        if body["keys"] == json!([{"key": "user-1", "pending": 4}]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        body["keys"],
        json!([{"key": "user-1", "pending": 4}]),
        "{body}"
    );
    let (status, _, _) = call(
        &app,
        "GET",
        "/admin/api/handlers/nobody/keys",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gate.add_permits(4);
    bus.wait_idle().await;
}
