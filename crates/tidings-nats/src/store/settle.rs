//! Settling: an outcome becomes an acknowledgement, a retry's attempt count
//! or a dead letter, in order, by the settler task; a keyed delivery this
//! process may have lost is checked with the server first.
//!
//! A replayed dead letter ([`Change::Replayed`]; the store claims replays)
//! is published again to its event's subject, with a message id of its own
//! and the one handler it is for (`wire::replay_headers`): the handler's
//! consumer hands it to whichever process pulls it, a keyed one in its key
//! partition after everything of its key already in the stream, so it runs
//! one at a time with its key's others, as any delivery does. Its letter
//! stays in the dead-letter bucket, marked with the replay's message id
//! once the server has acknowledged the publish (a start does not list it
//! then), until the replay is handled (purged) or dead-lettered again (a
//! new letter in its place). A process that dies between the publish and
//! the mark lists the letter again at its next start, while its replay is
//! in the stream: a second replay of it would run it twice (at least once,
//! as everywhere). A publish that fails is tried again, backing off, until
//! the store shuts down; the letter is then listed at the next start.

use super::*;

impl Inner {
    pub(super) async fn reply(&self, to: Subject, kind: AckKind) {
        let last_word = matches!(kind, AckKind::Ack | AckKind::Term);
        let body = Bytes::from(kind);
        if last_word {
            self.sent.keep(to.clone(), body.clone());
        }
        if let Err(e) = self.client.publish(to, body).await {
            tracing::warn!("could not acknowledge a delivery to the server: {e}");
        }
    }

    /// Whether this process still holds a delivery it took. A delivery
    /// without a key: yes (a late ack of one another process now runs only
    /// ends a duplicate). A keyed one that is suspect (see [`Held`]), or
    /// whose last confirmed heartbeat is half an `ack_wait` old: only if the
    /// server says so (JetStream takes an ack from any holder; a stale one
    /// would let the key's next event start while another process runs this
    /// one) — its partition still pinned to this process under the pin it
    /// came with (nobody else was given anything of the partition since), or,
    /// for a partition one at a time, its delivery still the consumer's last.
    pub(super) async fn still_holds(&self, h: &Held) -> bool {
        if !self.must_ask(h) {
            return true;
        }
        let ack_wait = self.options.partition_ack_wait();
        let asked = self.keyed_stream.consumer_info(&h.consumer);
        let info = tokio::time::timeout(ack_wait / 2, asked).await;
        match (info, &h.pin) {
            (Ok(Ok(info)), Some(pin)) => info
                .priority_groups
                .iter()
                .any(|g| g.pinned_client_id.as_deref() == Some(&**pin)),
            (Ok(Ok(info)), None) => {
                info.delivered.consumer_sequence == h.consumer_seq && info.num_ack_pending > 0
            }
            _ => false,
        }
    }
}

impl Inner {
    /// Whether settling `h` needs the server's word first (see
    /// [`Inner::still_holds`]): a keyed delivery that is suspect, or whose
    /// last confirmed heartbeat is half an `ack_wait` old.
    pub(super) fn must_ask(&self, h: &Held) -> bool {
        doubted(h, self.options.partition_ack_wait() / 2)
    }

    /// How old a pinned delivery's request (as it is held) or last
    /// confirmed heartbeat (before it starts) may be before it is taken for
    /// possibly another's: three quarters of a partition's `ack_wait`
    /// ([`Inner::may_be_gone`], and `hold`'s lateness).
    pub(super) fn pinned_doubt(&self) -> Duration {
        self.options.partition_ack_wait() * 3 / 4
    }

