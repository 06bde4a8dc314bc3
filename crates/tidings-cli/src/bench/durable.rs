//! Scenario 6 of `tidings bench`: the durable bus (SQLite) against the
//! durable ceiling, raw SQLite doing the least a durable queue must: a
//! producer inserting the same JSON in batched transactions, and a consumer
//! on its own connection that claims the oldest rows and deletes them, in
//! batches, until it has seen every row. Same file settings as the store
//! (WAL, `synchronous=NORMAL`).

use super::report::{row, Beside, Row, Series, Target};
use super::runtime::{on_runtime, quantiles, timed_emits_into, Flavor, YIELD_EVERY};
use super::{raw, Bench};
use async_nats::jetstream::stream::RetentionPolicy;
use rusqlite::{params, Connection};
use std::path::PathBuf;
use std::time::Instant;
use tidings_benches::{dynamic_payload, load, noop_builder};

/// Rows per transaction of the ceiling's producer and consumer.
const CEILING_BATCH: usize = 1_000;

/// A fresh database path in a temporary directory of its own, removed with
/// its WAL when dropped.
struct TempDb {
    dir: tempfile::TempDir,
}

impl TempDb {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tidings-bench-{}-", std::process::id()))
            .tempdir()
            .expect("a temporary directory");
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("bus.db")
    }
}

/// Events per durable throughput run: a lone emitter pays one commit per
/// event, so fewer than the memory runs.
const DURABLE_EVENTS: usize = 50_000;

/// Concurrent emitter tasks in the group-commit rows.
const DURABLE_EMITTERS: usize = 64;

