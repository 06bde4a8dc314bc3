//! The store's background tasks besides the settler: heartbeats for what
//! this process holds, the announcement of its handlers, and following the
//! connection's losses and returns.

use super::*;

/// Tells the server every third of `ack_wait` that what this process holds
/// is still being worked on. A task of its own, so that a slow write of the
/// settler's (a bucket write while the server is failing over) never holds
/// the reports back past `ack_wait`. Ends with the store.
pub(super) async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut beat = tokio::time::interval(every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        beat.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Keyed deliveries (a partition's short ack_wait) at every tick, the
        // others every third of their own ack_wait.
        let unkeyed_every =
            (inner.options.ack_wait.as_millis() / every.as_millis().max(1) / 3).max(1);
        let all = u128::from(ticks) % unkeyed_every == 0;
        ticks = ticks.wrapping_add(1);
        let started = Instant::now();
        let replies: Vec<(Claim, Subject)> = lock(&inner.held)
            .iter()
            .filter(|(_, h)| all || h.keyed)
            .map(|(claim, h)| (claim, h.reply.clone()))
            .collect();
        for (_, r) in &replies {
            inner.reply(r.clone(), AckKind::Progress).await;
        }
        // Confirmed by a round trip to the server (a flush only empties the
        // client's buffer): a frozen or cut connection confirms nothing.
        let confirmed = tokio::time::timeout(every, inner.stream.get_info()).await;
        if matches!(confirmed, Ok(Ok(_))) {
            let confirmed_at = Instant::now();
            let mut held = lock(&inner.held);
            for (claim, _) in replies {
                if let Some(h) = held.get_mut(claim) {
                    h.suspect |= gap_past(h.beat, confirmed_at, inner.options.partition_ack_wait());
                    h.beat = h.beat.max(started);
                }
            }
        }
    }
}

/// Whether the server may have gone `ack_wait` without hearing of a
/// delivery between the heartbeat round confirmed before (`beat`, when it
/// started: the server heard it no earlier) and one confirmed at
/// `confirmed_at` (the server heard it no later): it may have given the
/// delivery to another process meanwhile. (Measured to the round's start
/// instead, as it was, a round sent into a frozen connection and confirmed
/// when it thawed looked on time though the server heard it only then.)
fn gap_past(beat: Instant, confirmed_at: Instant, ack_wait: Duration) -> bool {
    confirmed_at.saturating_duration_since(beat) >= ack_wait
}

/// Says every [`crate::registrations::ANNOUNCE_EVERY`] that this process
/// has `handlers`, for as long as the store lives.
pub(super) async fn announce(inner: Weak<Inner>, handlers: Vec<BoundHandler>) {
    loop {
        let Some(store) = inner.upgrade() else {
            return;
        };
        crate::registrations::announce(&store.handlers, &handlers).await;
        drop(store);
        tokio::time::sleep(crate::registrations::ANNOUNCE_EVERY).await;
    }
}

/// Follows the client's connection: health, and after a reconnect the
/// acknowledgements of the last moments sent again, the pollers' pulls
/// made again and a claim at once (see [`crate::link`]).
pub(super) async fn follow_connection(
    inner: Weak<Inner>,
    mut changes: mpsc::UnboundedReceiver<link::Change>,
) {
    while let Some(change) = changes.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match change {
            link::Change::Lost => {
                tracing::warn!("the store lost its NATS server; reconnecting");
                inner.health.lost();
            }
            link::Change::Back => {
                inner.health.connected();
                let again = inner.sent.recent();
                tracing::info!(
                    acks = again.len(),
                    "the store reached its NATS server again; sending the last acknowledgements again"
                );
                for (to, body) in again {
                    let _ = inner.client.publish(to, body).await;
                }
                inner.reconnected.send_modify(|n| *n += 1);
                inner.rung.store(true, Ordering::Release);
                inner.bell.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_heard_late_counts_its_whole_gap() {
        let aw = Duration::from_secs(5);
        let beat = Instant::now();
        // Started 3.5 s after the last confirmed round, into a frozen
        // connection, and confirmed 2 s later when it thawed: the server
        // heard nothing for up to 5.5 s.
        let confirmed_at = beat + Duration::from_millis(5_500);
        assert!(gap_past(beat, confirmed_at, aw));
        assert!(!gap_past(beat, beat + Duration::from_millis(1_900), aw));
    }
}
