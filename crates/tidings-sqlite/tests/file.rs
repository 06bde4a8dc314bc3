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
            "INSERT INTO deliveries (seq, handler, attempt) VALUES (?1, 'h', 1)",
            rusqlite::params![conn.last_insert_rowid()],
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
    drop(bus);
    // The handled event is gone; the unreadable one is left as it was.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let ids: Vec<Vec<u8>> = conn
        .prepare("SELECT id FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, vec![vec![1u8, 2, 3]]);
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

struct FailOdd;

impl tidings::EventHandler for FailOdd {
    fn event_type(&self) -> &str {
        "t"
    }
    fn name(&self) -> &str {
        "odd"
    }
    fn options(&self) -> tidings::HandlerOptions {
        tidings::HandlerOptions::default().attempts(1)
    }
    async fn handle(&self, e: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        match e.data()["n"].as_i64() {
            Some(n) if n % 2 == 1 => Err(tidings::HandlerError::permanent("odd")),
            _ => Ok(()),
        }
    }
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_keeps_only_what_is_pending_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bus = EventBus::builder()
        .discover(false)
        .handler(Collect(seen.clone()))
        .handler(FailOdd)
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    for n in 0..10 {
        bus.emit("t", json!({ "n": n })).await.unwrap();
    }
    bus.wait_idle().await;
    assert_eq!(bus.dead_letters().len(), 5);
    let first = bus.dead_letters()[0].id;
    bus.replay(first).unwrap();
    bus.wait_idle().await;
    let second = bus.dead_letters()[0].id;
    assert!(bus.discard(second).is_some());
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);
    assert_eq!(count(&path, "deliveries"), 0);
    assert_eq!(
        count(&path, "dead_letters"),
        4,
        "the replay failed again, one discarded: four"
    );
    assert_eq!(
        count(&path, "events"),
        4,
        "only the events of dead letters are kept (not the discarded one's)"
    );
    assert_eq!(seen.lock().unwrap().len(), 10);
    let summary = tidings_sqlite::summarize(&path).unwrap();
    assert!(summary.pending.is_empty());
    assert_eq!(summary.dead_letters.len(), 1);
    let dead = &summary.dead_letters[0];
    assert_eq!(
        (dead.event_type.as_str(), dead.handler.as_str(), dead.count),
        ("t", "odd", 4)
    );
}

#[test]
fn a_file_in_use_is_not_summarized() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let store = SqliteStore::open(&path).unwrap();
    let err = tidings_sqlite::summarize(&path).expect_err("in use");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    drop(store);
    assert!(tidings_sqlite::summarize(&path).is_ok());
    let missing = tidings_sqlite::summarize(dir.path().join("missing.db"));
    assert!(
        matches!(missing, Err(StoreError::Backend(_))),
        "{missing:?}"
    );
}

/// A file written by version 1 (no begin marks) is upgraded in place: its
/// pending delivery is made, marked begun first, and the file says version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_upgraded_and_its_deliveries_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, event_type TEXT NOT NULL,
                              key TEXT, emitted_at INTEGER NOT NULL, data TEXT NOT NULL);
         CREATE TABLE deliveries (seq INTEGER NOT NULL, handler TEXT NOT NULL,
                                  attempt INTEGER NOT NULL, PRIMARY KEY (seq, handler)) WITHOUT ROWID;
         CREATE TABLE dead_letters (seq INTEGER NOT NULL, handler TEXT NOT NULL,
                                    attempts INTEGER NOT NULL, error TEXT NOT NULL,
                                    failed_at INTEGER NOT NULL, PRIMARY KEY (seq, handler)) WITHOUT ROWID;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let id = uuid::Uuid::now_v7();
    conn.execute(
        "INSERT INTO events (id, event_type, key, emitted_at, data) VALUES (?1, 't', NULL, 0, ?2)",
        rusqlite::params![id.as_bytes().as_slice(), json!({ "n": 7 }).to_string()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO deliveries (seq, handler, attempt) VALUES (last_insert_rowid(), 'h', 2)",
        [],
    )
    .unwrap();
    drop(conn);

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bus = EventBus::builder()
        .discover(false)
        .handler(Collect(seen.clone()))
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    bus.wait_idle().await;
    assert_eq!(*seen.lock().unwrap(), vec![(id, 7)]);
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
    let begun: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('deliveries') WHERE name = 'begun'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(begun, 1);
    assert_eq!(count(&path, "deliveries"), 0, "handled and deleted");
}
