//! A steady emitter for profilers (`perf record -g`, callgrind): `n` events,
//! typed or dynamic, to `handlers` no-op handlers, yielding every 64 emits,
//! on a current-thread runtime (`threads` = 1) or a multi-thread one; prints
//! events/s and ns per event.
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
    let typed = args.get(1).is_none_or(|k| k == "typed");
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
