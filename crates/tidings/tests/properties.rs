//! Property tests: backoff stays within its bounds; per-key order survives random failures;
//! hostile emits are typed errors and never reach the store.

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

/// An event as it reached the store: type, key, data.
type Row = (String, Option<String>, String);

/// Records what reaches the store.
#[derive(Clone, Default)]
struct Written(std::sync::Arc<std::sync::Mutex<Vec<Row>>>);

impl tidings::Store for Written {
    fn append(
        &self,
        e: tidings::store::StoredEvent,
    ) -> futures_util::future::BoxFuture<'static, Result<(), tidings::StoreError>> {
        self.0.lock().unwrap().push((e.event_type, e.key, e.data));
        Box::pin(async { Ok(()) })
    }
    fn settle(&self, _: tidings::store::DeliveryRef<'_>, _: tidings::store::Change) {}
    fn recover(
        &self,
        _: &[tidings::store::BoundHandler],
        _: tidings::store::Answers,
    ) -> Result<tidings::store::Recovered, tidings::StoreError> {
        Ok(tidings::store::Recovered::default())
    }
    fn flush(&self) -> futures_util::future::BoxFuture<'static, Result<(), tidings::StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the caller passes, an emit on a durable bus either succeeds
    /// (type, key and payload all valid) or fails with the typed error of
    /// one of the invalid parts, in a message of one bounded line; it never
    /// panics, and only valid events reach the store.
    #[test]
    fn hostile_emits_are_typed_errors_and_never_reach_the_store(
        event_type in prop_oneof![Just("t".to_owned()), "[a-z_.:-]{1,20}", ".{0,160}"],
        key in prop::option::of(prop_oneof!["[a-z0-9-]{1,12}", ".{0,300}"]),
        payload in any_json(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let written = Written::default();
        let result = rt.block_on(async {
            let noop = FnHandler::new("h", "t", |_e| async { Ok(()) });
            let bus = bus().handler(noop).store(written.clone()).build().unwrap();
            let emit = bus.emit(&event_type, payload.clone());
            let emit = match &key { Some(k) => emit.key(k.clone()), None => emit };
            emit.await
        });
        let type_ok = tidings::is_valid_event_type(&event_type);
        let key_ok = key.as_deref().is_none_or(tidings::is_valid_key);
        let object = payload.is_object();
        match &result {
            Ok(_) => prop_assert!(type_ok && key_ok && object, "accepted invalid input"),
            Err(e) => {
                let which = match e {
                    tidings::EmitError::InvalidEventType { .. } => !type_ok,
                    tidings::EmitError::InvalidKey { .. } => !key_ok,
                    tidings::EmitError::InvalidPayload { .. } => !object,
                    _ => false,
                };
                prop_assert!(which, "refused with the wrong error: {e:?}");
                let text = e.to_string();
                prop_assert!(!text.chars().any(char::is_control), "{text:?}");
                prop_assert!(text.len() < 400, "{} bytes", text.len());
            }
        }
        for (t, k, data) in written.0.lock().unwrap().iter() {
            prop_assert!(tidings::is_valid_event_type(t));
            prop_assert!(k.as_deref().is_none_or(tidings::is_valid_key));
            let parsed: serde_json::Value = serde_json::from_str(data).unwrap();
            prop_assert_eq!(&parsed["_event_type"], &serde_json::Value::from(t.as_str()));
        }
        let stored = written.0.lock().unwrap().len();
        let routed = result.is_ok() && event_type == "t";
        prop_assert_eq!(stored, usize::from(routed), "only an accepted event of a handled type is written");
    }
}
