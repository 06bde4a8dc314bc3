//! Faults of the server, caused for real: a private PostgreSQL cluster
//! (`initdb` + `pg_ctl` on a port of its own) behind a TCP proxy, restarted
//! (`-m fast` and `-m immediate`), its backends terminated, the proxy
//! frozen and cut, while 16 tasks emit. Nothing `emit` acknowledged is
//! lost, every emit is acknowledged or refused with
//! `EmitError::Unavailable`, a key's first deliveries stay in emit order;
//! a paused instance's settles are refused once another took its work
//! over; a store that lost its bus name's lock writes nothing while
//! another holds it. Needs `initdb`/`pg_ctl` (`pg_config --bindir`); the
//! machine's shared PostgreSQL is never touched. Run, like every PostgreSQL
//! test, when `TIDINGS_TEST_POSTGRES_URL` is set (PostgreSQL is installed);
//! then a missing `initdb` is a failure.

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::{EmitError, EventBus};
use tidings_conformance::eventually_within;
use tidings_conformance::faults::{
    storm, Fault, Holder, Journal, PrivatePostgres, Proxy, Record, Sink, Step, Stop,
};
use tidings_postgres::PgStore;

const LEASE: Duration = Duration::from_secs(2);
const EMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the proxy holds every byte: past the lease (another instance
/// takes the work over) and past the 5 s after which the store drops a
/// stalled connection (a claim it gave up on then commits on the server
/// when the bytes go through).
const STALLED: Duration = Duration::from_secs(8);

/// A private cluster, or `None` (said) when the PostgreSQL tests are off.
fn private_postgres() -> Option<PrivatePostgres> {
    std::env::var("TIDINGS_TEST_POSTGRES_URL")
        .ok()
        .or_else(|| {
            eprintln!("TIDINGS_TEST_POSTGRES_URL not set: test not run");
            None
        })?;
    Some(PrivatePostgres::start().expect("a private PostgreSQL (initdb, pg_ctl)"))
}

fn url_of(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

async fn bus_over(store: PgStore, record: &Arc<Record>) -> EventBus {
    EventBus::builder()
        .discover(false)
        .handler(Sink(record.clone()))
        .store(store.emit_timeout(EMIT_TIMEOUT))
        .build()
        .expect("a bus")
}

/// The faults of a storm, on `pg` behind `proxy`.
fn faults(pg: &Arc<PrivatePostgres>, proxy: &Arc<Proxy>) -> Vec<Fault> {
    let (a, b, c, d, e, f) = (
        pg.clone(),
        pg.clone(),
        pg.clone(),
        proxy.clone(),
        proxy.clone(),
        pg.clone(),
    );
    vec![
        Fault::at(0.10, move || {
            a.stop(Stop::Fast).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            a.restart().unwrap();
            "restart -m fast, down 3 s".into()
        }),
        Fault::at(0.25, move || {
            let n = b.terminate_backends().unwrap();
            format!("pg_terminate_backend of {n} connections")
        }),
        Fault::at(0.40, move || {
            c.stop(Stop::Immediate).unwrap();
            std::thread::sleep(Duration::from_secs(1));
            c.restart().unwrap();
            "restart -m immediate, down 1 s".into()
        }),
        Fault::at(0.55, move || {
            d.freeze();
            std::thread::sleep(STALLED);
            d.thaw();
            format!(
                "connections stalled {} s (past the lease and the store's stall timeout)",
                STALLED.as_secs()
            )
        }),
        Fault::at(0.70, move || {
            e.cut();
            "connections cut".into()
        }),
        Fault::at(0.85, move || {
            f.stop(Stop::Fast).unwrap();
            f.restart().unwrap();
            "restart -m fast".into()
        }),
    ]
}

/// One store of its own name (`connect`) through every fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_loses_nothing_through_restarts_terminations_stalls_and_cuts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(pg) = private_postgres().map(Arc::new) else {
        return;
    };
    let proxy = Arc::new(Proxy::start(pg.port()).unwrap());
    let url = url_of(proxy.port());
    let record = Arc::new(Record::default());
    let store = PgStore::connect(&url, "faults").await.unwrap();
    let bus = bus_over(store, &record).await;
    let report = storm(
        std::slice::from_ref(&bus),
        &record,
        20_000,
        16,
        Duration::from_millis(8),
        faults(&pg, &proxy),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(report.lost, 0, "acknowledged events lost: {report}");
    assert!(
        report.drain < Duration::from_secs(10),
        "the last events were handled more than 10 s after the last emit: {report}"
    );
    assert_eq!(report.faults.len(), 6);
    assert!(
        report.unavailable > 0,
        "an outage of 3 s refuses emits after 2 s: {report}"
    );
    let stats = bus
        .stats()
        .store
        .expect("a PostgreSQL store says how it is connected");
    assert!(stats.connected && stats.reconnects >= 1, "{stats:?}");
    bus.shutdown(Duration::from_secs(10)).await;
}

/// Two instances sharing a name (`connect_shared`) through every fault;
/// the 8 s stall lapses both leases and outlasts the store's 5 s stall
/// timeout, so a claim given up on the client commits on the server when
/// the bytes go through. (That lost 363 to 6 779 acknowledged events per
/// failing run, stuck behind deliveries owned by a live instance that never
/// heard of them, until claims required a running lease and instances
/// swept for claims they never heard of.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_loses_nothing_through_restarts_terminations_stalls_and_cuts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(pg) = private_postgres().map(Arc::new) else {
        return;
    };
    let proxy = Arc::new(Proxy::start(pg.port()).unwrap());
    let url = url_of(proxy.port());
    let record = Arc::new(Record::default());
    let a = bus_over(
        PgStore::connect_shared(&url, "faults", LEASE)
            .await
            .unwrap(),
        &record,
    )
    .await;
    let b = bus_over(
        PgStore::connect_shared(&url, "faults", LEASE)
            .await
            .unwrap(),
        &record,
    )
    .await;
    let report = storm(
        &[a.clone(), b.clone()],
        &record,
        20_000,
        16,
        Duration::from_millis(8),
        faults(&pg, &proxy),
        Duration::from_secs(60),
    )
    .await;
    if report.lost > 0 {
        // Where the missing events are: their delivery rows, by owner and
        // state, and the instances as the server sees them.
        for sql in [
            "SELECT d.owner, d.begun, d.attempt, (d.key IS NOT NULL) AS keyed, count(*)
             FROM tidings_deliveries d GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC",
            "SELECT id, alive_until, now() FROM tidings_instances",
            "SELECT d.event_id, d.owner, d.fence, d.begun, d.attempt, d.key
             FROM tidings_deliveries d WHERE d.owner IS NOT NULL LIMIT 20",
        ] {
            eprintln!("{sql}:\n{}", pg.psql(sql).unwrap_or_default());
        }
        for bus in [&a, &b] {
            eprintln!("{:?}", bus.stats());
        }
    }
    assert_eq!(report.lost, 0, "acknowledged events lost: {report}");
    assert_eq!(report.faults.len(), 6);
    for bus in [a, b] {
        let stats = bus.stats().store.expect("health");
        assert!(stats.connected && stats.reconnects >= 1, "{stats:?}");
        bus.shutdown(Duration::from_secs(10)).await;
    }
}

