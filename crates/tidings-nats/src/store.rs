//! [`JetStreamStore`]: the bus's events in a JetStream stream, each handler's
//! deliveries in a durable consumer that every process of the bus pulls from.

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
    Begun, BoundHandler, Change, Count, Health, Recovered, Store, StoreError, StoreHealth,
    StoredDeadLetter, StoredDelivery, StoredEvent, Summary,
};
use tokio::sync::{mpsc, oneshot, watch, Notify, OnceCell};
use uuid::Uuid;

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

/// The least time between two rings of one store; shorter than
/// [`CLAIM_WINDOW`], so that the claim after a ring finds every append
/// acknowledged before the next ring would have gone out.
const RING_GAP: Duration = Duration::from_micros(500);

/// Settings of a [`JetStreamStore`].
///
/// ```
/// let o = tidings_nats::Options::default().ack_wait(std::time::Duration::from_secs(5));
/// assert_eq!(o.ack_wait, std::time::Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// How long a claimed delivery stays with its process without news: the
    /// store tells the server every third of it that the delivery is still
    /// being worked on; a process that died stops telling, and its
    /// deliveries go to another process once this has passed. It also
    /// bounds how long a delivery lost on its way to a process (a
    /// connection cut while the server sent it) waits before the server
    /// sends it again. Default 5 s (it was 30 s: a delivery lost in a cut
    /// then came 23 s after the others); longer means fewer progress
    /// messages while handlers run and slower recovery. A store whose
    /// `ack_wait` differs from that of a handler's consumer on the server
    /// updates the consumer (keep it the same in every process).
    pub ack_wait: Duration,
    /// Most deliveries one handler may have claimed and not settled, over all
    /// processes. Default 20 000.
    pub max_ack_pending: i64,
    /// Copies of the stream and buckets in a cluster. Default 1.
    pub replicas: usize,
    /// Partitions that events with a key are spread over, by a digest of
    /// the key. Each handler has one consumer per partition that hands out
    /// one delivery at a time, to whichever process asks: events of one key
    /// reach a handler one at a time and in emit order across all
    /// processes, at the cost of one round trip to the server per delivery
    /// of a partition (keys sharing a partition wait for each other).
    /// 0 turns it off: keyed events are shared out like the rest, in order
    /// within a process only. Default 16. Recorded in the bus's stream by
    /// the first process; the others use the recorded count.
    pub key_partitions: u32,
    /// How long an emit waits for the server's acknowledgement (the server
    /// restarting, or cut off) before it fails with
    /// [`tidings::EmitError::Unavailable`]. Default 5 s. The client
    /// reconnects by itself; an emit that timed out may still be stored if
    /// its publish reached the server, and is then delivered.
    pub emit_timeout: Duration,
    /// Most bytes the bus's stream holds (events not yet handled by every
    /// handler). When it is full, an emit fails with a typed error
    /// ([`tidings::StoreError::Full`]); nothing already stored is dropped.
    /// Default 1 GiB; -1 for no limit. Applied to the stream at every
    /// connect.
    pub max_bytes: i64,
    /// How long the stream keeps an event at most, handled or not. Zero
    /// (the default) keeps events until every handler is done with them.
    /// **Setting it drops events older than this without delivering
    /// them**: for buses whose events are worthless once old.
    pub max_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 20_000,
            replicas: 1,
            key_partitions: 16,
            emit_timeout: Duration::from_secs(5),
            max_bytes: 1 << 30,
            max_age: Duration::ZERO,
        }
    }
}

impl Options {
    /// Sets [`Options::ack_wait`] (at least 300 ms).
    ///
    /// ```
    /// let o = tidings_nats::Options::default().ack_wait(std::time::Duration::from_millis(1));
    /// assert_eq!(o.ack_wait, std::time::Duration::from_millis(300));
    /// ```
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(300));
        self
    }

    /// Sets [`Options::replicas`] (at least 1).
    ///
    /// ```
    /// assert_eq!(tidings_nats::Options::default().replicas(3).replicas, 3);
    /// ```
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Sets [`Options::emit_timeout`] (at least 100 ms).
    ///
    /// ```
    /// let o = tidings_nats::Options::default().emit_timeout(std::time::Duration::from_secs(2));
    /// assert_eq!(o.emit_timeout, std::time::Duration::from_secs(2));
    /// ```
    pub fn emit_timeout(mut self, limit: Duration) -> Self {
        self.emit_timeout = limit.max(Duration::from_millis(100));
        self
    }

    /// Sets [`Options::max_bytes`] (-1: no limit).
    ///
    /// ```
    /// assert_eq!(tidings_nats::Options::default().max_bytes(1 << 20).max_bytes, 1 << 20);
    /// ```
    pub fn max_bytes(mut self, bytes: i64) -> Self {
        self.max_bytes = if bytes <= 0 { -1 } else { bytes };
        self
    }

    /// Sets [`Options::max_age`] (zero: none). Events older than this are
    /// dropped by the server, delivered or not.
    ///
    /// ```
    /// let day = std::time::Duration::from_secs(86_400);
    /// assert_eq!(tidings_nats::Options::default().max_age(day).max_age, day);
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Sets [`Options::key_partitions`] (at most 256; 0 for none).
    ///
    /// ```
    /// let o = tidings_nats::Options::default();
    /// assert_eq!(o.clone().key_partitions(4).key_partitions, 4);
    /// assert_eq!(o.key_partitions(100_000).key_partitions, 256);
    /// ```
    pub fn key_partitions(mut self, partitions: u32) -> Self {
        self.key_partitions = partitions.min(MAX_KEY_PARTITIONS);
        self
    }
}

