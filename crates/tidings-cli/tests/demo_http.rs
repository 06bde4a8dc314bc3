//! The demo service over HTTP: started on a free port with its own SQLite
//! files (data, and the durable bus as the service runs it), driven as a
//! client would.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tidings::EventBus;
use tidings_cli::demo;

mod common;
use common::Refuses;

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
    /// The seeded users' tokens, by name.
    tokens: std::collections::HashMap<String, String>,
}

/// The admin token of every test service.
const ADMIN: &str = "demo-test-admin-token-0123456789";

impl Running {
    async fn start(inline_saves: bool) -> Self {
        let common::Durable {
            dir,
            store,
            users,
            builder,
        } = common::durable().await;
        let bus = builder.handler(Refuses).build().unwrap();
        let admin = tidings_admin::AdminConfig::new(ADMIN).unwrap();
        let state = demo::state(bus.clone(), store.clone(), inline_saves, admin);
        let (base, stop, server) = common::serve(state, Duration::from_secs(5)).await;
        let (dir, tokens) = (Arc::new(dir), users.into_iter().collect());
        Self {
            base,
            bus,
            store,
            stop: Some(stop),
            server,
            dir,
            client: reqwest::Client::new(),
            tokens,
        }
    }

    /// Sends `method path` with `token` as its bearer token, if any.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("user-agent", "demo-test/1.0");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn token(&self, user: &str) -> &str {
        &self.tokens[user]
    }

    async fn post_as(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(self.token(user)),
            Some(body),
        )
        .await
    }

    async fn get_as(&self, user: &str, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(self.token(user)), None)
            .await
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(ADMIN), None)
            .await
    }

    async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(ADMIN), Some(body))
            .await
    }

    async fn admin_delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, Some(ADMIN), None)
            .await
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

    async fn stop(mut self) -> tidings::ShutdownReport {
        let _ = self.stop.take().unwrap().send(());
        let report = (&mut self.server).await.unwrap().unwrap();
        report
    }
}

