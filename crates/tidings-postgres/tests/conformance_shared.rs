//! The PostgreSQL store opened with `connect_shared` passes the whole
//! conformance suite, durable and shared cases included, against the server
//! at `TIDINGS_TEST_POSTGRES_URL` (not run when it is unset; an unreachable
//! server then fails every case).

mod common;

use std::time::Duration;
use tidings_postgres::PgStore;

/// A bus name of its own per case, so that cases run side by side.
struct PgShared(common::TestBus, common::Outside);

/// Short, so that a "crashed" instance's deliveries are taken over quickly.
const LEASE: Duration = Duration::from_secs(1);

impl tidings_conformance::Backend for PgShared {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: true,
            shared: true,
            relay: true,
            spreads_keys: true,
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        let store = PgStore::connect_shared(&self.0.url, &self.0.name, LEASE)
            .await
            .expect("TIDINGS_TEST_POSTGRES_URL is set but the store does not connect");
        self.1.keep(&store);
        tidings::EventBus::builder().discover(false).store(store)
    }
    async fn write_outside(
        &self,
        bus: &tidings::EventBus,
        event_type: &str,
        data: serde_json::Value,
        key: Option<&str>,
    ) {
        self.1.write(&self.0.url, bus, event_type, data, key).await;
    }
}

tidings_conformance::conformance_tests!(shared: match common::TestBus::new("conf-shared") {
    Some(bus) => PgShared(bus, common::Outside::default()),
    None => return,
});

tidings_conformance::conformance_tests!(relay: match common::TestBus::new("conf-shared") {
    Some(bus) => PgShared(bus, common::Outside::default()),
    None => return,
});
