//! What the bus asks of a `Store` and does with its answers, against a store
//! in memory that records every call and can be told to fail.

use futures_util::future::BoxFuture;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tidings::store::{Begun, Change, Recovered, Store, StoredDelivery, StoredEvent};
use tidings::{
    EmitError, Envelope, EventBus, EventHandler, HandlerError, HandlerOptions, StoreError,
};

#[derive(Clone, Default)]
struct Probe {
    calls: Arc<Mutex<Vec<String>>>,
    fail_appends: bool,
    append_delay: Option<Duration>,
    recovered: Arc<Mutex<Option<Recovered>>>,
    /// `begin` fails (the mark cannot be written).
    fail_begins: bool,
    /// How long a mark takes to write (5 ms when not set).
    begin_delay: Option<Duration>,
}

/// How the probe logs a delivery's claim: nothing for none, `#token` else.
fn claimed(claim: tidings::store::Claim) -> String {
    claim.token().map(|t| format!("#{t}")).unwrap_or_default()
}

impl Probe {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Store for Probe {
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        let handlers: Vec<String> = event.deliveries.iter().map(|d| d.handler.clone()).collect();
        self.calls.lock().unwrap().push(format!(
            "append {} {}",
            event.event_type,
            handlers.join(",")
        ));
        let fail = self.fail_appends;
        let delay = self.append_delay;
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if fail {
                Err(StoreError::Backend("disk full".into()))
            } else {
                Ok(())
            }
        })
    }
    fn settle(&self, d: tidings::store::DeliveryRef<'_>, change: Change) {
        let claim = claimed(d.claim);
        self.calls
            .lock()
            .unwrap()
            .push(format!("{}{claim} {change:?}", d.handler));
    }
    fn recover(
        &self,
        _: &[tidings::store::BoundHandler],
        _: tidings::store::Answers,
    ) -> Result<Recovered, StoreError> {
        Ok(self.recovered.lock().unwrap().take().unwrap_or_default())
    }
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.calls.lock().unwrap().push("flush".into());
        Box::pin(async { Ok(()) })
    }
    fn begin(
        &self,
        d: tidings::store::DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (calls, fail) = (self.calls.clone(), self.fail_begins);
        let delay = self.begin_delay.unwrap_or(Duration::from_millis(5));
        let written = format!("begin {}{} {attempt}", d.handler, claimed(d.claim));
        Box::pin(async move {
            // A write takes a while: the attempt must wait for it (logged
            // once written).
            tokio::time::sleep(delay).await;
            calls.lock().unwrap().push(written);
            if fail {
                Err(StoreError::Backend("disk full".into()))
            } else {
                Ok(())
            }
        })
    }
}

