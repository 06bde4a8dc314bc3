//! `JetStreamStore::summarize` (what `tidings inspect --nats` prints) counts
//! a live bus's outstanding deliveries and dead letters by type and handler,
//! and `purge` removes the bus; the key partition count is the stream's, and
//! a stream made before partitions is taken over. Run against
//! `TIDINGS_TEST_NATS_URL`; not run when it is unset.

mod common;

use serde_json::json;
use std::time::{Duration, SystemTime};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};
use tidings_conformance::eventually_within;
use tidings_nats::JetStreamStore;

struct Fails;

impl EventHandler for Fails {
    fn event_type(&self) -> &str {
        "f.v2"
    }
    fn name(&self) -> &str {
        "fails"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().attempts(1)
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_counts_what_is_outstanding_and_dead_then_purge_removes_it() {
    let Some(test) = common::TestBus::new("admin") else {
        return;
    };
    let before = SystemTime::now();
    let bus = common::builder(&test)
        .await
        .handler(common::Stuck("s"))
        .handler(Fails)
        .build()
        .unwrap();
    for n in 0..5 {
        bus.emit("s", json!({ "n": n })).await.unwrap();
    }
    // Keyed ones wait in the handler's key partitions: still one row.
    for n in 0..3 {
        bus.emit("s", json!({ "n": n }))
            .key(format!("k{n}"))
            .await
            .unwrap();
    }
    for n in 0..2 {
        bus.emit("f.v2", json!({ "n": n })).await.unwrap();
    }
    let dead = || bus.dead_letters().len() >= 2;
    eventually_within(Duration::from_secs(10), "two dead letters", dead).await;
    // While the bus runs: "stuck" holds the 5 without a key and the first
    // of each key partition; the rest wait on the server.
    let s = JetStreamStore::summarize(&test.url, &test.name)
        .await
        .unwrap();
    assert_eq!(s.pending.len(), 1, "{s:?}");
    let p = &s.pending[0];
    assert_eq!(
        (p.event_type.as_str(), p.handler.as_str(), p.count),
        ("s", "stuck", 8)
    );
    assert!(p.oldest >= before - Duration::from_secs(1) && p.oldest <= SystemTime::now());
    assert_eq!(s.dead_letters.len(), 1, "{s:?}");
    let d = &s.dead_letters[0];
    assert_eq!(
        (d.event_type.as_str(), d.handler.as_str(), d.count),
        ("f.v2", "fails", 2)
    );

    bus.shutdown(Duration::from_millis(10)).await;
    drop(bus);
    JetStreamStore::purge(&test.url, &test.name).await.unwrap();
    assert!(JetStreamStore::summarize(&test.url, &test.name)
        .await
        .is_err());
    assert!(matches!(
        JetStreamStore::summarize(&test.url, "no.such>bus").await,
        Err(tidings::StoreError::InvalidConfig(_))
    ));
}

struct Echo(tokio::sync::mpsc::UnboundedSender<Option<String>>);

impl EventHandler for Echo {
    fn event_type(&self) -> &str {
        "e"
    }
    fn name(&self) -> &str {
        "echo"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let _ = self.0.send(event.key().map(str::to_owned));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_uses_the_partition_count_the_stream_records() {
    let Some(test) = common::TestBus::new("parts") else {
        return;
    };
    let options = |n| {
        tidings_nats::Options::default()
            .ack_wait(common::ACK_WAIT)
            .key_partitions(n)
    };
    let first = JetStreamStore::connect_with(&test.url, &test.name, options(4))
        .await
        .unwrap();
    let second = JetStreamStore::connect_with(&test.url, &test.name, options(16))
        .await
        .unwrap();
    assert_eq!((first.key_partitions(), second.key_partitions()), (4, 4));
    // Attempt counts age out (leftovers of crashes); dead letters do not.
    let js = async_nats::jetstream::new(async_nats::connect(&test.url).await.unwrap());
    let mut ages = Vec::new();
    for bucket in ["attempts", "dead"] {
        let kv = js
            .get_stream(format!("KV_TIDINGS_{}_{bucket}", test.name))
            .await
            .unwrap();
        ages.push(kv.cached_info().config.max_age);
    }
    assert_eq!(ages, [Duration::from_secs(7 * 24 * 3600), Duration::ZERO]);
    assert!(format!("{second:?}").contains("key_partitions: 4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_before_key_partitions_is_taken_over() {
    let Some(test) = common::TestBus::new("upgrade") else {
        return;
    };
    // The stream as the first NATS version made it: one subject token per
    // type, no description.
    let js = async_nats::jetstream::new(async_nats::connect(&test.url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("TIDINGS_{}", test.name),
        subjects: vec![format!("tidings.{}.ev.*", test.name)],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    let store = common::store(&test).await;
    assert_eq!(store.key_partitions(), 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = tidings::EventBus::builder()
        .discover(false)
        .store(store)
        .handler(Echo(tx))
        .build()
        .unwrap();
    keyed_and_not_handled(&bus, &mut rx).await;
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Emits an event with a key and one without, and waits until `Echo` has
/// handled both.
async fn keyed_and_not_handled(
    bus: &tidings::EventBus,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    bus.emit("e", json!({})).key("k").await.unwrap();
    bus.emit("e", json!({})).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let key = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("handled within 10 s");
        got.push(key.flatten());
    }
    got.sort();
    assert_eq!(got, vec![None, Some("k".to_owned())]);
}

/// Messages in a stream now.
async fn messages_in(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// A bus made now keeps its keyed events in a stream of their own; one made
/// before (a stream on `ev.>` recording its partitions) keeps its layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_events_have_a_stream_of_their_own_unless_the_bus_was_made_before() {
    let Some(test) = common::TestBus::new("layout") else {
        return;
    };
    let Some(before) = common::TestBus::new("layout1") else {
        return;
    };
    let js = async_nats::jetstream::new(async_nats::connect(&test.url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("TIDINGS_{}", before.name),
        description: Some(r#"{"tidings_key_partitions":4}"#.into()),
        subjects: vec![format!("tidings.{}.ev.>", before.name)],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    for (t, apart) in [(&test, true), (&before, false)] {
        let store = common::store(t).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // ("stuck" never settles: the stream keeps both events.)
        let bus = tidings::EventBus::builder()
            .discover(false)
            .store(store)
            .handler(Echo(tx))
            .handler(common::Stuck("e"))
            .build()
            .unwrap();
        keyed_and_not_handled(&bus, &mut rx).await;
        let events = format!("TIDINGS_{}", t.name);
        let keyed = format!("TIDINGSK_{}", t.name);
        if apart {
            let held = (
                messages_in(&js, &events).await,
                messages_in(&js, &keyed).await,
            );
            assert_eq!(held, (1, 1), "(events' stream, keyed events' stream)");
        } else {
            assert_eq!(messages_in(&js, &events).await, 2);
            assert!(
                js.get_stream(&keyed).await.is_err(),
                "no stream of keyed events"
            );
        }
        bus.shutdown(Duration::from_millis(200)).await;
    }
}

/// A bus made now writes its events framed, without headers; one made by
/// the version before (layout 2) keeps writing headers, so that that
/// version's processes can still share it. Both read and handle them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_made_now_frames_its_events_and_one_made_before_keeps_headers() {
    let Some(test) = common::TestBus::new("framed") else {
        return;
    };
    let Some(before) = common::TestBus::new("framed2") else {
        return;
    };
    let js = async_nats::jetstream::new(async_nats::connect(&test.url).await.unwrap());
    made_with_headers(&js, &before.name).await;
    for (t, framed) in [(&test, true), (&before, false)] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // ("stuck" never settles: the streams keep the events to look at.)
        let bus = tidings::EventBus::builder()
            .discover(false)
            .store(common::store(t).await)
            .handler(Echo(tx))
            .handler(common::Stuck("e"))
            .build()
            .unwrap();
        keyed_and_not_handled(&bus, &mut rx).await;
        assert_written(&js, &t.name, 1, framed).await;
        bus.shutdown(Duration::from_millis(200)).await;
    }
}

/// Makes bus `name`'s events' stream as the version before framed events
/// made it (layout 2: keyed events apart, events with headers).
async fn made_with_headers(js: &async_nats::jetstream::Context, name: &str) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("TIDINGS_{name}"),
        description: Some(r#"{"tidings_key_partitions":16,"tidings_layout":2}"#.into()),
        subjects: vec![format!("tidings.{name}.ev.*")],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Asserts that the message `seq` of both of bus `name`'s streams is
/// framed (or written with headers).
async fn assert_written(js: &async_nats::jetstream::Context, name: &str, seq: u64, framed: bool) {
    for stream in [format!("TIDINGS_{name}"), format!("TIDINGSK_{name}")] {
        let m = js
            .get_stream(&stream)
            .await
            .unwrap()
            .get_raw_message(seq)
            .await
            .unwrap();
        let has_type = m.headers.get("Tidings-Type").is_some();
        let starts = m.payload.starts_with(b"tidings/1 ");
        assert_eq!(
            (!has_type && starts, has_type && !starts),
            (framed, !framed),
            "message {seq} of {stream} framed: {framed}"
        );
    }
}

/// The end of a rolling upgrade: a bus made before framed events (layout 2)
/// writes headers until `finish_upgrade`, then a process started after it
/// frames its events; what was written before is still handled. A bus made
/// now, and one older than layout 2, have nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_upgrade_frames_a_bus_made_with_headers() {
    let Some(test) = common::TestBus::new("upgrade") else {
        return;
    };
    let Some(now) = common::TestBus::new("upgrade3") else {
        return;
    };
    let Some(oldest) = common::TestBus::new("upgrade1") else {
        return;
    };
    let (url, name) = (&test.url, &test.name);
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    made_with_headers(&js, name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("TIDINGS_{}", oldest.name),
        description: Some(r#"{"tidings_key_partitions":4}"#.into()),
        subjects: vec![format!("tidings.{}.ev.>", oldest.name)],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    drop(common::store(&now).await);

    let left = JetStreamStore::upgrade_left(url, name).await.unwrap();
    assert!(left.is_some_and(|l| l.contains("headers")));
    for other in [&now.name, &oldest.name] {
        assert_eq!(
            JetStreamStore::upgrade_left(url, other).await.unwrap(),
            None
        );
        assert_eq!(
            JetStreamStore::finish_upgrade(url, other).await.unwrap(),
            None
        );
    }
    for bad in ["no such bus", "nosuchbus"] {
        assert!(matches!(
            JetStreamStore::finish_upgrade(url, bad).await,
            Err(tidings::StoreError::InvalidConfig(_))
        ));
    }

    // Before: a process writes headers (message 1 of each stream), and one
    // with no handler of the type leaves two events for the next start
    // (message 2, headers too; "stuck" keeps every message in the streams).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = tidings::EventBus::builder()
        .discover(false)
        .store(common::store(&test).await)
        .handler(Echo(tx.clone()))
        .handler(common::Stuck("e"))
        .build()
        .unwrap();
    keyed_and_not_handled(&bus, &mut rx).await;
    bus.shutdown(Duration::from_millis(200)).await;
    let emitter = tidings::EventBus::builder()
        .discover(false)
        .store(common::store(&test).await)
        .build()
        .unwrap();
    emitter.emit("e", json!({})).key("k").await.unwrap();
    emitter.emit("e", json!({})).await.unwrap();
    emitter.shutdown(Duration::from_millis(200)).await;
    assert_written(&js, name, 2, false).await;

    let done = JetStreamStore::finish_upgrade(url, name).await.unwrap();
    assert!(done.is_some_and(|d| d.contains("done")));
    assert_eq!(
        JetStreamStore::finish_upgrade(url, name).await.unwrap(),
        None
    );
    assert_eq!(JetStreamStore::upgrade_left(url, name).await.unwrap(), None);
    let config = js
        .get_stream(format!("TIDINGS_{name}"))
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(config.subjects, vec![format!("tidings.{name}.ev.*")]);

    // After: the two events written with headers are handled, and a process
    // started now frames its own (message 3).
    let bus = tidings::EventBus::builder()
        .discover(false)
        .store(common::store(&test).await)
        .handler(Echo(tx))
        .handler(common::Stuck("e"))
        .build()
        .unwrap();
    for _ in 0..2 {
        let handled = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(handled.is_ok(), "an event written before handled after");
    }
    keyed_and_not_handled(&bus, &mut rx).await;
    assert_written(&js, name, 3, true).await;
    bus.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_another_ack_wait_updates_the_handler_s_consumers() {
    let Some(test) = common::TestBus::new("ackwait") else {
        return;
    };
    let js = async_nats::jetstream::new(async_nats::connect(&test.url).await.unwrap());
    for wait in [Duration::from_secs(2), Duration::from_secs(3)] {
        let options = tidings_nats::Options::default()
            .ack_wait(wait)
            .key_partitions(2);
        let store = JetStreamStore::connect_with(&test.url, &test.name, options)
            .await
            .unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let bus = tidings::EventBus::builder()
            .discover(false)
            .store(store)
            .handler(Echo(tx))
            .build()
            .unwrap();
        // The first emit makes (or opens) the handler's consumers.
        bus.emit("e", json!({})).await.unwrap();
        let mut waits = Vec::new();
        for name in [
            format!("TIDINGS_{}", test.name),
            format!("TIDINGSK_{}", test.name),
        ] {
            let stream = js.get_stream(name).await.unwrap();
            let mut consumers = stream.consumers();
            while let Some(info) = futures_util::StreamExt::next(&mut consumers).await {
                waits.push(info.unwrap().config.ack_wait);
            }
        }
        // The handler's consumer for events without a key, and two key partitions.
        assert_eq!(waits, vec![wait; 3]);
        bus.shutdown(Duration::from_secs(5)).await;
    }
}
