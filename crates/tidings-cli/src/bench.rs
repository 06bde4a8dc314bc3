//! `tidings bench`: Tidings, the seed's own design (in Python), and the
//! machine's ceiling, measured in the same run on the same machine.
//!
//! Each figure is the median of several runs (min and max beside it). A
//! scenario runs in rounds: each round measures the baselines and every
//! Tidings configuration once, back to back, and each ratio is the median of
//! the rounds' ratios, so that a shared machine's drift between rounds cancels.
//! Tidings runs on a current-thread runtime (one thread, like Python's event
//! loop) and on a 2-worker runtime. The Python reference is
//! `benches/python/seed_bus.py`, run with the machine's `python3` (asyncio, and
//! uvloop when it is installed). Memory is measured as the growth of the
//! resident set of a fresh process holding 1 000 000 pending events, for both.
//! This binary uses mimalloc as its global allocator.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::EventBus;
use tidings_benches::{dynamic_payload, gated_bus, ActivityLog};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Runs per figure (at least 5 for a published table).
    pub runs: usize,
    /// The Python interpreter, or `None` to skip the reference.
    pub python: Option<String>,
    /// The reference implementation.
    pub python_script: PathBuf,
    /// Events per throughput run.
    pub events: usize,
    /// Pending events in the memory runs.
    pub pending: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// Run only these scenarios (by number, "1" to "6"); all when empty.
    pub only: Vec<String>,
    /// A PostgreSQL server for scenario 6's PostgreSQL rows (skipped when `None`).
    pub postgres: Option<String>,
    /// A NATS JetStream server for scenario 6's NATS rows (skipped when `None`).
    pub nats: Option<String>,
}

impl BenchConfig {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn bus(handlers: usize, capacity: usize, gate: Option<Arc<tokio::sync::Semaphore>>) -> EventBus {
    gated_bus(handlers, "activity_log", capacity, gate)
}

/// One figure: median, min, max of the runs.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Figure {
    fn of(mut v: Vec<f64>) -> Option<Figure> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Figure {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// The unit.
    pub unit: &'static str,
    /// The Python reference on asyncio.
    pub asyncio: Option<Figure>,
    /// The Python reference on uvloop.
    pub uvloop: Option<Figure>,
    /// The raw ceiling, where one applies.
    pub ceiling: Option<Figure>,
    /// Tidings.
    pub tidings: Option<Figure>,
    /// Tidings ÷ asyncio, each run against the asyncio run of its round.
    pub vs_asyncio: Option<Figure>,
    /// Tidings ÷ the ceiling, each run against the ceiling run of its round.
    pub vs_ceiling: Option<Figure>,
    /// The target, in words.
    pub target: String,
    /// Whether the target is met (median of the paired ratios), when it can be judged.
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// CPU model and cores.
    pub machine: String,
    /// When.
    pub date: String,
    /// The command line that made it.
    pub command: String,
    /// Runs per figure.
    pub runs: usize,
    /// The rows.
    pub rows: Vec<Row>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!(", {} GiB", kb / 1024 / 1024))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{mem}")
}

/// The tokio runtime a Tidings (or ceiling) figure is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `current_thread`: one thread, like the Python reference's event loop.
    OneThread,
    /// `multi_thread` with 2 workers, as a service's request handlers run.
    TwoThreads,
}

impl Flavor {
    const ALL: [Flavor; 2] = [Flavor::OneThread, Flavor::TwoThreads];

    fn label(self) -> &'static str {
        match self {
            Flavor::OneThread => "1 thread",
            Flavor::TwoThreads => "2 threads",
        }
    }

    fn runtime(self) -> tokio::runtime::Runtime {
        match self {
            Flavor::OneThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::TwoThreads => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        }
        .enable_all()
        .build()
        .expect("runtime")
    }
}

/// The emitter yields to its scheduler after this many emits in the steady
/// scenarios, the same loop for Python and Rust. 64 is the Python reference's
/// best interval on the 2-core machine of docs/BENCHMARKS.md (1: 137 k/s, 4: 187 k,
/// 16: 205 k, 64: 219 k, 256: 197 k, 1 024: 176 k events/s), so the baseline
/// is at its strongest; at most 64 events are in flight per handler.
pub const YIELD_EVERY: usize = 64;