/// Instance A claims a key's first event and is stalled (its connections
/// frozen) past its lease; B takes the event over. When A resumes and
/// finishes, its settle is refused and counted, and the key's next event
/// starts only once B's delivery has ended. (Without the fencing token,
/// A's settle deletes B's delivery and the next event starts at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_settles_nothing_after_a_pause_past_its_lease() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let proxy = Proxy::start(pg.port()).unwrap();
    let lease = Duration::from_secs(1);
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
    let shared_bus = |url: String, handler: Holder| async move {
        let store = PgStore::connect_shared(&url, "fence", lease).await.unwrap();
        EventBus::builder()
            .discover(false)
            .handler(handler)
            .store(store)
            .build()
            .unwrap()
    };
    let a = shared_bus(url_of(proxy.port()), holder("a", &release_a)).await;
    for n in 1..=2 {
        a.emit("job", json!({ "n": n })).key("k").await.unwrap();
    }
    eventually_within(Duration::from_secs(10), "A started event 1", || {
        journal.did("a", 1, Step::Start)
    })
    .await;
    let b = shared_bus(url_of(pg.port()), holder("b", &release_b)).await;
    proxy.freeze();
    eventually_within(Duration::from_secs(15), "B took event 1 over", || {
        journal.did("b", 1, Step::Start)
    })
    .await;
    proxy.thaw();
    release_a.store(true, Ordering::Relaxed);
    eventually_within(Duration::from_secs(10), "A ended event 1", || {
        journal.did("a", 1, Step::End)
    })
    .await;
    // A's settle is written within a batch or two; the key's next event
    // must not start meanwhile (B still holds the key's first).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !journal.did("a", 2, Step::Start) && !journal.did("b", 2, Step::Start),
        "event 2 of the key started while B still held event 1: {:?}",
        journal.entries()
    );
    // What holds the key is event 1's delivery row, which B owns: A's
    // settle must have left it.
    let held = pg
        .psql(
            "SELECT count(*) FROM tidings_deliveries d LEFT JOIN tidings_events e ON e.id = d.event_id
             WHERE d.bus = 'fence' AND COALESCE(d.data, e.data) LIKE '%\"n\":1%'",
        )
        .unwrap();
    assert_eq!(
        held, "1",
        "A's stale settle deleted the delivery B is running"
    );
    let stale = a.stats().store.expect("health").stale_settles;
    assert!(
        stale >= 1,
        "A's settle of a delivery B holds was refused and counted"
    );
    release_b.store(true, Ordering::Relaxed);
    eventually_within(Duration::from_secs(10), "event 2 handled", || {
        journal.did("a", 2, Step::End) || journal.did("b", 2, Step::End)
    })
    .await;
    let b_end = journal.when("b", 1, Step::End).expect("B ended event 1");
    let next = journal
        .when("a", 2, Step::Start)
        .or(journal.when("b", 2, Step::Start))
        .expect("event 2 started");
    assert!(
        next >= b_end,
        "event 2 started before B's delivery of event 1 ended: {:?}",
        journal.entries()
    );
    for bus in [a, b] {
        bus.shutdown(Duration::from_secs(5)).await;
    }
}

