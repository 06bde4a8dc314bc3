//! The cases of a durable backend whose deliveries several buses share, as
//! processes on several machines would: `conformance_tests!(shared: ..)`.

use crate::handlers::*;
use crate::wait::*;
use crate::Backend;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// Shared: six keys, emitted from two buses in turn (each emit awaited): each
/// key's events are handled in emit order although both buses take them
/// (where a backend spreads keys, [`crate::Features::spreads_keys`], both must
/// have taken part).
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
    if b.features().spreads_keys {
        assert_eq!(by.len(), 2, "both buses took part: {by:?}");
    }
}

/// Shared: a keyed dead letter replayed by another bus while a later event
/// of its key runs in the first waits for it, then runs once, for its
/// handler alone (another handler of the type runs each event once), and
/// the replaying bus no longer lists it. The first bus has room for one
/// delivery: while it runs event 1, its relay waits for room for event 2
/// (unkeyed), so a replay it would take as the key's next waits for room
/// too; what the case checks is that the second bus, which has room, does
/// not run the replay at once. (PostgreSQL shared: the replay is written
/// pending as its key's newest; NATS: published again to its key
/// partition. Each backend's tests name what fails without its part.)
pub async fn a_keyed_dead_letter_replayed_elsewhere_waits_for_its_key(b: &impl Backend) {
    assert!(
        b.features().shared,
        "a shared case run on a backend that does not share deliveries"
    );
    let (worker, tally) = (FailsFirst::default(), Recorder::new("tally", "job"));
    let a = b
        .builder()
        .await
        .capacity(1)
        .handler(worker.clone())
        .handler(tally.clone())
        .build()
        .unwrap();
    a.emit("job", json!({ "n": 0 })).key("k").await.unwrap();
    idle(&a).await;
    assert_eq!(a.dead_letters().len(), 1, "event 0 dead-lettered");
    a.emit("job", json!({ "n": 1 })).key("k").await.unwrap();
    eventually("event 1 begun", || {
        worker.began.lock().unwrap().contains(&1)
    })
    .await;
    a.emit("job", json!({ "n": 2 })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another process, started while A runs event 1, replays event 0.
    let other = b.builder().await;
    let other = other.handler(worker.clone()).handler(tally.clone());
    let two = other.build().unwrap();
    let letter = two.dead_letters().into_iter().next().expect("listed");
    two.replay(letter.id).unwrap();
    let three = || worker.spans.lock().unwrap().len() >= 3;
    eventually_within(Duration::from_secs(15), "handled", three).await;
    idle(&a).await;
    idle(&two).await;
    let mut ran = worker.spans.lock().unwrap().clone();
    ran.retain(|(n, ..)| *n != 2);
    let [(first, _, first_ended), (second, second_began, _)] = ran[..] else {
        panic!("key k's two events, each once: {ran:?}")
    };
    assert_eq!(
        (first, second),
        (1, 0),
        "the replay ran after the key's event running"
    );
    assert!(
        second_began >= first_ended,
        "the replay ran beside its key's event"
    );
    assert_eq!(
        tally.numbers(),
        [0, 1, 2],
        "the other handler ran each once"
    );
    assert!(two.dead_letters().is_empty(), "replayed");
    a.shutdown(Duration::from_secs(5)).await;
    two.shutdown(Duration::from_secs(5)).await;
}
