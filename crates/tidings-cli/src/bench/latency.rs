//! Scenario 3: emit latency (p50 to max), yielding after each emit as a
//! request loop does, and its max during a burst.

use super::python::PyOut;
use super::report::{row, Row, Series, Target};
use super::runtime::{bus, on_runtime, timed_emits, Flavor, BURST};
use super::Bench;

/// Emits timed in the latency scenario.
const LATENCY_EMITS: usize = 100_000;

/// Scenario 3: 100 000 timed emits; then the max during a burst.
pub(super) fn rows(bench: &Bench<'_>, rows: &mut Vec<Row>) {
    let r = bench.runs;
    let none: Series = Vec::new();
    // 3. Emit latency over 100 000 emits, yielding after each; then the max during a burst.
    let k = LATENCY_EMITS.to_string();
    let latency = ["latency", "1", &k];
    let pb = bench.bar("emit latency, 100 000 emits", r);
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
        let a = quantiles(bench.py.run(&latency, false));
        let u = quantiles(if bench.py.uvloop {
            bench.py.run(&latency, true)
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
                Target::AsyncioAtMost(0.25)
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
    let pb = bench.bar("emit latency max, burst 200 000", r);
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
            Target::AtMostInMostRuns(1000.0),
        ));
    }
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