/// The longest `ack_wait` of a key partition's consumer. A partition hands
/// out one delivery at a time, so a delivery lost on its way to a process
/// (a connection cut while the server sent it) holds the whole partition
/// until `ack_wait` passes; this bounds that wait, whatever
/// [`Options::ack_wait`] is (the holder's heartbeats keep a long delivery
/// its own).
const PARTITION_ACK_WAIT: Duration = Duration::from_secs(5);

impl Options {
    /// The `ack_wait` of a key partition's consumer.
    fn partition_ack_wait(&self) -> Duration {
        self.ack_wait.min(PARTITION_ACK_WAIT)
    }
}

/// Most key partitions a bus may have (each is a consumer per handler).
const MAX_KEY_PARTITIONS: u32 = 256;

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
    attempts: kv::Store,
    dead: kv::Store,
    /// Where this process says which handlers it has (see `registrations`).
    handlers: kv::Store,
    options: Options,
    /// Partitions of keyed events (the stream's recorded count).
    partitions: u32,
    /// Keyed deliveries the partitions' pollers took (held already), for
    /// the next claim.
    ready: Mutex<Vec<StoredEvent>>,
    /// Tells the pollers to stop at once (dropping their pull requests, and
    /// handing back what still reaches them): set at shutdown, or dropped
    /// with the store.
    stop: watch::Sender<bool>,
    pollers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
    held: Mutex<HashMap<(Uuid, String), Held>>,
    bell: Arc<Notify>,
    /// When this store last rang, in µs since `epoch`.
    last_ring: AtomicU64,
    epoch: Instant,
    health: Arc<Health>,
    /// Acknowledgements of the last moments, sent again after a reconnect.
    sent: Sent,
    /// Bumped when the connection comes back: pollers pull again at once.
    reconnected: watch::Sender<u64>,
}

/// One of a handler's durable consumers: of its events without a key, or of
/// one partition of its keyed events.
struct Bound {
    handler: String,
    consumer: consumer::PullConsumer,
    keyed: bool,
    /// Until when claims skip it (its last pull request stalled), in µs
    /// since the store's epoch.
    stalled_until: AtomicU64,
}

/// A claimed delivery: where to acknowledge it, and the event (for a dead letter).
struct Held {
    reply: Subject,
    seq: u64,
    event: StoredEvent,
    /// It has an entry in the attempts bucket (an attempt count or a begin
    /// mark), to purge when it is settled.
    in_bucket: bool,
    /// From a key partition (one delivery out at a time): settled only
    /// while this process may still hold it (see [`crate::link`]).
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
}

enum Op {
    Update(Uuid, String, Change),
    /// Marks an attempt begun (`Store::begin`), in order with the updates.
    Begin(Uuid, String, u32, oneshot::Sender<Result<(), StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// An entry of the attempts bucket: the attempt a delivery makes next, and
/// whether that attempt was marked begun (`"3"`, `"3 begun"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AttemptRecord {
    attempt: u32,
    begun: bool,
}

impl AttemptRecord {
    fn encode(self) -> Bytes {
        if self.begun {
            format!("{} begun", self.attempt).into()
        } else {
            self.attempt.to_string().into()
        }
    }

