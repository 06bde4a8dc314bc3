//! The built-in events against real databases: SQLite always, PostgreSQL when
//! `TIDINGS_TEST_POSTGRES_URL` is set (then an unreachable server fails the test).

use serde_json::json;
use std::time::Duration;
use tidings::{EmitError, EventBus};
use tidings_events::{
    ActivityLog, Db, MessageSave, Role, SemanticCache, SemanticCacheStore, Severity,
};

/// A fresh SQLite file in a temporary directory.
async fn sqlite() -> (Db, TempDir) {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("events.db").display());
    let store = Db::connect(&url).await.expect("sqlite");
    store.migrate().await.expect("migrate");
    (store, dir)
}

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("tidings-events-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL store in a schema of its own, dropped at the end; `None` when
/// the URL variable is not set.
async fn postgres() -> Option<(Db, String, sqlx::PgPool)> {
    let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").ok()?;
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("TIDINGS_TEST_POSTGRES_URL is set but PostgreSQL is unreachable");
    let schema = format!("tidings_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let store = Db::connect(&scoped).await.expect("postgres");
    store.migrate().await.expect("migrate");
    Some((store, schema, admin))
}

async fn drop_schema(schema: &str, admin: &sqlx::PgPool) {
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(admin)
        .await
        .unwrap();
}

fn bus(store: &Db) -> EventBus {
    EventBus::builder().resource(store.clone()).build().unwrap()
}

async fn exercise(store: Db) {
    let bus = bus(&store);
    assert_eq!(
        bus.event_types(),
        vec!["activity_log", "message_save", "semantic_cache"]
    );

    // activity_log, dynamic (the seed's example) and typed.
    bus.emit(
        "activity_log",
        json!({
            "user_id": 1,
            "incident_type": "UNAUTHORIZED_ACCESS",
            "severity": "HIGH",
            "description": "User attempted to access restricted resource",
            "ip_address": "192.168.1.1"
        }),
    )
    .await
    .unwrap();
    let mut entry = ActivityLog::new(2, "LOGIN_FAILED", Severity::Low, "bad password");
    entry.details = Some(serde_json::Map::from_iter([("attempts".into(), json!(3))]));
    entry.access_granted = Some(false);
    bus.publish(entry).await.unwrap();

    // message_save and semantic_cache.
    let first = MessageSave::new("conv-1", 7, Role::User, "How do I reset my password?");
    bus.publish(first.clone()).await.unwrap();
    bus.publish(MessageSave::new(
        "conv-1",
        7,
        Role::Assistant,
        "Use the portal.",
    ))
    .await
    .unwrap();
    bus.publish(SemanticCacheStore::new(
        "How do I reset my password?",
        "Use the portal.",
    ))
    .await
    .unwrap();
    bus.wait_idle().await;
    let stats = bus.stats();
    assert!(stats.handlers.iter().all(|h| h.failed == 0), "{stats:?}");

    let high = tidings_events::list_activity(&store, None, Some(Severity::High), 10)
        .await
        .unwrap();
    assert_eq!(high.len(), 1);
    assert_eq!(high[0].ip_address.as_deref(), Some("192.168.1.1"));
    let user2 = tidings_events::list_activity(&store, Some(2), None, 10)
        .await
        .unwrap();
    assert_eq!(user2[0].access_granted, Some(false));
    assert_eq!(user2[0].details.as_deref(), Some(r#"{"attempts":3}"#));
    assert_eq!(
        tidings_events::list_activity(&store, None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );

    let conv = tidings_events::conversation(&store, "conv-1")
        .await
        .unwrap();
    assert_eq!(
        conv.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
        vec!["user", "assistant"]
    );
    assert_eq!(conv[0].message_id, first.message_id.to_string());

    let cache = SemanticCache::new(store.clone());
    let hit = cache
        .lookup("how do i reset my password", 0.8, |_| true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hit.answer, "Use the portal.");
    assert!(
        cache
            .lookup("how do i reset my password", 0.8, |_| false)
            .await
            .unwrap()
            .is_none(),
        "clearance filter"
    );
    assert!(cache
        .lookup("office opening hours", 0.5, |_| true)
        .await
        .unwrap()
        .is_none());

    // A wrong dynamic payload fails at emit, with the field named.
    let err = bus
        .emit(
            "activity_log",
            json!({"user_id": 1, "incident_type": "X", "severity": "SEVERE", "description": "d"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmitError::PayloadMismatch { field, .. } if field == "severity"),
        "{err}"
    );
    let err = bus
        .emit(
            "activity_log",
            json!({"user_id": 1, "severity": "LOW", "description": "d"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("incident_type"), "{err}");
    let err = bus
        .emit("message_save", json!({"conversation_id": "c"}))
        .await
        .unwrap_err();
    assert!(matches!(err, EmitError::PayloadMismatch { .. }));

    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean());
}

#[tokio::test]
async fn builtin_events_on_sqlite() {
    let (store, _dir) = sqlite().await;
    exercise(store).await;
}

#[tokio::test]
async fn builtin_events_on_postgres() {
    let Some((store, schema, admin)) = postgres().await else {
        eprintln!("TIDINGS_TEST_POSTGRES_URL not set: PostgreSQL part not run");
        return;
    };
    exercise(store).await;
    drop_schema(&schema, &admin).await;
}

/// A redelivered event (same id) writes once: every built-in handler runs
/// twice on the same envelope, as after a crash between the write and the ack.
async fn idempotent(store: Db) {
    let mut resources = tidings::Resources::default();
    resources.insert(store.clone());
    let handlers = tidings::testing::discovered_handlers(&resources).unwrap();
    let envelopes = [
        tidings::testing::typed_envelope(MessageSave::new("conv-i", 1, Role::User, "once")),
        tidings::testing::typed_envelope(ActivityLog::new(1, "X", Severity::Medium, "d")),
        tidings::testing::typed_envelope(SemanticCacheStore::new("q", "a")),
    ];
    for envelope in &envelopes {
        let handler = handlers
            .iter()
            .find(|h| h.event_type() == envelope.event_type())
            .unwrap();
        handler.handle(envelope).await.unwrap();
        handler.handle(envelope).await.unwrap();
    }
    assert_eq!(
        tidings_events::conversation(&store, "conv-i")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        tidings_events::list_activity(&store, Some(1), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let hit = SemanticCache::new(store.clone())
        .lookup("q", 0.9, |_| true)
        .await
        .unwrap();
    assert!(hit.is_some());
    let count: i64 = match &store {
        Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM semantic_cache")
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM semantic_cache")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(count, 1);
}

#[tokio::test]
async fn redelivery_writes_once_on_sqlite() {
    let (store, _dir) = sqlite().await;
    idempotent(store).await;
}

#[tokio::test]
async fn redelivery_writes_once_on_postgres() {
    let Some((store, schema, admin)) = postgres().await else {
        return;
    };
    idempotent(store).await;
    drop_schema(&schema, &admin).await;
}

#[tokio::test]
async fn the_deprecated_shim_still_emits_activity_log() {
    let (store, _dir) = sqlite().await;
    tidings::init(EventBus::builder().resource(store.clone())).unwrap();
    #[allow(deprecated)]
    let receipt = tidings_events::emit_activity_log(
        5,
        "DATA_EXPORT",
        "critical",
        "exported the customer table",
    )
    .await
    .unwrap();
    assert!(receipt.is_queued());
    #[allow(deprecated)]
    let err = tidings_events::emit_activity_log(5, "X", "nope", "d")
        .await
        .unwrap_err();
    assert!(matches!(err, EmitError::PayloadMismatch { .. }));
    tidings::event_bus().wait_idle().await;
    let rows = tidings_events::list_activity(&store, Some(5), Some(Severity::Critical), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].incident_type, "DATA_EXPORT");
}
