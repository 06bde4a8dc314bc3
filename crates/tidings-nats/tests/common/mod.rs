//! Shared by the NATS tests: the server's URL (`TIDINGS_TEST_NATS_URL`), a
//! bus name per test that is purged from the server when the test ends, and
//! stores with a short `ack_wait` so that takeovers finish quickly.

use std::time::Duration;
use tidings_nats::{JetStreamStore, Options};

/// The test server.
pub struct Nats;

impl tidings_conformance::scratch::Server for Nats {
    const URL_VAR: &'static str = "TIDINGS_TEST_NATS_URL";
    fn purge(url: String, bus: String) -> tidings_conformance::scratch::Purging {
        Box::pin(async move { JetStreamStore::purge(&url, &bus).await })
    }
}

/// A fresh bus name on the test server, purged when dropped.
pub type TestBus = tidings_conformance::scratch::ScratchBus<Nats>;

/// `ack_wait` in these tests.
#[allow(dead_code)]
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// The options of these tests: a short `ack_wait`, and key partitions
/// pinned to one process at a time (the library's default) if
/// `TIDINGS_TEST_NATS_PINNED` is set (`.ci/run` sets it on nats-server
/// 2.15.1), one delivery at a time otherwise, so that CI runs both ways.
pub fn options() -> Options {
    Options::default()
        .ack_wait(ACK_WAIT)
        .pin_key_partitions(pinned())
}

/// Whether these tests pin key partitions (`TIDINGS_TEST_NATS_PINNED`).
pub fn pinned() -> bool {
    std::env::var_os("TIDINGS_TEST_NATS_PINNED").is_some()
}

/// A store over the bus `name` at `url`.
pub async fn store_at(url: &str, name: &str) -> JetStreamStore {
    JetStreamStore::connect_with(url, name, options())
        .await
        .expect("TIDINGS_TEST_NATS_URL is set but the store does not connect")
}

/// A store over the test's bus.
#[allow(dead_code)]
pub async fn store(bus: &TestBus) -> JetStreamStore {
    store_at(&bus.url, &bus.name).await
}

/// A builder over the test's bus, without discovery (each test adds its handlers).
#[allow(dead_code)]
pub async fn builder(bus: &TestBus) -> tidings::EventBusBuilder {
    tidings::EventBus::builder()
        .discover(false)
        .store(store(bus).await)
}

/// A handler (named "stuck") of `event_type` that never finishes: it holds
/// every delivery it takes.
#[allow(dead_code)]
pub struct Stuck(pub &'static str);

impl tidings::EventHandler for Stuck {
    fn event_type(&self) -> &str {
        self.0
    }
    fn name(&self) -> &str {
        "stuck"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}
