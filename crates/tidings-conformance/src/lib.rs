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
//!     fn features(&self) -> tidings_conformance::Features { tidings_conformance::Features { durable: false, shared: false, relay: false } }
//!     async fn builder(&self) -> tidings::EventBusBuilder { tidings::EventBus::builder().discover(false) }
//! }
//! tidings_conformance::conformance_tests!(Memory);
//! // a durable backend: tidings_conformance::conformance_tests!(durable: Sqlite::new());
//! // one that several processes share: tidings_conformance::conformance_tests!(shared: Nats::new());
//! ```

pub mod crash;
pub mod faults;
pub mod scratch;

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventBusBuilder, EventHandler, HandlerError, HandlerOptions};

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

/// One handled delivery: its key, its `n`, its attempt.
type Seen = (Option<String>, i64, u32);

/// Records what a handler saw; fails the first `fail_first` attempts of each
/// event, or panics on events whose `n` is in `panic_on`.
#[derive(Clone, Default)]
struct Recorder {
    name: String,
    event_type: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    fail_first: u32,
    always_fail: bool,
    panic_on: Vec<i64>,
    attempts: u32,
    slow: Option<Duration>,
}

impl Recorder {
    fn new(name: &str, event_type: &str) -> Self {
        Self {
            name: name.into(),
            event_type: event_type.into(),
            attempts: 3,
            ..Self::default()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn numbers(&self) -> Vec<i64> {
        let mut n: Vec<i64> = self.seen().into_iter().map(|(_, n, _)| n).collect();
        n.sort_unstable();
        n
    }
}

impl EventHandler for Recorder {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(self.attempts)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        if let Some(d) = self.slow {
            tokio::time::sleep(d).await;
        }
        if self.panic_on.contains(&n) {
            panic!("handler {} panics on {n}", self.name);
        }
        if self.always_fail || event.attempt() <= self.fail_first {
            return Err(HandlerError::retryable(format!(
                "attempt {} fails",
                event.attempt()
            )));
        }
        tokio::task::yield_now().await;
        self.seen
            .lock()
            .unwrap()
            .push((event.key().map(str::to_owned), n, event.attempt()));
        Ok(())
    }
}

async fn emit_n(bus: &EventBus, event_type: &str, range: std::ops::Range<i64>, key: Option<&str>) {
    for n in range {
        let e = bus.emit(event_type, json!({ "n": n }));
        let e = match key {
            Some(k) => e.key(k),
            None => e,
        };
        assert!(e.await.expect("emit").is_queued());
    }
}

async fn idle(bus: &EventBus) {
    tokio::time::timeout(Duration::from_secs(30), bus.wait_idle())
        .await
        .expect("the bus went idle within 30 s");
}

/// Waits (10 s at most, looking every 5 ms) until `done` holds; `what`
/// names it in the failure.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    eventually_within(Duration::from_secs(10), what, done).await;
}

/// Waits until `done` holds, looking every 5 ms, for `limit` at most: for a
/// backend's own tests, which wait for a bus to reach a state.
///
/// # Panics
/// When `done` does not hold within `limit`, naming `what`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let start = std::time::Instant::now();
/// let later = || start.elapsed() > Duration::from_millis(20);
/// tidings_conformance::eventually_within(Duration::from_secs(1), "20 ms passed", later).await;
/// # }
/// ```
pub async fn eventually_within(limit: Duration, what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {limit:?}"));
}

/// Waits until the bus holds `n` events: at once where an emit queues its
/// event, after the relay's claim where deliveries come back through the
/// store (a shared-delivery store: NATS JetStream).
async fn holds(bus: &EventBus, n: usize) {
    eventually("the bus held the events", || bus.pending() >= n).await;
}

/// Waits until `handler`'s figures satisfy `done`.
async fn until(bus: &EventBus, handler: &str, done: impl Fn(&tidings::HandlerStats) -> bool) {
    eventually("the handler got there", || {
        bus.stats().handler(handler).is_some_and(&done)
    })
    .await;
}