    /// `None` for what this store did not write.
    fn decode(v: &[u8]) -> Option<Self> {
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JetStreamStore {
    /// Hands `op` to the settler; resolves with its answer.
    fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Op,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (done, answer) = oneshot::channel();
        let sent = self.ops.send(make(done)).map_err(|_| StoreError::Closed);
        Box::pin(async move {
            sent?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Connects to the server at `url` and opens the bus `bus` (1 to 64
    /// characters of `A-Za-z0-9_-`): its stream and buckets are made if they
    /// do not exist yet. Several processes may open the same bus at once;
    /// that is what it is for.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for a bad bus name;
    /// [`StoreError::Backend`] if the server cannot be reached or refuses.
    pub async fn connect(url: &str, bus: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, bus, Options::default()).await
    }

    /// [`connect`](Self::connect) with [`Options`].
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, bus: &str, options: Options) -> Result<Self, StoreError> {
        let names = Names::new(bus)?;
        let (forward, changes) = link::events();
        let client = async_nats::ConnectOptions::new()
            .event_callback(forward)
            .reconnect_delay_callback(link::reconnect_delay)
            .connect(url)
            .await
            .map_err(backend)?;
        let js = jetstream::new(client.clone());
        let (stream, partitions) = open_stream(&js, &names, &options).await?;
        let attempts = bucket(&js, names.attempts_bucket(), options.replicas, ATTEMPTS_AGE).await?;
        // Dead letters stay until replayed: no age.
        let dead = bucket(&js, names.dead_bucket(), options.replicas, Duration::ZERO).await?;
        let handlers = bucket(
            &js,
            names.handlers_bucket(),
            options.replicas,
            Duration::ZERO,
        )
        .await?;
        let letters = read_dead(&dead).await?;
        let bell = Arc::new(Notify::new());
        let mut rings = client.subscribe(names.bell()).await.map_err(backend)?;
        let inner = Arc::new_cyclic(|me| Inner {
            names,
            client,
            js,
            stream,
            attempts,
            dead,
            handlers,
            options,
            partitions,
            ready: Mutex::new(Vec::new()),
            stop: watch::Sender::new(false),
            pollers: Mutex::new(Vec::new()),
            poke: Arc::new(Notify::new()),
            poked: AtomicBool::new(false),
            rung: AtomicBool::new(false),
            me: me.clone(),
            bound: Mutex::new(Vec::new()),
            consumers: OnceCell::new(),
            recovered: Mutex::new(Some(Recovered {
                events: Vec::new(),
                dead_letters: letters.iter().map(DeadRecord::letter).collect(),
            })),
            held: Mutex::new(HashMap::new()),
            bell: bell.clone(),
            last_ring: AtomicU64::new(0),
            epoch: Instant::now(),
            health: Arc::new(Health::new()),
            sent: Sent::default(),
            reconnected: watch::Sender::new(0),
        });
        tokio::spawn(follow_connection(Arc::downgrade(&inner), changes));
        let (ops, rx) = mpsc::unbounded_channel();
        let dead_known = letters
            .into_iter()
            .map(|r| ((r.letter().event.id, r.handler().to_owned()), r))
            .collect();
        tokio::spawn(heartbeat(
            Arc::downgrade(&inner),
            inner.options.partition_ack_wait() / 3,
        ));
        tokio::spawn(settler(inner.clone(), rx, dead_known));
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while rings.next().await.is_some() {
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                inner.rung.store(true, Ordering::Release);
                inner.bell.notify_one();
            }
        });
        Ok(Self { inner, ops })
    }
}

/// Opens the bus's stream, making it first if needed, and returns it with
/// its key partition count: the one recorded in the stream (the first
/// process's), or for a stream made before partitions, `options`' (which is
/// then recorded, and the stream's subjects widened to take keyed subjects).
async fn open_stream(
    js: &jetstream::Context,
    names: &Names,
    options: &Options,
) -> Result<(stream::Stream, u32), StoreError> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: names.stream(),
            description: Some(wire::stream_label(options.key_partitions)),
            subjects: vec![names.all_events()],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            duplicate_window: Duration::from_secs(120),
            max_bytes: options.max_bytes,
            max_age: options.max_age,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(backend)?;
    let mut config = stream.cached_info().config.clone();
    if config.max_bytes != options.max_bytes
        || config.max_age != options.max_age
        || config.discard != stream::DiscardPolicy::New
    {
        // Limits are this process's options (the last to connect wins).
        config.max_bytes = options.max_bytes;
        config.max_age = options.max_age;
        config.discard = stream::DiscardPolicy::New;
        js.update_stream(&config).await.map_err(backend)?;
        stream.info().await.map_err(backend)?;
    }
    let recorded = config
        .description
        .as_deref()
        .and_then(wire::stream_partitions);
    if let Some(n) = recorded {
        if n != options.key_partitions {
            tracing::info!(
                stream = config.name,
                recorded = n,
                asked = options.key_partitions,
                "the bus's stream records another key partition count; using the stream's"
            );
        }
        return Ok((stream, n.min(MAX_KEY_PARTITIONS)));
    }
    let upgraded = stream::Config {
        description: Some(wire::stream_label(options.key_partitions)),
        subjects: vec![names.all_events()],
        ..config
    };
    js.update_stream(&upgraded).await.map_err(backend)?;
    stream.info().await.map_err(backend)?;
    Ok((stream, options.key_partitions))
}

/// Opens a key-value bucket, making it first if needed. Its stream is made
/// here with the settings `async-nats` would give it, because the client's
/// own `create_key_value` first asks for the account's details in a shape
/// that servers before 2.10 do not answer.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(backend)?;
    js.get_key_value(name).await.map_err(backend)
}

/// The dead letters kept, oldest first; unreadable ones are named in a warning and left.
async fn read_dead(dead: &kv::Store) -> Result<Vec<DeadRecord>, StoreError> {
    let mut keys = dead.keys().await.map_err(backend)?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(backend)?;
        let Some(value) = dead.get(key.as_str()).await.map_err(backend)? else {
            continue;
        };
        match serde_json::from_slice::<DeadRecord>(&value) {
            Ok(r) => out.push(r),
            Err(_) => tracing::warn!(
                key,
                "a dead letter in the store could not be read; left there"
            ),
        }
    }
    out.sort_by_key(DeadRecord::failed_at_ns);
    Ok(out)
}

