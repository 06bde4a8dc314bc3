//! Scenario 2: a burst of emits, then waiting for all to be handled.

use super::report::{row, Row, Series, Target};
use super::runtime::{Flavor, BURST};
use super::steady::tidings_throughput;
use super::Bench;

/// Scenario 2: 200 000 dynamic emits without yielding, 1 handler.
pub(super) fn rows(bench: &Bench<'_>, rows: &mut Vec<Row>) {
    let r = bench.runs;
    let none: Series = Vec::new();
    // 2. Burst of 200 000, then wait.
    let b = BURST.to_string();
    let burst = ["burst", "1", &b];
    let pb = bench.bar("burst 200 000, 1 handler", r);
    let (mut asyncio, mut uvloop) = (Series::new(), Series::new());
    let mut tidings = [Series::new(), Series::new()];
    for _ in 0..r {
        asyncio.push(bench.py.pick(&burst, false, |o| o.events_per_s));
        uvloop.push(bench.py.pick(&burst, true, |o| o.events_per_s));
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
