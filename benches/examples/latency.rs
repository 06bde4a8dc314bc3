//! Where the emit latency's tail comes from: scenario 3's loop (a dynamic
//! event per emit, yielding after each) timed three ways on a current-thread
//! runtime: building the payload alone, emitting a payload built before the
//! clock started, and both (what `tidings bench` times). Prints p50, p99,
//! p99.9 and max in µs for each.
//!
//! ```sh
//! cargo build --release -p tidings-benches --example latency --features mimalloc
//! ./target/release/examples/latency 100000
//! ```

use std::time::Instant;
use tidings_benches::{bus_with, dynamic_payload, Allocator, ALLOCATOR_INSTANCE};

#[global_allocator]
static GLOBAL: Allocator = ALLOCATOR_INSTANCE;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        for what in ["payload", "emit", "both"] {
            let bus = bus_with(1, "activity_log");
            let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            for i in 0..n {
                let (took, payload) = match what {
                    "payload" => {
                        let t = Instant::now();
                        let p = dynamic_payload(i);
                        (t.elapsed(), Some(p))
                    }
                    "emit" => {
                        let p = dynamic_payload(i);
                        let t = Instant::now();
                        bus.emit("activity_log", p).await.expect("emit");
                        (t.elapsed(), None)
                    }
                    _ => {
                        let t = Instant::now();
                        bus.emit("activity_log", dynamic_payload(i))
                            .await
                            .expect("emit");
                        (t.elapsed(), None)
                    }
                };
                drop(std::hint::black_box(payload));

                h.record(took.as_nanos() as u64).ok();
                tokio::task::yield_now().await;
            }
            bus.wait_idle().await;
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{what:>8}: p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1} µs",
                us(0.5),
                us(0.99),
                us(0.999),
                h.max() as f64 / 1000.0
            );
        }
    });
}
