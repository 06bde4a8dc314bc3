//! The SQLite file itself: one bus at a time, versions, damaged content.

use serde_json::json;
use std::time::Duration;
use tidings::{EventBus, StoreError};
use tidings_sqlite::{Options, SqliteStore};

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).expect_err("refused");
    assert!(matches!(second, StoreError::Locked(_)), "{second}");
    drop(first);
    assert!(
        SqliteStore::open(&path).is_ok(),
        "free again once the first is dropped"
    );
}

#[test]
fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
}

#[test]
fn a_file_that_is_not_sqlite_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    std::fs::write(&path, vec![0xAB; 8192]).unwrap();
    let err = SqliteStore::open(&path).expect_err("refused");
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_a_malformed_id_are_skipped_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let good = uuid::Uuid::now_v7();
    for (id, n) in [(vec![1u8, 2, 3], 1), (good.as_bytes().to_vec(), 2)] {
        conn.execute(
            "INSERT INTO events (id, event_type, key, emitted_at, data) VALUES (?1, 't', NULL, 0, ?2)",
            rusqlite::params![id, json!({ "n": n }).to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO deliveries (event_id, handler, attempt) VALUES (?1, 'h', 1)",
            rusqlite::params![id],
        )
        .unwrap();
    }
    drop(conn);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let bus = EventBus::builder()
        .discover(false)
        .handler(Collect(s))
        .store(SqliteStore::open_with(&path, Options::default().power_safe(true)).unwrap())
        .build()
        .unwrap();
    bus.wait_idle().await;
    assert_eq!(*seen.lock().unwrap(), vec![(good, 2)]);
    bus.shutdown(Duration::from_secs(1)).await;
}

struct Collect(std::sync::Arc<std::sync::Mutex<Vec<(uuid::Uuid, i64)>>>);

impl tidings::EventHandler for Collect {
    fn event_type(&self) -> &str {
        "t"
    }
    fn name(&self) -> &str {
        "h"
    }
    async fn handle(&self, e: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        let n = e.data()["n"].as_i64().unwrap_or(-1);
        self.0.lock().unwrap().push((e.id(), n));
        Ok(())
    }
}
