//! Several stores on one bus name (`PgStore::connect_shared`): each delivery
//! goes to one of them, a key's deliveries one at a time and in order across
//! them; what an instance leaves when it stops, or dies, the others claim
//! (against `TIDINGS_TEST_POSTGRES_URL`; not run when unset). The conformance
//! suite's shared cases run too (`conformance_shared.rs`: each delivery to
//! one bus, a key's order across buses, a replayed keyed dead letter after
//! its key's running event — which **fails when `claims_replays` is false,
//! and when `writer::REPLAYED_SHARED` keeps the event's old `seq`: both
//! checked**, session 28).

use serde_json::json;
mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};
use tidings_postgres::PgStore;

#[derive(Clone, Default)]
struct Seen {
    n: Arc<Mutex<Vec<i64>>>,
    slow: bool,
}

impl EventHandler for Seen {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "worker"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().no_timeout()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if self.slow {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.n
            .lock()
            .unwrap()
            .push(event.data()["n"].as_i64().unwrap_or(-1));
        Ok(())
    }
}

const LEASE: Duration = Duration::from_secs(2);

async fn shared_bus(url: &str, name: &str, handler: impl EventHandler) -> EventBus {
    let store = PgStore::connect_shared(url, name, LEASE).await.unwrap();
    EventBus::builder()
        .discover(false)
        .handler(handler)
        .store(store)
        .build()
        .unwrap()
}

/// An instance without handlers (a front end) emits; the two workers share
/// the deliveries, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_handlers_emits_for_the_others() {
    let Some(test_bus) = common::TestBus::new("front") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let (a_seen, b_seen) = (Seen::default(), Seen::default());
    let a = shared_bus(&url, &name, a_seen.clone()).await;
    let b = shared_bus(&url, &name, b_seen.clone()).await;
    let store = PgStore::connect_shared(&url, &name, LEASE).await.unwrap();
    let front = EventBus::builder()
        .discover(false)
        .store(store)
        .build()
        .unwrap();
    for n in 0..200 {
        let receipt = front.emit("job", json!({ "n": n })).await.unwrap();
        assert!(receipt.is_queued(), "written");
    }
    // A type no process handles is written nowhere (not kept).
    front.emit("nobody_listens", json!({})).await.unwrap();
    front.wait_idle().await;
    a.wait_idle().await;
    b.wait_idle().await;
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tidings_events WHERE bus = $1 AND event_type = 'nobody_listens'",
    )
    .bind(&name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, 0, "an event without handlers is not kept");
    let mut all: Vec<i64> = a_seen.n.lock().unwrap().clone();
    all.extend(b_seen.n.lock().unwrap().iter());
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "each exactly once");
    front.shutdown(Duration::from_secs(5)).await;
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

/// An instance's own unkeyed emits go to its own handler as they are
/// written (taken by the append, handed to its relay without a claim), not
/// to whichever instance claims first: B, idle beside A, gets none of A's
/// 40 emits. (Without the taking, B claimed about half of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_takes_its_own_emits_as_it_writes_them() {
    let Some(test_bus) = common::TestBus::new("own") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let (a_seen, b_seen) = (Seen::default(), Seen::default());
    let a = shared_bus(&url, &name, a_seen.clone()).await;
    let b = shared_bus(&url, &name, b_seen.clone()).await;
    for n in 0..40 {
        a.emit("job", json!({ "n": n })).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.wait_idle().await;
    b.wait_idle().await;
    let mut got = a_seen.n.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..40).collect::<Vec<_>>(), "all handled by A, once");
    assert_eq!(*b_seen.n.lock().unwrap(), Vec::<i64>::new(), "none by B");
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

/// An instance holding many deliveries not yet done takes no more of its
/// own emits: they are left to the others. A's handler never finishes and
/// its bus holds 300 events; what A took or claimed reaches it through its
/// relay, which hands out a batch (up to 256) only as room frees, so A
/// holds at most 300 queued and the rest of one batch (255) of its 600
/// emits, and B handles at least the other 45 while A is busy; once A
/// stops, B takes over what A held, and every event is handled once.
/// (Taking without the bound, A took all 600 and B handled none until A
/// stopped. A first version expected 88, from 256 taken and one claim of
/// 256: the relay's batches can fill the 300 in other shares, and B read
/// 46 and 87 in 1 of 6 runs each, session 24.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_leaves_its_emits_to_the_others() {
    let Some(test_bus) = common::TestBus::new("busy") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let stuck = Seen {
        slow: true,
        ..Seen::default()
    };
    let a = EventBus::builder()
        .discover(false)
        .capacity(300)
        .handler(stuck)
        .store(PgStore::connect_shared(&url, &name, LEASE).await.unwrap())
        .build()
        .unwrap();
    let b_seen = Seen::default();
    let b = shared_bus(&url, &name, b_seen.clone()).await;
    let emits = (0..600).map(|n| {
        let a = a.clone();
        async move { a.emit("job", json!({ "n": n })).await.unwrap() }
    });
    futures_util::future::join_all(emits).await;
    let started = std::time::Instant::now();
    while b_seen.n.lock().unwrap().len() < 600 - (300 + 255) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "B handled {} while A was busy: A kept its work",
            b_seen.n.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown(Duration::from_millis(100)).await;
    drop(a);
    let started = std::time::Instant::now();
    while b_seen.n.lock().unwrap().len() < 600 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "what A held was not taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.wait_idle().await;
    let mut all = b_seen.n.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(all, (0..600).collect::<Vec<_>>(), "each exactly once");
    b.shutdown(Duration::from_secs(5)).await;
}