/// Two handlers of one type each handle every event exactly once.
pub async fn every_handler_gets_every_event_once(b: &impl Backend) {
    let (a, c) = (Recorder::new("a", "t"), Recorder::new("c", "t"));
    let bus = b
        .builder()
        .await
        .handler(a.clone())
        .handler(c.clone())
        .build()
        .unwrap();
    emit_n(&bus, "t", 0..200, None).await;
    idle(&bus).await;
    let all: Vec<i64> = (0..200).collect();
    assert_eq!(a.numbers(), all);
    assert_eq!(c.numbers(), all);
    assert_eq!(bus.stats().handler("a").unwrap().succeeded, 200);
}

/// Events of one key reach a handler in emit order, even when some fail first.
pub async fn one_key_is_handled_in_emit_order(b: &impl Backend) {
    let mut h = Recorder::new("ordered", "k");
    h.fail_first = 1;
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    for n in 0..50 {
        let key = if n % 2 == 0 { "even" } else { "odd" };
        bus.emit("k", json!({ "n": n })).key(key).await.unwrap();
    }
    idle(&bus).await;
    let seen = h.seen();
    for key in ["even", "odd"] {
        let order: Vec<i64> = seen
            .iter()
            .filter(|(k, _, _)| k.as_deref() == Some(key))
            .map(|(_, n, _)| *n)
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "key {key} in emit order");
        assert_eq!(order.len(), 25);
    }
}

/// A handler that always fails is retried up to its attempts, then dead-lettered;
/// the other handler of the type is unaffected.
pub async fn a_failing_handler_is_retried_then_dead_lettered_alone(b: &impl Backend) {
    let mut bad = Recorder::new("bad", "f");
    bad.always_fail = true;
    let good = Recorder::new("good", "f");
    let bus = b
        .builder()
        .await
        .handler(bad.clone())
        .handler(good.clone())
        .build()
        .unwrap();
    emit_n(&bus, "f", 0..5, None).await;
    idle(&bus).await;
    assert_eq!(good.numbers(), vec![0, 1, 2, 3, 4]);
    let stats = bus.stats();
    let s = stats.handler("bad").unwrap();
    assert_eq!((s.failed, s.retried, s.dead_lettered), (15, 10, 5));
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 5);
    assert!(dead.iter().all(|d| d.handler == "bad" && d.attempts == 3));
}

/// Replaying a dead letter hands the event to its handler again, from attempt 1.
pub async fn a_replayed_dead_letter_is_handled(b: &impl Backend) {
    let mut h = Recorder::new("flaky", "r");
    h.attempts = 1;
    h.fail_first = 1;
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    emit_n(&bus, "r", 7..8, None).await;
    idle(&bus).await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    // Attempt 1 fails by design; the replay is attempt 1 again, so it fails
    // again and a new dead letter is made: the replay reached the handler.
    let receipt = bus.replay(dead[0].id).unwrap();
    assert_eq!(receipt.id(), dead[0].event.id());
    idle(&bus).await;
    assert_eq!(bus.stats().handler("flaky").unwrap().failed, 2);
    assert_eq!(bus.dead_letters().len(), 1);
    assert!(
        bus.replay(dead[0].id).is_err(),
        "a replayed dead letter is gone"
    );
}

/// A panic in one handler is that handler's failure alone.
pub async fn a_panicking_handler_touches_nobody(b: &impl Backend) {
    let mut p = Recorder::new("panics", "p");
    p.panic_on = vec![1];
    p.attempts = 1;
    let calm = Recorder::new("calm", "p");
    let bus = b
        .builder()
        .await
        .handler(p.clone())
        .handler(calm.clone())
        .build()
        .unwrap();
    emit_n(&bus, "p", 0..3, None).await;
    idle(&bus).await;
    assert_eq!(calm.numbers(), vec![0, 1, 2]);
    assert_eq!(p.numbers(), vec![0, 2]);
    assert_eq!(bus.stats().handler("panics").unwrap().panicked, 1);
}

