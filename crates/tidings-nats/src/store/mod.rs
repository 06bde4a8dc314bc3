//! [`JetStreamStore`]: the bus's events in a JetStream stream, each handler's
//! deliveries in a durable consumer that every process of the bus pulls from.
//!
//! Here: the store's state and the [`Store`] methods the bus calls (an
//! append is a publish, acknowledged by the server). The rest, by role:
//! [`connect`] (the stream, the buckets and the tasks), [`claim`] (a
//! consumer's message becomes a held delivery and an event for the relay),
//! [`partition`] (a key partition's poller: pinned or one at a time, and
//! the gate that keeps a key's order when a pin moves), [`holds`] (what this process holds, by
//! the claim each delivery carries), [`settle`] (an outcome becomes an ack, a
//! retry's count or a dead letter; stale keyed settles dropped), [`ring`]
//! (relays woken after an append), [`tasks`] (heartbeats, the handlers'
//! announcements, the connection's losses and returns), [`admin`] (what a
//! bus name holds, from outside a running bus). The settings are in
//! [`Options`].

use crate::link::{self, Sent};
use crate::names::{self, Names};
use crate::wire::{self, DeadRecord};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use async_nats::Subject;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tidings::store::{
    Answers, Begun, BoundHandler, Change, Claim, Count, Delivery, DeliveryRef, Feed, Health,
    Recovered, Store, StoreError, StoreHealth, StoredDeadLetter, StoredDelivery, StoredEvent,
    Summary,
};
use tokio::sync::{mpsc, oneshot, watch, Notify, OnceCell};
use uuid::Uuid;

mod admin;

pub use admin::JetStreamAdmin;
mod claim;
mod connect;
mod holds;
mod look_again;
mod partition;
mod ring;
mod settle;
mod tasks;

use crate::options::{Options, MAX_KEY_PARTITIONS};
use connect::read_dead;
pub(crate) use connect::streams_of;
use partition::poll_partition;
pub(crate) use partition::PIN_GROUP;
use settle::{settler, AttemptRecord};
use tasks::{announce, follow_connection, heartbeat};

/// How long the relay lets appends gather after a ring before it claims.
const CLAIM_WINDOW: Duration = Duration::from_millis(1);

/// How long one pull request of a key partition's poller waits at the
/// server for the partition's next delivery before it is made again.
const PARTITION_POLL: Duration = Duration::from_secs(5);

/// How long a claim waits for the server's first answer to a pull request.
/// It answers at once, unless the consumer has `max_ack_pending` deliveries
/// out (in all processes): then it keeps the request until one is settled.
/// A claim stops waiting (dropping the request, which the server then
/// forgets) and skips that consumer for as long again, so that one
/// saturated handler never holds up the claims of the others.
const FETCH_STALL: Duration = Duration::from_secs(1);

/// How long a claim waits for the next message of a pull request that has
/// given some: the server sends what it has back to back and ends with a
/// status, unless it reached `max_ack_pending` meanwhile.
const FETCH_GAP: Duration = Duration::from_millis(50);