impl Inner {
    /// Each bound handler's consumer, made on first use (before the first
    /// append, so that no event of this process's handlers is published
    /// before their consumers exist).
    async fn consumers(&self) -> Result<&[Bound], StoreError> {
        let bound = self
            .consumers
            .get_or_try_init(|| async {
                let handlers = lock(&self.bound).clone();
                let mut wanted = Vec::new();
                for h in &handlers {
                    wanted.push((h, None));
                    wanted.extend((0..self.partitions).map(|p| (h, Some(p))));
                }
                let made = wanted.into_iter().map(|(h, p)| self.bind_consumer(h, p));
                let bound = futures_util::future::try_join_all(made).await?;
                if !handlers.is_empty() {
                    tokio::spawn(announce(self.me.clone(), handlers.clone()));
                }
                let mut pollers = lock(&self.pollers);
                for b in bound.iter().filter(|b| b.keyed) {
                    pollers.push(tokio::spawn(poll_partition(
                        self.me.clone(),
                        b.handler.clone(),
                        b.consumer.clone(),
                        self.stop.subscribe(),
                        self.reconnected.subscribe(),
                    )));
                }
                drop(pollers);
                Ok::<_, StoreError>(bound)
            })
            .await?;
        Ok(bound)
    }

    /// Opens (making it if needed) one of a handler's consumers: of its
    /// events without a key, or of key partition `partition`.
    async fn bind_consumer(
        &self,
        h: &BoundHandler,
        partition: Option<u32>,
    ) -> Result<Bound, StoreError> {
        let (name, filter, max_ack_pending, ack_wait) = match partition {
            None => (
                names::consumer(&h.name),
                self.names.event_subject(&h.event_type),
                self.options.max_ack_pending,
                self.options.ack_wait,
            ),
            // One delivery of the partition out at a time, in any process:
            // that is what keeps a key's events in order.
            Some(p) => (
                names::partition_consumer(&h.name, p),
                self.names.keyed_subject(&h.event_type, p),
                1,
                self.options.partition_ack_wait(),
            ),
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(wire::label(h)),
            filter_subject: filter.clone(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_ack_pending,
            max_deliver: -1,
            ..Default::default()
        };
        let mut consumer: consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&name, config.clone())
            .await
            .map_err(backend)?;
        // A consumer made for the same handler name and another type: taking
        // it over would hand this handler the wrong events.
        if consumer.cached_info().config.filter_subject != filter {
            return Err(StoreError::InvalidConfig(format!(
                "handler {:?} now handles {:?}, but its consumer {name} on the server was \
                 made for another event type; delete that consumer or rename the handler",
                h.name, h.event_type
            )));
        }
        // Made with other settings (an earlier start with other Options):
        // the server updates these two in place.
        let made = &consumer.cached_info().config;
        if made.ack_wait != config.ack_wait || made.max_ack_pending != config.max_ack_pending {
            tracing::info!(
                consumer = name,
                "updating the consumer's ack_wait and max_ack_pending to this store's options"
            );
            consumer = self.stream.create_consumer(config).await.map_err(backend)?;
        }
        Ok(Bound {
            handler: h.name.clone(),
            consumer,
            keyed: partition.is_some(),
            stalled_until: AtomicU64::new(0),
        })
    }

