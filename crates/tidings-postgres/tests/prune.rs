//! A handler no process has had for a while (renamed, or removed from the
//! code) on a shared bus name: listed with when it was last seen and what
//! waits for it, and pruned, its waiting deliveries kept as dead letters
//! first (against `TIDINGS_TEST_POSTGRES_URL`; not run when unset).

mod common;

use serde_json::json;
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError};
use tidings_postgres::PgStore;

struct Named(&'static str);

impl EventHandler for Named {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        self.0
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

const LEASE: Duration = Duration::from_secs(2);

async fn shared(url: &str, bus: &str, handler: Option<Named>) -> EventBus {
    let store = PgStore::connect_shared(url, bus, LEASE).await.unwrap();
    let mut builder = EventBus::builder().discover(false).store(store);
    if let Some(h) = handler {
        builder = builder.handler(h);
    }
    builder.build().unwrap()
}

/// Handler "old" of bus `name` last seen two hours ago (as if it had
/// been), then the handlers unused for an hour pruned.
async fn prune_old(url: &str, name: &str) -> Vec<tidings::store::Pruned> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query("UPDATE tidings_handlers SET seen_at = now() - interval '2 hours' WHERE bus = $1 AND handler = 'old'")
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    PgStore::prune(url, name, Duration::from_secs(3600))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_handler_is_listed_then_pruned_into_dead_letters() {
    let Some(test_bus) = common::TestBus::new("prune") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    // "old" registers, then its process goes away for good; "current" stays.
    let old = shared(&url, &name, Some(Named("old"))).await;
    old.shutdown(Duration::from_secs(5)).await;
    drop(old);
    let current = shared(&url, &name, Some(Named("current"))).await;
    let front = shared(&url, &name, None).await;
    for n in 0..5 {
        front.emit("job", json!({ "n": n })).await.unwrap();
    }
    current.wait_idle().await;
    let listed = PgStore::registrations(&url, &name).await.unwrap();
    let old_row = listed
        .iter()
        .find(|r| r.handler == "old")
        .expect("old is listed");
    assert_eq!(old_row.pending, 5, "{listed:?}");
    assert!(listed.iter().any(|r| r.handler == "current"));
    // Nothing is unused for an hour yet.
    assert!(PgStore::prune(&url, &name, Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    // "old" was last seen two hours ago (as if it had been); "current"
    // renews its own with its lease.
    let pruned = prune_old(&url, &name).await;
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert_eq!(
        (pruned[0].handler.as_str(), pruned[0].dead_lettered),
        ("old", 5)
    );
    let summary = PgStore::summarize(&url, &name).await.unwrap();
    assert!(summary.pending.is_empty(), "{summary:?}");
    assert_eq!(summary.dead_letters.len(), 1);
    assert_eq!(summary.dead_letters[0].handler, "old");
    assert_eq!(summary.dead_letters[0].count, 5);
    // New events go to "current" only.
    front.emit("job", json!({ "n": 9 })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = PgStore::registrations(&url, &name).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].handler, "current");
    for bus in [current, front] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// A handler alone on its event type: its deliveries carry their events in
/// their own rows (one row per event), and pruned, the events are kept
/// with the dead letters they become (without that, the dead letters point
/// at no event and nothing lists them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_handler_alone_on_its_type_keeps_its_events_in_dead_letters() {
    let Some(test_bus) = common::TestBus::new("prune-alone") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let old = shared(&url, &name, Some(Named("old"))).await;
    old.shutdown(Duration::from_secs(5)).await;
    drop(old);
    let front = shared(&url, &name, None).await;
    for n in 0..5 {
        front.emit("job", json!({ "n": n })).await.unwrap();
    }
    let pruned = prune_old(&url, &name).await;
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert_eq!(pruned[0].dead_lettered, 5);
    let summary = PgStore::summarize(&url, &name).await.unwrap();
    assert!(summary.pending.is_empty(), "{summary:?}");
    assert_eq!(summary.dead_letters.len(), 1, "{summary:?}");
    assert_eq!(summary.dead_letters[0].count, 5);
    front.shutdown(Duration::from_secs(5)).await;
}
