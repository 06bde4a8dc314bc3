//! Scenario 7 of `tidings bench`: scale-out. 1, 2 and 4 worker processes
//! share one bus (NATS JetStream, and PostgreSQL shared), each with the same
//! handler, whose every call spends 1 ms in simulated I/O (a timer, not the
//! CPU); this process emits the events (64 emitter tasks, each emit awaited)
//! and measures handled events per second, from the first emit to the last
//! event the workers report handled.
//!
//! Each store has a second set of rows with the events spread over 1 000
//! keys: a key's events are handled one at a time, in emit order, across
//! the processes (on NATS with `--nats-pin-key-partitions`, each key
//! partition pinned to one process at a time, the workers sharing the
//! partitions out).
//!
//! A worker is this binary again (`tidings bench --scale-worker URL
//! --scale-store KIND --scale-bus NAME [--scale-pin]`): it builds its bus, writes one
//! event of a type nobody handles and waits for it (so that its handler is
//! bound on the server before any event is written), says `ready`, then prints how many events
//! it has handled every 20 ms until its standard input closes, and shuts its
//! bus down.
//!
//! The handler runs up to 32 calls at once in each process (the default
//! concurrency), so one process can handle at most 32 000 events/s; what
//! stops the rows below that is the bus and its server. The machine has 2
//! cores, shared by the workers, this process and the server: the rows show
//! how the design shares work, not what more machines would add
//! (docs/SCALING.md does that arithmetic).

use super::report::{row, Row, Series, Target};
use super::runtime::{on_runtime, Flavor};
use super::Bench;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::{Envelope, EventHandler, HandlerError};
use tidings_benches::dynamic_payload;

/// Worker processes per row.
const PROCESSES: [usize; 3] = [1, 2, 4];

/// Events per run.
const SCALE_EVENTS: usize = 20_000;

/// Emitter tasks in this process.
const EMITTERS: usize = 64;

/// The simulated I/O of each handler call.
const WORK: Duration = Duration::from_millis(1);

/// The keys of the keyed rows' events.
const KEYS: u64 = 1_000;

/// The longest a run may take before it is given up (its figure left empty).
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Which shared bus the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nats,
    Postgres,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Postgres => "postgres",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Nats => "NATS JetStream",
            Kind::Postgres => "PostgreSQL shared",
        }
    }
}

/// Scenario 7: handled events/s with 1, 2 and 4 worker processes, each
/// round's 2- and 4-process runs against its 1-process run.
pub(super) fn rows(bench: &Bench<'_>, rows: &mut Vec<Row>) {
    let cfg = bench.cfg;
    let mut kinds = Vec::new();
    kinds.extend(cfg.nats.clone().map(|u| (Kind::Nats, u)));
    kinds.extend(cfg.postgres.clone().map(|u| (Kind::Postgres, u)));
    if kinds.is_empty() {
        return;
    }
    let n = SCALE_EVENTS.min(cfg.events);
    let none: Series = Vec::new();
    let pb = bench.bar("scale-out, 1/2/4 processes", bench.runs);
    // Each store without keys, then with them.
    let setups: Vec<Setup> = kinds
        .iter()
        .flat_map(|(kind, url)| {
            [false, true].map(|keyed| Setup {
                kind: *kind,
                url: url.clone(),
                keyed,
                pinned: *kind == Kind::Nats && cfg.nats_pin_key_partitions,
            })
        })
        .collect();
    let mut figures = vec![vec![Series::new(); PROCESSES.len()]; setups.len()];
    for _ in 0..bench.runs {
        for (k, setup) in setups.iter().enumerate() {
            for (p, &processes) in PROCESSES.iter().enumerate() {
                pb.set_message(format!("{} × {processes}", setup.label()));
                let rate = handled_rate(setup, processes, n)
                    .map_err(|e| eprintln!("scale-out, {}: {e:#}", setup.label()))
                    .ok();
                figures[k][p].push(rate);
            }
        }
        pb.inc(1);
    }
    pb.finish_with_message("done");
    for (k, setup) in setups.iter().enumerate() {
        for (p, &processes) in PROCESSES.iter().enumerate() {
            let (against, note) = if p == 0 {
                (&none, String::new())
            } else {
                (
                    &figures[k][0],
                    "; ceiling column: the same with 1 process".into(),
                )
            };
            rows.push(row(
                format!(
                    "7. scale-out ({}), {processes} worker process(es), handler 1 ms I/O (32 at once per process), {EMITTERS} emitters{note}",
                    setup.label()
                ),
                "events/s",
                &none,
                &none,
                against,
                &figures[k][p],
                Target::None("(no target: growth with processes)"),
            ));
        }
    }
}

