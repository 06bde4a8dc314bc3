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
//! So the main writer remembers which tasks emitted the batch it last
//! wrote ([`Rejoin::written`]), and its next batch of emits waits up to
//! [`REJOIN`] for those tasks to emit again ([`Rejoin::wait`]): the two
//! cohorts become one batch. The wait ends as soon as all of them are
//! back, or **an emit comes from any other task** (requests that each emit
//! once: nobody is coming back, and the batch is written at once with that
//! emit in it), or anything besides an emit is handed over (a flush, a
//! claim: somebody waits in another way), or the queue closes. Below
//! [`REJOIN_FROM`] emitters nothing waits: one emitter at a time is written
//! at once (or by its own task: `direct.rs`).
//!
//! **A wait that misses** (runs out: emitters that think between emits
//! for longer than [`REJOIN`], or stop; or ends by another task's emit
//! before any came back: requests arriving in bursts) costs its batch up
//! to the wait (with the timer's granularity, up to 2 ms). After one, the
//! writer skips the next wait, after a second the next two, doubling up
//! to [`SKIP_UP_TO`] batches; a wait that is met (some came back) starts
//! the doubling again.

use crate::writer::{Item, Op};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::Id;
use tokio::time::Instant;

/// How long a batch of emits waits for the emitters of the last one.
pub(crate) const REJOIN: Duration = Duration::from_millis(1);

/// The fewest emitters in the last batch for the next to wait.
pub(crate) const REJOIN_FROM: usize = 4;

/// The most batches skipped after waits that ran out.
pub(crate) const SKIP_UP_TO: u32 = 64;

/// What the main writer expects of its next batch of emits.
#[derive(Debug)]
pub(crate) struct Rejoin {
    /// The tasks that emitted the last batch written.
    emitters: HashSet<Id>,
    /// Batches left that do not wait.
    skip: u32,
    /// Batches to skip after the next wait that runs out.
    next_skip: u32,
}

impl Rejoin {
    pub(crate) fn new() -> Self {
        Self {
            emitters: HashSet::new(),
            skip: 0,
            next_skip: 1,
        }
    }

    /// After `batch` was written: its emitters are expected back.
    pub(crate) fn written(&mut self, batch: &[Item]) {
        self.emitters.clear();
        self.emitters.extend(
            batch
                .iter()
                .filter(|i| matches!(i.op, Op::Append(..)))
                .filter_map(|i| i.from),
        );
    }

