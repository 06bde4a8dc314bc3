//! What this process holds: each delivery it claimed and has not settled,
//! under the claim token it handed the bus with it
//! ([`tidings::store::Claim`]). A settle comes back with that token, so it
//! finds its message's reply subject without a lookup by event and handler;
//! the heartbeats and a shutdown's hand-backs go through them all.
//!
//! The same message can come again while it is held here (its progress
//! reached the server too late, and the server delivered it again to this
//! process): the newer delivery replaces the older under the same token,
//! and the event is not queued twice. Newer is the later delivery by the
//! consumer's sequence, not the later to arrive: after a stall, an older
//! delivery's message can reach the process after a newer one (seen in the
//! fault storms), and a keyed settle is only sent while the server's last
//! delivery is the one held.
//!
//! But not across pins: a delivery held under one pin of a key partition
//! keeps that pin when the server delivers it again under another (the
//! partition pinned anew to this process, after a server restart, say).
//! The held one is let go unstarted at its turn, with every delivery of
//! its lost pin queued behind it (`Store::admits`), and the new delivery,
//! counted out by the server and not held here, keeps the new pin's gate
//! shut until it comes back through that gate, in stream order with the
//! key's older deliveries. Taken over by the redelivery, the held one would
//! have carried the new pin into the old queue and run there, ahead of an
//! older delivery of its key still out (a restart storm, session 19: a
//! key's 16797 ran before its 16645; `tests/faults.rs`,
//! `a_redelivery_under_a_new_pin_does_not_run_ahead_of_its_key`, causes it).

use super::Held;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tidings::store::Claim;
use uuid::Uuid;

#[derive(Default)]
pub(super) struct Holds {
    by_claim: HashMap<u64, Held>,
    /// The token of each (event, handler) held, to notice a delivery that
    /// comes again.
    of_delivery: HashMap<(Uuid, Arc<str>), u64>,
    /// The last token handed out (from 1: 0 is no claim).
    last: u64,
}

impl Holds {
    /// Holds `held`; its claim, or `None` if that delivery was held
    /// already (the newer one replaces it under the older's claim, unless
    /// they came under different pins: the held one is kept).
    pub(super) fn hold(&mut self, held: Held) -> Option<Claim> {
        let at = (held.event.id, held.handler.clone());
        if let Some(token) = self.of_delivery.get(&at) {
            let keep = self.by_claim.get(token).is_some_and(|h| {
                (h.consumer == held.consumer && h.consumer_seq > held.consumer_seq)
                    || h.pin != held.pin
            });
            if !keep {
                self.by_claim.insert(*token, held);
            }
            return None;
        }
        self.last += 1;
        self.of_delivery.insert(at, self.last);
        self.by_claim.insert(self.last, held);
        Some(Claim::new(self.last))
    }

    pub(super) fn get(&self, claim: Claim) -> Option<&Held> {
        self.by_claim.get(&claim.token()?)
    }

    pub(super) fn get_mut(&mut self, claim: Claim) -> Option<&mut Held> {
        self.by_claim.get_mut(&claim.token()?)
    }

    /// Lets the delivery go (settled, or given up).
    pub(super) fn remove(&mut self, claim: Claim) -> Option<Held> {
        let held = self.by_claim.remove(&claim.token()?)?;
        self.of_delivery
            .remove(&(held.event.id, held.handler.clone()));
        Some(held)
    }

    /// Removes and returns every delivery held.
    pub(super) fn drain(&mut self) -> Vec<Held> {
        self.of_delivery.clear();
        self.by_claim.drain().map(|(_, h)| h).collect()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (Claim, &Held)> {
        self.by_claim.iter().map(|(t, h)| (Claim::new(*t), h))
    }

    /// The deliveries of consumer `name` held, but for those under a pin
    /// in `lost`: each one's stream sequence and whether it was delivered
    /// before; in order.
    pub(super) fn of_consumer(&self, name: &str, lost: &HashSet<Arc<str>>) -> Vec<(u64, bool)> {
        let mut seqs: Vec<(u64, bool)> = self
            .by_claim
            .values()
            .filter(|h| h.consumer == name && !h.pin.as_ref().is_some_and(|p| lost.contains(p)))
            .map(|h| (h.seq, h.redelivered))
            .collect();
        seqs.sort_unstable();
        seqs
    }

    pub(super) fn len(&self) -> usize {
        self.by_claim.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};
    use tidings::store::StoredEvent;

    fn delivery(id: Uuid, consumer_seq: u64) -> Held {
        Held {
            handler: "h".into(),
            reply: format!("$JS.ACK.s.c.1.9.{consumer_seq}.0.0").into(),
            seq: 9,
            event: StoredEvent {
                id,
                event_type: "t".into(),
                key: Some("k".into()),
                emitted_at: SystemTime::UNIX_EPOCH,
                data: "{}".into(),
                deliveries: Vec::new(),
            },
            in_bucket: false,
            keyed: true,
            beat: Instant::now(),
            suspect: false,
            consumer: "c".into(),
            consumer_seq,
            redelivered: false,
            pin: None,
            replay: false,
        }
    }

    #[test]
    fn a_delivery_held_again_keeps_its_claim_and_the_newest_delivery() {
        let mut holds = Holds::default();
        let id = Uuid::now_v7();
        let claim = holds.hold(delivery(id, 3)).expect("a first claim");
        // An older delivery's message arriving late changes nothing.
        assert!(holds.hold(delivery(id, 2)).is_none());
        assert_eq!(holds.get(claim).map(|h| h.consumer_seq), Some(3));
        // A newer one replaces it, under the same claim.
        assert!(holds.hold(delivery(id, 4)).is_none());
        assert_eq!(holds.get(claim).map(|h| h.consumer_seq), Some(4));
        assert_eq!(holds.len(), 1);
        assert_eq!(holds.remove(claim).map(|h| h.consumer_seq), Some(4));
        assert!(
            holds.hold(delivery(id, 5)).is_some(),
            "settled: a new claim"
        );
    }

    #[test]
    fn a_delivery_held_under_one_pin_keeps_it_when_delivered_again_under_another() {
        let mut holds = Holds::default();
        let id = Uuid::now_v7();
        let pinned = |consumer_seq, pin: &str| Held {
            pin: Some(pin.into()),
            ..delivery(id, consumer_seq)
        };
        let claim = holds.hold(pinned(3, "old")).expect("a first claim");
        // The partition pinned anew here: the server delivers it again.
        assert!(holds.hold(pinned(7, "new")).is_none());
        let held = holds.get(claim).expect("still held");
        assert_eq!((held.pin.as_deref(), held.consumer_seq), (Some("old"), 3));
        // Under the same pin, the newer delivery replaces it as before.
        assert!(holds.hold(pinned(8, "old")).is_none());
        assert_eq!(holds.get(claim).map(|h| h.consumer_seq), Some(8));
        assert_eq!(holds.len(), 1);
    }
}
