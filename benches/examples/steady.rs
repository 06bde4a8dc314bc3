//! A steady emitter for profilers (`perf record -g`, callgrind): `n` events,
//! typed or dynamic, to `handlers` no-op handlers, yielding every 64 emits,
//! on a current-thread runtime (`threads` = 1) or a multi-thread one; prints
//! events/s and ns per event. `ceiling` instead of `typed` moves the same
//! struct through a bounded tokio mpsc(1024) to one task, as `tidings bench`'s
//! ceiling does, so that both can be profiled alike.
//!
//! ```sh
//! cargo build --release -p tidings-benches --example steady --features mimalloc
//! perf record -e cpu-clock -g ./target/release/examples/steady typed 1 5000000 1
//! ```

use std::time::Instant;
use tidings_benches::{dynamic_payload, gated_bus, ActivityLog, Allocator, ALLOCATOR_INSTANCE};

#[global_allocator]
static GLOBAL: Allocator = ALLOCATOR_INSTANCE;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("typed", String::as_str);
    let typed = kind == "typed";
    let handlers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let n: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let rate = rt.block_on(async move {
        if kind == "ceiling" {
            return ceiling(n).await;
        }
        tokio::spawn(async move {
            let bus = gated_bus(handlers, "activity_log", 1024, None);
            let start = Instant::now();
            for i in 0..n {
                if typed {
                    bus.publish(ActivityLog::sample(i)).await.expect("publish");
                } else {
                    bus.emit("activity_log", dynamic_payload(i))
                        .await
                        .expect("emit");
                }
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            bus.wait_idle().await;
            n as f64 / start.elapsed().as_secs_f64()
        })
        .await
        .expect("task")
    });
    println!("{rate:.0} events/s, {:.1} ns/event", 1e9 / rate);
}

async fn ceiling(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ActivityLog>(1024);
    let consumer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            std::hint::black_box(ev);
        }
    });
    let start = Instant::now();
    for i in 0..n {
        tx.send(ActivityLog::sample(i)).await.expect("send");
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    consumer.await.expect("consumer");
    n as f64 / start.elapsed().as_secs_f64()
}
