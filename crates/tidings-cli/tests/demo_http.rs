//! The demo service over HTTP: started on a free port with its own SQLite
//! files (data, and the durable bus as the service runs it), driven as a
//! client would.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tidings::EventBus;
use tidings_cli::demo;

/// A handler (of an event type the service itself never emits) that refuses
/// every event for good: a source of dead letters.
struct Refuses;

impl tidings::EventHandler for Refuses {
    fn event_type(&self) -> &str {
        "test_refused"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Err(tidings::HandlerError::permanent("refused"))
    }
}

struct Running {
    base: String,
    bus: EventBus,
    store: tidings_events::Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<tidings::ShutdownReport>>,
    /// Removed when the last clone is dropped (a test may read the database
    /// after `stop`).
    dir: Arc<tempfile::TempDir>,
    client: reqwest::Client,
}

impl Running {
    async fn start(inline_saves: bool) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let url = format!("sqlite:{}", dir.path().join("demo.db").display());
        let store = demo::open_store(&url).await.unwrap();
        let file = tidings_sqlite::SqliteStore::open(dir.path().join("bus.db")).unwrap();
        let bus = demo::bus_builder(&store)
            .handler(Refuses)
            .store(file)
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = demo::state(bus.clone(), store.clone(), inline_saves);
        let server = tokio::spawn(demo::serve(
            listener,
            state,
            Duration::from_secs(5),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            base: format!("http://{addr}"),
            bus,
            store,
            stop: Some(stop),
            server,
            dir,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("user-agent", "demo-test/1.0")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) -> tidings::ShutdownReport {
        let _ = self.stop.take().unwrap().send(());
        let report = (&mut self.server).await.unwrap().unwrap();
        report
    }
}

fn chat(user: i64, conv: &str, message: &str, clearance: &str) -> Value {
    json!({"user_id": user, "conversation_id": conv, "message": message, "clearance": clearance})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_from_the_knowledge_base_then_from_the_cache() {
    let app = Running::start(false).await;
    let (status, first) = app
        .post(
            "/api/chat",
            chat(1, "c1", "How do I reset my password?", "PUBLIC"),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["source"], "knowledge_base");
    assert_eq!(first["document"], "password-reset");
    assert_eq!(first["cached"], false);
    app.bus.wait_idle().await; // the semantic_cache handler has stored the answer

    let (status, second) = app
        .post(
            "/api/chat",
            chat(1, "c1", "how do I reset my password", "PUBLIC"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["source"], "cache");
    assert_eq!(second["cached"], true);
    assert_eq!(second["answer"], first["answer"]);

    app.bus.wait_idle().await;
    let (status, conv) = app.get("/api/conversations/c1").await;
    assert_eq!(status, 200);
    let roles: Vec<&str> = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user", "assistant", "user", "assistant"]);
    let report = app.stop().await;
    assert!(report.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_is_not_served_above_the_callers_clearance() {
    let app = Running::start(false).await;
    let (status, _) = app
        .post(
            "/api/chat",
            chat(1, "c1", "How do I set up the VPN from home?", "INTERNAL"),
        )
        .await;
    assert_eq!(status, 200);
    app.bus.wait_idle().await;
    // A PUBLIC caller asking the same thing is refused, not served the cached INTERNAL answer.
    let (status, body) = app
        .post(
            "/api/chat",
            chat(2, "c2", "How do I set up the VPN from home?", "PUBLIC"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_above_ones_clearance_is_refused_and_logged() {
    let app = Running::start(false).await;
    let (status, body) = app
        .post(
            "/api/chat",
            chat(9, "c9", "What are the Lighthouse merger plans?", "INTERNAL"),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");
    app.bus.wait_idle().await;
    let (status, log) = app.get("/api/activity?user_id=9").await;
    assert_eq!(status, 200);
    let entry = &log["entries"][0];
    assert_eq!(entry["incident_type"], "UNAUTHORIZED_ACCESS");
    assert_eq!(entry["severity"], "CRITICAL");
    assert_eq!(entry["access_granted"], false);
    assert_eq!(entry["user_query"], "What are the Lighthouse merger plans?");
    assert_eq!(entry["ip_address"], "127.0.0.1");
    assert_eq!(entry["user_agent"], "demo-test/1.0");
    let (_, by_severity) = app.get("/api/activity?severity=critical").await;
    assert_eq!(by_severity["entries"].as_array().unwrap().len(), 1);
    let (_, none) = app.get("/api/activity?severity=low").await;
    assert!(none["entries"].as_array().unwrap().is_empty());
    // Both messages were saved, the refusal included.
    let (_, conv) = app.get("/api/conversations/c9").await;
    assert_eq!(conv["messages"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_runs_the_seeds_three_handlers() {
    let app = Running::start(false).await;
    let (status, body) = app.post("/api/orders", json!({"user_id": 3, "items": [{"sku": "KB-01", "quantity": 2}, {"sku": "MS-02", "quantity": 1}]})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["total"], 203.5);
    app.bus.wait_idle().await;
    let (_, orders) = app.get("/api/orders?user_id=3").await;
    let order = &orders["orders"][0];
    assert_eq!(order["email_sent"], true);
    assert_eq!(order["inventory_updated"], true);
    assert_eq!(order["warehouse_notified"], true);
    let tidings_events::Db::Sqlite(db) = &app.store else {
        unreachable!()
    };
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE sku = 'KB-01'")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(stock, 98);
    let (_, stats) = app.get("/api/bus/stats").await;
    assert_eq!(
        stats["handler_count"], 7,
        "the service's six and the test's Refuses"
    );
    assert!(stats["event_types"]
        .as_array()
        .unwrap()
        .contains(&json!("order_created")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_json_errors() {
    let app = Running::start(false).await;
    let cases = [
        (chat(0, "c", "hi", "PUBLIC"), 422),
        (chat(1, "bad id!", "hi", "PUBLIC"), 422),
        (chat(1, "c", "", "PUBLIC"), 422),
        (chat(1, "c", &"x".repeat(2001), "PUBLIC"), 422),
        (chat(1, "c", "hi", "TOPSECRET"), 422),
        (json!({"user_id": 1}), 422),
        (
            json!({"user_id": 1, "conversation_id": "c", "message": "hi", "clearance": "PUBLIC", "extra": 1}),
            422,
        ),
    ];
    for (body, want) in cases {
        let (status, err) = app.post("/api/chat", body.clone()).await;
        assert_eq!(status, want, "{body} -> {err}");
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{err}"
        );
    }
    let r = app
        .client
        .post(format!("{}/api/chat", app.base))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = json!({"user_id": 1, "conversation_id": "c", "message": "x".repeat(100_000), "clearance": "PUBLIC"});
    let (status, err) = app.post("/api/chat", big).await;
    assert_eq!(status, 413, "{err}");
    let (status, _) = app
        .post(
            "/api/orders",
            json!({"user_id": 1, "items": [{"sku": "NOPE", "quantity": 1}]}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .post("/api/orders", json!({"user_id": 1, "items": []}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/api/activity?severity=SEVERE").await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/api/conversations/unknown").await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/api/nothing-here").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_saves_write_before_the_answer() {
    let app = Running::start(true).await;
    let (status, _) = app
        .post(
            "/api/chat",
            chat(1, "inline", "What are the office hours?", "PUBLIC"),
        )
        .await;
    assert_eq!(status, 200);
    // No wait: the messages are in the database when the answer arrives.
    let (status, conv) = app.get("/api/conversations/inline").await;
    assert_eq!(status, 200);
    assert_eq!(conv["messages"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_bus_and_reports() {
    let app = Running::start(false).await;
    for i in 0..20 {
        let (status, _) = app
            .post(
                "/api/chat",
                chat(1, &format!("s{i}"), "What are the office hours?", "PUBLIC"),
            )
            .await;
        assert_eq!(status, 200);
    }
    let store = app.store.clone();
    let _dir = app.dir.clone();
    let report = app.stop().await;
    assert!(report.is_clean());
    // Every message that was accepted is in the database after the drain.
    for i in 0..20 {
        assert_eq!(
            tidings_events::conversation(&store, &format!("s{i}"))
                .await
                .unwrap()
                .len(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_without_data_and_replayed() {
    let app = Running::start(false).await;
    app.bus
        .emit("test_refused", json!({"secret": "hunter2"}))
        .await
        .unwrap();
    app.bus.wait_idle().await;
    let (status, body) = app.get("/api/bus/dead-letters").await;
    assert_eq!(status, 200);
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event_type"], "test_refused");
    assert_eq!(letters[0]["error"], "refused");
    assert_eq!(letters[0]["attempts"], 1);
    assert!(
        !body.to_string().contains("hunter2"),
        "no payload in the listing"
    );
    let id = letters[0]["id"].as_u64().unwrap();

    let (status, body) = app
        .post(&format!("/api/bus/dead-letters/{id}/replay"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["event_id"], letters[0]["event_id"]);
    app.bus.wait_idle().await;
    // Still invalid: a new dead letter, and the old id is gone.
    let (_, body) = app.get("/api/bus/dead-letters").await;
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 1);
    let (status, body) = app
        .post(&format!("/api/bus/dead-letters/{id}/replay"), json!({}))
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = app
        .post("/api/bus/dead-letters/not-a-number/replay", json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_request"))
    );

    // Discarded: gone from the listing, and a second discard is a 404.
    let (_, body) = app.get("/api/bus/dead-letters").await;
    let new_id = body["dead_letters"][0]["id"].as_u64().unwrap();
    let (status, body) = app.delete(&format!("/api/bus/dead-letters/{new_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["discarded"], new_id);
    assert_eq!(body["event_id"], letters[0]["event_id"]);
    let (_, body) = app.get("/api/bus/dead-letters").await;
    assert!(body["dead_letters"].as_array().unwrap().is_empty());
    let (status, body) = app.delete(&format!("/api/bus/dead-letters/{new_id}")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = app.delete("/api/bus/dead-letters/-1").await;
    assert_eq!(status, 422);
    app.stop().await;
}
