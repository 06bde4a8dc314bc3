//! The report: figures (median, min, max of the runs), rows judged against
//! their targets on ratios paired within each round, and the Markdown table
//! written into docs/BENCHMARKS.md.

use serde::Serialize;
use std::path::Path;

/// One figure: median, min, max of the runs.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Figure {
    fn of(mut v: Vec<f64>) -> Option<Figure> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Figure {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// The unit.
    pub unit: &'static str,
    /// The Python reference on asyncio.
    pub asyncio: Option<Figure>,
    /// The Python reference on uvloop.
    pub uvloop: Option<Figure>,
    /// The raw ceiling, where one applies.
    pub ceiling: Option<Figure>,
    /// Tidings.
    pub tidings: Option<Figure>,
    /// Tidings ÷ asyncio, each run against the asyncio run of its round.
    pub vs_asyncio: Option<Figure>,
    /// Tidings ÷ the ceiling, each run against the ceiling run of its round.
    pub vs_ceiling: Option<Figure>,
    /// The target, in words.
    pub target: String,
    /// Whether the target is met (median of the paired ratios), when it can be judged.
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// CPU model and cores.
    pub machine: String,
    /// When.
    pub date: String,
    /// The command line that made it.
    pub command: String,
    /// Runs per figure.
    pub runs: usize,
    /// The rows.
    pub rows: Vec<Row>,
}

/// The machine: CPU model, cores and memory.
pub(super) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!(", {} GiB", kb / 1024 / 1024))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{mem}")
}

/// One measured thing, run by run (`None` where a run failed).
pub(super) type Series = Vec<Option<f64>>;

pub(super) fn fig(s: &Series) -> Option<Figure> {
    Figure::of(s.iter().flatten().copied().collect())
}

/// The ratio `a / b` of each run with its own baseline, measured in the same
/// round: drift of a shared machine between rounds cancels out.
fn paired(a: &Series, b: &Series) -> Option<Figure> {
    Figure::of(
        a.iter()
            .zip(b)
            .filter_map(|(x, y)| Some((*x)? / (*y)?))
            .collect(),
    )
}

/// Builds a row, judging `target` on the median of the paired ratios.
#[allow(clippy::too_many_arguments)]
pub(super) fn row(
    scenario: String,
    unit: &'static str,
    asyncio: &Series,
    uvloop: &Series,
    ceiling: &Series,
    tidings: &Series,
    target: Target<'_>,
) -> Row {
    let vs_asyncio = paired(tidings, asyncio);
    let vs_ceiling = paired(tidings, ceiling);
    let (target, met) = match target {
        Target::None(words) => (words.to_owned(), None),
        Target::AsyncioAtLeast(k) => (
            format!("≥ {k} × asyncio"),
            vs_asyncio.as_ref().map(|f| f.median >= k),
        ),
        Target::AsyncioAtMost(k) => (
            format!("≤ asyncio × {k}"),
            vs_asyncio.as_ref().map(|f| f.median <= k),
        ),
        Target::CeilingAtLeast(k, beside) => (
            format!(
                "≥ {:.0} % of the ceiling{}",
                k * 100.0,
                shown(beside, " (", ")")
            ),
            vs_ceiling.as_ref().map(|f| f.median >= k),
        ),
        Target::CeilingAtMost(k) => (
            format!("≤ {k} × the ceiling"),
            vs_ceiling.as_ref().map(|f| f.median <= k),
        ),
        Target::MaxAtMost(limit) => (
            format!("≤ {limit:.0} {unit} in every run"),
            fig(tidings).map(|f| f.max <= limit),
        ),
        Target::AtMostInMostRuns(limit) => {
            let runs: Vec<f64> = tidings.iter().flatten().copied().collect();
            // Four in five, rounded up: all of 3, 4 of 5, 8 of 10.
            let need = (runs.len() * 4).div_ceil(5);
            let within = runs.iter().filter(|&&v| v <= limit).count();
            (
                format!(
                    "≤ {limit:.0} {unit} in at least {need} of {} runs",
                    runs.len()
                ),
                (!runs.is_empty()).then_some(within >= need),
            )
        }
        Target::ShareOf(k, other, name, beside) => {
            // The same ratio of the raw engine's, for reading the verdict
            // against: not judged.
            let beside = shown(beside, "; ", "");
            match paired(tidings, other) {
                Some(f) => (
                    format!(
                        "≥ {:.0} % of {name} (measured {:.2}×, {:.2}–{:.2}{beside})",
                        k * 100.0,
                        f.median,
                        f.min,
                        f.max
                    ),
                    Some(f.median >= k),
                ),
                None => (format!("≥ {:.0} % of {name}{beside}", k * 100.0), None),
            }
        }
    };
    Row {
        scenario,
        unit,
        asyncio: fig(asyncio),
        uvloop: fig(uvloop),
        ceiling: fig(ceiling),
        tidings: fig(tidings),
        vs_asyncio,
        vs_ceiling,
        target,
        met,
    }
}