/// The bound of the ceiling's channel, and of the bus in the runs compared with it.
const CEILING_BOUND: usize = 1024;

/// Emits in the burst scenarios.
const BURST: usize = 200_000;

/// Emits timed in the latency scenario.
const LATENCY_EMITS: usize = 100_000;

/// Runs `f` as a task on a fresh runtime of `flavor` and returns its result.
pub(crate) fn on_runtime<T: Send + 'static>(
    flavor: Flavor,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let rt = flavor.runtime();
    rt.block_on(async move { tokio::spawn(f).await.expect("bench task") })
}

/// Emits the seed's activity_log event number `i`: typed, or built as a JSON object.
async fn emit_one(bus: &EventBus, i: u64, is_typed: bool) {
    if is_typed {
        bus.publish(ActivityLog::sample(i)).await.expect("publish");
    } else {
        bus.emit("activity_log", dynamic_payload(i))
            .await
            .expect("emit");
    }
}

/// Yields after every `every`-th emit (never if 0).
async fn pace(i: u64, every: usize) {
    if every > 0 && (i as usize) % every == every - 1 {
        tokio::task::yield_now().await;
    }
}

/// Tidings: events/s, the emitter yielding every `every` emits (0: never).
/// A burst needs `capacity` for all of it; the other runs use the ceiling's
/// bound, so that the bus and the channel wait alike.
fn tidings_throughput(
    flavor: Flavor,
    handlers: usize,
    n: usize,
    is_typed: bool,
    every: usize,
    capacity: usize,
) -> f64 {
    on_runtime(flavor, async move {
        let bus = bus(handlers, capacity, None);
        let start = Instant::now();
        for i in 0..n as u64 {
            emit_one(&bus, i, is_typed).await;
            pace(i, every).await;
        }
        bus.wait_idle().await;
        n as f64 / start.elapsed().as_secs_f64()
    })
}

/// The ceiling: a bounded tokio mpsc moving the same struct from one task to
/// another, the sender yielding as the Tidings emitter does.
fn ceiling_throughput(flavor: Flavor, n: usize, every: usize) -> f64 {
    on_runtime(flavor, async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ActivityLog>(CEILING_BOUND);
        let consumer = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                std::hint::black_box(ev);
            }
        });
        let start = Instant::now();
        for i in 0..n as u64 {
            tx.send(ActivityLog::sample(i)).await.expect("send");
            pace(i, every).await;
        }
        drop(tx);
        consumer.await.expect("consumer");
        n as f64 / start.elapsed().as_secs_f64()
    })
}

/// Emit latency in µs: (p50, p99, p99.9, max), yielding after each emit
/// (`every` = 1, as a request loop does) or never (0, a burst).
fn tidings_latency(flavor: Flavor, n: usize, every: usize) -> [f64; 4] {
    on_runtime(flavor, async move {
        // Room for the whole run, as the Python reference has: this measures
        // emit, not waiting for room (see 4b for the bound).
        let bus = bus(1, n + 16, None);
        timed_emits(&bus, n, every).await
    })
}

/// Emits `n` dynamic events on `bus`, timing each (the payload's building
/// included, as in Python), yielding every `every` (never if 0); waits until
/// all are handled and returns the emit latency in µs: p50, p99, p99.9, max.
pub(crate) async fn timed_emits(bus: &EventBus, n: usize, every: usize) -> [f64; 4] {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for i in 0..n as u64 {
        let t = Instant::now();
        bus.emit("activity_log", dynamic_payload(i))
            .await
            .expect("emit");
        h.record(t.elapsed().as_nanos() as u64).ok();
        pace(i, every).await;
    }
    bus.wait_idle().await;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    [us(0.5), us(0.99), us(0.999), h.max() as f64 / 1e3]
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Run in a fresh process (`tidings bench --memory-probe`): resident bytes per
/// pending event, with `n` events held behind a blocked handler.
pub fn memory_probe(n: usize, is_typed: bool) -> f64 {
    on_runtime(Flavor::TwoThreads, async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let bus = bus(1, n + 16, Some(gate.clone()));
        tokio::task::yield_now().await;
        let before = rss_bytes();
        for i in 0..n as u64 {
            emit_one(&bus, i, is_typed).await;
        }
        let after = rss_bytes();
        gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        bus.wait_idle().await;
        (after.saturating_sub(before)) as f64 / n as f64
    })
}

