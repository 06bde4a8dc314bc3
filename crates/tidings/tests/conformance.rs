//! The memory backend passes the conformance suite (its non-durable cases).

struct Memory;

impl tidings_conformance::Backend for Memory {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: false,
            shared: false,
            relay: false,
            spreads_keys: false,
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        tidings::EventBus::builder().discover(false)
    }
}

tidings_conformance::conformance_tests!(Memory);