/// When a keyed delivery ends, the key's next is claimed at once, not at
/// the relay's next look (every second): eight events of one key, emitted
/// together, are handled in well under the seven seconds that looking
/// every second would take (the appends' notifications are all heard
/// before the second is handled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_next_delivery_is_claimed_as_soon_as_the_last_ends() {
    let Some(test_bus) = common::TestBus::new("next") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let seen = Seen::default();
    let bus = shared_bus(&url, &name, seen.clone()).await;
    let started = std::time::Instant::now();
    for n in 0..8 {
        bus.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    while seen.n.lock().unwrap().len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not all handled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    assert_eq!(
        *seen.n.lock().unwrap(),
        (0..8).collect::<Vec<_>>(),
        "in order"
    );
    assert!(
        took < Duration::from_millis(2500),
        "eight events of one key took {took:?}"
    );
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stopped_instance_left_pending_is_claimed_by_another() {
    let Some(test_bus) = common::TestBus::new("shared") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let stuck = Seen {
        slow: true,
        ..Seen::default()
    };
    // A alone first: it claims all 20 and never finishes them.
    let a = shared_bus(&url, &name, stuck).await;
    for n in 0..20 {
        a.emit("job", json!({ "n": n })).await.unwrap();
    }
    while a.pending() < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = Seen::default();
    let b = shared_bus(&url, &name, live.clone()).await;
    let report = a.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.abandoned.len(), 20);
    assert!(report.kept);
    drop(a);
    // B's relay looks every second; A's instance is gone at once.
    let started = std::time::Instant::now();
    while live.n.lock().unwrap().len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.wait_idle().await;
    let got: BTreeSet<i64> = live.n.lock().unwrap().iter().copied().collect();
    assert_eq!(got, (0..20).collect::<BTreeSet<_>>());
    assert_eq!(live.n.lock().unwrap().len(), 20, "each once");
    b.shutdown(Duration::from_secs(5)).await;
}

/// A claim that commits after the instance gave up waiting for it (its
/// connection broke or stalled; the server ran the statement anyway, or
/// received it late) leaves deliveries owned by a live instance that never
/// heard of them. After a claim failed, the instance sweeps for them every
/// second: here the instance's connections are cut (through a proxy, so
/// that its next claim fails) and such a claim is written by hand (a
/// delivery owned by the instance under a token it never used), between
/// two events of its key; all three are handled, in order. (Without the
/// sweep, event 1 is never handled and event 2 waits behind it for ever;
/// with only the calm sweep, a minute.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_committed_after_its_answer_was_lost_is_found_again() {
    let Some(test_bus) = common::TestBus::new("unheard") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let proxy = tidings_conformance::faults::Proxy::start(options.get_port()).unwrap();
    let proxied = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        options.get_username(),
        proxy.port(),
        options.get_database().unwrap_or("postgres")
    );
    let seen = Seen::default();
    let a = shared_bus(&proxied, &name, seen.clone()).await;
    a.emit("job", json!({ "n": 0 })).key("k").await.unwrap();
    a.wait_idle().await;
    // The relay claims every second at least: its next claim fails.
    let reconnects = |bus: &EventBus| bus.stats().store.expect("health").reconnects;
    let before = reconnects(&a);
    proxy.cut();
    let started = std::time::Instant::now();
    while reconnects(&a) == before {
        assert!(started.elapsed() < Duration::from_secs(10), "no reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the look that follows the failed claim at once: the claim below
    // commits later than that.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
    let me: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tidings_instances WHERE bus = $1")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let unheard = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
         VALUES ($1, $2, 'job', 'k', 0, '{\"n\":1}')",
    )
    .bind(unheard)
    .bind(&name)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, owner, fence)
         VALUES ($1, 'worker', 1, true, $2, 4242)",
    )
    .bind(unheard)
    .bind(me)
    .execute(&mut conn)
    .await
    .unwrap();
    a.emit("job", json!({ "n": 2 })).key("k").await.unwrap();
    let started = std::time::Instant::now();
    while seen.n.lock().unwrap().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the unheard claim's delivery was not found again: handled {:?}",
            seen.n.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.n.lock().unwrap(), vec![0, 1, 2], "in key order");
    a.shutdown(Duration::from_secs(5)).await;
}