/// One set of scenario 7's rows: a store, with or without keys.
struct Setup {
    kind: Kind,
    url: String,
    /// The events spread over [`KEYS`] keys.
    keyed: bool,
    /// NATS key partitions pinned to one process at a time.
    pinned: bool,
}

impl Setup {
    fn label(&self) -> String {
        let keys = if self.keyed { ", 1 000 keys" } else { "" };
        let pinned = if self.pinned && self.keyed {
            ", partitions pinned"
        } else {
            ""
        };
        format!("{}{keys}{pinned}", self.kind.label())
    }
}

/// The workers, killed if still running when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One run: `processes` workers on a fresh bus name, `n` events emitted
/// here; handled events/s.
fn handled_rate(setup: &Setup, processes: usize, n: usize) -> anyhow::Result<f64> {
    let (kind, url, keyed) = (setup.kind, setup.url.as_str(), setup.keyed);
    let bus = format!("bench-scale-{}", uuid::Uuid::now_v7().simple());
    let exe = std::env::current_exe()?;
    let mut workers = Workers(Vec::new());
    for _ in 0..processes {
        let mut command = Command::new(&exe);
        command
            .args(["bench", "--scale-worker", url, "--scale-store", kind.arg()])
            .args(["--scale-bus", &bus]);
        if setup.pinned {
            command.arg("--scale-pin");
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        workers.0.push(child);
    }
    // Each worker's last count, read by a thread of its own.
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..processes).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(AtomicU64::new(0));
    for (i, child) in workers.0.iter_mut().enumerate() {
        let out = child.stdout.take().expect("piped");
        let (counts, ready) = (counts.clone(), ready.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line == "ready" {
                    ready.fetch_add(1, Ordering::AcqRel);
                } else if let Some(c) = line.strip_prefix("handled ") {
                    if let Ok(c) = c.parse() {
                        counts[i].store(c, Ordering::Release);
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + RUN_LIMIT;
    while ready.load(Ordering::Acquire) < processes as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the workers did not start");
        if let Some(i) = workers
            .0
            .iter_mut()
            .position(|c| c.try_wait().ok().flatten().is_some())
        {
            anyhow::bail!("worker {i} exited before it was ready");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = |counts: &[AtomicU64]| {
        counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum::<u64>()
    };
    let (url2, bus2) = (url.to_owned(), bus.clone());
    let start = Instant::now();
    let emitting = std::thread::spawn(move || {
        on_runtime(Flavor::TwoThreads, async move {
            emit_all(kind, &url2, &bus2, n, keyed).await
        })
    });
    let want = n as u64;
    while total(&counts) < want {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every event was handled in time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    emitting
        .join()
        .map_err(|_| anyhow::anyhow!("the emitters panicked"))??;
    // Closing their standard input asks the workers to shut down.
    for c in &mut workers.0 {
        drop(c.stdin.take());
    }
    for c in &mut workers.0 {
        let _ = c.wait();
    }
    let url = url.to_owned();
    on_runtime(Flavor::TwoThreads, async move {
        let purged = match kind {
            Kind::Nats => tidings_nats::JetStreamStore::purge(&url, &bus).await,
            Kind::Postgres => tidings_postgres::PgStore::purge(&url, &bus).await,
        };
        if let Err(e) = purged {
            eprintln!("scale-out: could not purge bus {bus}: {e}");
        }
    });
    Ok(rate)
}

/// A bus of `kind` named `bus` over `url`, built from `builder` (NATS key
/// partitions `pinned` or not).
async fn open(
    kind: Kind,
    url: &str,
    bus: &str,
    pinned: bool,
    builder: tidings::EventBusBuilder,
) -> anyhow::Result<tidings::EventBus> {
    let builder = match kind {
        Kind::Nats => {
            let options = tidings_nats::Options::default().pin_key_partitions(pinned);
            builder.store(tidings_nats::JetStreamStore::connect_with(url, bus, options).await?)
        }
        Kind::Postgres => builder.store(
            tidings_postgres::PgStore::connect_shared(url, bus, Duration::from_secs(10)).await?,
        ),
    };
    Ok(builder.build()?)
}

/// Emits `n` events from [`EMITTERS`] tasks on a bus without handlers,
/// over [`KEYS`] keys if `keyed`.
async fn emit_all(kind: Kind, url: &str, bus: &str, n: usize, keyed: bool) -> anyhow::Result<()> {
    let builder = tidings::EventBus::builder().discover(false);
    let emitter = open(kind, url, bus, false, builder).await?;
    let per = n / EMITTERS;
    let mut tasks = Vec::new();
    for e in 0..EMITTERS {
        let emitter = emitter.clone();
        let count = per + usize::from(e < n % EMITTERS);
        tasks.push(tokio::spawn(async move {
            for i in 0..count as u64 {
                let n = (e * per) as u64 + i;
                let emit = emitter.emit("activity_log", dynamic_payload(n));
                if keyed {
                    emit.key(format!("key-{}", n % KEYS)).await?;
                } else {
                    emit.await?;
                }
            }
            Ok::<_, tidings::EmitError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    emitter.shutdown(Duration::from_secs(30)).await;
    Ok(())
}

/// The workers' handler: 1 ms of simulated I/O, then counted.
struct Work(Arc<AtomicU64>);

impl EventHandler for Work {
    fn event_type(&self) -> &str {
        "activity_log"
    }
    fn name(&self) -> &str {
        "scale_work"
    }
    async fn handle(&self, _event: &Envelope) -> Result<(), HandlerError> {
        tokio::time::sleep(WORK).await;
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Run in a worker process (`tidings bench --scale-worker`): see the
/// module's docs; NATS key partitions `pinned` or not.
pub fn scale_worker(url: &str, store: &str, bus: &str, pinned: bool) -> anyhow::Result<()> {
    let kind = match store {
        "nats" => Kind::Nats,
        "postgres" => Kind::Postgres,
        other => anyhow::bail!("unknown --scale-store {other:?} (nats or postgres)"),
    };
    let (url, bus) = (url.to_owned(), bus.to_owned());
    on_runtime(Flavor::TwoThreads, async move {
        let handled = Arc::new(AtomicU64::new(0));
        let builder = tidings::EventBus::builder()
            .discover(false)
            .handler(Work(handled.clone()));
        let bus = open(kind, &url, &bus, pinned, builder).await?;
        // A write of its own (of a type nobody handles), awaited: the
        // store binds the handler (and makes its consumers) before it.
        bus.emit("scale_warmup", serde_json::json!({})).await?;
        bus.wait_idle().await;
        println!("ready");
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        tokio::pin!(stdin_closed);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = &mut stdin_closed => break,
                _ = tick.tick() => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "handled {}", handled.load(Ordering::Relaxed))?;
                    out.flush()?;
                }
            }
        }
        bus.shutdown(Duration::from_secs(30)).await;
        Ok(())
    })
}
