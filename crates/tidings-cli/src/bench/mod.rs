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
//!
//! A module per scenario: `steady` (1 and 5), `burst` (2), `latency` (3),
//! `memory` (4), `durable` (6, with the raw engines' ceilings in `raw`),
//! `scale` (7, worker processes sharing a bus);
//! what they share is in `runtime`, `python` and `report`.

mod burst;
mod durable;
mod latency;
mod memory;
mod python;
mod raw;
mod report;
mod runtime;
mod scale;
mod steady;

pub use memory::memory_probe;
pub use report::{markdown, write_docs, Figure, Report, Row};
pub use scale::scale_worker;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Run only these scenarios (by number, "1" to "7"); all when empty.
    pub only: Vec<String>,
    /// A PostgreSQL server for scenario 6's PostgreSQL rows (skipped when `None`).
    pub postgres: Option<String>,
    /// A NATS JetStream server for scenario 6's NATS rows (skipped when `None`).
    pub nats: Option<String>,
    /// Key partitions of scenario 6's NATS bus and of its raw keyed ceiling.
    pub nats_key_partitions: u32,
    /// Scenario 6's and 7's NATS buses pin their key partitions to one
    /// process at a time (`tidings_nats::Options::pin_key_partitions`, the
    /// default; `--nats-one-at-a-time` turns it off).
    pub nats_pin_key_partitions: bool,
}

impl BenchConfig {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// What every scenario is given: the configuration, the rounds, the
/// Python reference.
struct Bench<'a> {
    cfg: &'a BenchConfig,
    runs: usize,
    py: python::Python<'a>,
}

impl Bench<'_> {
    /// A progress bar of one bar per round (hidden without `progress`).
    fn bar(&self, name: &str, len: usize) -> ProgressBar {
        let pb = if self.cfg.progress {
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
}

/// Runs every scenario chosen and returns the report. Within a scenario,
/// each round measures the baselines and every Tidings configuration once,
/// one after the other, so that each figure has its baseline from the same
/// minute.
pub fn run(cfg: &BenchConfig, command: String) -> anyhow::Result<Report> {
    let b = Bench {
        cfg,
        runs: cfg.runs.max(1),
        py: python::Python::new(cfg),
    };
    let mut rows = Vec::new();
    if cfg.wants("1") {
        steady::rows(&b, &mut rows);
    }
    if cfg.wants("2") {
        burst::rows(&b, &mut rows);
    }
    if cfg.wants("3") {
        latency::rows(&b, &mut rows);
    }
    if cfg.wants("4") {
        memory::rows(&b, &mut rows)?;
    }
    if cfg.wants("5") {
        steady::ceiling_rows(&b, &mut rows);
    }
    if cfg.wants("6") {
        durable::rows(&b, &mut rows);
    }
    if cfg.wants("7") {
        scale::rows(&b, &mut rows);
    }
    Ok(Report {
        machine: report::machine(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command,
        runs: b.runs,
        rows,
    })
}

/// How long a run may take, roughly, to tell the user (measured: about a
/// minute and a quarter per run with the Python reference on a 2-core machine).
pub fn estimate(cfg: &BenchConfig) -> Duration {
    // Seconds per run of each scenario on the 2-core machine of session 3,
    // with and without the Python reference (uvloop installed).
    const SECONDS: [(&str, u64, u64); 7] = [
        ("1", 16, 6),
        ("2", 5, 2),
        ("3", 7, 3),
        ("4", 4, 2),
        ("5", 2, 2),
        ("6", 6, 5),
        ("7", 40, 40),
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
            nats_key_partitions: 16,
            nats_pin_key_partitions: false,
        };
        assert!(cfg.wants("1") && cfg.wants("6"));
        cfg.only = vec!["6".into(), "3".into()];
        assert!(cfg.wants("6") && cfg.wants("3") && !cfg.wants("1"));
    }
}