/// Scenario 6: the durable bus's steady throughput (one emitter, and many
/// sharing commits), its emit latency, against the Python reference and the
/// durable ceiling of each round.
pub(super) fn rows(bench: &Bench<'_>, rows: &mut Vec<Row>) {
    let (cfg, r) = (bench.cfg, bench.runs);
    let n = DURABLE_EVENTS.min(cfg.events);
    let py_n = n.to_string();
    let every = YIELD_EVERY.to_string();
    let none: Series = Vec::new();
    // (backend, handlers, emitters, keys)
    let mut configs = vec![
        (Backend::Sqlite, 1usize, 1usize, 0usize),
        (Backend::Sqlite, 1, DURABLE_EMITTERS, 0),
        (Backend::Sqlite, 3, DURABLE_EMITTERS, 0),
    ];
    if let Some(url) = &cfg.postgres {
        configs.push((Backend::Postgres(url.clone()), 1, 1, 0));
        configs.push((Backend::Postgres(url.clone()), 1, DURABLE_EMITTERS, 0));
        configs.push((Backend::PostgresShared(url.clone()), 1, DURABLE_EMITTERS, 0));
        configs.push((
            Backend::PostgresShared(url.clone()),
            1,
            DURABLE_EMITTERS,
            1_000,
        ));
    }
    if let Some(url) = &cfg.nats {
        configs.push((
            Backend::Nats(
                url.clone(),
                cfg.nats_key_partitions,
                cfg.nats_pin_key_partitions,
            ),
            1,
            1,
            0,
        ));
        configs.push((
            Backend::Nats(
                url.clone(),
                cfg.nats_key_partitions,
                cfg.nats_pin_key_partitions,
            ),
            1,
            DURABLE_EMITTERS,
            0,
        ));
        // Keyed events take the key partitions (order across processes).
        configs.push((
            Backend::Nats(
                url.clone(),
                cfg.nats_key_partitions,
                cfg.nats_pin_key_partitions,
            ),
            1,
            DURABLE_EMITTERS,
            1_000,
        ));
    }
    let nats_version = cfg.nats.clone().map(|url| {
        on_runtime(
            Flavor::TwoThreads,
            async move { raw::nats_version(&url).await },
        )
    });
    let pb = bench.bar("durable vs the raw engines", r);
    let (mut asyncio, mut uvloop, mut ceiling) = (Series::new(), Series::new(), Series::new());
    // The raw engines' ceilings, by emitters (1 and many), in each round.
    let (mut raw_pg, mut raw_nats): ([Series; 2], [Series; 2]) = Default::default();
    // Raw NATS keeping 1 000 keys in order as the bus does (its partitions,
    // one message of each out at a time), for the keyed row.
    let mut raw_nats_keyed = Series::new();
    // Raw NATS without keys on an interest-retention stream, beside it.
    let mut raw_nats_interest = Series::new();
    // Raw PostgreSQL with each event's commit awaited by its emitter, as
    // the bus's are, beside the PostgreSQL rows' verdicts.
    let mut raw_pg_awaited = Series::new();
    let emitter_counts = [1, DURABLE_EMITTERS];
    let mut tidings = vec![Series::new(); configs.len()];
    // 6b: emit latency with one emitter, per backend, and the raw engine's
    // one write awaited (none for SQLite: its row is the bus alone).
    let mut lat_backends = vec![Backend::Sqlite];
    lat_backends.extend(cfg.postgres.clone().map(Backend::Postgres));
    lat_backends.extend(
        cfg.nats
            .clone()
            .map(|url| Backend::Nats(url, cfg.nats_key_partitions, cfg.nats_pin_key_partitions)),
    );
    let mut latency: Vec<[Series; 4]> = vec![Default::default(); lat_backends.len()];
    let mut raw_latency: Vec<[Series; 4]> = vec![Default::default(); lat_backends.len()];
    for _ in 0..r {
        let steady = ["steady", "1", &py_n, "--yield-every", &every];
        pb.set_message("python");
        asyncio.push(bench.py.pick(&steady, false, |o| o.events_per_s));
        uvloop.push(bench.py.pick(&steady, true, |o| o.events_per_s));
        pb.set_message("sqlite");
        ceiling.push(Some(sqlite_ceiling(n)));
        for (j, emitters) in emitter_counts.into_iter().enumerate() {
            if let Some(url) = cfg.postgres.clone() {
                pb.set_message("raw PostgreSQL");
                let rate = on_runtime(Flavor::TwoThreads, async move {
                    raw::postgres(&url, n, emitters, raw::PG_BATCH).await
                });
                raw_pg[j].push(rate);
            }
            if let Some(url) = cfg.nats.clone() {
                pb.set_message("raw NATS");
                let rate = on_runtime(Flavor::TwoThreads, async move {
                    raw::nats(&url, n, emitters, RetentionPolicy::Limits).await
                });
                raw_nats[j].push(rate);
            }
        }
        if let Some(url) = cfg.postgres.clone() {
            pb.set_message("raw PostgreSQL, each insert awaited");
            let rate = on_runtime(Flavor::TwoThreads, async move {
                raw::postgres(&url, n, DURABLE_EMITTERS, 1).await
            });
            raw_pg_awaited.push(rate);
        }
        if let Some(url) = cfg.nats.clone() {
            // The keyed ceiling's stream keeps messages as the bus's do
            // (interest retention); raw without keys on such a stream too,
            // so that the engine's own keyed ÷ unkeyed stands beside the
            // bus's.
            pb.set_message("raw NATS, interest retention");
            let at = url.clone();
            let rate = on_runtime(Flavor::TwoThreads, async move {
                raw::nats(&at, n, DURABLE_EMITTERS, RetentionPolicy::Interest).await
            });
            raw_nats_interest.push(rate);
            pb.set_message("raw NATS, key partitions");
            let partitions = cfg.nats_key_partitions as usize;
            let pinned = cfg.nats_pin_key_partitions;
            let rate = on_runtime(Flavor::TwoThreads, async move {
                raw::nats_partitioned(&url, n, DURABLE_EMITTERS, 1_000, partitions, pinned).await
            });
            raw_nats_keyed.push(rate);
        }
        pb.set_message("tidings");
        for (i, (backend, handlers, emitters, keys)) in configs.iter().enumerate() {
            tidings[i].push(durable_throughput(
                backend,
                Flavor::TwoThreads,
                *handlers,
                n,
                *emitters,
                *keys,
            ));
        }
        for (b, backend) in lat_backends.iter().enumerate() {
            pb.set_message(format!("latency {}", backend.label()));
            let emits = match backend {
                Backend::Sqlite => n.min(20_000),
                _ => n.min(LATENCY_EMITS),
            };
            let (l, r) = paired_latency(backend, Flavor::TwoThreads, emits);
            for q in 0..4 {
                latency[b][q].push(l.map(|l| l[q]));
                raw_latency[b][q].push(r.map(|r| r[q]));
            }
        }
        pb.inc(1);
    }
    pb.finish_with_message("done");
    // Issue 15's targets, judged on each round's own ratio: unkeyed against
    // the raw engine; keyed against the same backend without keys.
    let find = |want: fn(&Backend) -> bool, keyed: bool| {
        configs
            .iter()
            .position(|(b, h, e, k)| want(b) && *h == 1 && *e > 1 && (*k > 0) == keyed)
    };
    let pg_shared = find(|b| matches!(b, Backend::PostgresShared(_)), false);
    // The bus against raw PostgreSQL doing what its emitters ask of it:
    // each event committed before its emitter's next.
    let awaited = |bus| Beside {
        over: bus,
        under: &raw_pg_awaited,
        what: "÷ raw PostgreSQL with each of the same emitters' inserts awaited, one row a commit",
    };
    let nats_unkeyed = find(|b| matches!(b, Backend::Nats(..)), false);
    for (i, (backend, handlers, emitters, keys)) in configs.iter().enumerate() {
        let keyed = if *keys > 0 {
            format!(", {keys} keys")
        } else {
            String::new()
        };
        let j = usize::from(*emitters > 1);
        let (against, raw) = match backend {
            Backend::Sqlite => (
                &ceiling,
                "raw SQLite batched inserts + claim-and-delete".to_string(),
            ),
            Backend::Postgres(_) | Backend::PostgresShared(_) => (
                &raw_pg[j],
                "raw PostgreSQL, the same emitters inserting in batches of 500 + SKIP LOCKED claim-and-delete".to_string(),
            ),
            Backend::Nats(_, partitions, true) if *keys > 0 => (
                &raw_nats_keyed,
                format!("raw NATS JetStream keeping keys in order as the pinned bus does: the same emitters publishing to {partitions} key partitions, each partition's messages streamed to one client with up to {} out, acked in order (interest retention)", tidings_nats::PINNED_WINDOW),
            ),
            Backend::Nats(_, partitions, _) if *keys > 0 => (
                &raw_nats_keyed,
                format!("raw NATS JetStream keeping keys in order as the bus does: the same emitters publishing to {partitions} key partitions, a consumer per partition with one message out at a time, acking each"),
            ),
            Backend::Nats(..) => (
                &raw_nats[j],
                "raw NATS JetStream, the same emitters each awaiting its publish ack + a pull consumer acking each".to_string(),
            ),
        };
        let many = *handlers == 1 && *emitters > 1;
        let target = match backend {
            Backend::Postgres(_) if many && *keys == 0 => {
                Target::CeilingAtLeast(0.6, Some(awaited(&tidings[i])))
            }
            Backend::PostgresShared(_) if many && *keys == 0 => {
                Target::CeilingAtLeast(0.5, Some(awaited(&tidings[i])))
            }
            Backend::PostgresShared(_) if many => match pg_shared {
                Some(u) => {
                    Target::ShareOf(0.8, &tidings[u], "PostgreSQL shared without keys", None)
                }
                None => Target::None(""),
            },
            Backend::Nats(..) if many && *keys == 0 => Target::CeilingAtLeast(0.6, None),
            Backend::Nats(..) if many => match nats_unkeyed {
                Some(u) => Target::ShareOf(
                    0.8,
                    &tidings[u],
                    "NATS without keys",
                    Some(Beside {
                        over: &raw_nats_keyed,
                        under: &raw_nats_interest,
                        what: "raw JetStream's own keyed ÷ unkeyed, both on interest retention",
                    }),
                ),
                None => Target::None(""),
            },
            _ => Target::None("(no target: shown against both)"),
        };
        let server = match (backend, &nats_version) {
            (Backend::Nats(..), Some(v)) => format!(" {v}"),
            _ => String::new(),
        };
        rows.push(row(
            format!(
                "6. durable ({}{server}) emit→handled, dynamic, {handlers} handler(s), {emitters} emitter task(s){keyed}, 2 threads; ceiling: {raw}",
                backend.label()
            ),
            "events/s",
            &asyncio,
            &uvloop,
            against,
            &tidings[i],
            target,
        ));
    }
    for (b, backend) in lat_backends.iter().enumerate() {
        let raw = match backend {
            Backend::Sqlite => "",
            Backend::Postgres(_) | Backend::PostgresShared(_) => {
                "; ceiling: raw PostgreSQL, a one-row INSERT committed"
            }
            Backend::Nats(..) => "; ceiling: raw NATS JetStream, a publish awaiting its ack",
        };
        for (q, name) in ["p50", "p99", "p99.9", "max"].iter().enumerate() {
            let target = match backend {
                Backend::Sqlite => Target::None(""),
                _ if q == 0 => Target::CeilingAtMost(1.5),
                _ => Target::None(""),
            };
            rows.push(row(
                format!(
                    "6b. durable ({}) emit latency {name} (event written), 1 emitter, 2 threads{raw}",
                    backend.label()
                ),
                "µs",
                &none,
                &none,
                &raw_latency[b][q],
                &latency[b][q],
                target,
            ));
        }
    }
}

