//! Looking again at a consumer whose immediate fetches come back empty: the
//! server counts deliveries as pending, yet answers every fetch with "no
//! messages".
//!
//! A claim's fetch is an immediate one (`no_wait`): the server answers at
//! once with what it has. nats-server 2.9.10 was seen (three times in 252
//! storms) answering such fetches `404 No Messages` for a minute on end
//! while its consumer info counted one or two messages pending: an
//! emitter's last event, published while the consumer was busy, stranded
//! until the next publish on its subject. Nothing is lost on the server,
//! but nothing delivers it either.
//!
//! So while a consumer's fetches come back empty, the claim asks the server
//! now and then (at most once a second per consumer, then less and less
//! often while it stays idle: 1, 2, 4 ... 60 s) how many messages it counts
//! pending; if any, and no pull request waits at the server (another
//! process's would be served first), an immediate fetch takes them (they
//! may simply have been published since the claim's last fetch). If that
//! comes back empty while the server still counts them pending and has
//! delivered nothing since (to any process: on a busy consumer others take
//! them), a pull request that waits at the server (not `no_wait`) takes
//! them, and a warning says so. This runs in a task of its own, so that no claim
//! waits for it; what it takes is held and left for the relay's next claim,
//! which the poke calls, exactly as the key partitions' pollers do. A fetch
//! that takes something starts the count again.

use super::*;

/// How long the waiting pull request waits at the server.
const LOOK_WAIT: Duration = Duration::from_secs(1);

/// The longest time between two looks at an idle consumer.
const LOOK_GAP_MAX: Duration = Duration::from_secs(60);

/// The least time between two looks at one consumer.
const LOOK_GAP_MIN: Duration = Duration::from_secs(1);

/// When a consumer's fetches last took something, and when to look again.
#[derive(Default)]
pub(super) struct Looks {
    /// µs since the store's epoch: the first empty fetch since one that took
    /// something (0: the last fetch took something).
    empty_since: AtomicU64,
    /// µs since the store's epoch of the last look.
    last: AtomicU64,
    /// µs until the next look (0: a fetch took something since the last).
    gap: AtomicU64,
}

impl Looks {
    /// A fetch took something.
    pub(super) fn took(&self) {
        self.empty_since.store(0, Ordering::Relaxed);
        self.gap.store(0, Ordering::Relaxed);
    }

    /// A fetch came back empty at `now`: whether to look now.
    pub(super) fn empty(&self, now: u64) -> bool {
        let _ =
            self.empty_since
                .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
        let min = LOOK_GAP_MIN.as_micros() as u64;
        let gap = self.gap.load(Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        if now < last + gap.max(min) && last != 0 {
            return false;
        }
        let next = if gap == 0 {
            min
        } else {
            (gap * 2).min(LOOK_GAP_MAX.as_micros() as u64)
        };
        self.gap.store(next, Ordering::Relaxed);
        self.last.store(now.max(1), Ordering::Relaxed);
        true
    }

    /// For how long the consumer's fetches have come back empty, at `now`.
    fn empty_for(&self, now: u64) -> Duration {
        match self.empty_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_micros(now.saturating_sub(since)),
        }
    }
}