/// Hostile names, keys and payloads are typed errors, and nothing is queued.
pub async fn invalid_input_is_a_typed_error(b: &impl Backend) {
    let h = Recorder::new("h", "t");
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    let e = bus
        .emit("t'; DROP TABLE events;--", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, tidings::EmitError::InvalidEventType { .. }),
        "{e}"
    );
    let e = bus.emit("t", json!({})).key("a\u{0}b").await.unwrap_err();
    assert!(matches!(e, tidings::EmitError::InvalidKey { .. }), "{e}");
    let e = bus.emit("t", json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(e, tidings::EmitError::InvalidPayload { .. }),
        "{e}"
    );
    idle(&bus).await;
    assert_eq!(bus.pending(), 0);
    assert!(h.seen().is_empty());
}

/// A shutdown past its deadline names every delivery it abandons; durable
/// backends say they kept them.
pub async fn shutdown_names_what_it_abandons(b: &impl Backend) {
    let mut h = Recorder::new("slow", "s");
    h.slow = Some(Duration::from_secs(60));
    let bus = b.builder().await.handler(h).build().unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(bus.emit("s", json!({ "n": n })).await.unwrap().id());
    }
    holds(&bus, 3).await;
    let report = bus.shutdown(Duration::from_millis(50)).await;
    ids.sort_unstable();
    assert_eq!(report.abandoned_events(), ids);
    assert_eq!(report.kept, b.features().durable);
}