/// A store whose connections are terminated loses its bus name's lock with
/// them; a second store takes the name; the first writes nothing while the
/// second holds it (its emits fail `Unavailable`), and takes the name back
/// once the second is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_lock_writes_nothing_while_another_holds_the_name() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let url = pg.url();
    let record = Arc::new(Record::default());
    let first = bus_over(PgStore::connect(&url, "lock").await.unwrap(), &record).await;
    first.emit("storm", json!({ "n": 1 })).await.unwrap();
    assert!(pg.terminate_backends().unwrap() >= 2);
    let second_store = PgStore::connect(&url, "lock")
        .await
        .expect("the name is free once the first's connections are gone");
    let second = EventBus::builder()
        .discover(false)
        .store(second_store)
        .build()
        .unwrap();
    let refused = first.emit("storm", json!({ "n": 2 })).await;
    assert!(
        matches!(refused, Err(EmitError::Unavailable { .. })),
        "the first store wrote while another held its name: {refused:?}"
    );
    // (An event with one delivery is written in its delivery's row.)
    let rows = pg
        .psql(
            "SELECT (SELECT count(*) FROM tidings_events WHERE bus = 'lock' AND data LIKE '%\"n\":2%')
                  + (SELECT count(*) FROM tidings_deliveries WHERE bus = 'lock' AND data LIKE '%\"n\":2%')",
        )
        .unwrap();
    assert_eq!(rows, "0", "nothing of the first store's is written");
    assert!(!first.stats().store.unwrap().connected);
    second.shutdown(Duration::from_secs(5)).await;
    drop(second);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match first.emit("storm", json!({ "n": 3 })).await {
            Ok(_) => break,
            Err(e) if Instant::now() < until => eprintln!("still refused: {e}"),
            Err(e) => panic!("the first store did not take its name back: {e}"),
        }
    }
    first.shutdown(Duration::from_secs(5)).await;
}

