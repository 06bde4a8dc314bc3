//! Handlers declared in other modules are discovered at build time, with no list to edit.

mod events;

use events::{OrderCreated, Seen};
use serde_json::json;
use tidings::EventBus;

#[tokio::test]
async fn handlers_in_other_modules_are_discovered() {
    let seen = Seen::default();
    let bus = EventBus::builder().resource(seen.clone()).build().unwrap();
    let mut types = bus.event_types();
    types.sort();
    assert_eq!(types, vec!["my_event", "order_created"]);
    assert_eq!(bus.handler_count(Some("order_created")), 3);
    assert_eq!(bus.handler_count(Some("my_event")), 1);
    assert_eq!(bus.handler_count(None), 4);

    bus.publish(OrderCreated {
        order_id: 7,
        user_id: 1,
        total: 9.5,
    })
    .await
    .unwrap();
    bus.emit(
        "order_created",
        json!({"order_id": 8, "user_id": 1, "total": 1.0}),
    )
    .await
    .unwrap();
    bus.emit("my_event", json!({"user_id": 3, "action": "login"}))
        .await
        .unwrap();
    bus.wait_idle().await;

    let mut got = seen.get();
    got.sort();
    assert_eq!(
        got,
        vec![
            "email 7".to_string(),
            "email 8".into(),
            "inventory 7".into(),
            "inventory 8".into(),
            "my_event user 3 login".into(),
            "warehouse 7".into(),
            "warehouse 8".into(),
        ]
    );
    let stats = bus.stats();
    assert_eq!(
        stats.handler("send_confirmation_email").unwrap().succeeded,
        2
    );
    assert_eq!(stats.handler("MyEventHandler").unwrap().succeeded, 1);
    let opts = stats.handler("notify_warehouse").unwrap();
    assert_eq!(opts.event_type, "order_created");
}

#[tokio::test]
async fn macro_handlers_keep_their_options() {
    let bus = EventBus::builder()
        .resource(Seen::default())
        .build()
        .unwrap();
    // notify_warehouse has attempts = 5 and fails its first four attempts for order 99.
    tokio::time::pause();
    bus.publish(OrderCreated {
        order_id: 99,
        user_id: 1,
        total: 0.0,
    })
    .await
    .unwrap();
    bus.wait_idle().await;
    let s = bus.stats();
    let h = s.handler("notify_warehouse").unwrap();
    assert_eq!((h.failed, h.succeeded), (4, 1));
}

#[tokio::test]
async fn a_typed_handler_runs_as_plain_function_too() {
    let seen = Seen::default();
    events::update_inventory(
        &OrderCreated {
            order_id: 1,
            user_id: 1,
            total: 0.0,
        },
        &seen,
    )
    .await
    .unwrap();
    assert_eq!(seen.get(), vec!["inventory 1".to_string()]);
}