/// How long an attempt count is kept. A count is purged once its delivery
/// is settled; one is left behind only when a process dies between a
/// retry's write and that purge (and the delivery is then settled by a
/// process that never retried it). The age bounds what such leftovers add
/// up to; a delivery still retrying after it restarts its count.
const ATTEMPTS_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most pins kept in `Inner::lost_pins` (each is one partition's loss;
/// by the time this many are kept, the first have nothing held under them).
const LOST_PINS_KEPT: usize = 4096;

/// The least time between two rings of one store; shorter than
/// [`CLAIM_WINDOW`], so that the claim after a ring finds every append
/// acknowledged before the next ring would have gone out.
const RING_GAP: Duration = Duration::from_micros(500);

/// A [`Store`] in NATS JetStream, for a bus whose processes run on many
/// machines. See the [crate docs](crate) for what it guarantees.
///
/// ```no_run
/// # async fn f() -> anyhow::Result<()> {
/// let store = tidings_nats::JetStreamStore::connect("nats://127.0.0.1:4222", "orders").await?;
/// let bus = tidings::EventBus::builder().store(store).build()?;
/// bus.emit("order_created", serde_json::json!({"id": 1})).await?; // in the stream now
/// # Ok(()) }
/// ```
pub struct JetStreamStore {
    inner: Arc<Inner>,
    ops: mpsc::UnboundedSender<Op>,
}

struct Inner {
    names: Names,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The stream of keyed events: `stream` itself for a bus made before
    /// they had one of their own (see [`connect::open_stream`]).
    keyed_stream: stream::Stream,
    attempts: kv::Store,
    dead: kv::Store,
    /// Where this process says which handlers it has (see `registrations`).
    handlers: kv::Store,
    options: Options,
    /// Partitions of keyed events (the stream's recorded count).
    partitions: u32,
    /// How this bus's events are written (its stream's layout).
    format: wire::Format,
    /// Keyed deliveries the partitions' pollers took (held already), for
    /// the next claim.
    ready: Mutex<Vec<StoredEvent>>,
    /// Tells the pollers to stop at once (dropping their pull requests, and
    /// handing back what still reaches them): set at shutdown, or dropped
    /// with the store.
    stop: watch::Sender<bool>,
    pollers: Mutex<Vec<tokio::task::JoinHandle<partition::Pinned>>>,
    /// Rung by a poller that took a delivery: the relay claims at once.
    poke: Arc<Notify>,
    /// A poller took a delivery / a ring came, since the last claim: a claim
    /// after a poke alone only collects what the pollers took.
    poked: AtomicBool,
    rung: AtomicBool,
    me: Weak<Inner>,
    bound: Mutex<Vec<BoundHandler>>,
    consumers: OnceCell<Vec<Bound>>,
    recovered: Mutex<Option<Recovered>>,
    /// Deliveries claimed by this process and not settled yet.
    held: Mutex<holds::Holds>,
    /// Where refused settles are answered (given by `recover`).
    answers: std::sync::OnceLock<Answers>,
    bell: Arc<Notify>,
    /// When this store last rang, in µs since `epoch`.
    last_ring: AtomicU64,
    epoch: Instant,
    health: Arc<Health>,
    /// Acknowledgements of the last moments, sent again after a reconnect.
    sent: Sent,
    /// Bumped when the connection comes back: pollers pull again at once.
    reconnected: watch::Sender<u64>,
    /// Pins under which this process let deliveries go unstarted
    /// ([`Store::admits`]): the others under them go too, and the partition's
    /// poller gives the pin up (see [`partition`]).
    lost_pins: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Some key partition's consumer is pinned (see [`partition`]): only
    /// then can a delivery be lost while queued here ([`Store::admits`]).
    any_pinned: AtomicBool,
    /// Replays asked for and not yet in the stream (see [`settle`]):
    /// outstanding for `wait_idle`.
    replaying: AtomicU64,
}

/// One of a handler's durable consumers: of its events without a key, or of
/// one partition of its keyed events.
struct Bound {
    handler: Arc<str>,
    consumer: consumer::PullConsumer,
    keyed: bool,
    /// A pinned key partition's consumer (see [`partition`]): the most
    /// deliveries it has out at once.
    window: Option<usize>,
    /// Until when claims skip it (its last pull request stalled), in µs
    /// since the store's epoch.
    stalled_until: AtomicU64,
    /// When to ask the server whether it keeps deliveries from its
    /// immediate fetches (see [`look_again`]).
    looks: look_again::Looks,
}

/// A claimed delivery: where to acknowledge it, and the event (for a dead letter).
struct Held {
    handler: Arc<str>,
    reply: Subject,
    seq: u64,
    event: StoredEvent,
    /// It has an entry in the attempts bucket (an attempt count or a begin
    /// mark), to purge when it is settled.
    in_bucket: bool,
    /// From a key partition: settled only while this process may still
    /// hold it (see [`crate::link`] and [`Inner::still_holds`]).
    keyed: bool,
    /// When the server last heard (confirmed) that this process holds it.
    beat: Instant,
    /// Its settle is to be checked with the server first (a keyed delivery
    /// only): it came late (redelivered, or sent long after it was
    /// published), or the server once went longer than `ack_wait` without
    /// hearing that this process holds it.
    suspect: bool,
    /// The consumer it came from, and its delivery sequence there: still
    /// this process's while it is the consumer's last delivery.
    consumer: String,
    consumer_seq: u64,
    /// Delivered before (to this process or another): another holder may
    /// have settled it since (see [`partition`]'s gate).
    redelivered: bool,
    /// The pin it came under, from a pinned key partition: still this
    /// process's while the consumer is pinned to it (see [`partition`]).
    pin: Option<Arc<str>>,
    /// A dead letter's replay: handled, its letter is purged.
    replay: bool,
}

enum Op {
    /// A delivery's outcome, with the claim it came with.
    Update(Uuid, String, Claim, Change),
    /// Marks an attempt begun (`Store::begin`), in order with the updates.
    Begin(
        Uuid,
        String,
        Claim,
        u32,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// A failed publish as a store error: the server out of reach is
/// `Unavailable`, a full stream `Full`.
fn published_error(e: &jetstream::context::PublishError, started: Instant) -> StoreError {
    use jetstream::context::PublishErrorKind as Kind;
    match e.kind() {
        Kind::TimedOut | Kind::BrokenPipe => StoreError::Unavailable {
            waited: started.elapsed(),
        },
        _ if e.to_string().contains("maximum bytes") || e.to_string().contains("10047") => {
            StoreError::Full(format!("the bus's stream is full: {e}"))
        }
        _ => StoreError::Backend(e.to_string().into()),
    }
}

impl Inner {
    /// Publishes a message of `event` (an emit's, or a replay's) to its
    /// subject and waits up to [`Options::emit_timeout`] for the server's
    /// acknowledgement, asking again while no stream takes it (a restarted
    /// server takes a moment to load its streams; nothing was stored).
    /// Then rings, for an event without a key: a keyed event goes to its key
    /// partition, whose pollers have a pull request waiting at the server,
    /// and needs no ring (which would make every relay fetch from the
    /// consumers of events without a key, a round trip each, for nothing).
    async fn publish(
        &self,
        event: &StoredEvent,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<(), StoreError> {
        // (A `Subject` clones without copying, for each try below.)
        let subject = Subject::from(self.names.subject(
            &event.event_type,
            event.key.as_deref(),
            self.partitions,
        ));
        let started = Instant::now();
        let published = tokio::time::timeout(self.options.emit_timeout, async {
            loop {
                let (s, p) = (subject.clone(), payload.clone());
                let ack = match &headers {
                    Some(h) => self.js.publish_with_headers(s, h.clone(), p).await,
                    None => self.js.publish(s, p).await,
                };
                let acked = match ack {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match acked {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(published_error(&e, started)),
                }
            }
        })
        .await;
        published.unwrap_or(Err(StoreError::Unavailable {
            waited: started.elapsed(),
        }))?;
        if event.key.is_none() || self.partitions == 0 {
            self.ring().await;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("stream", &self.inner.names.stream())
            .field("held", &lock(&self.inner.held).len())
            .field("key_partitions", &self.inner.partitions)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Store for JetStreamStore {
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.consumers().await?;
            let (headers, payload) = wire::message(&event, inner.format);
            inner.publish(&event, headers, payload).await
        })
    }

    fn settle(&self, delivery: DeliveryRef<'_>, change: Change) {
        let DeliveryRef {
            event_id,
            handler,
            claim,
            ..
        } = delivery;
        if change == Change::Replayed {
            // Outstanding from now until it is in the stream.
            self.inner.replaying.fetch_add(1, Ordering::AcqRel);
        }
        if self
            .ops
            .send(Op::Update(event_id, handler.to_owned(), claim, change))
            .is_err()
        {
            tracing::warn!(
                handler,
                "the store is closed; a delivery's outcome is not written"
            );
        }
    }

    /// The handlers are kept for the consumers made at the first append
    /// or claim (one durable consumer per handler, and per key partition).
    fn recover(
        &self,
        handlers: &[BoundHandler],
        answers: Answers,
    ) -> Result<Recovered, StoreError> {
        let _ = self.inner.answers.set(answers);
        *lock(&self.inner.bound) = handlers.to_vec();
        Ok(lock(&self.inner.recovered).take().unwrap_or_default())
    }

    /// A replayed dead letter is published again, for its handler alone,
    /// to its event's subject: a keyed one goes to its key partition, after
    /// everything of its key in the stream (see the `settle` module).
    fn claims_replays(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "nats-jetstream"
    }

    /// No for a delivery of a pinned key partition that this process may
    /// have lost (suspect, or not confirmed to the server for three quarters
    /// of an `ack_wait`: `Inner::may_be_gone`): the deliveries queued behind it
    /// here must not run while the partition's new holder runs them. It is
    /// let go (the server gives it to the partition's holder, this process
    /// again if it still is, once `ack_wait` has passed).
    fn admits(&self, delivery: DeliveryRef<'_>) -> bool {
        if !self.inner.any_pinned.load(Ordering::Relaxed) {
            return true;
        }
        let mut held = lock(&self.inner.held);
        let Some(pin) = held
            .get(delivery.claim)
            .and_then(|h| Some((h, h.pin.clone()?)))
            .filter(|(h, pin)| {
                self.inner.may_be_gone(h) || lock(&self.inner.lost_pins).contains(pin)
            })
            .map(|(_, pin)| pin)
        else {
            return true;
        };
        held.remove(delivery.claim);
        drop(held);
        // Every delivery under that pin queued here goes too: one of a key
        // behind this one must not run before it.
        self.inner.lose(&pin);
        tracing::debug!(handler = delivery.handler, %pin, "a pinned delivery was let go");
        match self.inner.answers.get() {
            Some(answers) => answers.not_started(delivery.event_id, delivery.handler),
            None => tracing::warn!(
                handler = delivery.handler,
                event_id = %delivery.event_id,
                "a delivery was not started: this process may no longer hold it"
            ),
        }
        false
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Op::Flush)
    }

    fn begin(
        &self,
        delivery: DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|done| {
            Op::Begin(
                delivery.event_id,
                delivery.handler.to_owned(),
                delivery.claim,
                attempt,
                done,
            )
        })
    }

    fn delivery(&self) -> Delivery {
        Delivery::Shared(Arc::new(JetStreamFeed(Arc::downgrade(&self.inner))))
    }

    fn health(&self) -> Option<StoreHealth> {
        Some(self.inner.health.snapshot())
    }
}

/// The store's [`Feed`]: its handlers' consumers, pulled. It does not keep
/// the store alive: once the store is dropped, a claim fails `Closed`.
struct JetStreamFeed(Weak<Inner>);

impl JetStreamFeed {
    fn inner(&self) -> Result<Arc<Inner>, StoreError> {
        self.0.upgrade().ok_or(StoreError::Closed)
    }
}

impl Feed for JetStreamFeed {
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        let inner = self.inner();
        Box::pin(async move { inner?.claim(limit).await })
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        let Ok(inner) = self.inner() else {
            return Box::pin(std::future::pending());
        };
        let (bell, poke) = (inner.bell.clone(), inner.poke.clone());
        drop(inner);
        Box::pin(async move {
            tokio::select! {
                () = bell.notified() => {
                    // Let the appends of the next moment ring too, so that
                    // one claim takes them all: a claim is a request the
                    // server answers, and one per append halved the rate at
                    // which emits were acknowledged.
                    tokio::time::sleep(CLAIM_WINDOW).await;
                }
                // A key partition's delivery is here already: no request.
                () = poke.notified() => {}
            }
        })
    }

    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        let inner = self.inner();
        Box::pin(async move {
            let inner = inner?;
            let consumers = inner.consumers().await?;
            let replaying = inner.replaying.load(Ordering::Acquire);
            // A stream keeps a message while some consumer still needs it:
            // empty streams are a request or two, not one per consumer (a
            // bus has 1 + key_partitions of them per handler).
            let mut held = 0;
            for stream in [&inner.stream, &inner.keyed_stream] {
                held += stream.get_info().await.map_err(backend)?.state.messages;
            }
            if held == 0 {
                return Ok(replaying);
            }
            let infos = consumers.iter().map(|b| b.consumer.get_info());
            let mut n = 0;
            for info in futures_util::future::try_join_all(infos)
                .await
                .map_err(backend)?
            {
                n += info.num_pending + info.num_ack_pending as u64;
            }
            Ok(n + replaying)
        })
    }
}