/// An instance whose lease has run out (a pause, as its peers see it)
/// claims nothing until it has renewed it: a claim of a lapsed instance
/// could take deliveries just as the others take its work over. (Without
/// the check, A claims the event at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_lease_ran_out_claims_nothing_until_it_renews() {
    let Some(test_bus) = common::TestBus::new("lapsed") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let seen = Seen::default();
    // A long lease: renewed every 10 s, so the lapse set below lasts.
    let store = PgStore::connect_shared(&url, &name, Duration::from_secs(30))
        .await
        .unwrap();
    let a = EventBus::builder()
        .discover(false)
        .handler(seen.clone())
        .store(store)
        .build()
        .unwrap();
    let front = EventBus::builder()
        .discover(false)
        .store(PgStore::connect_shared(&url, &name, LEASE).await.unwrap())
        .build()
        .unwrap();
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
    let lapse = |until: &'static str| {
        format!("UPDATE tidings_instances SET alive_until = {until} WHERE bus = $1 AND alive_until > now() + interval '15 seconds'")
    };
    let lapsed = sqlx::query(&lapse("now() - interval '1 second'"))
        .bind(&name)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        lapsed.rows_affected(),
        1,
        "A's instance, the one with the long lease"
    );
    front.emit("job", json!({ "n": 1 })).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        seen.n.lock().unwrap().is_empty(),
        "a lapsed instance claimed a delivery"
    );
    // A renews its lease every 10 s (a third of it): then it claims.
    let started = std::time::Instant::now();
    while seen.n.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not claimed once A renewed its lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    front.shutdown(Duration::from_secs(5)).await;
    a.shutdown(Duration::from_secs(5)).await;
}

/// Records when each delivery ran (by `n`), on every bus it serves.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(i64, std::time::Instant, std::time::Instant)>>>);

impl EventHandler for Spans {
    fn event_type(&self) -> &str {
        "job"
    }
    fn name(&self) -> &str {
        "worker"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let began = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = event.data()["n"].as_i64().unwrap_or(-1);
        self.0
            .lock()
            .unwrap()
            .push((n, began, std::time::Instant::now()));
        Ok(())
    }
}

/// A keyed event written in a transaction still open (an outbox's) comes
/// before the same key's events written after it: the later one waits, and
/// the two never run at once, whichever instance takes each. (Without the
/// check, the later one was claimed at once, its key's earlier event then
/// claimed when the transaction committed — run second, or beside it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_event_in_an_open_transaction_comes_before_its_keys_later_ones() {
    let Some(test_bus) = common::TestBus::new("open-tx") else {
        return;
    };
    let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
    let spans = Spans::default();
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(shared_bus(&url, &name, spans.clone()).await);
    }
    let store = PgStore::connect_shared(&url, &name, LEASE).await.unwrap();
    let outbox = store.outbox();
    let front = EventBus::builder()
        .discover(false)
        .store(store)
        .build()
        .unwrap();
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
    for round in 0..3 {
        let key = format!("k{round}");
        let (first, second) = (2 * round, 2 * round + 1);
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        outbox
            .emit(&mut tx, &front, "job", json!({ "n": first }), Some(&key))
            .await
            .unwrap()
            .expect("written");
        front
            .emit("job", json!({ "n": second }))
            .key(&key)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.commit().await.unwrap();
        let started = std::time::Instant::now();
        while spans.0.lock().unwrap().len() < 2 * (round as usize + 1) {
            assert!(started.elapsed() < Duration::from_secs(10), "not handled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ran = spans.0.lock().unwrap().clone();
        let [(a, a_began, a_ended), (b, b_began, _)] = ran[ran.len() - 2..] else {
            unreachable!("two spans")
        };
        assert_eq!(
            (a, b),
            (first, second),
            "round {round}: the key's events ran in emit order, the one of the open transaction first"
        );
        assert!(
            b_began >= a_ended && a_began < b_began,
            "round {round}: the key's two events ran at once"
        );
    }
    front.shutdown(Duration::from_secs(5)).await;
    for worker in workers {
        worker.shutdown(Duration::from_secs(5)).await;
    }
}
