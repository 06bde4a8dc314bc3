//! Emit latency (p50, p99, p99.9, max) and memory per pending event.
//!
//! `cargo bench -p tidings-benches --bench latency_memory`
//!
//! Latency: 100 000 emits of the seed's activity_log payload with one no-op
//! handler, each timed alone; "steady" yields to the runtime after each emit,
//! "burst" never does. Memory: 1 000 000 events pending behind a handler that
//! is blocked, bytes still allocated per event, counted by the `cap` crate's
//! wrapping global allocator. Both for typed and for dynamic events.

#![allow(missing_docs)]

use cap::Cap;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::Instant;
use tidings::EventBus;
use tidings_benches::{dynamic_payload, ActivityLog};

#[global_allocator]
static ALLOC: Cap<tidings_benches::Allocator> =
    Cap::new(tidings_benches::ALLOCATOR_INSTANCE, usize::MAX);

fn live() -> isize {
    ALLOC.allocated() as isize
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:>6.2} µs  p99 {:>6.2} µs  p99.9 {:>7.2} µs  max {:>8.2} µs",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    )
}

async fn latency(bus: &EventBus, typed: bool, steady: bool) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..100_000u64 {
        let t = Instant::now();
        if typed {
            bus.publish(ActivityLog::sample(i)).await.unwrap();
        } else {
            bus.emit("activity_log", dynamic_payload(i)).await.unwrap();
        }
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        if steady {
            tokio::task::yield_now().await;
        }
    }
    bus.wait_idle().await;
    h
}

async fn memory(typed: bool) -> f64 {
    const N: u64 = 1_000_000;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let bus = tidings_benches::gated_bus(1, "activity_log", N as usize + 10, Some(gate.clone()));
    tokio::task::yield_now().await;
    let before = live();
    for i in 0..N {
        if typed {
            bus.publish(ActivityLog::sample(i)).await.unwrap();
        } else {
            bus.emit("activity_log", dynamic_payload(i)).await.unwrap();
        }
    }
    let after = live();
    assert!(bus.pending() as u64 >= N - 1);
    gate.add_permits(usize::MAX >> 4);
    bus.wait_idle().await;
    (after - before) as f64 / N as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = tidings_benches::bus_with(1, "activity_log");
        // Warm up.
        latency(&bus, true, true).await;
        for (typed, name) in [(true, "typed"), (false, "dynamic")] {
            for (steady, mode) in [(true, "steady"), (false, "burst")] {
                let h = latency(&bus, typed, steady).await;
                println!("emit latency {name:7} {mode:6}: {}", pct(&h));
            }
        }
        for (typed, name) in [(true, "typed"), (false, "dynamic")] {
            println!(
                "memory per pending event, {name:7}: {:.0} bytes",
                memory(typed).await
            );
        }
    });
}
