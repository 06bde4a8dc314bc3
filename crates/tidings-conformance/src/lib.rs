//! # The one suite every tidings backend passes
//!
//! A backend says what it promises in [`Features`] and how to make a bus over
//! it in [`Backend::builder`]; [`conformance_tests!`] then expands to one
//! `#[tokio::test]` per case: the cases every backend passes, with
//! `durable:` also those of a durable backend, and with `shared:` those of
//! a durable backend whose deliveries several buses share (each such case
//! fails at once if the backend's `Features` do not say so). `relay:` (a
//! second invocation) adds the cases of a backend that delivers events
//! written outside the bus (the outbox).
//!
//! The durable cases "restart" the bus: they shut it down, drop it, then
//! build a new bus over the same backend, as a new process would. One case
//! "crashes" it instead: the bus runs on a runtime of its own, in a thread of
//! its own, and that runtime is dropped in the middle of a handler, so that
//! nothing is shut down or settled. A kill of the process is a separate test
//! of each durable backend (it needs a child process: [`crash`]).
//!
//! ```ignore
//! struct Memory;
//! impl tidings_conformance::Backend for Memory {
//!     fn features(&self) -> tidings_conformance::Features { tidings_conformance::Features { durable: false, shared: false, relay: false, spreads_keys: false } }
//!     async fn builder(&self) -> tidings::EventBusBuilder { tidings::EventBus::builder().discover(false) }
//! }
//! tidings_conformance::conformance_tests!(Memory);
//! // a durable backend: tidings_conformance::conformance_tests!(durable: Sqlite::new());
//! // one that several processes share: tidings_conformance::conformance_tests!(shared: Nats::new());
//! ```

mod cases;
pub mod crash;
pub mod faults;
mod handlers;
pub use handlers::FailsFirst;
pub mod hostile;
pub mod scratch;
mod wait;

pub use cases::*;
pub use wait::eventually_within;

use tidings::{EventBus, EventBusBuilder};

/// What a backend promises.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Events acknowledged by `emit` survive the bus (a shutdown past its
    /// deadline, a drop, a crash) and are delivered by the next bus.
    pub durable: bool,
    /// Several buses may run over the backend at once, as processes on
    /// several machines would, and each delivery goes to one of them
    /// (`tidings::store::Delivery::Shared`: NATS JetStream).
    pub shared: bool,
    /// Events written outside the bus (the transactional outbox) are
    /// delivered by its relay ([`Backend::write_outside`];
    /// `tidings::store::Delivery::Relayed` or `Shared`: PostgreSQL).
    pub relay: bool,
    /// With `shared`: consecutive deliveries of one key may go to different
    /// buses sharing it (each settled before the next goes out). False
    /// where a key stays with one bus while that bus holds it (NATS key
    /// partitions pinned to one process: a short run may see one bus take
    /// every key); the cases then check the order only.
    pub spreads_keys: bool,
}

/// A backend under test: its promises and a fresh builder over it (no
/// discovery; the suite adds its own handlers). Each call after the first is
/// a restart over the same storage.
pub trait Backend {
    /// What it promises.
    fn features(&self) -> Features;
    /// A builder over the backend's storage (async: a networked store connects).
    fn builder(&self) -> impl std::future::Future<Output = EventBusBuilder> + Send;
    /// Writes an event for `bus` as the application would outside it (the
    /// transactional outbox: its own transaction), for a backend whose
    /// [`Features::relay`] is set. The default panics: say `relay: false`.
    fn write_outside(
        &self,
        bus: &EventBus,
        event_type: &str,
        data: serde_json::Value,
        key: Option<&str>,
    ) -> impl std::future::Future<Output = ()> + Send {
        let _ = (bus, event_type, data, key);
        async { panic!("this backend writes no events outside the bus (Features::relay is false)") }
    }
}

/// Expands to one test per case of the suite, for the backend `$make` builds.
#[macro_export]
macro_rules! conformance_tests {
    (shared: $make:expr) => {
        $crate::conformance_tests!(durable: $make);
        $crate::conformance_tests!(@cases $make;
            each_delivery_goes_to_one_of_the_buses_sharing_it,
            a_key_is_handled_in_emit_order_across_the_buses_sharing_it,
            a_keyed_dead_letter_replayed_elsewhere_waits_for_its_key,
        );
    };
    (durable: $make:expr) => {
        $crate::conformance_tests!($make);
        $crate::conformance_tests!(@cases $make;
            acknowledged_events_survive_a_shutdown_past_its_deadline,
            handled_deliveries_are_not_made_again,
            dead_letters_and_attempts_survive_a_restart,
            key_order_holds_across_a_restart,
            a_discarded_dead_letter_stays_discarded,
            a_delivery_that_stops_the_process_is_dead_lettered_after_its_attempts,
        );
    };
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            every_handler_gets_every_event_once,
            one_key_is_handled_in_emit_order,
            a_failing_handler_is_retried_then_dead_lettered_alone,
            a_replayed_dead_letter_is_handled,
            a_panicking_handler_touches_nobody,
            invalid_input_is_a_typed_error,
            shutdown_names_what_it_abandons,
        );
    };
    (relay: $make:expr) => {
        $crate::conformance_tests!(@cases $make;
            events_written_outside_the_bus_are_delivered_by_its_relay,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make;
                $crate::$case(&backend).await;
            }
        )*
    };
}