    /// Whether `h`, not yet started, may already be the server's to give
    /// again: suspect, or its last confirmed heartbeat three quarters of an
    /// `ack_wait` old. The server moved its `ack_wait` on no earlier than
    /// that heartbeat, so a quarter of it is left at least: the attempt
    /// starts in that time, and the heartbeats keep it from then on. (Half
    /// an `ack_wait`, as [`Inner::must_ask`] asks at a settle, let go work
    /// that was safe whenever a heartbeat round took a third of an
    /// `ack_wait`, as it does under load: every let-go drops a pin, and the
    /// pin's deliveries come back only after a new gate.)
    pub(super) fn may_be_gone(&self, h: &Held) -> bool {
        doubted(h, self.pinned_doubt())
    }
}

/// A keyed delivery that is suspect, or whose last confirmed heartbeat is
/// `age` old.
fn doubted(h: &Held, age: Duration) -> bool {
    h.keyed && (h.suspect || h.beat.elapsed() >= age)
}

/// An entry of the attempts bucket: the attempt a delivery makes next, and
/// whether that attempt was marked begun (`"3"`, `"3 begun"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AttemptRecord {
    pub(super) attempt: u32,
    pub(super) begun: bool,
}

impl AttemptRecord {
    pub(super) fn encode(self) -> Bytes {
        if self.begun {
            format!("{} begun", self.attempt).into()
        } else {
            self.attempt.to_string().into()
        }
    }

    /// `None` for what this store did not write.
    pub(super) fn decode(v: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(v).ok()?;
        let (n, begun) = match s.split_once(' ') {
            Some((n, "begun")) => (n, true),
            Some(_) => return None,
            None => (s, false),
        };
        let attempt = n.parse().ok().filter(|a| *a >= 1)?;
        Some(Self { attempt, begun })
    }
}

/// The one task that settles deliveries, in the order the bus reported them.
pub(super) async fn settler(
    inner: Arc<Inner>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut dead: HashMap<(Uuid, String), DeadRecord>,
) {
    // Handled deliveries whose settle must ask the server first: asked
    // beside the settler, so that the settles behind one do not wait for
    // its round trip (measured: 4 397 of 50 000 keyed settles asked, 2.6 ms
    // each, held the settler 11.5 s of a 16 s run).
    let mut asking = tokio::task::JoinSet::new();
    while let Some(op) = ops.recv().await {
        while asking.try_join_next().is_some() {}
        match op {
            Op::Update(id, handler, claim, Change::Handled) => {
                let ask = {
                    let mut held = lock(&inner.held);
                    match held.get(claim) {
                        Some(h) if inner.must_ask(h) => held.remove(claim),
                        _ => None,
                    }
                };
                match ask {
                    Some(h) => {
                        let inner = inner.clone();
                        asking.spawn(async move { ack_if_held(&inner, id, h).await });
                    }
                    None => settle(&inner, &mut dead, (id, handler), claim, Change::Handled).await,
                }
            }
            Op::Update(id, handler, _, Change::Replayed) => match dead.remove(&(id, handler)) {
                Some(record) => {
                    tokio::spawn(replay(inner.clone(), record));
                }
                None => {
                    inner.replaying.fetch_sub(1, Ordering::AcqRel);
                }
            },
            Op::Update(id, handler, claim, change) => {
                settle(&inner, &mut dead, (id, handler), claim, change).await;
            }
            Op::Begin(id, handler, claim, attempt, done) => {
                let record = AttemptRecord {
                    attempt,
                    begun: true,
                };
                let key = names::delivery_key(id, &handler);
                let written = inner.attempts.put(&key, record.encode()).await;
                if let Some(h) = lock(&inner.held).get_mut(claim) {
                    h.in_bucket = true;
                }
                let _ = done.send(written.map(drop).map_err(backend));
            }
            Op::Flush(done) => {
                while asking.join_next().await.is_some() {}
                let _ = done.send(release(&inner).await);
            }
        }
    }
    while asking.join_next().await.is_some() {}
    // The store is gone (the bus dropped without a shutdown): hand back
    // what is held rather than let it wait out `ack_wait`.
    let _ = release(&inner).await;
}