/// Relay: events written outside the bus (each in the application's own
/// transaction) reach its handler through the relay, each once, a key's in
/// the order written.
pub async fn events_written_outside_the_bus_are_delivered_by_its_relay(b: &impl Backend) {
    assert!(b.features().relay, "the backend says it has a relay");
    let h = Recorder::new("outside", "outside");
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    for n in 0..20 {
        let key = if n % 2 == 0 { Some("even") } else { None };
        b.write_outside(&bus, "outside", json!({ "n": n }), key)
            .await;
    }
    eventually("the relay delivered the 20 events", || h.seen().len() >= 20).await;
    idle(&bus).await;
    assert_eq!(h.numbers(), (0..20).collect::<Vec<_>>(), "each once");
    let evens: Vec<i64> = h
        .seen()
        .iter()
        .filter(|(k, _, _)| k.as_deref() == Some("even"))
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(
        evens,
        (0..20).step_by(2).collect::<Vec<_>>(),
        "a key in the order written"
    );
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Shared: two buses with the same handler and a third with none (a front
/// end that only emits) over one backend: every event is handled exactly
/// once, by one of the two.
pub async fn each_delivery_goes_to_one_of_the_buses_sharing_it(b: &impl Backend) {
    assert!(
        b.features().shared,
        "a shared case run on a backend that does not share deliveries"
    );
    let worker = Recorder::new("worker", "job");
    let one = b.builder().await.handler(worker.clone()).build().unwrap();
    let two = b.builder().await.handler(worker.clone()).build().unwrap();
    let front = b.builder().await.build().unwrap();
    emit_n(&front, "job", 0..300, None).await;
    idle(&one).await;
    idle(&two).await;
    assert_eq!(
        worker.numbers(),
        (0..300).collect::<Vec<_>>(),
        "each exactly once"
    );
    let by_one = one.stats().handler("worker").unwrap().succeeded;
    let by_two = two.stats().handler("worker").unwrap().succeeded;
    assert_eq!(by_one + by_two, 300);
}

/// Per key, the numbers of the events handled, in order, and which bus handled each.
type KeyLog = Arc<Mutex<BTreeMap<String, Vec<(i64, &'static str)>>>>;

/// Logs the "step" events it handles, pausing on every fourth.
#[derive(Clone)]
struct Ordered {
    bus: &'static str,
    log: KeyLog,
}

impl EventHandler for Ordered {
    fn event_type(&self) -> &str {
        "step"
    }
    fn name(&self) -> &str {
        "ordered"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        // Slow enough, now and then, that the other bus would take the
        // key's next event meanwhile if it were free to.
        if n % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let key = event.key().unwrap_or_default().to_owned();
        self.log
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push((n, self.bus));
        Ok(())
    }
}

/// Shared: six keys, emitted from two buses in turn (each emit awaited): each
/// key's events are handled in emit order although both buses take them.
pub async fn a_key_is_handled_in_emit_order_across_the_buses_sharing_it(b: &impl Backend) {
    assert!(
        b.features().shared,
        "a shared case run on a backend that does not share deliveries"
    );
    let log = KeyLog::default();
    let ordered = |bus| Ordered {
        bus,
        log: log.clone(),
    };
    let one = b.builder().await.handler(ordered("one")).build().unwrap();
    let two = b.builder().await.handler(ordered("two")).build().unwrap();
    const KEYS: i64 = 6;
    const PER_KEY: i64 = 25;
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            let bus = if (n + k) % 2 == 0 { &one } else { &two };
            bus.emit("step", json!({ "n": n }))
                .key(format!("key-{k}"))
                .await
                .unwrap();
        }
    }
    idle(&one).await;
    idle(&two).await;
    one.shutdown(Duration::from_secs(5)).await;
    two.shutdown(Duration::from_secs(5)).await;
    let log = log.lock().unwrap();
    assert_eq!(log.len(), KEYS as usize);
    let mut by = BTreeMap::new();
    for (key, seen) in log.iter() {
        let order: Vec<i64> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(order, (0..PER_KEY).collect::<Vec<_>>(), "{key}: {seen:?}");
        for (_, bus) in seen {
            *by.entry(*bus).or_insert(0) += 1;
        }
    }
    assert_eq!(by.len(), 2, "both buses took part: {by:?}");
}

fn durable(b: &impl Backend) {
    assert!(
        b.features().durable,
        "a durable case run on a backend that is not durable"
    );
}

/// Durable: what a shutdown abandoned is delivered by the next bus.
pub async fn acknowledged_events_survive_a_shutdown_past_its_deadline(b: &impl Backend) {
    durable(b);
    let mut slow = Recorder::new("worker", "d");
    slow.slow = Some(Duration::from_secs(60));
    let bus = b.builder().await.handler(slow).build().unwrap();
    emit_n(&bus, "d", 0..20, None).await;
    holds(&bus, 20).await;
    let report = bus.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned.len(), 20);
    drop(bus);
    let fast = Recorder::new("worker", "d");
    let bus = b.builder().await.handler(fast.clone()).build().unwrap();
    idle(&bus).await;
    assert_eq!(fast.numbers(), (0..20).collect::<Vec<_>>());
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Durable: a delivery that was handled is not made again by the next bus,
/// and one handler's pending delivery does not bring back the other's.
pub async fn handled_deliveries_are_not_made_again(b: &impl Backend) {
    durable(b);
    let done = Recorder::new("done", "h");
    let mut stuck = Recorder::new("stuck", "h");
    stuck.slow = Some(Duration::from_secs(60));
    let bus = b
        .builder()
        .await
        .handler(done.clone())
        .handler(stuck)
        .build()
        .unwrap();
    emit_n(&bus, "h", 0..10, None).await;
    until(&bus, "done", |h| h.succeeded >= 10).await;
    bus.shutdown(Duration::from_millis(20)).await;
    drop(bus);
    let done2 = Recorder::new("done", "h");
    let stuck2 = Recorder::new("stuck", "h");
    let bus = b
        .builder()
        .await
        .handler(done2.clone())
        .handler(stuck2.clone())
        .build()
        .unwrap();
    idle(&bus).await;
    assert!(
        done2.seen().is_empty(),
        "handled deliveries came back: {:?}",
        done2.seen()
    );
    assert_eq!(stuck2.numbers(), (0..10).collect::<Vec<_>>());
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);
    let bus = b
        .builder()
        .await
        .handler(Recorder::new("done", "h"))
        .build()
        .unwrap();
    idle(&bus).await;
    assert_eq!(
        bus.stats().handler("done").unwrap().succeeded,
        0,
        "nothing left after all were handled"
    );
}

