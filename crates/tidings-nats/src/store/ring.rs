//! The bell: every process's relay is woken after an append (at most one
//! ring per [`RING_GAP`]).

use super::*;

impl Inner {
    /// Wakes every process's relay (its own included) after an append,
    /// unless a ring went out less than [`RING_GAP`] ago: the relays claim
    /// [`CLAIM_WINDOW`] (longer) after a ring, so that claim already finds
    /// this append, which was acknowledged before. Losing a ring only delays
    /// a claim until the relay's next tick.
    pub(super) async fn ring(&self) {
        let now = ring_clock(self.epoch.elapsed());
        let last = self.last_ring.load(Ordering::Relaxed);
        if !ring_due(last, now)
            || self
                .last_ring
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let _ = self.client.publish(self.names.bell(), Bytes::new()).await;
    }
}

/// The ring clock: µs since one [`RING_GAP`] before the store's epoch, so
/// that the first append rings (`last_ring` starts at 0).
pub(super) fn ring_clock(since_epoch: Duration) -> u64 {
    u64::try_from((since_epoch + RING_GAP).as_micros()).unwrap_or(u64::MAX)
}

/// Whether an append at `now` rings, the last ring having gone at `last`.
pub(super) fn ring_due(last: u64, now: u64) -> bool {
    now.saturating_sub(last) >= RING_GAP.as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_first_append_rings_then_one_ring_per_gap() {
        let start = ring_clock(Duration::ZERO);
        assert!(ring_due(0, start), "the first append rings, even at once");
        let soon = ring_clock(RING_GAP / 2);
        assert!(!ring_due(start, soon));
        assert!(ring_due(start, ring_clock(RING_GAP)));
        assert!(
            CLAIM_WINDOW > RING_GAP,
            "a claim must come after a skipped ring's append"
        );
    }
}