    /// Takes up to `limit` deliveries from the consumers of events without
    /// a key, and what the key partitions' pollers took since the last claim.
    async fn claim(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let consumers = self.consumers().await?;
        let mut out = std::mem::take(&mut *lock(&self.ready));
        let poked = self.poked.swap(false, Ordering::AcqRel);
        let rung = self.rung.swap(false, Ordering::AcqRel);
        if poked && !rung {
            // Woken by a poller, not by an append or the relay's tick.
            return Ok(out);
        }
        let now = self.micros();
        let shared = consumers.iter().filter(|b| !b.keyed).count().max(1);
        let per = (limit / shared).max(1);
        // Never ask for more than the consumer may have out: what is held
        // here counts against it until settled.
        let rooms: Vec<i64> = {
            let held = lock(&self.held);
            let mut by: HashMap<&str, i64> = HashMap::new();
            for (_, handler) in held.keys() {
                *by.entry(handler.as_str()).or_default() += 1;
            }
            consumers
                .iter()
                .map(|b| self.options.max_ack_pending - by.get(b.handler.as_str()).unwrap_or(&0))
                .collect()
        };
        let takes = consumers
            .iter()
            .zip(rooms)
            .filter(|(b, _)| !b.keyed && b.stalled_until.load(Ordering::Relaxed) <= now)
            .filter_map(|(b, room)| {
                let room = usize::try_from(room).ok().filter(|&r| r > 0)?;
                Some(self.take(b, per.min(room)))
            });
        let mut failed = None;
        for taken in futures_util::future::join_all(takes).await {
            match taken {
                Ok(mut events) => out.append(&mut events),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                // What the others gave is held already: queue it.
                tracing::warn!("a claim from one of the bus's consumers failed: {e}");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    /// Fetches up to `max` deliveries from one consumer and holds them.
    async fn take(&self, b: &Bound, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        let mut batch = b
            .consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(backend)?;
        loop {
            let wait = if out.is_empty() {
                FETCH_STALL
            } else {
                FETCH_GAP
            };
            // What was taken so far is held already: return it, not an error.
            match tokio::time::timeout(wait, batch.next()).await {
                Ok(Some(Ok(m))) => out.extend(self.hold(&b.handler, m).await),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::warn!(handler = b.handler, "a claim was cut short: {e}");
                    break;
                }
                Err(_) if out.is_empty() => {
                    let until = self.micros() + FETCH_STALL.as_micros() as u64;
                    b.stalled_until.store(until, Ordering::Relaxed);
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Checks a delivery taken from `handler`'s consumer (untrusted: what is
    /// not a tidings event is terminated, never held) and holds it: the
    /// event to queue, or `None`.
    async fn hold(&self, handler: &str, m: jetstream::Message) -> Option<StoredEvent> {
        let reply = m.reply.clone()?;
        let (seq, delivered, consumer, consumer_seq, published) = m
            .info()
            .map(|i| {
                (
                    i.stream_sequence,
                    i.delivered,
                    i.consumer.to_owned(),
                    i.consumer_sequence,
                    i.published,
                )
            })
            .ok()?;
        let now_ns = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let age_ns = now_ns - published.unix_timestamp_nanos();
        let late =
            delivered > 1 || age_ns > (self.options.partition_ack_wait() / 2).as_nanos() as i128;
        let checked = wire::event(&m).and_then(|e| {
            if !tidings::is_valid_event_type(&e.event_type)
                || !self.subject_fits(&e, m.subject.as_str())
            {
                Err("its event type is not that of its subject")
            } else if e.key.as_deref().is_some_and(|k| !tidings::is_valid_key(k)) {
                Err("its key is not valid")
            } else {
                Ok(e)
            }
        });
        let mut event = match checked {
            Ok(e) => e,
            Err(why) => {
                tracing::warn!(
                    handler,
                    seq,
                    "a message in the bus's stream is not a tidings event ({why}); dropped"
                );
                let _ = m.ack_with(AckKind::Term).await;
                return None;
            }
        };
        // Delivered before (to a process that stopped, or handed back at a
        // shutdown): its attempt count and begin mark are in the bucket.
        let mut delivery = StoredDelivery::new(handler, 1);
        let mut in_bucket = false;
        if delivered > 1 {
            delivery.begun = Begun::Maybe;
            let key = names::delivery_key(event.id, handler);
            if let Ok(Some(v)) = self.attempts.get(key).await {
                if let Some(r) = AttemptRecord::decode(&v) {
                    delivery.attempt = r.attempt;
                    if r.begun {
                        delivery.begun = Begun::Interrupted;
                    }
                    in_bucket = true;
                }
            }
        }
        event.deliveries = vec![delivery];
        let held = Held {
            reply,
            seq,
            keyed: event.key.is_some() && self.partitions > 0,
            event: event.clone(),
            in_bucket,
            beat: Instant::now(),
            suspect: late,
            consumer,
            consumer_seq,
        };
        // Claimed again while still held here (its progress came late): keep
        // the newer claim, do not queue it twice.
        lock(&self.held)
            .insert((event.id, handler.to_owned()), held)
            .is_none()
            .then_some(event)
    }

    /// µs since the store's epoch.
    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a message's subject is the one its event is published on (or,
    /// for a keyed event, the subject of its type: how a version before key
    /// partitions published it).
    fn subject_fits(&self, e: &StoredEvent, subject: &str) -> bool {
        subject == self.names.event_subject(&e.event_type)
            || subject
                == self
                    .names
                    .subject(&e.event_type, e.key.as_deref(), self.partitions)
    }

    /// Wakes every process's relay (its own included) after an append,
    /// unless a ring went out less than [`RING_GAP`] ago: the relays claim
    /// [`CLAIM_WINDOW`] (longer) after a ring, so that claim already finds
    /// this append, which was acknowledged before. Losing a ring only delays
    /// a claim until the relay's next tick.
    async fn ring(&self) {
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

    async fn reply(&self, to: Subject, kind: AckKind) {
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
    /// whose last confirmed heartbeat is half an `ack_wait` old: only if it
    /// is still the last delivery of its partition's consumer, asked of the
    /// server (JetStream takes an ack from any holder; a stale one would let
    /// the key's next event start while another process runs this one).
    async fn still_holds(&self, h: &Held) -> bool {
        let ack_wait = self.options.partition_ack_wait();
        if !h.keyed || (!h.suspect && h.beat.elapsed() < ack_wait / 2) {
            return true;
        }
        let info = tokio::time::timeout(ack_wait / 2, self.stream.consumer_info(&h.consumer)).await;
        match info {
            Ok(Ok(info)) => {
                info.delivered.consumer_sequence == h.consumer_seq && info.num_ack_pending > 0
            }
            _ => false,
        }
    }
}

/// The ring clock: µs since one [`RING_GAP`] before the store's epoch, so
/// that the first append rings (`last_ring` starts at 0).
fn ring_clock(since_epoch: Duration) -> u64 {
    u64::try_from((since_epoch + RING_GAP).as_micros()).unwrap_or(u64::MAX)
}

/// Whether an append at `now` rings, the last ring having gone at `last`.
fn ring_due(last: u64, now: u64) -> bool {
    now.saturating_sub(last) >= RING_GAP.as_micros() as u64
}

/// The one task that settles deliveries, in the order the bus reported them.
async fn settler(
    inner: Arc<Inner>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut dead: HashMap<(Uuid, String), DeadRecord>,
) {
    while let Some(op) = ops.recv().await {
        match op {
            Op::Update(id, handler, change) => {
                settle(&inner, &mut dead, id, handler, change).await;
            }
            Op::Begin(id, handler, attempt, done) => {
                let record = AttemptRecord {
                    attempt,
                    begun: true,
                };
                let key = names::delivery_key(id, &handler);
                let written = inner.attempts.put(&key, record.encode()).await;
                if let Some(h) = lock(&inner.held).get_mut(&(id, handler)) {
                    h.in_bucket = true;
                }
                let _ = done.send(written.map(drop).map_err(backend));
            }
            Op::Flush(done) => {
                let _ = done.send(release(&inner).await);
            }
        }
    }
    // The store is gone (the bus dropped without a shutdown): hand back
    // what is held rather than let it wait out `ack_wait`.
    let _ = release(&inner).await;
}

/// Tells the server every third of `ack_wait` that what this process holds
/// is still being worked on. A task of its own, so that a slow write of the
/// settler's (a bucket write while the server is failing over) never holds
/// the reports back past `ack_wait`. Ends with the store.
async fn heartbeat(inner: Weak<Inner>, every: Duration) {
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
        let replies: Vec<(Uuid, String, Subject)> = lock(&inner.held)
            .iter()
            .filter(|(_, h)| all || h.keyed)
            .map(|((id, handler), h)| (*id, handler.clone(), h.reply.clone()))
            .collect();
        for (_, _, r) in &replies {
            inner.reply(r.clone(), AckKind::Progress).await;
        }
        // Confirmed by a round trip to the server (a flush only empties the
        // client's buffer): a frozen or cut connection confirms nothing.
        let confirmed = tokio::time::timeout(every, inner.stream.get_info()).await;
        if matches!(confirmed, Ok(Ok(_))) {
            let mut held = lock(&inner.held);
            for (id, handler, _) in replies {
                if let Some(h) = held.get_mut(&(id, handler)) {
                    // A gap past ack_wait: the server may have moved it on.
                    h.suspect |= started.saturating_duration_since(h.beat)
                        >= inner.options.partition_ack_wait();
                    h.beat = h.beat.max(started);
                }
            }
        }
    }
}

/// Says every [`crate::registrations::ANNOUNCE_EVERY`] that this process
/// has `handlers`, for as long as the store lives.
async fn announce(inner: Weak<Inner>, handlers: Vec<BoundHandler>) {
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
async fn follow_connection(inner: Weak<Inner>, mut changes: mpsc::UnboundedReceiver<link::Change>) {
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

async fn settle(
    inner: &Inner,
    dead: &mut HashMap<(Uuid, String), DeadRecord>,
    id: Uuid,
    handler: String,
    change: Change,
) {
    let key = names::delivery_key(id, &handler);
    let at = (id, handler);
    match change {
        Change::Handled => {
            let held = lock(&inner.held).remove(&at);
            if let Some(h) = held {
                if !inner.still_holds(&h).await {
                    stale(inner, &at);
                    return;
                }
                inner.reply(h.reply, AckKind::Ack).await;
                if h.in_bucket {
                    let _ = inner.attempts.purge(&key).await;
                }
            } else if dead.remove(&at).is_some() {
                // A replayed dead letter was handled.
                if let Err(e) = inner.dead.purge(&key).await {
                    tracing::warn!("a handled dead letter could not be deleted: {e}");
                }
            }
        }
        Change::Retrying { attempt } => {
            if let Some(h) = lock(&inner.held).get_mut(&at) {
                h.in_bucket = true;
            }
            let record = AttemptRecord {
                attempt,
                begun: false,
            };
            if let Err(e) = inner.attempts.put(&key, record.encode()).await {
                tracing::warn!("an attempt count could not be written: {e}");
            }
        }
        Change::DeadLettered { attempts, error } => {
            let held = lock(&inner.held).remove(&at);
            if let Some(h) = &held {
                if !inner.still_holds(h).await {
                    stale(inner, &at);
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
                Ok(json) => inner.dead.put(&key, json.into()).await.map_err(backend),
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
                    let _ = inner.attempts.purge(&key).await;
                }
            }
            dead.insert(at, record);
        }
        Change::Discarded if dead.remove(&at).is_some() => {
            if let Err(e) = inner.dead.purge(&key).await {
                tracing::warn!("a discarded dead letter could not be deleted: {e}");
            }
        }
        Change::Abandoned { attempt } => {
            // A shutdown cut the attempt short: its mark must not count it
            // as interrupted when the delivery comes back.
            let in_bucket = lock(&inner.held).get(&at).is_some_and(|h| h.in_bucket);
            if in_bucket {
                let record = AttemptRecord {
                    attempt,
                    begun: false,
                };
                if let Err(e) = inner.attempts.put(&key, record.encode()).await {
                    tracing::warn!("a begin mark could not be cleared: {e}");
                }
            }
        }
        // The dead letter stays in the bucket until its replay is handled,
        // so that a crash during the replay does not lose it.
        _ => {}
    }
}

/// A keyed delivery this process no longer holds (or cannot tell): its
/// outcome is not sent (the holder now, or the server after `ack_wait`,
/// settles it).
fn stale(inner: &Inner, at: &(Uuid, String)) {
    tracing::warn!(
        handler = at.1,
        event_id = %at.0,
        "a keyed delivery's outcome is dropped: the server has handed it to another process since (this one was out of touch for longer than ack_wait)"
    );
    inner.health.stale(1);
}

/// Takes one key partition's deliveries for one handler, one at a time (the
/// consumer hands out the next only once the last is settled, by whichever
/// process holds it): a pull request waits at the server until there is
/// one, or [`PARTITION_POLL`] has passed; what comes is held and left for
/// the relay's next claim, which the bell calls. Its own task, so that a
/// partition waiting for another process never holds up a claim. Ends with
/// the store, or at shutdown (handing back what still reaches it).
async fn poll_partition(
    inner: Weak<Inner>,
    handler: String,
    consumer: consumer::PullConsumer,
    mut stop: watch::Receiver<bool>,
    mut reconnected: watch::Receiver<u64>,
) {
    // The store only ever says stop, or goes: either way, return (dropping a
    // pull request unsubscribes from it, and the server forgets it).
    while !*stop.borrow() {
        reconnected.borrow_and_update();
        let pull = consumer
            .batch()
            .max_messages(1)
            .expires(PARTITION_POLL)
            .messages();
        let pulled = tokio::select! {
            pulled = pull => pulled,
            _ = stop.changed() => return,
        };
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                tracing::debug!(handler, "a key partition's pull request failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let m = tokio::select! {
                m = batch.next() => m,
                _ = stop.changed() => return,
                // A restarted server forgot the request: ask again now.
                _ = reconnected.changed() => break,
            };
            let m = match m {
                Some(Ok(m)) => m,
                None => break,
                Some(Err(e)) => {
                    // The server's status (a leader change, say): ask again.
                    tracing::debug!(handler, "a key partition's pull ended: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            };
            let Some(store) = inner.upgrade() else {
                return;
            };
            if *store.stop.borrow() {
                let _ = m.ack_with(AckKind::Nak(None)).await;
                return;
            }
            if let Some(event) = store.hold(&handler, m).await {
                lock(&store.ready).push(event);
                store.poked.store(true, Ordering::Release);
                store.poke.notify_one();
            }
        }
    }
}

/// At shutdown: hands back what this process claimed and did not settle
/// (the server delivers it again at once, to whichever process asks, in
/// stream order), then makes sure every reply has reached the server.
async fn release(inner: &Inner) -> Result<(), StoreError> {
    inner.stop.send_replace(true);
    // Their pull requests must be gone before the hand-backs: the server
    // gives a handed-back delivery to the oldest request waiting for it,
    // and one of this process's would swallow it until `ack_wait`. (A
    // dropped request's unsubscribe goes out on the connection's queue, so
    // it is ahead of the hand-backs below.)
    let pollers = std::mem::take(&mut *lock(&inner.pollers));
    for p in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(1), p).await;
    }
    lock(&inner.ready).clear();
    let mut held: Vec<Held> = lock(&inner.held).drain().map(|(_, h)| h).collect();
    held.sort_by_key(|h| h.seq);
    for h in held {
        inner.reply(h.reply, AckKind::Nak(None)).await;
    }
    inner.client.flush().await.map_err(backend)
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
            let subject =
                inner
                    .names
                    .subject(&event.event_type, event.key.as_deref(), inner.partitions);
            let headers = wire::headers(&event);
            let limit = inner.options.emit_timeout;
            let started = Instant::now();
            let payload = Bytes::from(event.data);
            let published = tokio::time::timeout(limit, async {
                loop {
                    let ack = inner
                        .js
                        .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                        .await;
                    let acked = match ack {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    match acked {
                        Ok(ack) => return Ok(ack),
                        // A restarted server takes a moment to load its
                        // streams: ask again (the message id dedupes).
                        Err(e)
                            if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(published_error(&e, started)),
                    }
                }
            })
            .await;
            match published {
                Err(_) => {
                    return Err(StoreError::Unavailable {
                        waited: started.elapsed(),
                    })
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => {}
            }
            inner.ring().await;
            Ok(())
        })
    }

    fn update(&self, event_id: Uuid, handler: &str, change: Change) {
        if self
            .ops
            .send(Op::Update(event_id, handler.to_owned(), change))
            .is_err()
        {
            tracing::warn!(
                handler,
                "the store is closed; a delivery's outcome is not written"
            );
        }
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        Ok(lock(&self.inner.recovered).take().unwrap_or_default())
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Op::Flush)
    }

    fn begin(
        &self,
        event_id: Uuid,
        handler: &str,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(|done| Op::Begin(event_id, handler.to_owned(), attempt, done))
    }

    fn has_relay(&self) -> bool {
        true
    }

    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.claim(limit).await })
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        let bell = self.inner.bell.clone();
        let poke = self.inner.poke.clone();
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

    fn shared_delivery(&self) -> bool {
        true
    }

    fn bind(&self, handlers: &[BoundHandler]) {
        *lock(&self.inner.bound) = handlers.to_vec();
    }

    fn health(&self) -> Option<StoreHealth> {
        Some(self.inner.health.snapshot())
    }

    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let consumers = inner.consumers().await?;
            // The stream keeps a message while some consumer still needs it:
            // an empty stream is one request, not one per consumer (a bus
            // has 1 + key_partitions of them per handler).
            let mut stream = inner.stream.clone();
            if stream.info().await.map_err(backend)?.state.messages == 0 {
                return Ok(0);
            }
            let infos = consumers.iter().map(|b| b.consumer.get_info());
            let mut n = 0;
            for info in futures_util::future::try_join_all(infos)
                .await
                .map_err(backend)?
            {
                n += info.num_pending + info.num_ack_pending as u64;
            }
            Ok(n)
        })
    }
}

impl JetStreamStore {
    /// Deletes everything of the bus `bus` from the server at `url`: its
    /// stream, its consumers and its buckets. For tests and for
    /// decommissioning a bus; no bus may be using it. A bus that does not
    /// exist is not an error.
    ///
    /// # Errors
    /// A bad bus name; the server refused or could not be reached.
    pub async fn purge(url: &str, bus: &str) -> Result<(), StoreError> {
        let names = Names::new(bus)?;
        let client = async_nats::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let gone = |e: &dyn std::fmt::Display| e.to_string().contains("not found");
        if let Err(e) = js.delete_stream(names.stream()).await {
            if !gone(&e) {
                return Err(backend(e));
            }
        }
        for bucket in [
            names.attempts_bucket(),
            names.dead_bucket(),
            names.handlers_bucket(),
        ] {
            if let Err(e) = js.delete_key_value(bucket).await {
                if !gone(&e) {
                    return Err(backend(e));
                }
            }
        }
        Ok(())
    }

    /// What the bus `bus` holds on the server at `url`, for operators:
    /// deliveries not yet done (waiting, or claimed and not yet settled) and
    /// dead letters, by event type and handler; never the payloads. Works
    /// while the bus runs. A delivery a process has just handed back (at its
    /// shutdown) may be counted twice until it is delivered again: the
    /// server (2.9) then reports it both as waiting and as out.
    ///
    /// # Errors
    /// A bad bus name, no such bus, or the server could not be reached.
    pub async fn summarize(url: &str, bus: &str) -> Result<Summary, StoreError> {
        let names = Names::new(bus)?;
        let client = async_nats::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let stream = js
            .get_stream(names.stream())
            .await
            .map_err(|e| StoreError::InvalidConfig(format!("bus {bus}: {e}")))?;
        let mut pending: BTreeMap<(String, String), Count> = BTreeMap::new();
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(backend)?;
            let Some(handler) = info.config.description.as_deref().and_then(wire::unlabel) else {
                continue;
            };
            let count = info.num_pending + info.num_ack_pending as u64;
            if count == 0 {
                continue;
            }
            // The first message of its subject past its acknowledgement floor.
            let oldest = stream
                .raw_message_builder()
                .sequence(info.ack_floor.stream_sequence + 1)
                .next_by_subject(info.config.filter_subject.clone())
                .send()
                .await
                .ok()
                .and_then(|m| wire::emitted_at(&m.headers))
                .unwrap_or(UNIX_EPOCH);
            // A handler's consumers (its events without a key, and each key
            // partition) add up to one row.
            let c = pending
                .entry((handler.event_type.clone(), handler.name.clone()))
                .or_insert(Count {
                    event_type: handler.event_type,
                    handler: handler.name,
                    count: 0,
                    oldest,
                });
            c.count += count;
            c.oldest = c.oldest.min(oldest);
        }
        let pending = pending.into_values().collect();
        let dead = js
            .get_key_value(names.dead_bucket())
            .await
            .map_err(backend)?;
        let mut by: BTreeMap<(String, String), Count> = BTreeMap::new();
        for r in read_dead(&dead).await? {
            let d = r.letter();
            let c = by
                .entry((d.event.event_type.clone(), d.handler.clone()))
                .or_insert_with(|| Count {
                    event_type: d.event.event_type.clone(),
                    handler: d.handler.clone(),
                    count: 0,
                    oldest: d.event.emitted_at,
                });
            c.count += 1;
            c.oldest = c.oldest.min(d.event.emitted_at);
        }
        Ok(Summary {
            pending,
            dead_letters: by.into_values().collect(),
        })
    }

    /// The number of partitions this bus's keyed events are spread over: the
    /// count recorded in its stream by the first process that opened it,
    /// whatever [`Options::key_partitions`] asked for here.
    ///
    /// ```no_run
    /// # async fn f() -> anyhow::Result<()> {
    /// let options = tidings_nats::Options::default().key_partitions(4);
    /// let store =
    ///     tidings_nats::JetStreamStore::connect_with("nats://127.0.0.1:4222", "orders", options).await?;
    /// println!("{} partitions", store.key_partitions()); // 4, unless "orders" had another count
    /// # Ok(()) }
    /// ```
    pub fn key_partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// The dead letters kept in the server now, oldest first (unreadable ones left out).
    ///
    /// # Errors
    /// The server could not be reached.
    pub async fn dead_letters(&self) -> Result<Vec<StoredDeadLetter>, StoreError> {
        Ok(read_dead(&self.inner.dead)
            .await?
            .iter()
            .map(DeadRecord::letter)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_append_rings_then_one_ring_per_gap() {
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