/// Durable: dead letters are listed again by the next bus and can be
/// replayed there; a retrying delivery keeps its attempt count.
pub async fn dead_letters_and_attempts_survive_a_restart(b: &impl Backend) {
    durable(b);
    let mut bad = Recorder::new("bad", "x");
    bad.always_fail = true;
    bad.attempts = 2;
    let bus = b.builder().await.handler(bad).build().unwrap();
    emit_n(&bus, "x", 0..3, None).await;
    idle(&bus).await;
    assert_eq!(bus.dead_letters().len(), 3);
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);

    let fixed = Recorder::new("bad", "x");
    let bus = b.builder().await.handler(fixed.clone()).build().unwrap();
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 3);
    assert!(dead
        .iter()
        .all(|d| d.attempts == 2 && d.error.contains("attempt 2 fails")));
    let mut numbers: Vec<i64> = dead
        .iter()
        .map(|d| d.event.data()["n"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 1, 2]);
    for d in &dead {
        bus.replay(d.id).unwrap();
    }
    idle(&bus).await;
    assert_eq!(fixed.numbers(), vec![0, 1, 2]);
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);
    let bus = b
        .builder()
        .await
        .handler(Recorder::new("bad", "x"))
        .build()
        .unwrap();
    assert!(
        bus.dead_letters().is_empty(),
        "replayed and handled: gone for good"
    );

    // An attempt count survives: a handler failing attempt 1 is restarted
    // while it waits to retry, and the next bus makes attempt 2.
    let mut once = Recorder::new("once", "y");
    once.fail_first = 1;
    once.attempts = 5;
    drop(bus);
    let bus = b
        .builder()
        .await
        .handler(RetryLater(once.clone()))
        .build()
        .unwrap();
    emit_n(&bus, "y", 0..1, None).await;
    until(&bus, "once", |h| h.retried >= 1).await;
    bus.shutdown(Duration::from_millis(10)).await;
    drop(bus);
    let bus = b.builder().await.handler(once.clone()).build().unwrap();
    idle(&bus).await;
    assert_eq!(once.seen().len(), 1);
    assert_eq!(once.seen()[0].2, 2, "the next bus made attempt 2, not 1");
}

/// A recorder whose retry waits an hour, so that a restart catches it waiting.
#[derive(Clone)]
struct RetryLater(Recorder);

impl EventHandler for RetryLater {
    fn event_type(&self) -> &str {
        self.0.event_type()
    }
    fn name(&self) -> &str {
        self.0.name()
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(self.0.attempts)
            .backoff(tidings::Backoff::fixed(Duration::from_secs(3600)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0.handle(event).await
    }
}

/// Durable: a discarded dead letter is gone for good (the next bus does not
/// list it), and the others stay.
pub async fn a_discarded_dead_letter_stays_discarded(b: &impl Backend) {
    durable(b);
    let mut bad = Recorder::new("bad", "z");
    bad.always_fail = true;
    bad.attempts = 1;
    let bus = b.builder().await.handler(bad.clone()).build().unwrap();
    emit_n(&bus, "z", 0..2, None).await;
    idle(&bus).await;
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 2);
    let gone = bus.discard(dead[0].id).expect("listed");
    assert_eq!(gone.event.id(), dead[0].event.id());
    assert!(bus.discard(dead[0].id).is_none(), "once");
    assert_eq!(bus.dead_letters().len(), 1);
    bus.shutdown(Duration::from_secs(5)).await;
    drop(bus);
    let bus = b.builder().await.handler(bad).build().unwrap();
    let kept: Vec<_> = bus.dead_letters().iter().map(|d| d.event.id()).collect();
    assert_eq!(kept, [dead[1].event.id()], "only the other is listed");
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Durable: events of one key left pending are handled in emit order by the next bus.
pub async fn key_order_holds_across_a_restart(b: &impl Backend) {
    durable(b);
    let mut stuck = Recorder::new("ordered", "o");
    stuck.slow = Some(Duration::from_secs(60));
    let bus = b.builder().await.handler(stuck).build().unwrap();
    for n in 0..30 {
        let key = ["a", "b", "c"][n as usize % 3];
        bus.emit("o", json!({ "n": n })).key(key).await.unwrap();
    }
    bus.shutdown(Duration::from_millis(10)).await;
    drop(bus);
    let h = Recorder::new("ordered", "o");
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    idle(&bus).await;
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (k, n, _) in h.seen() {
        by_key.entry(k.unwrap()).or_default().push(n);
    }
    assert_eq!(by_key.len(), 3);
    for (k, order) in by_key {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "key {k}");
        assert_eq!(order.len(), 10);
    }
}

/// Counts its calls by attempt, and never finishes one: the process it runs
/// in stops in the middle (see [`as_a_process`]).
#[derive(Clone, Default)]
struct Poison {
    attempts: Arc<Mutex<Vec<u32>>>,
}

impl Poison {
    fn calls(&self) -> Vec<u32> {
        self.attempts.lock().unwrap().clone()
    }
}

impl EventHandler for Poison {
    fn event_type(&self) -> &str {
        "poison"
    }
    fn name(&self) -> &str {
        "poison"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.attempts.lock().unwrap().push(event.attempt());
        std::future::pending().await
    }
}

/// Runs a bus over `b` as a process of its own would, on a runtime of its
/// own in a thread of its own (emitting one `poison` event first if
/// `emit`), until the handler began one more attempt or the delivery is a
/// dead letter; then drops the runtime with everything on it, as a crash
/// would: nothing is shut down, flushed or settled. Returns the dead
/// letters the bus listed.
fn as_a_process<B: Backend + Sync>(b: &B, h: &Poison, emit: bool) -> Vec<tidings::DeadLetter> {
    let begun = h.calls().len();
    let run = || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dead = rt.block_on(async {
            let bus = b.builder().await.handler(h.clone()).build().unwrap();
            if emit {
                emit_n(&bus, "poison", 0..1, None).await;
            }
            // A shared store hands the delivery back once its `ack_wait`
            // has passed: longer than the other cases wait.
            eventually_within(
                Duration::from_secs(30),
                "an attempt began or the delivery was dead-lettered",
                || h.calls().len() > begun || !bus.dead_letters().is_empty(),
            )
            .await;
            bus.dead_letters()
        });
        drop(rt);
        dead
    };
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| s.spawn(run).join().expect("the process ran"))
    })
}

