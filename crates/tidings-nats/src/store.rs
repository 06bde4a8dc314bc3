//! [`JetStreamStore`]: the bus's events in a JetStream stream, each handler's
//! deliveries in a durable consumer that every process of the bus pulls from.

use crate::names::{self, Names};
use crate::wire::{self, DeadRecord};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use async_nats::Subject;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tidings::store::{
    BoundHandler, Change, Count, Recovered, Store, StoreError, StoredDeadLetter, StoredDelivery,
    StoredEvent, Summary,
};
use tokio::sync::{mpsc, oneshot, Notify, OnceCell};
use uuid::Uuid;

/// How long the relay lets appends gather after a ring before it claims.
const CLAIM_WINDOW: Duration = Duration::from_millis(1);

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
    /// deliveries go to another process once this has passed. Default 30 s.
    /// Fixed when a handler's consumer is first made.
    pub ack_wait: Duration,
    /// Most deliveries one handler may have claimed and not settled, over all
    /// processes. Default 20 000.
    pub max_ack_pending: i64,
    /// Copies of the stream and buckets in a cluster. Default 1.
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            replicas: 1,
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
}

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
    options: Options,
    bound: Mutex<Vec<BoundHandler>>,
    consumers: OnceCell<Vec<Bound>>,
    recovered: Mutex<Option<Recovered>>,
    /// Deliveries claimed by this process and not settled yet.
    held: Mutex<HashMap<(Uuid, String), Held>>,
    bell: Arc<Notify>,
    /// When this store last rang, in µs since `epoch`.
    last_ring: AtomicU64,
    epoch: Instant,
}

/// One handler's durable consumer.
struct Bound {
    handler: String,
    consumer: consumer::PullConsumer,
}

/// A claimed delivery: where to acknowledge it, and the event (for a dead letter).
struct Held {
    reply: Subject,
    seq: u64,
    event: StoredEvent,
    /// Its attempt count is in the attempts bucket.
    retried: bool,
}

enum Op {
    Update(Uuid, String, Change),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JetStreamStore {
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
        let client = async_nats::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: names.stream(),
                subjects: vec![names.all_events()],
                retention: stream::RetentionPolicy::Interest,
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let attempts = bucket(&js, names.attempts_bucket(), options.replicas).await?;
        let dead = bucket(&js, names.dead_bucket(), options.replicas).await?;
        let letters = read_dead(&dead).await?;
        let bell = Arc::new(Notify::new());
        let mut rings = client.subscribe(names.bell()).await.map_err(backend)?;
        let inner = Arc::new(Inner {
            names,
            client,
            js,
            stream,
            attempts,
            dead,
            options,
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
        });
        let (ops, rx) = mpsc::unbounded_channel();
        let dead_known = letters
            .into_iter()
            .map(|r| ((r.letter().event.id, r.handler().to_owned()), r))
            .collect();
        tokio::spawn(heartbeat(
            Arc::downgrade(&inner),
            inner.options.ack_wait / 3,
        ));
        tokio::spawn(settler(inner.clone(), rx, dead_known));
        let weak = Arc::downgrade(&bell);
        tokio::spawn(async move {
            while rings.next().await.is_some() {
                match weak.upgrade() {
                    Some(bell) => bell.notify_one(),
                    None => break,
                }
            }
        });
        Ok(Self { inner, ops })
    }
}