#[derive(Clone, Default)]
struct Count {
    name: &'static str,
    seen: Arc<Mutex<Vec<(i64, u32)>>>,
    fail_first: u32,
    /// Never finishes (after failing its first attempts).
    hang: bool,
    /// Where to log each call, beside the store's calls.
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl EventHandler for Count {
    fn event_type(&self) -> &str {
        "t"
    }
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(log) = &self.log {
            log.lock()
                .unwrap()
                .push(format!("handle {} {}", self.name, event.attempt()));
        }
        if event.attempt() <= self.fail_first {
            return Err(HandlerError::retryable("not yet"));
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        self.seen.lock().unwrap().push((n, event.attempt()));
        Ok(())
    }
}

fn count(name: &'static str) -> Count {
    Count {
        name,
        ..Count::default()
    }
}

#[tokio::test]
async fn a_failed_write_is_a_typed_error_and_queues_nothing() {
    let h = count("h");
    let probe = Probe {
        fail_appends: true,
        ..Probe::default()
    };
    let bus = EventBus::builder()
        .discover(false)
        .handler(h.clone())
        .store(probe)
        .build()
        .unwrap();
    let err = bus.emit("t", json!({"n": 1})).await.unwrap_err();
    assert!(
        matches!(err, EmitError::Store(StoreError::Backend(_))),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the event was not stored: store failure: disk full"
    );
    assert_eq!(bus.pending(), 0, "its place is free again");
    bus.wait_idle().await;
    assert!(h.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn try_emit_cannot_wait_for_the_write() {
    let bus = EventBus::builder()
        .discover(false)
        .handler(count("h"))
        .store(Probe::default())
        .build()
        .unwrap();
    let err = bus.try_emit("t", json!({"n": 1})).unwrap_err();
    assert!(matches!(err, EmitError::MustAwait), "{err}");
    assert_eq!(bus.pending(), 0);
    // Bad input is still refused first, for what it is.
    let err = bus.try_emit("bad type", json!({})).unwrap_err();
    assert!(matches!(err, EmitError::InvalidEventType { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_dropped_while_its_event_is_written_still_delivers_it() {
    let h = count("h");
    let probe = Probe {
        append_delay: Some(Duration::from_millis(50)),
        ..Probe::default()
    };
    let bus = EventBus::builder()
        .discover(false)
        .handler(h.clone())
        .store(probe)
        .build()
        .unwrap();
    let emit = std::future::IntoFuture::into_future(bus.emit("t", json!({"n": 9})));
    // Long enough to take its place and hand the event to the store, not to finish.
    assert!(tokio::time::timeout(Duration::from_millis(5), emit)
        .await
        .is_err());
    bus.wait_idle().await;
    assert_eq!(*h.seen.lock().unwrap(), vec![(9, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_outcome_reaches_the_store() {
    let (good, mut flaky) = (count("good"), count("flaky"));
    flaky.fail_first = 1;
    let probe = Probe::default();
    let bus = EventBus::builder()
        .discover(false)
        .handler(good)
        .handler(flaky)
        .store(probe.clone())
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 1})).await.unwrap();
    bus.wait_idle().await;
    let calls = probe.calls();
    assert_eq!(calls[0], "append t good,flaky");
    assert!(calls.contains(&"good Handled".to_owned()));
    let flaky_calls: Vec<&String> = calls.iter().filter(|c| c.starts_with("flaky")).collect();
    assert_eq!(
        flaky_calls,
        ["flaky Retrying { attempt: 2 }", "flaky Handled"]
    );

    let mut broken = count("broken");
    broken.fail_first = 9;
    let probe = Probe::default();
    let bus = EventBus::builder()
        .discover(false)
        .handler(broken)
        .store(probe.clone())
        .build()
        .unwrap();
    bus.emit("t", json!({"n": 1})).await.unwrap();
    bus.wait_idle().await;
    let id = bus.dead_letters()[0].id;
    bus.replay(id).unwrap();
    bus.wait_idle().await;
    bus.shutdown(Duration::from_secs(1)).await;
    let calls: Vec<String> = probe.calls().into_iter().skip(1).collect();
    assert_eq!(
        calls,
        [
            "broken Retrying { attempt: 2 }",
            "broken DeadLettered { attempts: 2, error: \"not yet\" }",
            "broken Replayed",
            "broken Retrying { attempt: 2 }",
            "broken DeadLettered { attempts: 2, error: \"not yet\" }",
            "flush",
        ]
    );
}

fn stored(event_type: &str, key: Option<&str>, n: i64, handlers: &[(&str, u32)]) -> StoredEvent {
    StoredEvent {
        id: uuid::Uuid::now_v7(),
        event_type: event_type.into(),
        key: key.map(Into::into),
        emitted_at: SystemTime::now(),
        data: json!({ "n": n, "_event_type": event_type }).to_string(),
        deliveries: handlers
            .iter()
            .map(|(h, attempt)| StoredDelivery::new(*h, *attempt))
            .collect(),
    }
}

/// A store handing back one event whose delivery to `handler` an earlier
/// process may have begun (`begun`), at `attempt`.
fn resumed(handler: &'static str, attempt: u32, begun: Begun) -> Probe {
    let mut event = stored("t", None, 1, &[(handler, attempt)]);
    event.deliveries[0].begun = begun;
    Probe {
        recovered: Arc::new(Mutex::new(Some(Recovered {
            events: vec![event],
            dead_letters: vec![],
        }))),
        ..Probe::default()
    }
}

/// A bus with the one handler `h`, over `probe`.
fn over(probe: &Probe, h: &Count) -> EventBus {
    EventBus::builder()
        .discover(false)
        .handler(h.clone())
        .store(probe.clone())
        .build()
        .unwrap()
}

/// A handler whose calls go to the store probe's log, in order with its calls.
fn logged(name: &'static str, probe: &Probe) -> Count {
    Count {
        name,
        log: Some(probe.calls.clone()),
        ..Count::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_an_earlier_process_may_have_begun_is_marked_before_each_attempt() {
    let probe = resumed("a", 1, Begun::Maybe);
    // Handed out with a claim: it comes back with each mark and settle.
    {
        let mut r = probe.recovered.lock().unwrap();
        let d = &mut r.as_mut().unwrap().events[0].deliveries[0];
        d.claim = tidings::store::Claim::new(7);
    }
    let mut h = logged("a", &probe);
    h.fail_first = 1;
    let bus = over(&probe, &h);
    bus.wait_idle().await;
    // A fresh event emitted now is never marked.
    bus.emit("t", json!({"n": 2})).await.unwrap();
    bus.wait_idle().await;
    // (The bus's own emit carries no claim.)
    assert_eq!(
        probe.calls(),
        [
            "begin a#7 1",
            "handle a 1",
            "a#7 Retrying { attempt: 2 }",
            "begin a#7 2",
            "handle a 2",
            "a#7 Handled",
            "append t a",
            "handle a 1",
            "a Retrying { attempt: 2 }",
            "handle a 2",
            "a Handled",
        ]
    );
    assert_eq!(*h.seen.lock().unwrap(), vec![(1, 2), (2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempt_counts_as_failed_then_the_next_is_made() {
    let probe = resumed("a", 1, Begun::Interrupted);
    let h = logged("a", &probe);
    let bus = over(&probe, &h);
    bus.wait_idle().await;
    assert_eq!(
        probe.calls(),
        [
            "a Retrying { attempt: 2 }",
            "begin a 2",
            "handle a 2",
            "a Handled"
        ],
        "attempt 1 is not made again"
    );
    let stats = bus.stats();
    let s = stats.handler("a").unwrap();
    assert_eq!(
        (s.interrupted, s.failed, s.retried, s.succeeded),
        (1, 1, 1, 1)
    );
    assert_eq!(s.latency.count, 1, "only the attempt that ran is timed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_last_attempt_is_dead_lettered_without_running() {
    let probe = resumed("a", 2, Begun::Interrupted);
    let h = logged("a", &probe);
    let bus = over(&probe, &h);
    bus.wait_idle().await;
    let error = "the process stopped during attempt 2 (it crashed or was killed)";
    assert_eq!(
        probe.calls(),
        [format!(
            "a DeadLettered {{ attempts: 2, error: \"{error}\" }}"
        )]
    );
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].error.as_str()), (2, error));
    assert_eq!(dead[0].event.data()["n"], 1);
    assert_eq!(bus.pending(), 0, "its place is freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_that_cannot_be_written_does_not_hold_the_delivery() {
    let mut probe = resumed("a", 1, Begun::Maybe);
    probe.fail_begins = true;
    let h = logged("a", &probe);
    let bus = over(&probe, &h);
    bus.wait_idle().await;
    assert_eq!(probe.calls(), ["begin a 1", "handle a 1", "a Handled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_clears_the_mark_of_the_attempt_it_abandons() {
    for (begun, abandoned) in [(Begun::Maybe, true), (Begun::Never, false)] {
        let probe = resumed("a", 1, begun);
        let mut h = logged("a", &probe);
        h.hang = true;
        let bus = over(&probe, &h);
        let log = probe.calls.clone();
        wait_until(|| log.lock().unwrap().iter().any(|c| c == "handle a 1")).await;
        let report = bus.shutdown(Duration::from_millis(20)).await;
        assert_eq!(report.abandoned.len(), 1);
        let calls = probe.calls();
        assert_eq!(
            calls.contains(&"a Abandoned { attempt: 1 }".to_owned()),
            abandoned,
            "{begun:?}: {calls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_a_mark_is_written_clears_it_after() {
    let mut probe = resumed("a", 1, Begun::Maybe);
    probe.begin_delay = Some(Duration::from_secs(3600));
    let h = logged("a", &probe);
    let bus = over(&probe, &h);
    let report = bus.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned.len(), 1);
    assert_eq!(
        probe.calls(),
        ["a Abandoned { attempt: 1 }", "flush"],
        "the attempt never ran; its mark, if written, is cleared"
    );
}

/// Waits (5 s at most) until `done` holds.
async fn wait_until(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_queues_what_it_can_and_leaves_hostile_rows_alone() {
    let (a, b) = (count("a"), count("b"));
    let recovered = Recovered {
        events: vec![
            stored("t", None, 1, &[("a", 1), ("b", 2)]),
            stored("t'; DROP TABLE events;--", None, 2, &[("a", 1)]),
            stored("t", Some("bad\u{0}key"), 3, &[("a", 1)]),
            stored("t", None, 4, &[("gone", 1), ("b", 1)]),
            stored("other", None, 5, &[("a", 1)]),
        ],
        dead_letters: vec![],
    };
    let probe = Probe {
        recovered: Arc::new(Mutex::new(Some(recovered))),
        ..Probe::default()
    };
    let bus = EventBus::builder()
        .discover(false)
        .handler(a.clone())
        .handler(b.clone())
        .store(probe.clone())
        .build()
        .unwrap();
    bus.wait_idle().await;
    assert_eq!(*a.seen.lock().unwrap(), vec![(1, 1)]);
    let mut seen_b = b.seen.lock().unwrap().clone();
    seen_b.sort_unstable();
    assert_eq!(seen_b, vec![(1, 2), (4, 1)], "attempts carried over");
    let handled = probe
        .calls()
        .iter()
        .filter(|c| c.ends_with("Handled"))
        .count();
    assert_eq!(handled, 3, "only the deliveries made are settled");
}

#[tokio::test]
async fn recovered_events_may_exceed_capacity_and_emits_wait_for_room() {
    let h = count("a");
    let recovered = Recovered {
        events: (0..5).map(|n| stored("t", None, n, &[("a", 1)])).collect(),
        dead_letters: vec![],
    };
    let probe = Probe {
        recovered: Arc::new(Mutex::new(Some(recovered))),
        ..Probe::default()
    };
    let bus = EventBus::builder()
        .discover(false)
        .capacity(2)
        .overflow(tidings::Overflow::Reject)
        .handler(h.clone())
        .store(probe)
        .build()
        .unwrap();
    assert_eq!(bus.pending(), 5, "all recovered events hold places");
    let err = bus.emit("t", json!({"n": 9})).await.unwrap_err();
    assert!(matches!(err, EmitError::QueueFull { capacity: 2 }));
    bus.wait_idle().await;
    bus.emit("t", json!({"n": 9})).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(h.seen.lock().unwrap().len(), 6);
}

/// A store whose events are written by others: each `claim` hands out what
/// is waiting, once.
#[derive(Clone, Default)]
struct Outboxed {
    waiting: Arc<Mutex<Vec<StoredEvent>>>,
    claims: Arc<std::sync::atomic::AtomicUsize>,
    changed: Arc<tokio::sync::Notify>,
}

impl Store for Outboxed {
    fn append(&self, _: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn settle(&self, _: tidings::store::DeliveryRef<'_>, _: Change) {}
    fn recover(
        &self,
        _: &[tidings::store::BoundHandler],
        _: tidings::store::Answers,
    ) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn delivery(&self) -> tidings::store::Delivery {
        tidings::store::Delivery::Relayed(Arc::new(self.clone()))
    }
}

impl tidings::store::Feed for Outboxed {
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut waiting = self.waiting.lock().unwrap();
        let n = limit.min(waiting.len());
        let events: Vec<StoredEvent> = waiting.drain(..n).collect();
        Box::pin(async move { Ok(events) })
    }
    fn changed(&self) -> BoxFuture<'static, ()> {
        let changed = self.changed.clone();
        Box::pin(async move { changed.notified().await })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_queues_what_others_wrote_within_capacity_and_stops_with_the_bus() {
    let store = Outboxed::default();
    let h = count("a");
    let bus = EventBus::builder()
        .discover(false)
        .capacity(2)
        .handler(h.clone())
        .store(store.clone())
        .build()
        .unwrap();
    store
        .waiting
        .lock()
        .unwrap()
        .extend((0..50).map(|n| stored("t", Some("k"), n, &[("a", 1)])));
    store.changed.notify_one();
    let started = std::time::Instant::now();
    while h.seen.lock().unwrap().len() < 50 {
        assert!(bus.pending() <= 2, "the relay never goes over capacity");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not all delivered"
        );
        tokio::task::yield_now().await;
    }
    let order: Vec<i64> = h.seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        order,
        (0..50).collect::<Vec<_>>(),
        "one key: in the order claimed"
    );
    drop(bus);
    // The relay holds the store; once it stops, only this test's handle is left.
    let started = std::time::Instant::now();
    while Arc::strong_count(&store.claims) > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the relay outlived its bus"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