fn chat(conv: &str, message: &str) -> Value {
    json!({"conversation_id": conv, "message": message})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_from_the_knowledge_base_then_from_the_cache() {
    let app = Running::start(false).await;
    let (status, first) = app
        .post_as(
            "alice",
            "/api/chat",
            chat("c1", "How do I reset my password?"),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["source"], "knowledge_base");
    assert_eq!(first["document"], "password-reset");
    assert_eq!(first["cached"], false);
    app.bus.wait_idle().await; // the semantic_cache handler has stored the answer

    let (status, second) = app
        .post_as(
            "alice",
            "/api/chat",
            chat("c1", "how do I reset my password"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["source"], "cache");
    assert_eq!(second["cached"], true);
    assert_eq!(second["answer"], first["answer"]);

    app.bus.wait_idle().await;
    let (status, conv) = app.get_as("alice", "/api/conversations/c1").await;
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
        .post_as(
            "bob",
            "/api/chat",
            chat("c1", "How do I set up the VPN from home?"),
        )
        .await;
    assert_eq!(status, 200);
    app.bus.wait_idle().await;
    // A PUBLIC caller asking the same thing is refused, not served the cached INTERNAL answer.
    let (status, body) = app
        .post_as(
            "alice",
            "/api/chat",
            chat("c2", "How do I set up the VPN from home?"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_above_ones_clearance_is_refused_and_logged() {
    let app = Running::start(false).await;
    let (status, body) = app
        .post_as(
            "bob",
            "/api/chat",
            chat("c9", "What are the Lighthouse merger plans?"),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");
    app.bus.wait_idle().await;
    let (status, _) = app.get("/api/activity?user_id=2").await;
    assert_eq!(status, 401, "the activity log is the operators'");
    let (status, log) = app.admin_get("/api/activity?user_id=2").await;
    assert_eq!(status, 200);
    let entry = &log["entries"][0];
    assert_eq!(entry["incident_type"], "UNAUTHORIZED_ACCESS");
    assert_eq!(entry["severity"], "CRITICAL");
    assert_eq!(entry["access_granted"], false);
    assert_eq!(entry["user_query"], "What are the Lighthouse merger plans?");
    assert_eq!(entry["ip_address"], "127.0.0.1");
    assert_eq!(entry["user_agent"], "demo-test/1.0");
    let (_, by_severity) = app.admin_get("/api/activity?severity=critical").await;
    assert_eq!(by_severity["entries"].as_array().unwrap().len(), 1);
    let (_, none) = app.admin_get("/api/activity?severity=low").await;
    assert!(none["entries"].as_array().unwrap().is_empty());
    // Both messages were saved, the refusal included.
    let (_, conv) = app.get_as("bob", "/api/conversations/c9").await;
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
    let (_, stats) = app.admin_get("/admin/api/overview").await;
    assert_eq!(
        stats["handlers"], 7,
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
        (chat("bad id!", "hi"), 422, "conversation_id"),
        (chat("c", ""), 422, "message"),
        (chat("c", &"x".repeat(2001)), 422, "message"),
        // The user and the clearance come from the token, never the body.
        (
            json!({"conversation_id": "c", "message": "hi", "clearance": "SECRET"}),
            422,
            "clearance",
        ),
        (
            json!({"conversation_id": "c", "message": "hi", "user_id": 4}),
            422,
            "user_id",
        ),
        (json!({"conversation_id": "c"}), 422, "message"),
        (
            json!({"conversation_id": "c", "message": "hi", "extra": 1}),
            422,
            "extra",
        ),
    ];
    for (body, want, field) in cases {
        let (status, err) = app.post_as("alice", "/api/chat", body.clone()).await;
        assert_eq!(status, want, "{body} -> {err}");
        assert!(
            err["error"].is_string() && err["message"].as_str().unwrap().contains(field),
            "{body} -> {err}"
        );
    }
    // No token, or one no user has: 401, whatever the body.
    let (status, err) = app.post("/api/chat", chat("c", "hi")).await;
    assert_eq!((status, err["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            "/api/chat",
            Some("not-a-token-of-anyone-000000000"),
            Some(chat("c", "hi")),
        )
        .await;
    assert_eq!(status, 401);
    let r = app
        .client
        .post(format!("{}/api/chat", app.base))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token");
    let r = app
        .client
        .post(format!("{}/api/chat", app.base))
        .bearer_auth(app.token("alice"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = json!({"conversation_id": "c", "message": "x".repeat(100_000)});
    let (status, err) = app.post_as("alice", "/api/chat", big).await;
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
    let (status, _) = app.admin_get("/api/activity?severity=SEVERE").await;
    assert_eq!(status, 422);
    let (status, _) = app.get_as("alice", "/api/conversations/unknown").await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_as("alice", "/api/conversations/unknown?limit=0")
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/api/nothing-here").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_saves_write_before_the_answer() {
    let app = Running::start(true).await;
    let (status, _) = app
        .post_as(
            "alice",
            "/api/chat",
            chat("inline", "What are the office hours?"),
        )
        .await;
    assert_eq!(status, 200);
    // No wait: the messages are in the database when the answer arrives.
    let (status, conv) = app.get_as("alice", "/api/conversations/inline").await;
    assert_eq!(status, 200);
    assert_eq!(conv["messages"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_bus_and_reports() {
    let app = Running::start(false).await;
    for i in 0..20 {
        let (status, _) = app
            .post_as(
                "alice",
                "/api/chat",
                chat(&format!("s{i}"), "What are the office hours?"),
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
    let (status, _) = app.get("/admin/api/dead-letters").await;
    assert_eq!(status, 401, "the dead letters are the operators'");
    let (status, body) = app.admin_get("/admin/api/dead-letters").await;
    assert_eq!(status, 200);
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event_type"], "test_refused");
    assert_eq!(letters[0]["error"], "refused by the test");
    assert_eq!(letters[0]["attempts"], 1);
    assert!(
        !body.to_string().contains("hunter2"),
        "no payload in the listing"
    );
    let id = letters[0]["id"].as_u64().unwrap();

    let (status, body) = app
        .admin_post(&format!("/admin/api/dead-letters/{id}/replay"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["event_id"], letters[0]["event_id"]);
    app.bus.wait_idle().await;
    // Still invalid: a new dead letter, and the old id is gone.
    let (_, body) = app.admin_get("/admin/api/dead-letters").await;
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 1);
    let (status, body) = app
        .admin_post(&format!("/admin/api/dead-letters/{id}/replay"), json!({}))
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = app
        .admin_post("/admin/api/dead-letters/not-a-number/replay", json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Discarded: gone from the listing, and a second discard is a 404.
    let (_, body) = app.admin_get("/admin/api/dead-letters").await;
    let new_id = body["dead_letters"][0]["id"].as_u64().unwrap();
    let (status, body) = app
        .admin_delete(&format!("/admin/api/dead-letters/{new_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["discarded"], new_id);
    assert_eq!(body["event_id"], letters[0]["event_id"]);
    let (_, body) = app.admin_get("/admin/api/dead-letters").await;
    assert!(body["dead_letters"].as_array().unwrap().is_empty());
    let (status, body) = app
        .admin_delete(&format!("/admin/api/dead-letters/{new_id}"))
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = app.admin_delete("/admin/api/dead-letters/-1").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_is_its_owners_alone() {
    let app = Running::start(false).await;
    for i in 0..3 {
        let (status, body) = app
            .post_as(
                "alice",
                "/api/chat",
                chat("c-alice", &format!("What are the office hours, day {i}?")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.bus.wait_idle().await;
    // Another user can neither read it nor post into it: for them it does not exist.
    let (status, body) = app.get_as("bob", "/api/conversations/c-alice").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = app
        .post_as(
            "bob",
            "/api/chat",
            chat("c-alice", "What are the office hours?"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/api/conversations/c-alice").await;
    assert_eq!(status, 401);
    // Its owner reads it, a page at a time.
    let (status, page) = app
        .get_as("alice", "/api/conversations/c-alice?limit=4")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().unwrap().len(), 4);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = app
        .get_as(
            "alice",
            &format!("/api/conversations/c-alice?limit=4&after={next}"),
        )
        .await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 2, "{rest}");
    assert!(rest["next"].is_null());
    // Bob's message was never saved into it.
    assert!(!rest.to_string().contains("bob"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_have_tokens_shown_once_and_stored_hashed() {
    let app = Running::start(false).await;
    let tidings_events::Db::Sqlite(db) = &app.store else {
        unreachable!()
    };
    // One user per clearance, seeded once.
    assert_eq!(app.tokens.len(), 4);
    assert!(demo::users::seed(db).await.unwrap().is_empty());
    let listed = demo::users::list(db).await.unwrap();
    assert_eq!(
        listed,
        [
            ("alice", "PUBLIC"),
            ("bob", "INTERNAL"),
            ("carol", "CONFIDENTIAL"),
            ("dave", "SECRET")
        ]
        .map(|(n, c)| (n.to_owned(), c.to_owned()))
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM users")
        .fetch_all(db)
        .await
        .unwrap();
    for token in app.tokens.values() {
        assert_eq!(token.len(), 32);
        assert!(!stored.contains(token), "only the hash is stored");
    }
    // A SECRET question is answered for dave only: the clearance is the token's.
    let secret = chat("c-dave", "What are the Lighthouse merger plans?");
    let (status, _) = app.post_as("dave", "/api/chat", secret).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post_as(
            "carol",
            "/api/chat",
            chat("c-carol", "What are the Lighthouse merger plans?"),
        )
        .await;
    assert_eq!(status, 403);
    // A new user, and a token reset: the old token stops working.
    let erin = demo::users::add(db, "erin", demo::Clearance::Internal)
        .await
        .unwrap();
    let line = erin.to_string();
    assert_eq!(line, format!("user erin (INTERNAL): token {}", erin.token));
    assert!(matches!(
        demo::users::add(db, "erin", demo::Clearance::Public).await,
        Err(demo::users::UserError::Exists)
    ));
    assert!(matches!(
        demo::users::add(db, "Erin Smith", demo::Clearance::Public).await,
        Err(demo::users::UserError::InvalidName)
    ));
    let ask = |token: String| {
        let app = &app;
        async move {
            app.send(
                reqwest::Method::POST,
                "/api/chat",
                Some(&token),
                Some(chat("c-erin", "How do I set up the VPN at home?")),
            )
            .await
            .0
        }
    };
    assert_eq!(ask(erin.token.clone()).await, 200);
    let again = demo::users::reset_token(db, "erin").await.unwrap();
    assert_eq!(ask(erin.token.clone()).await, 401);
    assert_eq!(ask(again.token.clone()).await, 200);
    assert!(matches!(
        demo::users::reset_token(db, "nobody").await,
        Err(demo::users::UserError::NotFound)
    ));
    app.stop().await;
}