    /// Takes what comes from `rx` into `batch` (up to `max`) while the
    /// last batch's emitters come back, for at most [`REJOIN`], if `batch`
    /// holds emits alone. Returns how many it took, and whether the queue
    /// is closed.
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
        if self.emitters.len() < REJOIN_FROM || !emits_alone(batch) {
            return (0, false);
        }
        // Those already back are not waited for.
        for i in batch.iter() {
            if let Some(from) = i.from {
                self.emitters.remove(&from);
            }
        }
        let until = Instant::now() + REJOIN;
        let (mut taken, mut came_back) = (0, 0);
        while !self.emitters.is_empty() && batch.len() < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => {
                    let back = matches!(item.op, Op::Append(..))
                        && item.from.is_some_and(|from| self.emitters.remove(&from));
                    batch.push(item);
                    taken += 1;
                    if !back {
                        // Somebody else's: met if any came back.
                        if came_back == 0 {
                            self.missed();
                        } else {
                            self.next_skip = 1;
                        }
                        return (taken, false);
                    }
                    came_back += 1;
                }
                Ok(None) => return (taken, true),
                Err(_) => {
                    self.missed();
                    return (taken, false);
                }
            }
        }
        self.next_skip = 1;
        (taken, false)
    }

    /// A wait ran out, or none came back before somebody else emitted.
    fn missed(&mut self) {
        self.skip = self.next_skip;
        self.next_skip = (self.next_skip * 2).min(SKIP_UP_TO);
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

    /// An emit, handed over by the current task.
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
            from: tokio::task::try_id(),
        }
    }

    /// `n` emitter tasks, each emitting once when told to (after `yields`
    /// turns of the scheduler: the timer's granularity is a millisecond,
    /// and an emitter answered comes back well within one).
    fn emitters(
        ops: &mpsc::UnboundedSender<Item>,
        n: usize,
    ) -> Vec<(mpsc::UnboundedSender<usize>, Id)> {
        (0..n)
            .map(|_| {
                let (go, mut told) = mpsc::unbounded_channel::<usize>();
                let ops = ops.clone();
                let task = tokio::spawn(async move {
                    while let Some(yields) = told.recv().await {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        let _ = ops.send(emit());
                    }
                });
                (go, task.id())
            })
            .collect()
    }

    /// Receives `n` items.
    async fn received(rx: &mut mpsc::UnboundedReceiver<Item>, n: usize) -> Vec<Item> {
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(rx.recv().await.expect("an item"));
        }
        items
    }

    /// `n` [`emitters`] that have each emitted once, and their emits.
    async fn emitted(
        ops: &mpsc::UnboundedSender<Item>,
        rx: &mut mpsc::UnboundedReceiver<Item>,
        n: usize,
    ) -> (Vec<(mpsc::UnboundedSender<usize>, Id)>, Vec<Item>) {
        let tasks = emitters(ops, n);
        for (go, _) in &tasks {
            go.send(0).unwrap();
        }
        (tasks, received(rx, n).await)
    }

    /// Two cohorts of emitters become one batch: the next batch waits for
    /// the last one's emitters, no longer than they take to come back.
    /// (Without the wait, the batch is written with the two it had:
    /// checked.)
    #[tokio::test(start_paused = true)]
    async fn a_batch_of_emits_waits_for_the_last_ones_emitters() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        // Four were written; two queued meanwhile.
        let (tasks, all) = emitted(&ops, &mut rx, 6).await;
        let mut rejoin = Rejoin::new();
        rejoin.written(&all[..4]);
        let mut batch: Vec<Item> = all.into_iter().skip(4).collect();
        // The four come back, one by one.
        for (n, (go, _)) in tasks.iter().take(4).enumerate() {
            go.send(n + 1).unwrap();
        }
        let started = Instant::now();
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (4, false));
        assert_eq!(batch.len(), 6, "one batch of six");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no longer than they took"
        );
        // Next time, one of the six does not come back: the wait runs out.
        rejoin.written(&batch);
        for (go, _) in tasks.iter().take(5) {
            go.send(1).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (5, false));
        assert!(started.elapsed() >= REJOIN, "ran out");
    }

    /// An emit from another task ends the wait at once: requests that each
    /// emit once do not wait for each other. (Ignoring who emits, the batch
    /// waits for the rest: checked.)
    #[tokio::test(start_paused = true)]
    async fn an_emit_from_elsewhere_ends_the_wait() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let (tasks, five) = emitted(&ops, &mut rx, 5).await;
        let mut rejoin = Rejoin::new();
        rejoin.written(&five[..4]);
        // The fifth, not in the last batch, emits; then one of the four.
        tasks[4].0.send(1).unwrap();
        tasks[0].0.send(3).unwrap();
        let mut batch = Vec::new();
        let started = Instant::now();
        assert_eq!(rejoin.wait(&mut rx, &mut batch, 100).await, (1, false));
        assert_eq!(batch[0].from, Some(tasks[4].1), "the stranger ended it");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A wait that runs out makes the next one skipped, two more after a
    /// second, and a wait that is met starts the doubling again.
    #[tokio::test(start_paused = true)]
    async fn waits_that_run_out_are_skipped_more_and_more() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let (tasks, four) = emitted(&ops, &mut rx, 4).await;
        let mut rejoin = Rejoin::new();
        let mut waited = Vec::new();
        for _ in 0..6 {
            rejoin.written(&four);
            let started = Instant::now();
            rejoin.wait(&mut rx, &mut Vec::new(), 100).await;
            waited.push(started.elapsed() >= REJOIN);
        }
        // Waited, skipped one, waited, skipped two, waited.
        assert_eq!(waited, [true, false, true, false, false, true]);
        // Four skipped, then one met: the doubling starts again.
        for _ in 0..4 {
            let started = Instant::now();
            rejoin.wait(&mut rx, &mut Vec::new(), 100).await;
            assert_eq!(started.elapsed(), Duration::ZERO, "skipped");
        }
        rejoin.written(&four);
        for (go, _) in &tasks {
            go.send(1).unwrap();
        }
        assert_eq!(rejoin.wait(&mut rx, &mut Vec::new(), 100).await, (4, false));
        assert_eq!(rejoin.next_skip, 1, "the doubling starts again");
    }

    /// Nothing waits after fewer than four emitters, for a batch holding
    /// anything but emits, or beyond the batch's bound.
    #[tokio::test(start_paused = true)]
    async fn small_batches_and_others_do_not_wait() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let (_tasks, four) = emitted(&ops, &mut rx, 4).await;
        let mut rejoin = Rejoin::new();
        let started = Instant::now();
        rejoin.written(&four[..3]);
        assert_eq!(rejoin.wait(&mut rx, &mut Vec::new(), 100).await, (0, false));
        rejoin.written(&four);
        let (reply, _) = oneshot::channel();
        let flush = Item {
            op: Op::Flush(reply),
            ..emit()
        };
        assert_eq!(
            rejoin.wait(&mut rx, &mut vec![flush], 100).await,
            (0, false)
        );
        let mut full = vec![emit(), emit()];
        assert_eq!(rejoin.wait(&mut rx, &mut full, 2).await, (0, false));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
