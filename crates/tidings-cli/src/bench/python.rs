//! The Python reference (`benches/python/seed_bus.py`): run with the
//! machine's `python3`, on asyncio and, when installed, uvloop.

use super::BenchConfig;
use serde::Deserialize;
use std::process::Command;

/// What the reference prints (JSON).
#[derive(Deserialize)]
pub(super) struct PyOut {
    pub(super) events_per_s: Option<f64>,
    pub(super) p50_us: Option<f64>,
    pub(super) p99_us: Option<f64>,
    pub(super) p999_us: Option<f64>,
    pub(super) max_us: Option<f64>,
    pub(super) bytes_per_event: Option<f64>,
}

/// The reference as configured: skipped when no interpreter is given, its
/// uvloop runs skipped when uvloop is missing.
pub(super) struct Python<'a> {
    cfg: &'a BenchConfig,
    /// uvloop is installed.
    pub(super) uvloop: bool,
}

impl<'a> Python<'a> {
    pub(super) fn new(cfg: &'a BenchConfig) -> Self {
        Self {
            cfg,
            uvloop: has_uvloop(cfg),
        }
    }

    /// One run of the reference with `args` (`None`: skipped or failed).
    pub(super) fn run(&self, args: &[&str], uvloop: bool) -> Option<PyOut> {
        if uvloop && !self.uvloop {
            return None;
        }
        python(self.cfg, args, uvloop)
    }

    /// One figure of one run.
    pub(super) fn pick(
        &self,
        args: &[&str],
        uvloop: bool,
        pick: fn(PyOut) -> Option<f64>,
    ) -> Option<f64> {
        self.run(args, uvloop).and_then(pick)
    }
}

fn python(cfg: &BenchConfig, args: &[&str], uvloop: bool) -> Option<PyOut> {
    let py = cfg.python.as_ref()?;
    let mut cmd = Command::new(py);
    cmd.arg(&cfg.python_script).args(args);
    if uvloop {
        cmd.arg("--uvloop");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn has_uvloop(cfg: &BenchConfig) -> bool {
    cfg.python.as_ref().is_some_and(|py| {
        Command::new(py)
            .args(["-c", "import uvloop"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}
