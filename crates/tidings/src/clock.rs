//! Clock reads for the hot path: two per event (when it is emitted, and how
//! long its handler took), so their cost shows in every figure.
//!
//! `std`'s clocks go through the vDSO's `clock_gettime`: 25–40 ns a read on
//! this project's VM, a fifth of a typed event's whole cost. quanta reads the
//! CPU's time-stamp counter instead (about 10 ns), and falls back to the OS
//! clock where the counter is not reliable.
//!
//! Wall time (`emitted_at`, and the millisecond in event ids) is the counter's
//! elapsed time added to a reading of the system clock taken at most
//! [`REANCHOR`] earlier on the same thread: within a few microseconds of
//! `SystemTime::now()` while NTP slews the clock (at most 500 ppm), and a step
//! of the system clock shows within [`REANCHOR`].

use std::cell::Cell;
use std::time::{Duration, SystemTime};

/// How long a thread extrapolates wall time from the counter before it reads
/// the system clock again.
pub(crate) const REANCHOR: Duration = Duration::from_millis(50);

thread_local! {
    static ANCHOR: Cell<Option<(SystemTime, quanta::Instant)>> = const { Cell::new(None) };
}

/// A monotonic instant, for measuring durations.
pub(crate) fn now() -> quanta::Instant {
    quanta::Instant::now()
}

/// The wall-clock time now (see the module docs for its accuracy).
pub(crate) fn wall() -> SystemTime {
    let now = quanta::Instant::now();
    ANCHOR.with(|anchor| {
        if let Some((system, at)) = anchor.get() {
            if let Some(since) = now.checked_duration_since(at) {
                if since < REANCHOR {
                    return system + since;
                }
            }
        }
        let system = SystemTime::now();
        anchor.set(Some((system, now)));
        system
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(a: SystemTime, b: SystemTime) -> Duration {
        a.duration_since(b).unwrap_or_else(|e| e.duration())
    }

    #[test]
    fn wall_time_follows_the_system_clock() {
        for round in 0..4 {
            for _ in 0..10_000 {
                let before = SystemTime::now();
                let ours = wall();
                let after = SystemTime::now();
                // Between the two readings, give or take a few microseconds
                // of counter-to-clock drift and scaling error.
                let slack = Duration::from_micros(200);
                assert!(
                    ours + slack >= before,
                    "round {round}: {:?} behind",
                    gap(before, ours)
                );
                assert!(
                    ours <= after + slack,
                    "round {round}: {:?} ahead",
                    gap(ours, after)
                );
            }
            // Across a re-anchoring, too.
            std::thread::sleep(REANCHOR + Duration::from_millis(5));
        }
    }

    #[test]
    fn durations_are_monotonic() {
        let start = now();
        std::thread::sleep(Duration::from_millis(2));
        let took = now() - start;
        assert!(took >= Duration::from_millis(2), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
