//! Hostile input gets a typed error, and nothing is queued.

mod common;
use common::{bus, recorder, FnHandler, Log};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidings::{BuildError, EmitError, EventBus, HandlerOptions, MissingResource, Resources};

#[tokio::test]
async fn event_type_names_are_checked() {
    let bus = bus().build().unwrap();
    for bad in [
        "",
        "has space",
        "semi;colon",
        "new\nline",
        "quote'",
        "ünïcode",
        &"x".repeat(129),
    ] {
        let err = bus.emit(bad, json!({})).await.unwrap_err();
        assert!(matches!(err, EmitError::InvalidEventType { .. }), "{bad:?}");
    }
    for good in [
        "a",
        "order_created",
        "billing.invoice:v2-beta",
        &"x".repeat(128),
    ] {
        assert!(bus.emit(good, json!({})).await.is_ok(), "{good:?}");
    }
}

#[tokio::test]
async fn errors_never_echo_raw_input() {
    let bus = bus().build().unwrap();
    let err = bus
        .emit("evil\n[ERROR] forged log line", json!({}))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("\\n"));
    let long = "y".repeat(10_000) + "!";
    let text = bus.emit(&long, json!({})).await.unwrap_err().to_string();
    assert!(
        text.len() < 300,
        "the message is bounded: {} bytes",
        text.len()
    );
}

#[tokio::test]
async fn keys_are_checked() {
    let bus = bus()
        .handler(recorder("A", "t", Log::default()))
        .build()
        .unwrap();
    for bad in [String::new(), "a\u{7}b".into(), "k".repeat(257)] {
        let err = bus.emit("t", json!({})).key(bad.clone()).await.unwrap_err();
        assert!(matches!(err, EmitError::InvalidKey { .. }), "{bad:?}");
    }
    assert_eq!(bus.pending(), 0);
}

#[tokio::test]
async fn payload_must_be_an_object() {
    let bus = bus()
        .handler(recorder("A", "t", Log::default()))
        .build()
        .unwrap();
    for bad in [
        json!(null),
        json!(1),
        json!("s"),
        json!([1, 2]),
        json!(true),
    ] {
        let err = bus.emit("t", bad).await.unwrap_err();
        assert!(matches!(err, EmitError::InvalidPayload { .. }));
    }
    assert_eq!(bus.stats().event_type("t").unwrap().emitted, 0);
}

#[tokio::test]
async fn payload_size_is_limited() {
    let bus = bus()
        .max_payload_bytes(1024)
        .handler(recorder("A", "t", Log::default()))
        .build()
        .unwrap();
    let err = bus
        .emit("t", json!({"blob": "x".repeat(2000)}))
        .await
        .unwrap_err();
    assert!(matches!(err, EmitError::PayloadTooLarge { limit: 1024 }));
    assert!(bus
        .emit("t", json!({"blob": "x".repeat(900)}))
        .await
        .is_ok());
    // The default is 1 MiB.
    let bus = EventBus::builder().discover(false).build().unwrap();
    let err = bus
        .emit("t", json!({"blob": "x".repeat(1024 * 1024)}))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EmitError::PayloadTooLarge { limit: 1_048_576 }
    ));
}

#[derive(Serialize, Deserialize, tidings::Event)]
#[event(type = "activity")]
struct Activity {
    user_id: u64,
    severity: String,
    details: Option<Details>,
}

#[derive(Serialize, Deserialize)]
struct Details {
    ip: String,
}

#[tidings::handler]
async fn audit(_a: &Activity) {}

#[tokio::test]
async fn a_dynamic_emit_is_checked_against_its_typed_handler() {
    let bus = EventBus::builder().resource(Pool).build().unwrap();
    let err = bus
        .emit("activity", json!({"severity": "HIGH"}))
        .await
        .unwrap_err();
    match &err {
        EmitError::PayloadMismatch {
            field,
            reason,
            event_type,
            ..
        } => {
            assert_eq!(event_type, "activity");
            assert_eq!(field, ".");
            assert!(reason.contains("user_id"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let err = bus
        .emit("activity", json!({"user_id": "one", "severity": "HIGH"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmitError::PayloadMismatch { field, .. } if field == "user_id"),
        "{err}"
    );
    let err = bus
        .emit(
            "activity",
            json!({"user_id": 1, "severity": "HIGH", "details": {"ip": 5}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmitError::PayloadMismatch { field, .. } if field == "details.ip"),
        "{err}"
    );
    assert!(bus
        .emit("activity", json!({"user_id": 1, "severity": "HIGH"}))
        .await
        .is_ok());
    bus.wait_idle().await;
    assert_eq!(bus.stats().handler("audit").unwrap().succeeded, 1);
}

#[tokio::test]
async fn duplicate_handler_names_fail_build_naming_both() {
    let err = bus()
        .handler(recorder("Same", "a", Log::default()))
        .handler(recorder("Same", "b", Log::default()))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BuildError::DuplicateHandler { .. }));
    assert!(text.contains("'Same'"), "{text}");
    assert_eq!(
        text.matches("validation.rs").count(),
        2,
        "both places named: {text}"
    );
}

#[derive(Clone)]
struct Pool;

struct NeedsPool {
    _pool: Pool,
}
impl NeedsPool {
    fn new(r: &Resources) -> Result<Self, MissingResource> {
        Ok(Self {
            _pool: r.get::<Pool>()?,
        })
    }
}
impl tidings::EventHandler for NeedsPool {
    fn event_type(&self) -> &str {
        "needs_pool"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Ok(())
    }
}
tidings::register_handler!(NeedsPool, NeedsPool::new);

#[tokio::test]
async fn a_missing_resource_fails_build_naming_handler_and_resource() {
    let err = EventBus::builder().build().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BuildError::MissingResource { .. }));
    assert!(text.contains("NeedsPool"), "{text}");
    assert!(text.contains("validation::Pool"), "{text}");
    let bus = EventBus::builder().resource(Pool).build().unwrap();
    assert_eq!(bus.handler_count(Some("needs_pool")), 1);
}

#[tokio::test]
async fn invalid_handler_settings_fail_build() {
    let err = bus()
        .handler(recorder("A", "bad type", Log::default()))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidEventType { .. }));
    let err = bus()
        .handler(
            FnHandler::new("Z", "t", |_| async { Ok(()) })
                .options(HandlerOptions::default().attempts(0)),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidOptions { .. }), "{err}");
    let err = bus()
        .handler(
            FnHandler::new("Z", "t", |_| async { Ok(()) })
                .options(HandlerOptions::default().concurrency(0)),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidOptions { .. }));
    assert!(matches!(
        bus().capacity(0).build(),
        Err(BuildError::InvalidConfig(_))
    ));
    assert!(matches!(
        bus().max_concurrency(0).build(),
        Err(BuildError::InvalidConfig(_))
    ));
}

#[test]
fn build_outside_a_runtime_is_an_error() {
    assert!(matches!(bus().build(), Err(BuildError::NoRuntime)));
}