/// Asks the server how many of consumer `i`'s messages it counts pending;
/// if any, takes up to `room` of them with an immediate fetch and, if that
/// comes back empty (what the server was seen doing), with a pull request
/// that waits; holds them and pokes the relay.
pub(super) async fn look_again(inner: Weak<Inner>, i: usize, room: usize) {
    let Some(store) = inner.upgrade() else {
        return;
    };
    let Some(b) = store.consumers.get().and_then(|c| c.get(i)) else {
        return;
    };
    let info = match b.consumer.get_info().await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(handler = &*b.handler, "looking at a consumer failed: {e}");
            return;
        }
    };
    // Another pull request waiting at the server (another process's, say)
    // is served first, and an immediate fetch behind it is refused: the
    // pending deliveries go to it. Seen stranded, the consumer had none.
    if info.num_pending == 0 || info.num_waiting > 0 {
        return;
    }
    let want = usize::try_from(info.num_pending).map_or(room, |n| n.min(room));
    // An immediate fetch first: the deliveries counted may simply have been
    // published after the claim's last fetch.
    let at_once = pull(&store, b, b.consumer.fetch().max_messages(want).messages()).await;
    // Empty: stranded only if the server delivered nothing meanwhile, to
    // any process (a busy consumer's pending count moves on at once).
    let stranded = at_once == 0
        && b.consumer.get_info().await.is_ok_and(|again| {
            again.delivered.consumer_sequence == info.delivered.consumer_sequence
                && again.num_pending > 0
                && again.num_waiting == 0
        });
    let waited = if stranded {
        let request = b.consumer.batch().max_messages(want).expires(LOOK_WAIT);
        Some(pull(&store, b, request.messages()).await)
    } else {
        None
    };
    if at_once > 0 || waited.is_some_and(|n| n > 0) {
        store.poked.store(true, Ordering::Release);
        store.poke.notify_one();
    }
    let empty_for = b.looks.empty_for(store.micros());
    match waited {
        None => tracing::debug!(
            handler = &*b.handler,
            pending = info.num_pending,
            taken = at_once,
            "looked again at an idle consumer"
        ),
        Some(taken) if taken > 0 => tracing::warn!(
            handler = &*b.handler,
            pending = info.num_pending,
            taken,
            empty_for = ?empty_for,
            "the server counted deliveries pending but answered an immediate fetch with none; \
             a waiting pull took them"
        ),
        Some(_) => tracing::debug!(
            handler = &*b.handler,
            pending = info.num_pending,
            ack_pending = info.num_ack_pending,
            "the server counts deliveries pending, yet gave none to an immediate fetch or a \
             waiting pull"
        ),
    }
}

/// Holds what a pull request (`batch`: immediate, or waiting) brings
/// (handing it back when the store is stopping); how many were held.
async fn pull<E: std::fmt::Display>(
    store: &Inner,
    b: &Bound,
    batch: impl std::future::Future<Output = Result<consumer::pull::Batch, E>>,
) -> usize {
    let asked = Instant::now();
    let mut batch = match batch.await {
        Ok(batch) => batch,
        Err(e) => {
            tracing::debug!(handler = &*b.handler, "a pull request failed: {e}");
            return 0;
        }
    };
    let mut taken = 0;
    let limit = LOOK_WAIT + Duration::from_secs(5);
    while let Ok(Some(m)) = tokio::time::timeout(limit, batch.next()).await {
        let Ok(m) = m else {
            break;
        };
        if *store.stop.borrow() {
            let _ = m.ack_with(AckKind::Nak(None)).await;
            continue;
        }
        let Some(at) = super::claim::Delivered::of(&m) else {
            continue;
        };
        if let Some(event) = store.hold(&b.handler, m, at, asked, None).await {
            taken += 1;
            lock(&store.ready).push(event);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn an_idle_consumer_is_looked_at_less_and_less_often_and_at_once_after_it_took_something() {
        let looks = Looks::default();
        let mut at = Vec::new();
        for t in (10 * S..200 * S).step_by(S as usize / 2) {
            if looks.empty(t) {
                at.push(t / S);
            }
        }
        assert_eq!(at, [10, 11, 13, 17, 25, 41, 73, 133, 193]);
        assert_eq!(looks.empty_for(200 * S), Duration::from_secs(190));
        looks.took();
        assert_eq!(looks.empty_for(200 * S), Duration::ZERO);
        // At once after a fetch took something, then 1, 2 ... s apart again.
        assert!(looks.empty(200 * S));
        assert!(!looks.empty(200 * S + S / 2));
        assert!(looks.empty(201 * S));
        assert!(!looks.empty(202 * S));
        assert!(looks.empty(203 * S));
    }
}
