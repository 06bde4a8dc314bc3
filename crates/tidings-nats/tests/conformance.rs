//! The JetStream store passes the whole conformance suite, durable and
//! shared cases included, against the server at `TIDINGS_TEST_NATS_URL` (not run when it
//! is unset; an unreachable server then fails every case).

mod common;

/// A bus name of its own per case, so that cases run side by side.
struct Nats(common::TestBus);

impl tidings_conformance::Backend for Nats {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: true,
            shared: true,
            relay: false,
            spreads_keys: !common::pinned(),
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        common::builder(&self.0).await
    }
}

tidings_conformance::conformance_tests!(shared: match common::TestBus::new("conf") {
    Some(bus) => Nats(bus),
    None => return,
});