/// Opens a key-value bucket, making it first if needed. Its stream is made
/// here with the settings `async-nats` would give it, because the client's
/// own `create_key_value` first asks for the account's details in a shape
/// that servers before 2.10 do not answer.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    replicas: usize,
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
                let mut out = Vec::with_capacity(handlers.len());
                for h in handlers {
                    let name = names::consumer(&h.name);
                    let config = consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        description: Some(wire::label(&h)),
                        filter_subject: self.names.event_subject(&h.event_type),
                        deliver_policy: consumer::DeliverPolicy::New,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.options.ack_wait,
                        max_ack_pending: self.options.max_ack_pending,
                        max_deliver: -1,
                        ..Default::default()
                    };
                    let filter = config.filter_subject.clone();
                    let consumer: consumer::PullConsumer = self
                        .stream
                        .get_or_create_consumer(&name, config)
                        .await
                        .map_err(backend)?;
                    // A consumer made for the same handler name and another
                    // type: taking it over would hand this handler the wrong events.
                    if consumer.cached_info().config.filter_subject != filter {
                        return Err(StoreError::InvalidConfig(format!(
                            "handler {:?} now handles {:?}, but its consumer {name} on the \
                             server was made for another event type; delete that consumer \
                             or rename the handler",
                            h.name, h.event_type
                        )));
                    }
                    out.push(Bound {
                        handler: h.name,
                        consumer,
                    });
                }
                Ok::<_, StoreError>(out)
            })
            .await?;
        Ok(bound)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let consumers = self.consumers().await?;
        if consumers.is_empty() {
            return Ok(Vec::new());
        }
        let per = (limit / consumers.len()).max(1);
        let mut out = Vec::new();
        for b in consumers {
            let mut batch = b
                .consumer
                .fetch()
                .max_messages(per)
                .messages()
                .await
                .map_err(backend)?;
            while let Some(m) = batch.next().await {
                // What was taken so far is held already: return it, not an error.
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(handler = b.handler, "a claim was cut short: {e}");
                        break;
                    }
                };
                let Some(reply) = m.reply.clone() else {
                    continue;
                };
                let (seq, delivered) = match m.info() {
                    Ok(i) => (i.stream_sequence, i.delivered),
                    Err(_) => continue,
                };
                let checked = wire::event(&m).and_then(|e| {
                    if !tidings::is_valid_event_type(&e.event_type)
                        || self.names.event_subject(&e.event_type) != m.subject.as_str()
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
                            handler = b.handler,
                            seq,
                            "a message in the bus's stream is not a tidings event ({why}); dropped"
                        );
                        let _ = m.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                let mut attempt = 1;
                let mut retried = false;
                if delivered > 1 {
                    let key = names::delivery_key(event.id, &b.handler);
                    if let Ok(Some(v)) = self.attempts.get(key).await {
                        if let Some(a) = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                            attempt = a;
                            retried = true;
                        }
                    }
                }
                event.deliveries = vec![StoredDelivery {
                    handler: b.handler.clone(),
                    attempt,
                }];
                let held = Held {
                    reply,
                    seq,
                    event: event.clone(),
                    retried,
                };
                // Claimed again while still held here (its progress came
                // late): keep the newer claim, do not queue it twice.
                if lock(&self.held)
                    .insert((event.id, b.handler.clone()), held)
                    .is_none()
                {
                    out.push(event);
                }
            }
        }
        Ok(out)
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
        if let Err(e) = self.client.publish(to, Bytes::from(kind)).await {
            tracing::warn!("could not acknowledge a delivery to the server: {e}");
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
    loop {
        beat.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let replies: Vec<Subject> = lock(&inner.held)
            .values()
            .map(|h| h.reply.clone())
            .collect();
        for r in replies {
            inner.reply(r, AckKind::Progress).await;
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
                inner.reply(h.reply, AckKind::Ack).await;
                if h.retried {
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
                h.retried = true;
            }
            if let Err(e) = inner.attempts.put(&key, attempt.to_string().into()).await {
                tracing::warn!("an attempt count could not be written: {e}");
            }
        }
        Change::DeadLettered { attempts, error } => {
            let held = lock(&inner.held).remove(&at);
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
                if h.retried {
                    let _ = inner.attempts.purge(&key).await;
                }
            }
            dead.insert(at, record);
        }
        // The dead letter stays in the bucket until its replay is handled,
        // so that a crash during the replay does not lose it.
        _ => {}
    }
}

/// At shutdown: hands back what this process claimed and did not settle
/// (the server delivers it again at once, to whichever process asks, in
/// stream order), then makes sure every reply has reached the server.
async fn release(inner: &Inner) -> Result<(), StoreError> {
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
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Store for JetStreamStore {
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.consumers().await?;
            let subject = inner.names.event_subject(&event.event_type);
            let headers = wire::headers(&event);
            let ack = inner
                .js
                .publish_with_headers(subject, headers, Bytes::from(event.data))
                .await
                .map_err(backend)?;
            ack.await.map_err(backend)?;
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
        let (done, answer) = oneshot::channel();
        let sent = self
            .ops
            .send(Op::Flush(done))
            .map_err(|_| StoreError::Closed);
        Box::pin(async move {
            sent?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
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
        Box::pin(async move {
            bell.notified().await;
            // Let the appends of the next moment ring too, so that one claim
            // takes them all: a claim is a request the server answers, and
            // one per append halved the rate at which emits were acknowledged.
            tokio::time::sleep(CLAIM_WINDOW).await;
        })
    }

    fn shared_delivery(&self) -> bool {
        true
    }

    fn bind(&self, handlers: &[BoundHandler]) {
        *lock(&self.inner.bound) = handlers.to_vec();
    }

    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut n = 0;
            for b in inner.consumers().await? {
                let info = b.consumer.get_info().await.map_err(backend)?;
                n += info.num_pending + info.num_ack_pending as u64;
            }
            Ok(n)
        })
    }
}

impl JetStreamStore {
    /// Deletes everything of the bus `bus` from the server at `url`: its
    /// stream, its consumers and both buckets. For tests and for
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
        for bucket in [names.attempts_bucket(), names.dead_bucket()] {
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
    /// while the bus runs.
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
        let mut pending = Vec::new();
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
            pending.push(Count {
                event_type: handler.event_type,
                handler: handler.name,
                count,
                oldest,
            });
        }
        pending.sort_by(|a, b| (&a.event_type, &a.handler).cmp(&(&b.event_type, &b.handler)));
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
