//! The writer's wait for a written batch's emitters to come back.
//!
//! Emitters that each await their emit and then emit again (a loop, a
//! worker draining a queue, a benchmark) split into two cohorts under one
//! writer: those whose batch is on the wire, and those that queued
//! meanwhile. Each batch then carries about half of them, and each pays a
//! commit's fixed cost (about a quarter of a millisecond of the server's
//! time against 5-6 µs a row: docs/BENCHMARKS.md section 7, session 25)
//! for half the events it could carry.
//!
//! So after a batch of emits is written, the main writer expects as many
//! emits as that batch had plus what was handed over while it was on the
//! wire, and its next batch of emits waits up to [`REJOIN`] for them: the
//! two cohorts become one batch. The wait ends as soon as the batch holds
//! what is expected, or holds anything besides emits (a flush, a claim: an
//! operation somebody waits for in another way), or the queue closes.
//! Below [`REJOIN_FROM`] emits nothing waits: one emitter at a time is
//! written at once (or by its own task: `direct.rs`).
//!
//! **Emitters that do not come back** (requests that each emit once) make
//! a wait run out. After one that ran out, the writer skips the next wait,
//! after a second the next two, doubling up to [`SKIP_UP_TO`] batches: at
//! most one batch in 64 waits for nothing under such load, and its emits
//! are written [`REJOIN`] (with the timer's granularity, up to 2 ms) later.
//! A wait that is met starts the doubling again.

use crate::writer::{Item, Op};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a batch of emits waits for the emitters of the last one.
pub(crate) const REJOIN: Duration = Duration::from_millis(1);

/// The fewest emits expected for a batch to wait.
pub(crate) const REJOIN_FROM: usize = 4;

/// The most batches skipped after waits that ran out.
pub(crate) const SKIP_UP_TO: u32 = 64;

/// What the main writer expects of its next batch of emits.
#[derive(Debug)]
pub(crate) struct Rejoin {
    /// The emits of the last batch written and what was handed over while
    /// it was on the wire.
    expected: usize,
    /// Batches left that do not wait.
    skip: u32,
    /// Batches to skip after the next wait that runs out.
    next_skip: u32,
}

impl Rejoin {
    pub(crate) fn new() -> Self {
        Self {
            expected: 0,
            skip: 0,
            next_skip: 1,
        }
    }

    /// After a batch was written: `emits` of it were emits, and `queued`
    /// operations were handed over while it was on the wire.
    pub(crate) fn written(&mut self, emits: usize, queued: usize) {
        self.expected = emits + queued;
    }

    /// Takes what comes from `rx` into `batch` (up to `max`) until it holds
    /// what is expected, for at most [`REJOIN`], if `batch` holds emits
    /// alone. Returns how many it took, and whether the queue is closed.
    pub(crate) async fn wait(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Item>,
        batch: &mut Vec<Item>,
        max: usize,
    ) -> (usize, bool) {
        if self.skip > 0 {
            self.skip -= 1;
            return (0, false);
        }
        let target = self.expected.min(max);
        if target < REJOIN_FROM || !emits_alone(batch) {
            return (0, false);
        }
        let until = Instant::now() + REJOIN;
        let mut taken = 0;
        while batch.len() < target && emits_alone(batch) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => {
                    batch.push(item);
                    taken += 1;
                }
                Ok(None) => return (taken, true),
                Err(_) => {
                    self.skip = self.next_skip;
                    self.next_skip = (self.next_skip * 2).min(SKIP_UP_TO);
                    return (taken, false);
                }
            }
        }
        self.next_skip = 1;
        (taken, false)
    }
}

fn emits_alone(batch: &[Item]) -> bool {
    batch.iter().all(|i| matches!(i.op, Op::Append(..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use tidings::store::StoredEvent;
    use tokio::sync::oneshot;

    fn emit() -> Item {
        let event = StoredEvent {
            id: uuid::Uuid::now_v7(),
            event_type: "t".into(),
            key: None,
            emitted_at: SystemTime::now(),
            data: "{}".into(),
            deliveries: Vec::new(),
        };
        Item {
            op: Op::Append(event, oneshot::channel().0),
            at: Instant::now(),
            patience: Duration::from_secs(5),
        }
    }

    /// Sends an emit to `ops` from a task of its own, after `yields` turns
    /// of the scheduler (the timer's granularity is a millisecond: an
    /// emitter answered comes back well within one).
    fn later(ops: &mpsc::UnboundedSender<Item>, yields: usize) {
        let ops = ops.clone();
        tokio::spawn(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            let _ = ops.send(emit());
        });
    }

    /// A batch of emits waits for the last batch's emitters, and no longer
    /// than it takes them to come back. (Without the wait, the batch is
    /// written with the two it had: checked.)
    #[tokio::test(start_paused = true)]
    async fn a_batch_of_emits_waits_for_the_last_ones_emitters() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let mut rejoin = Rejoin::new();
        // Four written, two handed over meanwhile: six expected.
        rejoin.written(4, 2);
        let mut batch = vec![emit(), emit()];
        for yields in [1, 2, 3, 4] {
            later(&ops, yields);
        }
        let started = Instant::now();
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (4, false));
        assert_eq!(batch.len(), 6);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no longer than they took"
        );
        // One short: the wait runs out.
        rejoin.written(6, 0);
        let mut batch = vec![emit(), emit()];
        for yields in [1, 2, 3] {
            later(&ops, yields);
        }
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (3, false));
        assert!(started.elapsed() >= REJOIN, "ran out");
    }

    /// A wait that runs out makes the next one skipped, two more after a
    /// second, and a wait that is met starts the doubling again.
    #[tokio::test(start_paused = true)]
    async fn waits_that_run_out_are_skipped_more_and_more() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let mut rejoin = Rejoin::new();
        let mut waited = Vec::new();
        for _ in 0..6 {
            rejoin.written(8, 0);
            let mut batch = vec![emit()];
            let started = Instant::now();
            rejoin.wait(&mut rx, &mut batch, 100).await;
            waited.push(started.elapsed() >= REJOIN);
        }
        // Waited, skipped one, waited, skipped two, waited.
        assert_eq!(waited, [true, false, true, false, false, true]);
        // Four skipped, then one met: the doubling starts again.
        for _ in 0..4 {
            let started = Instant::now();
            rejoin.wait(&mut rx, &mut vec![emit()], 100).await;
            assert_eq!(started.elapsed(), Duration::ZERO, "skipped");
        }
        rejoin.written(4, 0);
        let mut batch = vec![emit(), emit()];
        later(&ops, 1);
        later(&ops, 1);
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (2, false));
        assert_eq!(rejoin.next_skip, 1, "the doubling starts again");
    }

    /// Nothing waits for fewer than four, for a batch holding anything but
    /// emits, or beyond the batch's bound.
    #[tokio::test(start_paused = true)]
    async fn small_batches_and_others_do_not_wait() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        later(&ops, 1);
        let mut rejoin = Rejoin::new();
        let started = Instant::now();
        rejoin.written(2, 1);
        assert_eq!(
            rejoin.wait(&mut rx, &mut vec![emit()], 100).await,
            (0, false)
        );
        rejoin.written(8, 0);
        let (reply, _) = oneshot::channel();
        let flush = Item {
            op: Op::Flush(reply),
            ..emit()
        };
        let mut batch = vec![emit(), flush];
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (0, false));
        let mut batch = vec![emit(), emit()];
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 2).await, (0, false));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
