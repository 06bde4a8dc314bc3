//! The relay: for a store whose events are not all written by this bus (the
//! transactional outbox, where the application writes events in its own
//! transactions), a task that claims what was committed and queues it.
//!
//! It waits for the store's notice that something changed, or [`TICK`] at
//! most, then claims events in batches of [`BATCH`]. Each event waits for a
//! place in the bus (the relay never holds more than the capacity) and is
//! queued as a recovered event is (checked as untrusted input first). The
//! relay stops when the bus shuts down or is dropped; what it claimed but did
//! not finish stays pending in the store, to be delivered at the next start.

use crate::bus::Inner;
use crate::store::Feed;
use crate::stored::{queue_stored, warn_left, Place};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest the relay waits without a notice before looking again.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Events claimed at a time.
pub(crate) const BATCH: usize = 256;

pub(crate) async fn run(bus: Weak<Inner>, feed: Arc<dyn Feed>, stop: CancellationToken) {
    loop {
        loop {
            let claimed = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                claimed = feed.claim(BATCH) => claimed,
            };
            let events = match claimed {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!("the relay could not claim events from the store: {e}");
                    break;
                }
            };
            let n = events.len();
            let mut left = BTreeMap::new();
            for event in events {
                let Some(gate) = bus.upgrade().map(|inner| inner.gate.clone()) else {
                    return;
                };
                // Wait for room without keeping the bus alive.
                let room = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    room = gate.acquire() => room,
                };
                if room.is_err() {
                    return;
                }
                let Some(inner) = bus.upgrade() else {
                    gate.release(1);
                    return;
                };
                queue_stored(&inner, event, &mut left, Place::Held);
            }
            warn_left(&left);
            if n < BATCH {
                break;
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = feed.changed() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}
