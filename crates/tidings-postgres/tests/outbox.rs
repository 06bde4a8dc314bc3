//! The transactional outbox: an event written in the application's own
//! transaction is delivered if and only if that transaction commits (against
//! `TIDINGS_TEST_POSTGRES_URL`; not run when it is unset).

mod common;

use serde_json::json;
use sqlx::Connection;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};
use tidings_postgres::{OutboxError, PgStore};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<i64>>>);

impl EventHandler for Seen {
    fn event_type(&self) -> &str {
        "order_created"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(event.data()["order_id"].as_i64().unwrap_or(-1));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_are_delivered_and_rolled_back_ones_never() {
    let Some(test_bus) = common::TestBus::new("outbox") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let store = PgStore::connect(&url, &name).await.unwrap();
    let outbox = store.outbox();
    let seen = Seen::default();
    let bus = EventBus::builder()
        .discover(false)
        .handler(seen.clone())
        .store(store)
        .build()
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    let id = outbox
        .emit(
            &mut tx,
            &bus,
            "order_created",
            json!({"order_id": 1}),
            Some("user-1"),
        )
        .await
        .unwrap();
    assert!(id.is_some());
    // Not committed yet: nothing to deliver.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen.0.lock().unwrap().is_empty());
    tx.commit().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    outbox
        .emit(&mut tx, &bus, "order_created", json!({"order_id": 2}), None)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // The notification at commit wakes the relay well before its 1 s tick.
    let started = std::time::Instant::now();
    while seen.0.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "not delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bus.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    bus.wait_idle().await;
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![1],
        "the rolled-back event never came"
    );

    // Refused as emit refuses; nothing written, the transaction still usable.
    let mut tx = conn.begin().await.unwrap();
    let err = outbox
        .emit(&mut tx, &bus, "bad type!", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        OutboxError::Emit(tidings::EmitError::InvalidEventType { .. })
    ));
    let none = outbox
        .emit(&mut tx, &bus, "nobody_listens", json!({}), None)
        .await
        .unwrap();
    assert!(none.is_none(), "no handler: nothing to write");
    tx.commit().await.unwrap();
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings_events WHERE bus = $1")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the delivered event is gone from the outbox");
}

/// On a shared bus name, a process without the event's handler (a front end)
/// writes it in its transaction; another process's handler gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_without_handlers_writes_to_the_shared_outbox() {
    let Some(test_bus) = common::TestBus::new("outbox-shared") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let lease = Duration::from_secs(2);
    let seen = Seen::default();
    let worker = EventBus::builder()
        .discover(false)
        .handler(seen.clone())
        .store(PgStore::connect_shared(&url, &name, lease).await.unwrap())
        .build()
        .unwrap();
    // The worker's registration commits on its own connection: an event
    // written before it gets no delivery for its handler (another process's
    // handlers are only known once registered).
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings_handlers WHERE bus = $1")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never registered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let store = PgStore::connect_shared(&url, &name, lease).await.unwrap();
    let outbox = store.outbox();
    let front = EventBus::builder()
        .discover(false)
        .store(store)
        .build()
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let id = outbox
        .emit(
            &mut tx,
            &front,
            "order_created",
            json!({"order_id": 7}),
            None,
        )
        .await
        .unwrap();
    assert!(id.is_some(), "written although this process has no handler");
    tx.commit().await.unwrap();
    let started = std::time::Instant::now();
    while seen.0.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "not delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.wait_idle().await;
    assert_eq!(*seen.0.lock().unwrap(), vec![7]);
    front.shutdown(Duration::from_secs(5)).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

/// On a shared bus name, an outbox write made right after `build()`, while
/// the bus's registration of its handlers has not committed yet, waits for
/// it: the event gets its delivery. (Without the wait, the event was written
/// when no handler of its type was registered, and not kept.) The test
/// holds the registration back with a lock on the handlers' table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_write_right_after_build_waits_for_the_handlers_registration() {
    let Some(test_bus) = common::TestBus::new("outbox-early") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let store = PgStore::connect_shared(&url, &name, Duration::from_secs(2))
        .await
        .unwrap();
    let outbox = store.outbox();
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        "BEGIN",
        "LOCK TABLE tidings_handlers IN SHARE ROW EXCLUSIVE MODE",
    ] {
        sqlx::query(sql).execute(&mut blocker).await.unwrap();
    }
    let seen = Seen::default();
    let bus = EventBus::builder()
        .discover(false)
        .handler(seen.clone())
        .store(store)
        .build()
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    });
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let id = outbox
        .emit(&mut tx, &bus, "order_created", json!({"order_id": 9}), None)
        .await
        .unwrap();
    assert!(id.is_some());
    tx.commit().await.unwrap();
    release.await.unwrap();
    let started = std::time::Instant::now();
    while seen.0.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the event written before the registration committed was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*seen.0.lock().unwrap(), vec![9]);
    assert!(bus.shutdown(Duration::from_secs(5)).await.is_clean());
}

/// A shared store whose registration cannot commit within its emit timeout
/// refuses the outbox write with a typed error, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_write_is_refused_when_the_registration_never_commits() {
    let Some(test_bus) = common::TestBus::new("outbox-unbound") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let store = PgStore::connect_shared(&url, &name, Duration::from_secs(2))
        .await
        .unwrap()
        .emit_timeout(Duration::from_millis(300));
    let outbox = store.outbox();
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut hold = blocker.begin().await.unwrap();
    sqlx::query("LOCK TABLE tidings_handlers IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let bus = EventBus::builder()
        .discover(false)
        .handler(Seen::default())
        .store(store)
        .build()
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let err = outbox
        .emit(&mut tx, &bus, "order_created", json!({"order_id": 1}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OutboxError::NotRegistered), "{err:?}");
    tx.commit().await.unwrap();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM tidings_events WHERE bus = $1")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(written, 0);
    hold.rollback().await.unwrap();
    bus.shutdown(Duration::from_secs(5)).await;
}