/// A store of its own name (`connect`) claims an outbox event; the server
/// commits the claim but its answer is held (the proxy holds what the server
/// sends), the store gives the claim up after 5 s, then the connections are
/// cut. The store finds its claim again by the claim's token once it holds
/// the name again, and the event is handled. (Without `reclaim` the event
/// stays marked queued and is never handled until the next process starts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_was_lost_is_found_again() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let proxy = Proxy::start(pg.port()).unwrap();
    let journal = Journal::default();
    let store = PgStore::connect(&url_of(proxy.port()), "unheard")
        .await
        .unwrap();
    let outbox = store.outbox();
    let bus = EventBus::builder()
        .discover(false)
        .handler(Holder {
            who: "a",
            journal: journal.clone(),
            release: Arc::new(AtomicBool::new(true)),
        })
        .store(store)
        .build()
        .unwrap();
    let mut app: sqlx::PgConnection = sqlx::Connection::connect(&pg.url()).await.unwrap();
    // The relay claims every second; a claim sent just before the answers
    // are held claims nothing and blocks the next: then try again.
    for n in 1..=3u64 {
        proxy.hold_answers();
        let mut tx = sqlx::Connection::begin(&mut app).await.unwrap();
        outbox
            .emit(&mut tx, &bus, "job", json!({ "n": n }), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let sql = format!(
            "SELECT count(*) FROM tidings_deliveries d JOIN tidings_events e ON e.id = d.event_id
             WHERE d.queued AND e.data LIKE '%\"n\":{n}%'"
        );
        let until = Instant::now() + Duration::from_secs(4);
        while pg.psql(&sql).unwrap() != "1" && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pg.psql(&sql).unwrap() != "1" {
            proxy.thaw();
            eventually_within(Duration::from_secs(20), "the event handled", || {
                journal.did("a", n, Step::End)
            })
            .await;
            continue;
        }
        // Claimed on the server, unheard by the store: it gives up after
        // 5 s; then its connections are cut.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!journal.did("a", n, Step::Start), "the answer was held");
        proxy.cut();
        proxy.thaw();
        eventually_within(
            Duration::from_secs(20),
            "the event whose claim was not heard handled",
            || journal.did("a", n, Step::End),
        )
        .await;
        bus.shutdown(Duration::from_secs(5)).await;
        return;
    }
    panic!("no claim was caught with its answer held in three tries");
}

