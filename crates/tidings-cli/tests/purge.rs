//! `tidings purge`: refuses without `--yes`, then deletes what a bus name
//! holds on NATS JetStream (`TIDINGS_TEST_NATS_URL`) or in PostgreSQL
//! (`TIDINGS_TEST_POSTGRES_URL`). Each case is not run when its variable is
//! unset, and fails when it is set and the server cannot be reached.

use serde_json::json;
use std::process::{Command, Output};
use std::time::Duration;

fn purge(backend: &str, url: &str, bus: &str, yes: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.args(["purge", backend, url, "--bus", bus]);
    if yes {
        c.arg("--yes");
    }
    c.output().expect("run tidings")
}

fn refused_then_done(backend: &str, url: &str, bus: &str) {
    let refused = purge(backend, url, bus, false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let done = purge(backend, url, bus, true);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

struct Stuck;

impl tidings::EventHandler for Stuck {
    fn event_type(&self) -> &str {
        "t"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// A bus on `store` left with one pending delivery.
async fn leave_one_pending(store: impl tidings::Store) {
    let bus = tidings::EventBus::builder()
        .discover(false)
        .store(store)
        .handler(Stuck)
        .build()
        .unwrap();
    bus.emit("t", json!({})).await.unwrap();
    bus.shutdown(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_bus_is_purged_only_with_yes() {
    let Ok(url) = std::env::var("TIDINGS_TEST_NATS_URL") else {
        return;
    };
    let name = format!("purge-{}", uuid::Uuid::now_v7().simple());
    let store = tidings_nats::JetStreamStore::connect(&url, &name)
        .await
        .expect("TIDINGS_TEST_NATS_URL is set but the store does not connect");
    leave_one_pending(store).await;
    let before = tidings_nats::JetStreamStore::summarize(&url, &name).await;
    assert_eq!(before.unwrap().pending.len(), 1);
    refused_then_done("--nats", &url, &name);
    // The bus is gone.
    assert!(tidings_nats::JetStreamStore::summarize(&url, &name)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_bus_is_purged_only_with_yes() {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        return;
    };
    let name = format!("purge-{}", uuid::Uuid::now_v7().simple());
    let store = tidings_postgres::PgStore::connect(&url, &name)
        .await
        .expect("TIDINGS_TEST_POSTGRES_URL is set but the store does not connect");
    leave_one_pending(store).await;
    let pending = |s: tidings::store::Summary| s.pending.iter().map(|c| c.count).sum::<u64>();
    let before = tidings_postgres::PgStore::summarize(&url, &name).await;
    assert_eq!(pending(before.unwrap()), 1);
    refused_then_done("--postgres", &url, &name);
    let after = tidings_postgres::PgStore::summarize(&url, &name).await;
    assert_eq!(pending(after.unwrap()), 0);
}

/// `tidings prune` without `--yes` lists the handlers unused that long (none
/// here: the bus's one handler was just registered) and changes nothing;
/// `tidings inspect` shows the registered handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_lists_unused_handlers_and_inspect_shows_registrations() {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        return;
    };
    let name = format!("prune-{}", uuid::Uuid::now_v7().simple());
    let store = tidings_postgres::PgStore::connect_shared(&url, &name, Duration::from_secs(2))
        .await
        .expect("TIDINGS_TEST_POSTGRES_URL is set but the store does not connect");
    leave_one_pending(store).await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(args)
            .output()
            .expect("run tidings");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&[
        "prune",
        "--postgres",
        &url,
        "--bus",
        &name,
        "--unused-for",
        "1h",
    ]);
    assert!(listed.contains("0 of 1 handlers"), "{listed}");
    let shown = run(&["inspect", "--postgres", &url, "--bus", &name]);
    assert!(
        shown.contains("Stuck") || shown.contains("handlers (pending, last seen): 1"),
        "{shown}"
    );
    tidings_postgres::PgStore::purge(&url, &name).await.unwrap();
}

/// Runs `tidings upgrade` on bus `bus`; its standard output.
fn upgrade(backend: &str, url: &str, bus: &str, yes: bool) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.args(["upgrade", backend, url, "--bus", bus]);
    if yes {
        c.arg("--yes");
    }
    let out = c.output().expect("run tidings");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tidings upgrade` says what a NATS bus made before framed events has
/// left (as `tidings inspect` does), does it only with `--yes`, and then
/// has nothing left; PostgreSQL has nothing left; a bad name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_says_what_is_left_and_does_it_with_yes() {
    let Ok(url) = std::env::var("TIDINGS_TEST_NATS_URL") else {
        return;
    };
    let name = format!("upgrade-{}", uuid::Uuid::now_v7().simple());
    let js = async_nats::jetstream::new(
        async_nats::connect(&url)
            .await
            .expect("TIDINGS_TEST_NATS_URL is set but the server cannot be reached"),
    );
    // The events' stream as the version before framed events made it.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("TIDINGS_{name}"),
        description: Some(r#"{"tidings_key_partitions":16,"tidings_layout":2}"#.into()),
        subjects: vec![format!("tidings.{name}.ev.*")],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    // A process of this version opens it (its buckets made), writing headers.
    drop(
        tidings_nats::JetStreamStore::connect(&url, &name)
            .await
            .unwrap(),
    );
    let inspect = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
        c.args(["inspect", "--nats", &url, "--bus", &name]);
        if json {
            c.arg("--json");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(inspect(false).contains("upgrade left: events are written with headers"));
    let said = upgrade("--nats", &url, &name, false);
    assert!(said.contains("headers") && said.contains("--yes"), "{said}");
    assert!(upgrade("--nats", &url, &name, false).contains("headers"));
    assert!(upgrade("--nats", &url, &name, true).contains("done"));
    assert!(upgrade("--nats", &url, &name, false).contains("nothing left"));
    assert!(!inspect(false).contains("upgrade left"));
    let json: serde_json::Value = serde_json::from_str(&inspect(true)).unwrap();
    assert_eq!(json["upgrade_left"], serde_json::Value::Null);
    tidings_nats::JetStreamStore::purge(&url, &name)
        .await
        .unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["upgrade", "--nats", &url, "--bus", "a b"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    if let Ok(pg) = std::env::var("TIDINGS_TEST_POSTGRES_URL") {
        assert!(upgrade("--postgres", &pg, "orders", true).contains("nothing left"));
    }
}
