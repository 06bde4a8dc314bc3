//! The cases of a durable backend: they restart (or crash) the bus and
//! build the next one over the same storage: `conformance_tests!(durable: ..)`.

use crate::handlers::*;
use crate::wait::*;
use crate::Backend;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

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