/// What a row is judged against (issue 15's targets: `tidings bench`'s
/// target column says them, and whether each is met).
pub(super) enum Target<'a> {
    /// No target; the words go in the column.
    None(&'static str),
    /// Tidings ÷ asyncio at least this.
    AsyncioAtLeast(f64),
    /// Tidings ÷ asyncio at most this.
    AsyncioAtMost(f64),
    /// Tidings ÷ the ceiling at least this; with, for reading it against,
    /// another ratio of the same rounds.
    CeilingAtLeast(f64, Option<Beside<'a>>),
    /// Tidings ÷ the ceiling at most this (latencies against a raw engine's).
    CeilingAtMost(f64),
    /// Every run's figure at most this.
    MaxAtMost(f64),
    /// At least four runs in five at most this.
    AtMostInMostRuns(f64),
    /// Tidings ÷ another Tidings row of the same rounds (named) at least
    /// this; with, for reading it against, the same ratio of two raw runs.
    ShareOf(f64, &'a Series, &'static str, Option<Beside<'a>>),
}

/// The ratio of two raw series of the same rounds (`over` ÷ `under`),
/// shown beside a [`Target::ShareOf`] and not judged.
#[derive(Clone, Copy)]
pub(super) struct Beside<'a> {
    pub(super) over: &'a Series,
    pub(super) under: &'a Series,
    pub(super) what: &'static str,
}

/// A [`Beside`] ratio as words, between `open` and `close`; nothing when
/// there is none or no round measured both.
fn shown(beside: Option<Beside<'_>>, open: &str, close: &str) -> String {
    beside
        .and_then(|b| Some((b.what, paired(b.over, b.under)?)))
        .map(|(what, f)| {
            format!(
                "{open}{what}: {:.2}× ({:.2}–{:.2}){close}",
                f.median, f.min, f.max
            )
        })
        .unwrap_or_default()
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "events/s" if v >= 1e6 => format!("{:.2} M", v / 1e6),
        "events/s" => format!("{:.0} k", v / 1e3),
        "µs" => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

fn cell(f: &Option<Figure>, unit: &str) -> String {
    match f {
        None => "–".into(),
        Some(f) => format!(
            "{} ({}–{})",
            fmt(f.median, unit),
            fmt(f.min, unit),
            fmt(f.max, unit)
        ),
    }
}

fn ratio(r: &Option<Figure>) -> String {
    match r {
        Some(r) => format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max),
        None => "–".into(),
    }
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Measured {} on {} (median of {} runs, min–max in brackets; each ratio is the median of the runs' ratios to the baseline measured in the same round), with `{}`.\n\n",
        report.date, report.machine, report.runs, report.command
    ));
    s.push_str("| scenario | unit | Python asyncio | Python uvloop | raw ceiling | Tidings | Tidings ÷ asyncio | Tidings ÷ ceiling | target | met |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &report.rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.unit,
            cell(&row.asyncio, row.unit),
            cell(&row.uvloop, row.unit),
            cell(&row.ceiling, row.unit),
            cell(&row.tidings, row.unit),
            ratio(&row.vs_asyncio),
            ratio(&row.vs_ceiling),
            row.target,
            met
        ));
    }
    s
}

const BEGIN: &str = "<!-- tidings-bench:begin -->";

const END: &str = "<!-- tidings-bench:end -->";