/// `connect` and `connect_shared` refuse each other on one name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_connect_shared_refuse_each_other() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let url = pg.url();
    let own = PgStore::connect(&url, "mixed").await.unwrap();
    let err = PgStore::connect_shared(&url, "mixed", LEASE)
        .await
        .unwrap_err();
    assert!(matches!(err, tidings::StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("connect"), "{err}");
    drop(own);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shared = PgStore::connect_shared(&url, "mixed", LEASE).await.unwrap();
    let err = PgStore::connect(&url, "mixed").await.unwrap_err();
    assert!(matches!(err, tidings::StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("connect_shared"), "{err}");
    drop(shared);
}

/// Emits event `n` with the proxy holding the server's answers; once
/// `committed` (a count query) reads 1 within half a second, cuts the
/// connections, so that the commit went through unheard. Asserts the emit
/// is acknowledged all the same; returns whether the commit was caught.
async fn emit_unheard(
    pg: &PrivatePostgres,
    proxy: &Proxy,
    bus: &EventBus,
    n: u64,
    committed: &str,
) -> bool {
    proxy.hold_answers();
    let emit = tokio::spawn({
        let bus = bus.clone();
        async move { bus.emit("storm", json!({ "n": n })).await }
    });
    let until = Instant::now() + Duration::from_millis(500);
    while pg.psql(committed).unwrap() != "1" && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught = pg.psql(committed).unwrap() == "1";
    if caught {
        proxy.cut();
    }
    proxy.thaw();
    let acked = emit.await.unwrap();
    assert!(acked.is_ok(), "emit {n} is acknowledged: {acked:?}");
    caught
}

/// A shared instance's emit whose insert committed on the server, taking
/// its delivery for the instance (`append::Taking`), while the answer was
/// held, then lost with the connection: the emit is written again and
/// acknowledged, the second write takes nothing, and the delivery taken
/// unheard is found again within seconds and handled once. (Here the cut
/// also fails the claimer's next claim, whose own sweep finds it; the
/// writer handing the lost taking's token to the claimer, for a failure of
/// the writer's connection alone, is tested in `writer::taking`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_emit_whose_answer_was_lost_is_handled_once() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let proxy = Proxy::start(pg.port()).unwrap();
    let record = Arc::new(Record::default());
    let store = PgStore::connect_shared(&url_of(proxy.port()), "again_shared", LEASE)
        .await
        .unwrap();
    let bus = bus_over(store, &record).await;
    let handled = |bus: &EventBus| bus.stats().handlers[0].succeeded;
    // Registered, and past the first claim (which sweeps).
    bus.emit("storm", json!({ "n": 0 })).await.unwrap();
    eventually_within(Duration::from_secs(10), "the first event handled", || {
        handled(&bus) == 1
    })
    .await;
    for n in 1..=10u64 {
        let taken = format!(
            "SELECT count(*) FROM tidings_deliveries
             WHERE bus = 'again_shared' AND data LIKE '{{\"n\":{n},%' AND owner IS NOT NULL"
        );
        let committed_unheard = emit_unheard(&pg, &proxy, &bus, n, &taken).await;
        eventually_within(Duration::from_secs(5), "the events handled", || {
            handled(&bus) == n + 1
        })
        .await;
        if committed_unheard {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                handled(&bus),
                n + 1,
                "the event written twice is handled once"
            );
            bus.shutdown(Duration::from_secs(5)).await;
            return;
        }
    }
    panic!("no emit's insert was caught with its answer held in ten tries");
}

/// A lone emit whose insert committed on the server while its answer was
/// held, then lost with the connection, is written again on the next
/// connection: the write is idempotent, so the emit is acknowledged and its
/// event handled once. (Without `ON CONFLICT DO NOTHING` in the single
/// event's insert, `append::APPEND_ONE`, the second write is refused as a
/// duplicate and the emit fails, its event stored but not queued.) The
/// relay's claim (every second, on the writer's connection) may be the
/// statement whose answer is held instead: then the emit goes through once
/// thawed, and the test tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_whose_answer_was_lost_is_written_again_once() {
    let Some(pg) = private_postgres() else {
        return;
    };
    let proxy = Proxy::start(pg.port()).unwrap();
    let record = Arc::new(Record::default());
    let store = PgStore::connect(&url_of(proxy.port()), "again")
        .await
        .unwrap();
    let bus = bus_over(store, &record).await;
    let handled = |bus: &EventBus| bus.stats().handlers[0].succeeded;
    for n in 1..=10u64 {
        let stored = format!(
            "SELECT count(*) FROM tidings_deliveries WHERE bus = 'again' AND data LIKE '{{\"n\":{n},%'"
        );
        let committed_unheard = emit_unheard(&pg, &proxy, &bus, n, &stored).await;
        eventually_within(Duration::from_secs(10), "the events handled", || {
            handled(&bus) == n
        })
        .await;
        if committed_unheard {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(handled(&bus), n, "the event written twice is handled once");
            bus.shutdown(Duration::from_secs(5)).await;
            return;
        }
    }
    panic!("every try held the relay's claim, not the emit's insert");
}
