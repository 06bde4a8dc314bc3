//! Emit-to-handled throughput: typed and dynamic events, one and three no-op
//! handlers, against the raw ceiling of a bounded tokio mpsc moving the same
//! struct from one task to another, measured in the same run.
//!
//! `cargo bench -p tidings-benches --bench throughput` (add `--features mimalloc`
//! to measure with mimalloc).

#![allow(missing_docs)]

use tidings_benches::{bus_with, dynamic_payload, ActivityLog};

#[global_allocator]
static GLOBAL: tidings_benches::Allocator = tidings_benches::ALLOCATOR_INSTANCE;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("emit_to_handled");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));

    g.bench_function("ceiling_tokio_mpsc_1024", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<ActivityLog>(1024);
                let consumer = tokio::spawn(async move {
                    while let Some(ev) = rx.recv().await {
                        std::hint::black_box(ev);
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    tx.send(ActivityLog::sample(i)).await.unwrap();
                }
                drop(tx);
                consumer.await.unwrap();
                start.elapsed()
            })
        })
    });

    for handlers in [1usize, 3] {
        let bus = rt.block_on(async { bus_with(handlers, "activity_log") });
        g.bench_function(format!("typed_{handlers}_handler"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        bus.publish(ActivityLog::sample(i)).await.unwrap();
                    }
                    bus.wait_idle().await;
                    start.elapsed()
                })
            })
        });
        g.bench_function(format!("dynamic_{handlers}_handler"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        bus.emit("activity_log", dynamic_payload(i)).await.unwrap();
                    }
                    bus.wait_idle().await;
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