/// Replaces the table between the markers in `path` (appends them if missing).
pub fn write_docs(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let table = format!("{BEGIN}\n{}{END}", markdown(report));
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &text[..a], table, &text[b + END.len()..]),
        _ => format!("{text}\n{table}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_each_run_with_the_baseline_of_its_round() {
        // Round 2 ran on a machine twice as slow for both sides: paired ratios
        // stay at 10, while the ratio of the medians would not.
        let tidings = vec![Some(100.0), Some(50.0), Some(100.0)];
        let baseline = vec![Some(10.0), Some(5.0), Some(10.0)];
        let r = paired(&tidings, &baseline).unwrap();
        assert_eq!((r.min, r.median, r.max), (10.0, 10.0, 10.0));
        // A failed run on either side drops that round only.
        let r = paired(&vec![Some(100.0), None], &vec![Some(10.0), Some(10.0)]).unwrap();
        assert_eq!(r.median, 10.0);
        assert!(paired(&vec![None], &vec![Some(1.0)]).is_none());
    }

    #[test]
    fn targets_are_judged_on_the_paired_median() {
        let t = vec![Some(60.0), Some(40.0), Some(70.0)];
        let b = vec![Some(10.0), Some(10.0), Some(10.0)];
        let none = Series::new();
        let judge = |baseline: &Series, target| {
            row("x".into(), "µs", baseline, &none, &none, &t, target).met
        };
        assert_eq!(judge(&b, Target::AsyncioAtLeast(6.0)), Some(true));
        assert_eq!(judge(&b, Target::AsyncioAtLeast(6.5)), Some(false));
        assert_eq!(judge(&b, Target::AsyncioAtMost(5.0)), Some(false));
        // One run above the limit fails the row.
        assert_eq!(judge(&none, Target::MaxAtMost(65.0)), Some(false));
        // No baseline, no verdict.
        assert_eq!(judge(&none, Target::AsyncioAtLeast(1.0)), None);
        assert_eq!(judge(&b, Target::CeilingAtMost(1.0)), None);
        // Two of three runs within the limit: not four in five.
        assert_eq!(judge(&none, Target::AtMostInMostRuns(65.0)), Some(false));
        assert_eq!(judge(&none, Target::AtMostInMostRuns(70.0)), Some(true));
        let five = vec![Some(1.0), Some(1.0), Some(1.0), Some(1.0), Some(9.0)];
        let r = row(
            "x".into(),
            "µs",
            &none,
            &none,
            &none,
            &five,
            Target::AtMostInMostRuns(1.0),
        );
        assert_eq!(r.met, Some(true), "4 of 5");
        assert!(r.target.contains("at least 4 of 5"), "{}", r.target);
        // Against another row of the same rounds: 60/10, 40/10, 70/10 → median 6.
        assert_eq!(
            judge(&none, Target::ShareOf(6.0, &b, "b", None)),
            Some(true)
        );
        assert_eq!(
            judge(&none, Target::ShareOf(6.5, &b, "b", None)),
            Some(false)
        );
        // A raw ratio beside it is shown, and does not change the verdict.
        let beside = Beside {
            over: &t,
            under: &b,
            what: "raw",
        };
        let r = row(
            "x".into(),
            "µs",
            &none,
            &none,
            &none,
            &t,
            Target::ShareOf(6.5, &b, "b", Some(beside)),
        );
        assert_eq!(r.met, Some(false));
        assert!(r.target.contains("; raw: "), "{}", r.target);
        let r = row(
            "x".into(),
            "µs",
            &none,
            &none,
            &b,
            &t,
            Target::CeilingAtMost(6.0),
        );
        assert_eq!(r.met, Some(true));
        // Beside a ceiling's verdict too: shown (60/20, 40/20, 70/20 → 3),
        // the verdict the ceiling's alone.
        let other = vec![Some(20.0), Some(20.0), Some(20.0)];
        let beside = Beside {
            over: &t,
            under: &other,
            what: "÷ other",
        };
        let r = row(
            "x".into(),
            "events/s",
            &none,
            &none,
            &b,
            &t,
            Target::CeilingAtLeast(6.5, Some(beside)),
        );
        assert_eq!(r.met, Some(false));
        assert!(
            r.target.ends_with("(÷ other: 3.00× (2.00–3.50))"),
            "{}",
            r.target
        );
    }

    #[test]
    fn the_table_replaces_only_what_is_between_its_markers() {
        let dir = std::env::temp_dir().join(format!("tidings-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\noutro\n")).unwrap();
        let report = Report {
            machine: "m".into(),
            date: "d".into(),
            command: "c".into(),
            runs: 1,
            rows: vec![],
        };
        write_docs(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("intro\n") && text.ends_with("outro\n"),
            "{text}"
        );
        assert!(!text.contains("old"));
        assert_eq!(text.matches(BEGIN).count(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
