//! Clock reads for the hot path: two per event (when it is emitted, and how
//! long its handler took), so their cost shows in every figure.
//!
//! `std`'s clocks go through the vDSO's `clock_gettime`: 25–40 ns a read on
//! this project's VM, a fifth of a typed event's whole cost. quanta reads the
//! CPU's time-stamp counter instead (about 10 ns), and falls back to the OS
//! clock where the counter is not reliable. Readings stay raw ([`Tick`]) and
//! are scaled only when a duration is taken from two of them.
//!
//! Wall time (`emitted_at`, and the millisecond in event ids) is the counter's
//! elapsed time added to a reading of the system clock taken at most
//! [`REANCHOR`] earlier on the same thread: within a few microseconds of
//! `SystemTime::now()` while NTP slews the clock (at most 500 ppm), and a step
//! of the system clock shows within [`REANCHOR`].

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

/// How long a thread extrapolates wall time from the counter before it reads
/// the system clock again.
pub(crate) const REANCHOR: Duration = Duration::from_millis(50);

/// The process's counter, calibrated once (the first read pays for it; the
/// bus's builder makes that read, off the emit path).
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

thread_local! {
    /// Nanoseconds since the Unix epoch read from the system clock, and the
    /// counter's raw reading at that moment.
    static ANCHOR: Cell<Option<(u64, Tick)>> = const { Cell::new(None) };
}

/// A raw reading of the counter: scaled to nanoseconds only when two are
/// subtracted. (`quanta::Instant::now` scales every reading and first checks
/// a thread-local mock clock: 86 instructions a read against a handful.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick(u64);

impl Tick {
    /// The time from `earlier` to `self`; zero if the counter went back
    /// (another core's counter, slightly behind).
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        CLOCK.delta(earlier.0, self.0)
    }
}

/// A monotonic reading, for measuring durations.
pub(crate) fn now() -> Tick {
    Tick(CLOCK.raw())
}

/// The wall-clock time now (see the module docs for its accuracy).
#[cfg(test)]
pub(crate) fn wall() -> SystemTime {
    from_unix_nanos(wall_nanos())
}

/// The wall-clock time now, in nanoseconds since the Unix epoch (0 for a
/// system clock set before 1970): integers, because the emit path turns it
/// into an id's millisecond and `SystemTime`'s checked arithmetic showed in
/// its profile (3 % of a typed event).
pub(crate) fn wall_nanos() -> u64 {
    let now = now();
    ANCHOR.with(|anchor| {
        if let Some((system, at)) = anchor.get() {
            // A counter that went back (another core's, a migrated VM's)
            // re-anchors rather than freezing the time at the anchor.
            if now.0 >= at.0 {
                let since = CLOCK.delta_as_nanos(at.0, now.0);
                if since < REANCHOR.as_nanos() as u64 {
                    return system + since;
                }
            }
        }
        let system = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        anchor.set(Some((system, now)));
        system
    })
}

/// The `SystemTime` `nanos` after the Unix epoch.
pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
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
        let took = now().since(start);
        assert!(took >= Duration::from_millis(2), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