/// Emits timed one by one on a distributed backend (a round trip each).
const LATENCY_EMITS: usize = 2_000;

/// Where the durable bus keeps its events.
#[derive(Clone, Debug)]
enum Backend {
    /// A fresh SQLite file per run.
    Sqlite,
    /// A fresh bus name per run on this PostgreSQL server (purged after).
    Postgres(String),
    /// The same, opened with `connect_shared` (deliveries claimed through
    /// the relay, a key's one at a time).
    PostgresShared(String),
    /// A fresh bus name per run on this NATS JetStream server (purged after),
    /// with this many key partitions, pinned to one process at a time or not
    /// (`tidings_nats::Options::pin_key_partitions`).
    Nats(String, u32, bool),
}

impl Backend {
    fn label(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
            Backend::PostgresShared(_) => "PostgreSQL shared",
            Backend::Nats(..) => "NATS JetStream",
        }
    }

    /// A builder over a fresh store of this backend, with `handlers` no-op
    /// handlers, and the bus name to purge after; `None` (said on stderr) if
    /// the store cannot be opened.
    async fn builder(
        &self,
        db: &TempDb,
        handlers: usize,
    ) -> Option<(tidings::EventBusBuilder, String)> {
        let builder = noop_builder(handlers, "activity_log", 65_536, None);
        let bus = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let opened = match self {
            Backend::Sqlite => {
                tidings_sqlite::SqliteStore::open(db.path()).map(|s| builder.store(s))
            }
            Backend::Postgres(url) => tidings_postgres::PgStore::connect(url, &bus)
                .await
                .map(|s| builder.store(s)),
            Backend::PostgresShared(url) => {
                let lease = std::time::Duration::from_secs(10);
                tidings_postgres::PgStore::connect_shared(url, &bus, lease)
                    .await
                    .map(|s| builder.store(s))
            }
            Backend::Nats(url, partitions, pinned) => {
                let options = tidings_nats::Options::default()
                    .key_partitions(*partitions)
                    .pin_key_partitions(*pinned);
                tidings_nats::JetStreamStore::connect_with(url, &bus, options)
                    .await
                    .map(|s| builder.store(s))
            }
        };
        opened
            .map(|b| (b, bus))
            .map_err(|e| eprintln!("{}: {e}; its rows are left empty", self.label()))
            .ok()
    }

    /// Deletes what a run left on a server.
    async fn purge(&self, bus: &str) {
        let purged = match self {
            Backend::Sqlite => Ok(()),
            Backend::Postgres(url) | Backend::PostgresShared(url) => {
                tidings_postgres::PgStore::purge(url, bus).await
            }
            Backend::Nats(url, ..) => tidings_nats::JetStreamStore::purge(url, bus).await,
        };
        if let Err(e) = purged {
            eprintln!("{}: could not purge bus {bus}: {e}", self.label());
        }
    }
}

