//! What every scenario runs on: the runtime flavours, the bus under test,
//! and the emitter's loop (the same for Python and Rust).

use std::sync::Arc;
use std::time::Instant;
use tidings::EventBus;
use tidings_benches::{dynamic_payload, gated_bus, ActivityLog};

/// The emitter yields to its scheduler after this many emits in the steady
/// scenarios, the same loop for Python and Rust. 64 is the Python reference's
/// best interval on the 2-core machine of docs/BENCHMARKS.md (1: 137 k/s, 4: 187 k,
/// 16: 205 k, 64: 219 k, 256: 197 k, 1 024: 176 k events/s), so the baseline
/// is at its strongest; at most 64 events are in flight per handler.
pub const YIELD_EVERY: usize = 64;

/// The bound of the ceiling's channel, and of the bus in the runs compared with it.
pub(super) const CEILING_BOUND: usize = 1024;

/// Emits in the burst scenarios.
pub(super) const BURST: usize = 200_000;

/// The bus under test: `handlers` no-op handlers of `activity_log`, held
/// by `gate` when one is given.
pub(super) fn bus(
    handlers: usize,
    capacity: usize,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> EventBus {
    gated_bus(handlers, "activity_log", capacity, gate)
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
    pub(super) const ALL: [Flavor; 2] = [Flavor::OneThread, Flavor::TwoThreads];

    pub(super) fn label(self) -> &'static str {
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

/// Runs `f` as a task on a fresh runtime of `flavor` and returns its result.
pub(super) fn on_runtime<T: Send + 'static>(
    flavor: Flavor,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let rt = flavor.runtime();
    rt.block_on(async move { tokio::spawn(f).await.expect("bench task") })
}

/// Emits the seed's activity_log event number `i`: typed, or built as a JSON object.
pub(super) async fn emit_one(bus: &EventBus, i: u64, is_typed: bool) {
    if is_typed {
        bus.publish(ActivityLog::sample(i)).await.expect("publish");
    } else {
        bus.emit("activity_log", dynamic_payload(i))
            .await
            .expect("emit");
    }
}

/// Yields after every `every`-th emit (never if 0).
pub(super) async fn pace(i: u64, every: usize) {
    if every > 0 && (i as usize) % every == every - 1 {
        tokio::task::yield_now().await;
    }
}

/// Emits `n` dynamic events on `bus`, timing each (the payload's building
/// included, as in Python), yielding every `every` (never if 0); waits until
/// all are handled and returns the emit latency in µs: p50, p99, p99.9, max.
pub(super) async fn timed_emits(bus: &EventBus, n: usize, every: usize) -> [f64; 4] {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    timed_emits_into(bus, 0..n as u64, every, &mut h).await;
    quantiles(&h)
}

/// Emits the events `range` on `bus` as [`timed_emits`] does, each wait
/// recorded in `h` (ns); then waits until the bus is idle (not timed).
pub(super) async fn timed_emits_into(
    bus: &EventBus,
    range: std::ops::Range<u64>,
    every: usize,
    h: &mut hdrhistogram::Histogram<u64>,
) {
    for i in range {
        let t = Instant::now();
        bus.emit("activity_log", dynamic_payload(i))
            .await
            .expect("emit");
        h.record(t.elapsed().as_nanos() as u64).ok();
        pace(i, every).await;
    }
    bus.wait_idle().await;
}

/// Latencies in µs (p50, p99, p99.9, max) of a histogram of nanoseconds.
pub(super) fn quantiles(h: &hdrhistogram::Histogram<u64>) -> [f64; 4] {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    [us(0.5), us(0.99), us(0.999), h.max() as f64 / 1e3]
}
