//! The PostgreSQL store passes the whole conformance suite, durable cases
//! included, against the server at `TIDINGS_TEST_POSTGRES_URL` (not run when
//! it is unset; an unreachable server then fails every case).

mod common;

use tidings_postgres::PgStore;

/// A bus name of its own per case, so that cases run side by side.
struct Pg(common::TestBus, common::Outside);

impl Pg {
    fn from_env() -> Option<Self> {
        common::TestBus::new("conformance").map(|bus| Pg(bus, common::Outside::default()))
    }
}

impl tidings_conformance::Backend for Pg {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: true,
            shared: false,
            relay: true,
            spreads_keys: false,
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        let store = PgStore::connect(&self.0.url, &self.0.name)
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

tidings_conformance::conformance_tests!(durable: match Pg::from_env() {
    Some(pg) => pg,
    None => return,
});

tidings_conformance::conformance_tests!(relay: match Pg::from_env() {
    Some(pg) => pg,
    None => return,
});
