//! Bus names: one live store per name, a summary of what a name holds, and
//! purging it (against `TIDINGS_TEST_POSTGRES_URL`; not run when it is unset).

mod common;

use tidings::StoreError;
use tidings_postgres::PgStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_of_a_name_is_refused_until_the_first_is_gone() {
    let Some(test_bus) = common::TestBus::new("lock") else {
        return;
    };
    let (url, bus) = (test_bus.url.clone(), test_bus.name.clone());
    let first = PgStore::connect(&url, &bus).await.expect("connects");
    let second = PgStore::connect(&url, &bus).await;
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    let other = PgStore::connect(&url, &format!("{bus}-other")).await;
    assert!(other.is_ok(), "another name is free");
    drop(first);
    assert!(
        PgStore::connect(&url, &bus).await.is_ok(),
        "free again once the first is dropped"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/test", "t").await;
    assert!(matches!(err, Err(StoreError::Backend(_))), "{err:?}");
}

struct Refuses;

impl tidings::EventHandler for Refuses {
    fn event_type(&self) -> &str {
        "t"
    }
    fn options(&self) -> tidings::HandlerOptions {
        tidings::HandlerOptions::default().attempts(1)
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Err(tidings::HandlerError::permanent("no"))
    }
}

/// A bus on `name` whose one handler refuses every event.
async fn refusing(url: &str, name: &str) -> tidings::EventBus {
    tidings::EventBus::builder()
        .discover(false)
        .handler(Refuses)
        .store(PgStore::connect(url, name).await.unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_name_is_summarized_live_and_purged() {
    let Some(test_bus) = common::TestBus::new("summary") else {
        return;
    };
    let (url, bus_name) = (test_bus.url.clone(), test_bus.name.clone());
    let bus = refusing(&url, &bus_name).await;
    for n in 0..2 {
        bus.emit("t", serde_json::json!({ "n": n })).await.unwrap();
    }
    bus.wait_idle().await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    // While the bus (and its store) still exists.
    let summary = PgStore::summarize(&url, &bus_name).await.unwrap();
    assert!(summary.pending.is_empty());
    assert_eq!(summary.dead_letters.len(), 1);
    let dead = &summary.dead_letters[0];
    assert_eq!(
        (dead.event_type.as_str(), dead.handler.as_str(), dead.count),
        ("t", "Refuses", 2)
    );
    drop(bus);
    PgStore::purge(&url, &bus_name).await.unwrap();
    let summary = PgStore::summarize(&url, &bus_name).await.unwrap();
    assert!(summary.pending.is_empty() && summary.dead_letters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_dead_letter_leaves_no_row() {
    let Some(test_bus) = common::TestBus::new("discard") else {
        return;
    };
    let (url, bus_name) = (test_bus.url.clone(), test_bus.name.clone());
    let bus = refusing(&url, &bus_name).await;
    bus.emit("t", serde_json::json!({ "n": 1 })).await.unwrap();
    bus.wait_idle().await;
    let id = bus.dead_letters()[0].id;
    assert!(bus.discard(id).is_some());
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tidings_events WHERE bus = $1)
              + (SELECT count(*) FROM tidings_dead_letters l
                 JOIN tidings_events e ON e.id = l.event_id WHERE e.bus = $1)",
    )
    .bind(&bus_name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows, 0, "the dead letter and its event are deleted");
}

struct Takes;

impl tidings::EventHandler for Takes {
    fn event_type(&self) -> &str {
        "t"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Ok(())
    }
}

/// Settles written in one statement (handled deliveries alone) delete an
/// event only once nothing refers to it: a handled event leaves no row, an
/// event another handler dead-lettered keeps its row for the dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_events_leave_no_row_and_a_dead_letters_event_stays() {
    let Some(test_bus) = common::TestBus::new("settled") else {
        return;
    };
    let (url, bus_name) = (test_bus.url.clone(), test_bus.name.clone());
    let count = async |sql: &str| -> i64 {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(&bus_name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    // One handler alone: every event handled, none left.
    let bus = tidings::EventBus::builder()
        .discover(false)
        .handler(Takes)
        .store(PgStore::connect(&url, &bus_name).await.unwrap())
        .build()
        .unwrap();
    for n in 0..200 {
        bus.emit("t", serde_json::json!({ "n": n })).await.unwrap();
    }
    bus.wait_idle().await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    drop(bus);
    let events = "SELECT count(*) FROM tidings_events WHERE bus = $1";
    assert_eq!(count(events).await, 0, "handled events leave no row");
    // Two handlers, one refusing: each event's other delivery is handled,
    // its dead letter keeps the event.
    let bus = tidings::EventBus::builder()
        .discover(false)
        .handler(Takes)
        .handler(Refuses)
        .store(PgStore::connect(&url, &bus_name).await.unwrap())
        .build()
        .unwrap();
    for n in 0..50 {
        bus.emit("t", serde_json::json!({ "n": n })).await.unwrap();
    }
    bus.wait_idle().await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    drop(bus);
    assert_eq!(count(events).await, 50, "each dead letter keeps its event");
    let pending = "SELECT count(*) FROM tidings_deliveries WHERE bus = $1";
    assert_eq!(count(pending).await, 0, "every delivery settled");
}