/// Publishes `record`'s replay (see the module docs), trying again until
/// the server acknowledges it or the store shuts down, then marks the
/// letter in the bucket as replayed. Outstanding until then.
async fn replay(inner: Arc<Inner>, record: DeadRecord) {
    let event = record.event();
    let handler = record.handler().to_owned();
    let id = Uuid::now_v7();
    let headers = wire::replay_headers(&event, &handler, id);
    let payload = Bytes::from(event.data.clone());
    let mut stop = inner.stop.subscribe();
    let mut backoff = Duration::from_millis(50);
    let published = loop {
        // (Tried again with the same message id: the server drops a second
        // copy of one it stored but whose acknowledgement was lost.)
        match inner
            .publish(&event, Some(headers.clone()), payload.clone())
            .await
        {
            Ok(()) => break true,
            Err(e) => tracing::warn!(
                handler,
                event_id = %event.id,
                "a dead letter's replay could not be published; trying again: {e}"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    };
    if published {
        let key = names::delivery_key(event.id, &handler);
        let marked = serde_json::to_vec(&record.replayed(id)).map_err(backend);
        let written = match marked {
            Ok(json) => inner.dead.put(&key, json.into()).await.map_err(backend),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(
                handler,
                event_id = %event.id,
                "a replayed dead letter could not be marked so: a start lists it again: {e}"
            );
        }
    } else {
        tracing::warn!(
            handler,
            event_id = %event.id,
            "a dead letter's replay was not published before the store shut down: a start lists it again"
        );
    }
    inner.replaying.fetch_sub(1, Ordering::AcqRel);
}

/// Settles the delivery `at` (event, handler), held under `claim` if this
/// process claimed it (a dead letter's discard has none).
pub(super) async fn settle(
    inner: &Inner,
    dead: &mut HashMap<(Uuid, String), DeadRecord>,
    at: (Uuid, String),
    claim: Claim,
    change: Change,
) {
    // (A digest of the handler's name: made only when a bucket is written,
    // not for every delivery handled.)
    let key = || names::delivery_key(at.0, &at.1);
    match change {
        Change::Handled => {
            // (A replay is claimed like any delivery: `ack_if_held` purges
            // its letter.)
            let held = lock(&inner.held).remove(claim);
            if let Some(h) = held {
                ack_if_held(inner, at.0, h).await;
            }
        }
        Change::Retrying { attempt } => {
            if let Some(h) = lock(&inner.held).get_mut(claim) {
                h.in_bucket = true;
            }
            let record = AttemptRecord {
                attempt,
                begun: false,
            };
            if let Err(e) = inner.attempts.put(key(), record.encode()).await {
                tracing::warn!("an attempt count could not be written: {e}");
            }
        }
        Change::DeadLettered { attempts, error } => {
            let held = lock(&inner.held).remove(claim);
            if let Some(h) = &held {
                if !inner.still_holds(h).await {
                    stale(inner, at.0, h);
                    return;
                }
            }
            let event = match (&held, dead.get(&at)) {
                (Some(h), _) => h.event.clone(),
                (None, Some(r)) => r.event(),
                (None, None) => return,
            };
            let record = DeadRecord::new(&event, &at.1, attempts, &error);
            let written = match serde_json::to_vec(&record) {
                Ok(json) => inner.dead.put(key(), json.into()).await.map_err(backend),
                Err(e) => Err(backend(e)),
            };
            if let Err(e) = written {
                // Not acknowledged: the server delivers it again after `ack_wait`.
                tracing::warn!(
                    "a dead letter could not be written; it will be delivered again: {e}"
                );
                return;
            }
            if let Some(h) = held {
                inner.reply(h.reply, AckKind::Ack).await;
                if h.in_bucket {
                    let _ = inner.attempts.purge(key()).await;
                }
            }
            dead.insert(at, record);
        }
        Change::Discarded if dead.remove(&at).is_some() => {
            if let Err(e) = inner.dead.purge(key()).await {
                tracing::warn!("a discarded dead letter could not be deleted: {e}");
            }
        }
        Change::Abandoned { attempt } => {
            // A shutdown cut the attempt short: its mark must not count it
            // as interrupted when the delivery comes back.
            let in_bucket = lock(&inner.held).get(claim).is_some_and(|h| h.in_bucket);
            if in_bucket {
                let record = AttemptRecord {
                    attempt,
                    begun: false,
                };
                if let Err(e) = inner.attempts.put(key(), record.encode()).await {
                    tracing::warn!("a begin mark could not be cleared: {e}");
                }
            }
        }
        // (A replay is published by the settler itself: see `replay`.)
        _ => {}
    }
}

/// A keyed delivery this process no longer holds (or cannot tell): its
/// outcome is not sent (the holder now, or the server after `ack_wait`,
/// settles it).
/// Acknowledges a handled keyed delivery if the server says this process
/// still holds it; else drops the outcome as stale.
async fn ack_if_held(inner: &Inner, event_id: Uuid, h: Held) {
    if !inner.still_holds(&h).await {
        stale(inner, event_id, &h);
        return;
    }
    tracing::debug!(
        handler = &*h.handler,
        %event_id,
        seq = h.seq,
        pin = h.pin.as_deref(),
        "acknowledged a delivery"
    );
    inner.reply(h.reply, AckKind::Ack).await;
    if !(h.in_bucket || h.replay) {
        return;
    }
    // (A digest of the handler's name: made only when a bucket is written.)
    let key = names::delivery_key(event_id, &h.handler);
    if h.in_bucket {
        let _ = inner.attempts.purge(&key).await;
    }
    if h.replay {
        // A replayed dead letter was handled.
        if let Err(e) = inner.dead.purge(&key).await {
            tracing::warn!("a handled dead letter could not be deleted: {e}");
        }
    }
}

/// The outcome is not sent: answered to the bus as stale (the server has
/// handed the delivery to another process since: this one was out of touch
/// for longer than `ack_wait`).
pub(super) fn stale(inner: &Inner, event_id: Uuid, h: &Held) {
    match inner.answers.get() {
        Some(answers) => answers.stale(event_id, &h.handler),
        None => tracing::warn!(
            handler = &*h.handler,
            %event_id,
            "a keyed delivery's outcome is dropped: the server has handed it to another process since"
        ),
    }
}

/// At shutdown: hands back what this process claimed and did not settle
/// (the server delivers it again at once, to whichever process asks, in
/// stream order), makes sure every reply has reached the server, then
/// unpins the key partitions pinned to this process, so that another
/// takes them over at once (see [`partition`](super::partition)).
pub(super) async fn release(inner: &Inner) -> Result<(), StoreError> {
    inner.stop.send_replace(true);
    // Their pull requests must be gone before the hand-backs: the server
    // gives a handed-back delivery to the oldest request waiting for it,
    // and one of this process's would swallow it until `ack_wait`. (A
    // dropped request's unsubscribe goes out on the connection's queue, so
    // it is ahead of the hand-backs below.) A pinned partition's poller
    // reads its last request to the end first.
    let pollers = std::mem::take(&mut *lock(&inner.pollers));
    let mut pinned = Vec::new();
    let wait = super::partition::PIN_POLL + Duration::from_secs(1);
    for p in pollers {
        if let Ok(Ok(Some(pin))) = tokio::time::timeout(wait, p).await {
            pinned.push(pin);
        }
    }
    lock(&inner.ready).clear();
    let held = lock(&inner.held).drain();
    inner.nak_in_order(held).await;
    inner.client.flush().await.map_err(backend)?;
    let unpins = pinned
        .iter()
        .map(|(consumer, pin)| inner.unpin_if_mine(consumer, pin));
    futures_util::future::join_all(unpins).await;
    Ok(())
}