/// The durable bus: events/s from the first emit to the last handled, with
/// `emitters` tasks emitting `n` events in all, each emit awaited (its event
/// written) before the task's next; with `keys` > 0, the events have keys,
/// `keys` of them in turn. `None` if the store could not be opened.
fn durable_throughput(
    backend: &Backend,
    flavor: Flavor,
    handlers: usize,
    n: usize,
    emitters: usize,
    keys: usize,
) -> Option<f64> {
    let db = TempDb::new();
    let backend = backend.clone();
    on_runtime(flavor, async move {
        let (builder, name) = backend.builder(&db, handlers).await?;
        let bus = builder.build().expect("bus");
        let rate = load(&bus, n, emitters, keys).await.expect("emit").rate();
        bus.shutdown(std::time::Duration::from_secs(30)).await;
        drop(bus);
        backend.purge(&name).await;
        Some(rate)
    })
}

/// Blocks an emit latency run is cut into, taking turns with the raw
/// engine's: the machine changes under a run (a VM's idle vCPU wakes slower
/// than a busy one: a one-row insert's p50 read 214 µs on the quiet
/// machine and 158 µs beside a spinning process at the lowest priority,
/// BENCHMARKS section 7, session 29), so the bus and its baseline are timed
/// side by side, not one after the other.
const LATENCY_BLOCKS: usize = 10;

