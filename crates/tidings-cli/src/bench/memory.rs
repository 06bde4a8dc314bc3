//! Scenario 4: resident memory per pending event (fresh processes), and the
//! bound on pending events.

use super::report::{row, Row, Series, Target};
use super::runtime::{bus, emit_one, on_runtime, Flavor};
use super::Bench;
use std::process::Command;
use std::sync::Arc;
use tidings_benches::dynamic_payload;

/// Scenario 4: bytes per pending event, dynamic and typed, against the
/// Python reference; then the most events pending under `Reject`.
pub(super) fn rows(bench: &Bench<'_>, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let r = bench.runs;
    let none: Series = Vec::new();
    // 4. Memory per pending event, fresh processes.
    let p = bench.cfg.pending.to_string();
    let memory = ["memory", "1", &p];
    let pb = bench.bar("memory, 1 000 000 pending", r);
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
        asyncio.push(bench.py.pick(&memory, false, |o| o.bytes_per_event));
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
    Ok(())
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
