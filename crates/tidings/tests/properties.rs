//! Property tests: backoff stays within its bounds; per-key order survives random failures.

mod common;
use common::{bus, FnHandler, Log};
use proptest::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tidings::{Backoff, HandlerError, HandlerOptions};

proptest! {
    #[test]
    fn backoff_delay_is_within_ceiling_and_jitter_floor(
        initial_ms in 1u64..10_000,
        extra_ms in 0u64..100_000,
        multiplier in 1.0f64..10.0,
        jitter in 0.0f64..=1.0,
        failures in 1u32..200,
    ) {
        let b = Backoff::exponential(Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms))
            .with_multiplier(multiplier)
            .with_jitter(jitter);
        let ceiling = b.ceiling(failures);
        prop_assert!(ceiling <= b.max);
        prop_assert!(ceiling >= b.initial.min(b.max));
        let d = b.delay(failures);
        prop_assert!(d <= ceiling);
        let floor = ceiling.mul_f64(1.0 - jitter);
        prop_assert!(d + Duration::from_nanos(1) >= floor, "{d:?} < {floor:?}");
    }

    #[test]
    fn backoff_ceiling_never_shrinks(initial_ms in 1u64..1000, multiplier in 1.0f64..4.0, failures in 1u32..100) {
        let b = Backoff::exponential(Duration::from_millis(initial_ms), Duration::from_secs(60)).with_multiplier(multiplier);
        prop_assert!(b.ceiling(failures + 1) >= b.ceiling(failures));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random events over a few keys, each failing a random number of times
    /// (some never succeed): for every key, each handler sees that key's
    /// events complete in emit order, and every event ends (success or dead letter).
    #[test]
    fn per_key_order_holds_under_random_failures(
        events in prop::collection::vec((0usize..4, 0u32..4), 1..60),
        concurrency in 1usize..8,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let done: Log<(String, u64)> = Log::default();
            let d = done.clone();
            let bus = bus()
                .handler(
                    FnHandler::new("H", "t", move |e| {
                        let d = d.clone();
                        async move {
                            let fails = e.data()["fails"].as_u64().unwrap() as u32;
                            let n = e.data()["n"].as_u64().unwrap();
                            tokio::time::sleep(Duration::from_millis(n % 5)).await;
                            if e.attempt() <= fails {
                                return Err(HandlerError::retryable("random failure"));
                            }
                            d.push((e.key().unwrap().to_owned(), n));
                            Ok(())
                        }
                    })
                    .options(
                        HandlerOptions::default()
                            .attempts(3)
                            .concurrency(concurrency)
                            .backoff(Backoff::exponential(Duration::from_millis(1), Duration::from_millis(20))),
                    ),
                )
                .build()
                .unwrap();
            for (n, (key, fails)) in events.iter().enumerate() {
                bus.emit("t", json!({"n": n, "fails": fails})).key(format!("k{key}")).await.unwrap();
            }
            bus.wait_idle().await;

            let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
            for (n, (key, fails)) in events.iter().enumerate() {
                if *fails < 3 {
                    expected.entry(format!("k{key}")).or_default().push(n as u64);
                }
            }
            let mut got: HashMap<String, Vec<u64>> = HashMap::new();
            for (k, n) in done.get() {
                got.entry(k).or_default().push(n);
            }
            assert_eq!(got, expected);
            let s = bus.stats();
            let h = s.handler("H").unwrap();
            assert_eq!(h.succeeded + h.dead_lettered, events.len() as u64);
        });
    }
}