/// Scenario 6b: one emitter's emit latency on `backend`, `n` emits (p50,
/// p99, p99.9, max in µs), and the raw engine's one write awaited, `n` too
/// (none for SQLite), timed in [`LATENCY_BLOCKS`] blocks taking turns (the
/// first block of each the bus's, the next the raw engine's first, and so
/// on); the bus's handlers are idle before each raw block.
fn paired_latency(
    backend: &Backend,
    flavor: Flavor,
    n: usize,
) -> (Option<[f64; 4]>, Option<[f64; 4]>) {
    let db = TempDb::new();
    let backend = backend.clone();
    on_runtime(flavor, async move {
        let Some((builder, name)) = backend.builder(&db, 1).await else {
            return (None, None);
        };
        let bus = builder.build().expect("bus");
        let mut raw = match &backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) | Backend::PostgresShared(url) => raw::RawOne::postgres(url)
                .await
                .map_err(|e| eprintln!("raw PostgreSQL latency: {e}; its ceiling is left empty"))
                .ok(),
            Backend::Nats(url, ..) => raw::RawOne::nats(url)
                .await
                .map_err(|e| eprintln!("raw NATS latency: {e}; its ceiling is left empty"))
                .ok(),
        };
        let mut bus_h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let mut raw_h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let per_block = n.div_ceil(LATENCY_BLOCKS);
        let mut next = 0u64;
        for block in 0..LATENCY_BLOCKS {
            let emits = per_block.min(n.saturating_sub(block * per_block)) as u64;
            timed_emits_into(&bus, next..next + emits, 0, &mut bus_h).await;
            let wrote = match &mut raw {
                Some(r) => r.timed_writes(next..next + emits, &mut raw_h).await,
                None => Ok(()),
            };
            if let Err(e) = wrote {
                eprintln!("raw latency: {e}; its ceiling is left empty");
                if let Some(r) = raw.take() {
                    r.close().await;
                }
                raw_h.reset();
            }
            next += emits;
        }
        bus.shutdown(std::time::Duration::from_secs(30)).await;
        drop(bus);
        backend.purge(&name).await;
        let raw_q = match raw {
            Some(r) => {
                r.close().await;
                (!raw_h.is_empty()).then(|| quantiles(&raw_h))
            }
            None => None,
        };
        (Some(quantiles(&bus_h)), raw_q)
    })
}

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("sqlite");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

/// The durable ceiling: rows/s through raw SQLite, batched inserts on one
/// thread and claim-and-delete on another, until the consumer has all `n`.
fn sqlite_ceiling(n: usize) -> f64 {
    let db = TempDb::new();
    let conn = open(&db.path());
    conn.execute_batch(
        "CREATE TABLE q (seq INTEGER PRIMARY KEY, event_type TEXT NOT NULL, data TEXT NOT NULL)",
    )
    .expect("table");
    let path = db.path();
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut conn = open(&path);
        let mut seen = 0usize;
        while seen < n {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("begin");
            let mut last = None;
            {
                let mut claim = tx
                    .prepare_cached("SELECT seq, data FROM q ORDER BY seq LIMIT ?1")
                    .expect("claim");
                let mut rows = claim.query(params![CEILING_BATCH as i64]).expect("rows");
                while let Some(row) = rows.next().expect("row") {
                    let seq: i64 = row.get(0).expect("seq");
                    let data: String = row.get(1).expect("data");
                    std::hint::black_box(data);
                    last = Some(seq);
                    seen += 1;
                }
            }
            if let Some(last) = last {
                tx.prepare_cached("DELETE FROM q WHERE seq <= ?1")
                    .expect("delete")
                    .execute(params![last])
                    .expect("delete");
            }
            tx.commit().expect("commit");
            if last.is_none() {
                std::thread::yield_now();
            }
        }
    });
    let mut conn = conn;
    let mut i = 0u64;
    while (i as usize) < n {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO q (event_type, data) VALUES ('activity_log', ?1)")
                .expect("insert");
            for _ in 0..CEILING_BATCH.min(n - i as usize) {
                insert
                    .execute(params![dynamic_payload(i).to_string()])
                    .expect("insert");
                i += 1;
            }
        }
        tx.commit().expect("commit");
    }
    consumer.join().expect("consumer");
    n as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, so that no other run of this process has files out meanwhile.
    #[test]
    fn every_run_handles_every_event_and_cleans_up() {
        let rate = sqlite_ceiling(2 * CEILING_BATCH + 7);
        assert!(rate.is_finite() && rate > 0.0);
        // `wait_idle` inside returns only once every event is handled.
        for keys in [0, 5] {
            let rate = durable_throughput(&Backend::Sqlite, Flavor::OneThread, 3, 400, 8, keys);
            assert!(rate.is_some_and(|r| r > 0.0));
        }
        let [p50, p99, _, max] = paired_latency(&Backend::Sqlite, Flavor::TwoThreads, 50)
            .0
            .unwrap();
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= max);
        let left = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("tidings-bench-{}-", std::process::id()))
            })
            .count();
        assert_eq!(left, 0, "temporary files removed");
    }
}
