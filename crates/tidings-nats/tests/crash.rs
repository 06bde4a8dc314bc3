//! Kill -9 at random: a bus on NATS JetStream loses nothing that `emit`
//! acknowledged (six kills over one bus name; see
//! `tidings_conformance::crash`). What a killed child held goes to the
//! draining bus once `ack_wait` (2 s here) has passed; its `wait_idle` waits
//! for that, as it asks the server what is still outstanding. And a delivery
//! whose handler aborts the process is dead-lettered after three aborts
//! (`tidings_conformance::crash::poison`; each child takes the delivery
//! once the last one's `ack_wait` has passed). Run against
//! `TIDINGS_TEST_NATS_URL`; not run when it is unset.

mod common;

use std::time::Duration;

const BUS: &str = "TIDINGS_CRASH_CHILD_BUS";

#[test]
#[ignore = "the child process of the kill test; not a test on its own"]
fn crash_child() {
    let name = std::env::var(BUS).expect("run by the kill test");
    let url = common::TestBus::url().expect("TIDINGS_TEST_NATS_URL");
    tidings_conformance::crash::child(|| async move { common::store_at(&url, &name).await });
}

#[test]
fn killed_at_random_loses_nothing_acknowledged() {
    let Some(bus) = common::TestBus::new("crash") else {
        return;
    };
    let env = [(BUS, bus.name.as_str())];
    // RUST_LOG=tidings_nats=debug says what the draining bus took, held
    // and let go.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    tidings_conformance::crash::parent("crash_child", &env, 6, Duration::ZERO, || {
        common::store(&bus)
    });
}

#[test]
fn a_delivery_that_aborts_the_process_is_dead_lettered() {
    let Some(bus) = common::TestBus::new("poison") else {
        return;
    };
    tidings_conformance::crash::poison("crash_child", &[(BUS, bus.name.as_str())]);
}