/// Durable: a delivery whose handler stops the process (an abort, an
/// out-of-memory kill) comes back after the crash, and each attempt it
/// makes from then on is marked begun in the store first; an attempt
/// marked and never ended counts as failed. With two attempts, it is
/// dead-lettered by the fourth process, having run three times: the first
/// crash (a fresh delivery is never marked) is free.
pub async fn a_delivery_that_stops_the_process_is_dead_lettered_after_its_attempts(
    b: &(impl Backend + Sync),
) {
    durable(b);
    let h = Poison::default();
    assert!(as_a_process(b, &h, true).is_empty());
    assert_eq!(h.calls(), [1], "the first process began attempt 1");
    assert!(as_a_process(b, &h, false).is_empty());
    assert_eq!(
        h.calls(),
        [1, 1],
        "attempt 1 again: the first crash is free"
    );
    assert!(as_a_process(b, &h, false).is_empty());
    assert_eq!(
        h.calls(),
        [1, 1, 2],
        "attempt 1 was marked and never ended: attempt 2"
    );
    // The fourth process finds attempt 2 (the last) interrupted too.
    let dead = as_a_process(b, &h, false);
    assert_eq!(h.calls(), [1, 1, 2], "the handler is not called again");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0].error.contains("stopped during attempt 2"),
        "{}",
        dead[0].error
    );
    // That process stopped before its outcome was surely written (outcomes
    // are not awaited): the next bus lists the dead letter, or finds the
    // delivery interrupted at its last attempt again and dead-letters it
    // itself. Either way no attempt is made.
    let bus = b.builder().await.handler(h.clone()).build().unwrap();
    idle(&bus).await;
    let dead = bus.dead_letters();
    assert!(!dead.is_empty(), "the dead letter is kept");
    assert!(dead
        .iter()
        .all(|d| d.attempts == 2 && d.handler == "poison"));
    assert_eq!(h.calls(), [1, 1, 2], "the handler is not called again");
    assert_eq!(bus.stats().handler("poison").unwrap().succeeded, 0);
    bus.shutdown(Duration::from_secs(5)).await;
}