/// The bounded queue: with capacity `cap` and `Reject`, how many events are
/// pending at most while 10 * `cap` emits are tried against a blocked handler.
fn bounded_queue_peak(cap: usize) -> f64 {
    on_runtime(Flavor::TwoThreads, async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let bus = bus(1, cap, Some(gate.clone()));
        let mut peak = 0;
        for i in 0..(10 * cap) as u64 {
            let _ = bus.try_emit("activity_log", dynamic_payload(i));
            peak = peak.max(bus.pending());
        }
        gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        bus.wait_idle().await;
        peak as f64
    })
}

#[derive(Deserialize)]
struct PyOut {
    events_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    max_us: Option<f64>,
    bytes_per_event: Option<f64>,
}

fn python(cfg: &BenchConfig, args: &[&str], uvloop: bool) -> Option<PyOut> {
    let py = cfg.python.as_ref()?;
    let mut cmd = Command::new(py);
    cmd.arg(&cfg.python_script).args(args);
    if uvloop {
        cmd.arg("--uvloop");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn has_uvloop(cfg: &BenchConfig) -> bool {
    cfg.python.as_ref().is_some_and(|py| {
        Command::new(py)
            .args(["-c", "import uvloop"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn bar(cfg: &BenchConfig, name: &str, len: usize) -> ProgressBar {
    let pb = if cfg.progress {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>38} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(name.to_owned());
    pb
}

/// One measured thing, run by run (`None` where a run failed).
type Series = Vec<Option<f64>>;

fn fig(s: &Series) -> Option<Figure> {
    Figure::of(s.iter().flatten().copied().collect())
}

/// The ratio `a / b` of each run with its own baseline, measured in the same
/// round: drift of a shared machine between rounds cancels out.
fn paired(a: &Series, b: &Series) -> Option<Figure> {
    Figure::of(
        a.iter()
            .zip(b)
            .filter_map(|(x, y)| Some((*x)? / (*y)?))
            .collect(),
    )
}

/// Builds a row, judging `target` on the median of the paired ratios.
#[allow(clippy::too_many_arguments)]
fn row(
    scenario: String,
    unit: &'static str,
    asyncio: &Series,
    uvloop: &Series,
    ceiling: &Series,
    tidings: &Series,
    target: Target,
) -> Row {
    let vs_asyncio = paired(tidings, asyncio);
    let vs_ceiling = paired(tidings, ceiling);
    let (target, met) = match target {
        Target::None(words) => (words.to_owned(), None),
        Target::AsyncioAtLeast(k) => (
            format!("≥ {k} × asyncio"),
            vs_asyncio.as_ref().map(|f| f.median >= k),
        ),
        Target::AsyncioAtMost(k) => (
            format!("≤ asyncio × {k}"),
            vs_asyncio.as_ref().map(|f| f.median <= k),
        ),
        Target::CeilingAtLeast(k) => (
            format!("≥ {:.0} % of the ceiling", k * 100.0),
            vs_ceiling.as_ref().map(|f| f.median >= k),
        ),
        Target::MaxAtMost(limit) => (
            format!("≤ {limit:.0} {unit} in every run"),
            fig(tidings).map(|f| f.max <= limit),
        ),
    };
    Row {
        scenario,
        unit,
        asyncio: fig(asyncio),
        uvloop: fig(uvloop),
        ceiling: fig(ceiling),
        tidings: fig(tidings),
        vs_asyncio,
        vs_ceiling,
        target,
        met,
    }
}

/// What a row is judged against.
enum Target {
    None(&'static str),
    AsyncioAtLeast(f64),
    AsyncioAtMost(f64),
    CeilingAtLeast(f64),
    MaxAtMost(f64),
}

/// Runs every scenario and returns the report. Within a scenario, each round
/// measures the baselines and every Tidings configuration once, one after the
/// other, so that each figure has its baseline from the same minute.
pub fn run(cfg: &BenchConfig, command: String) -> anyhow::Result<Report> {
    let r = cfg.runs.max(1);
    let n = cfg.events;
    let uv = has_uvloop(cfg);
    let mut rows = Vec::new();
    let py_n = n.to_string();
    let every = YIELD_EVERY.to_string();
    let none: Series = Vec::new();
    let py = |args: &[&str], uvloop: bool, pick: fn(PyOut) -> Option<f64>| -> Option<f64> {
        if uvloop && !uv {
            return None;
        }
        python(cfg, args, uvloop).and_then(pick)
    };

    // 1. Steady emit to handled, dynamic and typed, 1 and 3 handlers.
    for handlers in [1usize, 3].into_iter().filter(|_| cfg.wants("1")) {
        let h = handlers.to_string();
        let steady = ["steady", &h, &py_n, "--yield-every", &every];
        // (typed?, index into Flavor::ALL)
        let configs: Vec<(bool, usize)> = [false, true]
            .into_iter()
            .flat_map(|t| [(t, 0), (t, 1)])
            .collect();
        let pb = bar(cfg, &format!("steady, {handlers} handler(s)"), r);
        let (mut asyncio, mut uvloop) = (Series::new(), Series::new());
        let mut ceiling = [Series::new(), Series::new()];
        let mut tidings = vec![Series::new(); configs.len()];
        for _ in 0..r {
            pb.set_message("python");
            asyncio.push(py(&steady, false, |o| o.events_per_s));
            uvloop.push(py(&steady, true, |o| o.events_per_s));
            pb.set_message("tidings");
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                if handlers == 1 {
                    ceiling[f].push(Some(ceiling_throughput(flavor, n, YIELD_EVERY)));
                }
            }
            for (i, &(is_typed, f)) in configs.iter().enumerate() {
                tidings[i].push(Some(tidings_throughput(
                    Flavor::ALL[f],
                    handlers,
                    n,
                    is_typed,
                    YIELD_EVERY,
                    CEILING_BOUND,
                )));
            }
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (i, &(is_typed, f)) in configs.iter().enumerate() {
            let (kind, k) = if is_typed {
                ("typed", 25.0)
            } else {
                ("dynamic", 5.0)
            };
            rows.push(row(
                format!(
                    "1. steady emit→handled, {kind}, {handlers} no-op handler(s), {}",
                    Flavor::ALL[f].label()
                ),
                "events/s",
                &asyncio,
                &uvloop,
                if is_typed { &ceiling[f] } else { &none },
                &tidings[i],
                Target::AsyncioAtLeast(k),
            ));
        }
    }

    // 2. Burst of 200 000, then wait.
    if cfg.wants("2") {
        let b = BURST.to_string();
        let burst = ["burst", "1", &b];
        let pb = bar(cfg, "burst 200 000, 1 handler", r);
        let (mut asyncio, mut uvloop) = (Series::new(), Series::new());
        let mut tidings = [Series::new(), Series::new()];
        for _ in 0..r {
            asyncio.push(py(&burst, false, |o| o.events_per_s));
            uvloop.push(py(&burst, true, |o| o.events_per_s));
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                tidings[f].push(Some(tidings_throughput(
                    flavor,
                    1,
                    BURST,
                    false,
                    0,
                    BURST + 16,
                )));
            }
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
            rows.push(row(
                format!(
                    "2. burst of 200 000 emits then wait, dynamic, 1 handler, {}",
                    flavor.label()
                ),
                "events/s",
                &asyncio,
                &uvloop,
                &none,
                &tidings[f],
                Target::None("(no target)"),
            ));
        }
    }

    // 3. Emit latency over 100 000 emits, yielding after each; then the max during a burst.
    if cfg.wants("3") {
        let k = LATENCY_EMITS.to_string();
        let latency = ["latency", "1", &k];
        let pb = bar(cfg, "emit latency, 100 000 emits", r);
        let quantiles = |o: Option<PyOut>| -> [Option<f64>; 4] {
            match o {
                Some(o) => [o.p50_us, o.p99_us, o.p999_us, o.max_us],
                None => [None; 4],
            }
        };
        let mut asyncio: [Series; 4] = Default::default();
        let mut uvloop: [Series; 4] = Default::default();
        let mut tidings: [[Series; 4]; 2] = Default::default();
        for _ in 0..r {
            let a = quantiles(python(cfg, &latency, false));
            let u = quantiles(if uv {
                python(cfg, &latency, true)
            } else {
                None
            });
            for q in 0..4 {
                asyncio[q].push(a[q]);
                uvloop[q].push(u[q]);
            }
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                let t = tidings_latency(flavor, LATENCY_EMITS, 1);
                for q in 0..4 {
                    tidings[f][q].push(Some(t[q]));
                }
            }
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (q, name) in ["p50", "p99", "p99.9", "max"].iter().enumerate() {
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                let target = if *name == "p99" {
                    Target::AsyncioAtMost(0.1)
                } else {
                    Target::None("")
                };
                rows.push(row(
                    format!("3. emit latency {name}, dynamic, {}", flavor.label()),
                    "µs",
                    &asyncio[q],
                    &uvloop[q],
                    &none,
                    &tidings[f][q],
                    target,
                ));
            }
        }
        let pb = bar(cfg, "emit latency max, burst 200 000", r);
        let mut burst_max = [Series::new(), Series::new()];
        for _ in 0..r {
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                burst_max[f].push(Some(tidings_latency(flavor, BURST, 0)[3]));
            }
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
            rows.push(row(
                format!(
                    "3b. emit latency max during a burst of 200 000, {}",
                    flavor.label()
                ),
                "µs",
                &none,
                &none,
                &none,
                &burst_max[f],
                Target::MaxAtMost(1000.0),
            ));
        }
    }

    // 4. Memory per pending event, fresh processes.
    if cfg.wants("4") {
        let p = cfg.pending.to_string();
        let memory = ["memory", "1", &p];
        let pb = bar(cfg, "memory, 1 000 000 pending", r);
        let exe = std::env::current_exe()?;
        let probe = |kind: &str| -> Option<f64> {
            let out = Command::new(&exe)
                .args(["bench", "--memory-probe", kind, "--pending", &p])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let (mut asyncio, mut dynamic, mut typed) = (Series::new(), Series::new(), Series::new());
        for _ in 0..r {
            asyncio.push(py(&memory, false, |o| o.bytes_per_event));
            dynamic.push(probe("dynamic"));
            typed.push(probe("typed"));
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (name, tidings) in [("dynamic", &dynamic), ("typed", &typed)] {
            rows.push(row(
                format!("4. memory per pending event (RSS growth), {name}"),
                "bytes",
                &asyncio,
                &none,
                &none,
                tidings,
                Target::AsyncioAtMost(0.5),
            ));
        }
        let cap = 10_000usize;
        let peak = vec![Some(bounded_queue_peak(cap))];
        rows.push(row(
            format!("4b. most events pending, capacity {cap}, 10 × {cap} try_emits"),
            "events",
            &none,
            &none,
            &none,
            &peak,
            Target::MaxAtMost(cap as f64),
        ));
    }

    // 5. Typed against the mpsc ceiling, as fast as possible.
    if cfg.wants("5") {
        let pb = bar(cfg, "typed vs tokio mpsc ceiling", r);
        let mut ceiling = [Series::new(), Series::new()];
        let mut tidings = [Series::new(), Series::new()];
        for _ in 0..r {
            for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
                ceiling[f].push(Some(ceiling_throughput(flavor, n, 0)));
                tidings[f].push(Some(tidings_throughput(
                    flavor,
                    1,
                    n,
                    true,
                    0,
                    CEILING_BOUND,
                )));
            }
            pb.inc(1);
        }
        pb.finish_with_message("done");
        for (f, flavor) in Flavor::ALL.into_iter().enumerate() {
            rows.push(row(
                format!(
                    "5. typed emit→handled, 1 handler, vs bounded tokio mpsc(1024), no yields, {}",
                    flavor.label()
                ),
                "events/s",
                &none,
                &none,
                &ceiling[f],
                &tidings[f],
                Target::CeilingAtLeast(0.5),
            ));
        }
    }

    // 6. The durable bus (SQLite) against raw SQLite as a queue.
    if cfg.wants("6") {
        durable_rows(cfg, &mut rows, r);
    }

    Ok(Report {
        machine: machine(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command,
        runs: r,
        rows,
    })
}

/// Events per durable throughput run: a lone emitter pays one commit per
/// event, so fewer than the memory runs.
const DURABLE_EVENTS: usize = 50_000;

/// Concurrent emitter tasks in the group-commit rows.
const DURABLE_EMITTERS: usize = 64;

/// Scenario 6: the durable bus's steady throughput (one emitter, and many
/// sharing commits), its emit latency, against the Python reference and the
/// durable ceiling of each round.
fn durable_rows(cfg: &BenchConfig, rows: &mut Vec<Row>, r: usize) {
    use crate::bench_durable::{durable_latency, durable_throughput, sqlite_ceiling, Backend};
    let n = DURABLE_EVENTS.min(cfg.events);
    let py_n = n.to_string();
    let every = YIELD_EVERY.to_string();
    let uv = has_uvloop(cfg);
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
        configs.push((Backend::Nats(url.clone()), 1, 1, 0));
        configs.push((Backend::Nats(url.clone()), 1, DURABLE_EMITTERS, 0));
        // Keyed events take the key partitions (order across processes).
        configs.push((Backend::Nats(url.clone()), 1, DURABLE_EMITTERS, 1_000));
    }
    let pb = bar(cfg, "durable vs raw SQLite", r);
    let (mut asyncio, mut uvloop, mut ceiling) = (Series::new(), Series::new(), Series::new());
    let mut tidings = vec![Series::new(); configs.len()];
    let mut latency: [Series; 4] = Default::default();
    for _ in 0..r {
        let steady = ["steady", "1", &py_n, "--yield-every", &every];
        pb.set_message("python");
        asyncio.push(python(cfg, &steady, false).and_then(|o| o.events_per_s));
        uvloop.push(if uv {
            python(cfg, &steady, true).and_then(|o| o.events_per_s)
        } else {
            None
        });
        pb.set_message("sqlite");
        ceiling.push(Some(sqlite_ceiling(n)));
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
        let l = durable_latency(Flavor::TwoThreads, n.min(20_000));
        for q in 0..4 {
            latency[q].push(Some(l[q]));
        }
        pb.inc(1);
    }
    pb.finish_with_message("done");
    for (i, (backend, handlers, emitters, keys)) in configs.iter().enumerate() {
        let keyed = if *keys > 0 {
            format!(", {keys} keys")
        } else {
            String::new()
        };
        rows.push(row(
            format!(
                "6. durable ({}) emit→handled, dynamic, {handlers} handler(s), {emitters} emitter task(s){keyed}, 2 threads; ceiling: raw SQLite batched inserts + claim-and-delete",
                backend.label()
            ),
            "events/s",
            &asyncio,
            &uvloop,
            &ceiling,
            &tidings[i],
            Target::None("(no target: shown against both)"),
        ));
    }
    for (q, name) in ["p50", "p99", "p99.9", "max"].iter().enumerate() {
        rows.push(row(
            format!("6b. durable emit latency {name} (event written), 1 emitter, 2 threads"),
            "µs",
            &none,
            &none,
            &none,
            &latency[q],
            Target::None(""),
        ));
    }
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "events/s" if v >= 1e6 => format!("{:.2} M", v / 1e6),
        "events/s" => format!("{:.0} k", v / 1e3),
        "µs" => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

fn cell(f: &Option<Figure>, unit: &str) -> String {
    match f {
        None => "–".into(),
        Some(f) => format!(
            "{} ({}–{})",
            fmt(f.median, unit),
            fmt(f.min, unit),
            fmt(f.max, unit)
        ),
    }
}

fn ratio(r: &Option<Figure>) -> String {
    match r {
        Some(r) => format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max),
        None => "–".into(),
    }
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Measured {} on {} (median of {} runs, min–max in brackets; each ratio is the median of the runs' ratios to the baseline measured in the same round), with `{}`.\n\n",
        report.date, report.machine, report.runs, report.command
    ));
    s.push_str("| scenario | unit | Python asyncio | Python uvloop | raw ceiling | Tidings | Tidings ÷ asyncio | Tidings ÷ ceiling | target | met |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &report.rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.unit,
            cell(&row.asyncio, row.unit),
            cell(&row.uvloop, row.unit),
            cell(&row.ceiling, row.unit),
            cell(&row.tidings, row.unit),
            ratio(&row.vs_asyncio),
            ratio(&row.vs_ceiling),
            row.target,
            met
        ));
    }
    s
}

const BEGIN: &str = "<!-- tidings-bench:begin -->";
const END: &str = "<!-- tidings-bench:end -->";

/// Replaces the table between the markers in `path` (appends them if missing).
pub fn write_docs(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let table = format!("{BEGIN}\n{}{END}", markdown(report));
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &text[..a], table, &text[b + END.len()..]),
        _ => format!("{text}\n{table}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// How long a run may take, roughly, to tell the user (measured: about a
/// minute and a quarter per run with the Python reference on a 2-core machine).
pub fn estimate(cfg: &BenchConfig) -> Duration {
    // Seconds per run of each scenario on the 2-core machine of session 3,
    // with and without the Python reference (uvloop installed).
    const SECONDS: [(&str, u64, u64); 6] = [
        ("1", 16, 6),
        ("2", 5, 2),
        ("3", 7, 3),
        ("4", 4, 2),
        ("5", 2, 2),
        ("6", 6, 5),
    ];
    let per_run: u64 = SECONDS
        .iter()
        .filter(|(s, _, _)| cfg.wants(s))
        .map(|&(_, py, rust)| if cfg.python.is_some() { py } else { rust })
        .sum();
    Duration::from_secs(cfg.runs as u64 * per_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_scenarios_by_number() {
        let mut cfg = BenchConfig {
            runs: 1,
            python: None,
            python_script: PathBuf::new(),
            events: 1,
            pending: 1,
            progress: false,
            only: Vec::new(),
            postgres: None,
            nats: None,
        };
        assert!(cfg.wants("1") && cfg.wants("6"));
        cfg.only = vec!["6".into(), "3".into()];
        assert!(cfg.wants("6") && cfg.wants("3") && !cfg.wants("1"));
    }

    #[test]
    fn ratios_pair_each_run_with_the_baseline_of_its_round() {
        // Round 2 ran on a machine twice as slow for both sides: paired ratios
        // stay at 10, while the ratio of the medians would not.
        let tidings = vec![Some(100.0), Some(50.0), Some(100.0)];
        let baseline = vec![Some(10.0), Some(5.0), Some(10.0)];
        let r = paired(&tidings, &baseline).unwrap();
        assert_eq!((r.min, r.median, r.max), (10.0, 10.0, 10.0));
        // A failed run on either side drops that round only.
        let r = paired(&vec![Some(100.0), None], &vec![Some(10.0), Some(10.0)]).unwrap();
        assert_eq!(r.median, 10.0);
        assert!(paired(&vec![None], &vec![Some(1.0)]).is_none());
    }

    #[test]
    fn targets_are_judged_on_the_paired_median() {
        let t = vec![Some(60.0), Some(40.0), Some(70.0)];
        let b = vec![Some(10.0), Some(10.0), Some(10.0)];
        let none = Series::new();
        let judge = |baseline: &Series, target| {
            row("x".into(), "µs", baseline, &none, &none, &t, target).met
        };
        assert_eq!(judge(&b, Target::AsyncioAtLeast(6.0)), Some(true));
        assert_eq!(judge(&b, Target::AsyncioAtLeast(6.5)), Some(false));
        assert_eq!(judge(&b, Target::AsyncioAtMost(5.0)), Some(false));
        // One run above the limit fails the row.
        assert_eq!(judge(&none, Target::MaxAtMost(65.0)), Some(false));
        // No baseline, no verdict.
        assert_eq!(judge(&none, Target::AsyncioAtLeast(1.0)), None);
    }

    #[test]
    fn the_table_replaces_only_what_is_between_its_markers() {
        let dir = std::env::temp_dir().join(format!("tidings-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\noutro\n")).unwrap();
        let report = Report {
            machine: "m".into(),
            date: "d".into(),
            command: "c".into(),
            runs: 1,
            rows: vec![],
        };
        write_docs(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("intro\n") && text.ends_with("outro\n"),
            "{text}"
        );
        assert!(!text.contains("old"));
        assert_eq!(text.matches(BEGIN).count(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
