//! Kill -9 at random: a bus on PostgreSQL loses nothing that `emit`
//! acknowledged (six kills over one bus name; see
//! `tidings_conformance::crash`), as the only store of its name and as one
//! of several sharing it (where the survivors claim what a dead process left,
//! once its lease runs out). And a delivery whose handler aborts the process
//! is dead-lettered after three aborts, both ways
//! (`tidings_conformance::crash::poison`). Run against
//! `TIDINGS_TEST_POSTGRES_URL`; not run when it is unset.

mod common;

use std::time::Duration;
use tidings_postgres::PgStore;

const BUS: &str = "TIDINGS_CRASH_CHILD_BUS";
const SHARED: &str = "TIDINGS_CRASH_CHILD_SHARED";
const LEASE: Duration = Duration::from_secs(1);

async fn open(url: &str, bus: &str, shared: bool) -> PgStore {
    let store = if shared {
        PgStore::connect_shared(url, bus, LEASE).await
    } else {
        PgStore::connect(url, bus).await
    };
    store.expect("TIDINGS_TEST_POSTGRES_URL is set but the store does not connect")
}

#[test]
#[ignore = "the child process of the kill tests; not a test on its own"]
fn crash_child() {
    let bus = std::env::var(BUS).expect("run by a kill test");
    let shared = std::env::var(SHARED).is_ok_and(|s| s == "1");
    let url = common::url().expect("TIDINGS_TEST_POSTGRES_URL");
    tidings_conformance::crash::child(|| async move { open(&url, &bus, shared).await });
}

fn killed_at_random(shared: bool) {
    let Some(test_bus) = common::TestBus::new("crash") else {
        return;
    };
    let (url, bus) = (test_bus.url.clone(), test_bus.name.clone());
    let flag = if shared { "1" } else { "0" };
    // A shared store recovers nothing at start: its relay claims the dead
    // child's deliveries once the child's lease has run out.
    let settle = if shared { LEASE * 3 } else { Duration::ZERO };
    let env = [(BUS, bus.as_str()), (SHARED, flag)];
    tidings_conformance::crash::parent("crash_child", &env, 6, settle, || async {
        open(&url, &bus, shared).await
    });
}

#[test]
fn killed_at_random_loses_nothing_acknowledged() {
    killed_at_random(false);
}

#[test]
fn killed_at_random_loses_nothing_acknowledged_when_shared() {
    killed_at_random(true);
}

fn poisoned(shared: bool) {
    let Some(test_bus) = common::TestBus::new("poison") else {
        return;
    };
    let flag = if shared { "1" } else { "0" };
    let env = [(BUS, test_bus.name.as_str()), (SHARED, flag)];
    tidings_conformance::crash::poison("crash_child", &env);
}

#[test]
fn a_delivery_that_aborts_the_process_is_dead_lettered() {
    poisoned(false);
}

#[test]
fn a_delivery_that_aborts_the_process_is_dead_lettered_when_shared() {
    poisoned(true);
}
