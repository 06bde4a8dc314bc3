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
