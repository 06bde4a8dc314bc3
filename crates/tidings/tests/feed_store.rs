//! A store of the shape a networked backend has, in one process: what a new
//! backend must implement, and proof that the conformance suite holds it to
//! the contract. Its deliveries are shared (`Delivery::Shared`): every bus
//! over it is a "process", each delivery goes to whichever claims it first,
//! a key's deliveries one at a time; an instance that is dropped (a stopped
//! or crashed process) leaves what it claimed to the others; each claim
//! hands its deliveries out with a fencing token ([`Claim`]), and a settle
//! whose token is no longer the row's is refused and answered stale. It passes the
//! whole suite, durable and shared cases included — the traits, a
//! `Backend` of a dozen lines, and nothing else.

use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tidings::store::{
    Answers, Begun, BoundHandler, Change, Claim, Delivery, DeliveryRef, Health, Recovered, Store,
    StoreHealth, StoredDeadLetter, StoredDelivery, StoredEvent,
};
use tidings::StoreError;
use tokio::sync::Notify;
use uuid::Uuid;

/// One delivery of an event to a handler.
struct Row {
    attempt: u32,
    /// The attempt last marked begun (0: none).
    begun: u32,
    /// The instance that claimed it (`None`: not claimed yet).
    owner: Option<u64>,
    /// Claimed at least once (so its attempt may have begun somewhere).
    claimed: bool,
    /// The token of the claim that holds it (0: none).
    fence: u64,
}

/// What every instance sees: the "server".
#[derive(Default)]
struct Server {
    seq: u64,
    /// The last claim's fencing token.
    fences: u64,
    /// Handler name → event type, registered by any instance.
    handlers: BTreeMap<String, String>,
    /// Events by sequence, without their deliveries.
    events: BTreeMap<u64, StoredEvent>,
    ids: BTreeMap<Uuid, u64>,
    /// Replayed deliveries: written again under a sequence of their own
    /// (their key's newest), by (event, handler).
    moved: BTreeMap<(Uuid, String), u64>,
    rows: BTreeMap<(u64, String), Row>,
    dead: Vec<StoredDeadLetter>,
    live: HashSet<u64>,
}

#[derive(Clone, Default)]
struct Shared {
    server: Arc<Mutex<Server>>,
    changed: Arc<Notify>,
    instances: Arc<AtomicU64>,
}

/// One process's store over the shared server: the journal half.
struct FeedStore(Arc<Instance>);

/// What the store and its feed share: the server, and who this is.
struct Instance {
    shared: Shared,
    me: u64,
    mine: Mutex<Vec<BoundHandler>>,
    health: Health,
    answers: std::sync::OnceLock<Answers>,
}

impl std::ops::Deref for FeedStore {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.0
    }
}

impl FeedStore {
    fn new(shared: &Shared) -> Self {
        let me = shared.instances.fetch_add(1, Ordering::Relaxed);
        shared.server.lock().unwrap().live.insert(me);
        Self(Arc::new(Instance {
            shared: shared.clone(),
            me,
            mine: Mutex::new(Vec::new()),
            health: Health::new(),
            answers: std::sync::OnceLock::new(),
        }))
    }
}

impl Instance {
    fn server(&self) -> std::sync::MutexGuard<'_, Server> {
        self.shared.server.lock().unwrap()
    }

    /// The names of this instance's handlers.
    fn handler_names(&self) -> HashSet<String> {
        self.mine
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }
}

impl Drop for FeedStore {
    /// A stopped (or crashed) process: what it claimed goes to the others
    /// (its relay may still hold the feed for a moment: it claims nothing
    /// more once the instance is not live).
    fn drop(&mut self) {
        self.server().live.remove(&self.me);
        self.shared.changed.notify_waiters();
    }
}

impl Server {
    /// Where the delivery of `event` to `handler` is: under its replay's
    /// sequence if it was replayed, else under its event's.
    fn seq_of(&self, event: Uuid, handler: &str) -> Option<u64> {
        let moved = self.moved.get(&(event, handler.to_owned())).copied();
        moved.or_else(|| self.ids.get(&event).copied())
    }

    fn forget_if_done(&mut self, seq: u64) {
        let pending = self
            .rows
            .range((seq, String::new())..)
            .any(|((s, _), _)| *s == seq);
        let dead = self
            .events
            .get(&seq)
            .is_some_and(|e| self.dead.iter().any(|d| d.event.id == e.id));
        if !pending && !dead {
            if let Some(e) = self.events.remove(&seq) {
                if self.ids.get(&e.id) == Some(&seq) {
                    self.ids.remove(&e.id);
                }
            }
        }
    }
}

impl Store for FeedStore {
    fn append(&self, mut event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        {
            let mut s = self.server();
            let to: Vec<String> = s
                .handlers
                .iter()
                .filter(|(_, t)| **t == event.event_type)
                .map(|(h, _)| h.clone())
                .collect();
            if !to.is_empty() {
                s.seq += 1;
                let seq = s.seq;
                for h in to {
                    let row = Row {
                        attempt: 1,
                        begun: 0,
                        owner: None,
                        claimed: false,
                        fence: 0,
                    };
                    s.rows.insert((seq, h), row);
                }
                event.deliveries.clear();
                s.ids.insert(event.id, seq);
                s.events.insert(seq, event);
            }
        }
        self.shared.changed.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn settle(&self, d: DeliveryRef<'_>, change: Change) {
        let (event_id, handler) = (d.event_id, d.handler);
        let mut s = self.server();
        // A settle of a delivery claimed since by another claim (another
        // instance's, or this one's again) is stale: its token is not the
        // row's any more, or the other claim settled it already.
        let settles = !matches!(change, Change::Replayed | Change::Discarded);
        let held = |r: &Row| r.owner == Some(self.me) && r.fence == d.claim.token().unwrap_or(0);
        let seq = s.seq_of(event_id, handler);
        let row = seq.and_then(|seq| s.rows.get(&(seq, handler.to_owned())));
        if settles && !row.is_some_and(held) {
            drop(s);
            if let Some(answers) = self.answers.get() {
                answers.stale(event_id, handler);
            }
            return;
        }
        let Some(seq) = seq else {
            return;
        };
        let key = (seq, handler.to_owned());
        match change {
            Change::Handled => {
                s.rows.remove(&key);
                s.moved.remove(&(event_id, handler.to_owned()));
            }
            Change::Retrying { attempt } => {
                if let Some(r) = s.rows.get_mut(&key) {
                    r.attempt = attempt;
                }
            }
            Change::DeadLettered { attempts, error } => {
                s.rows.remove(&key);
                s.moved.remove(&(event_id, handler.to_owned()));
                let event = s.events[&seq].clone();
                s.dead.push(StoredDeadLetter {
                    event,
                    handler: handler.to_owned(),
                    attempts,
                    error,
                    failed_at: SystemTime::now(),
                });
            }
            Change::Replayed => {
                // Pending again for whichever instance claims it, as its
                // key's newest (`Store::claims_replays`): under a sequence
                // of its own, after what of its key is pending anywhere.
                s.dead
                    .retain(|d| !(d.event.id == event_id && d.handler == handler));
                s.seq += 1;
                let fresh = s.seq;
                let event = s.events[&seq].clone();
                s.events.insert(fresh, event);
                s.moved.insert((event_id, handler.to_owned()), fresh);
                let row = Row {
                    attempt: 1,
                    begun: 0,
                    owner: None,
                    claimed: false,
                    fence: 0,
                };
                s.rows.insert((fresh, handler.to_owned()), row);
            }
            Change::Discarded => {
                s.dead
                    .retain(|d| !(d.event.id == event_id && d.handler == handler));
            }
            Change::Abandoned { attempt } => {
                if let Some(r) = s.rows.get_mut(&key).filter(|r| r.begun == attempt) {
                    r.begun = 0;
                }
            }
            _ => {}
        }
        s.forget_if_done(seq);
        drop(s);
        // A key's next delivery may go now.
        self.shared.changed.notify_waiters();
    }

    fn recover(
        &self,
        handlers: &[BoundHandler],
        answers: Answers,
    ) -> Result<Recovered, StoreError> {
        let _ = self.answers.set(answers);
        let mut s = self.server();
        for h in handlers {
            s.handlers
                .entry(h.name.clone())
                .or_insert_with(|| h.event_type.clone());
        }
        *self.mine.lock().unwrap() = handlers.to_vec();
        drop(s);
        // Pending deliveries come back through claims; dead letters here.
        Ok(Recovered {
            events: Vec::new(),
            dead_letters: self.server().dead.clone(),
        })
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn delivery(&self) -> Delivery {
        Delivery::Shared(self.0.clone())
    }

    /// A replay is pending for the claims, as its key's newest.
    fn claims_replays(&self) -> bool {
        true
    }

    fn begin(
        &self,
        d: DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut s = self.server();
        if let Some(seq) = s.seq_of(d.event_id, d.handler) {
            if let Some(r) = s.rows.get_mut(&(seq, d.handler.to_owned())) {
                if r.owner == Some(self.me) && r.fence == d.claim.token().unwrap_or(0) {
                    r.begun = attempt;
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn health(&self) -> Option<StoreHealth> {
        Some(self.health.snapshot())
    }
}

/// The feed half: claims for this instance's handlers.
impl tidings::store::Feed for Instance {
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        let mine = self.handler_names();
        let mut s = self.server();
        let live = s.live.clone();
        s.fences += 1;
        let fence = s.fences;
        // A key's deliveries to a handler go one at a time: the oldest
        // pending one of each (key, handler), if nobody live holds it.
        let mut blocked: HashSet<(String, String)> = HashSet::new();
        let mut out: Vec<StoredEvent> = Vec::new();
        let keys: Vec<(u64, String)> = s.rows.keys().cloned().collect();
        for (seq, handler) in keys {
            if out.len() >= limit {
                break;
            }
            let key = s.events[&seq].key.clone();
            if let Some(k) = &key {
                if !blocked.insert((k.clone(), handler.clone())) {
                    continue;
                }
            }
            let row = s.rows.get_mut(&(seq, handler.clone())).expect("listed");
            let free = row.owner.is_none_or(|o| !live.contains(&o));
            if !free || !mine.contains(&handler) {
                continue;
            }
            let begun = if !row.claimed {
                Begun::Never
            } else if row.begun > 0 && row.begun >= row.attempt {
                Begun::Interrupted
            } else {
                Begun::Maybe
            };
            row.owner = Some(self.me);
            row.claimed = true;
            row.fence = fence;
            let delivery = StoredDelivery::new(handler, row.attempt).claimed(Claim::new(fence));
            let delivery = StoredDelivery { begun, ..delivery };
            let event = &s.events[&seq];
            match out.last_mut() {
                Some(last) if last.id == event.id => last.deliveries.push(delivery),
                _ => out.push(StoredEvent {
                    deliveries: vec![delivery],
                    ..event.clone()
                }),
            }
        }
        Box::pin(async move { Ok(out) })
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        let changed = self.shared.changed.clone();
        Box::pin(async move { changed.notified().await })
    }

    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        let mine = self.handler_names();
        let n = self
            .server()
            .rows
            .keys()
            .filter(|(_, h)| mine.contains(h))
            .count();
        Box::pin(async move { Ok(n as u64) })
    }
}

/// The suite's backend: one server, a store per bus built.
#[derive(Clone, Default)]
struct Feed(Shared);

impl tidings_conformance::Backend for Feed {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: true,
            shared: true,
            relay: false,
            spreads_keys: true,
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        tidings::EventBus::builder()
            .discover(false)
            .store(FeedStore::new(&self.0))
    }
}

tidings_conformance::conformance_tests!(shared: Feed::default());

/// Handles `t` as `h`, each call waiting for a permit of `gate`.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    ran: Arc<AtomicU64>,
}

impl tidings::EventHandler for Gated {
    fn event_type(&self) -> &str {
        "t"
    }
    fn name(&self) -> &str {
        "h"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        self.ran.fetch_add(1, Ordering::Relaxed);
        if let Ok(p) = self.gate.acquire().await {
            p.forget();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_after_its_claim_was_taken_over_is_refused_and_counted_for_its_handler() {
    use std::time::Duration;
    let shared = Shared::default();
    let bus = |store: FeedStore, gate: &Arc<tokio::sync::Semaphore>| {
        let ran = Arc::new(AtomicU64::new(0));
        let handler = Gated {
            gate: gate.clone(),
            ran: ran.clone(),
        };
        let bus = tidings::EventBus::builder()
            .discover(false)
            .handler(handler)
            .store(store)
            .build()
            .unwrap();
        (bus, ran)
    };
    // A claims the event; its handler holds it.
    let store_a = FeedStore::new(&shared);
    let a_me = store_a.me;
    let closed = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, a_ran) = bus(store_a, &closed);
    a.emit("t", serde_json::json!({"n": 1})).await.unwrap();
    let wait = Duration::from_secs(10);
    tidings_conformance::eventually_within(wait, "A runs the delivery", || {
        a_ran.load(Ordering::Relaxed) == 1
    })
    .await;
    // A is out of touch past its lease: B claims the delivery again (a new
    // fencing token) and handles it.
    shared.server.lock().unwrap().live.remove(&a_me);
    let open = Arc::new(tokio::sync::Semaphore::new(1_000));
    let (b, _) = bus(FeedStore::new(&shared), &open);
    tidings_conformance::eventually_within(wait, "B handles the delivery", || {
        b.stats().handler("h").is_some_and(|h| h.succeeded == 1)
    })
    .await;
    // A's handler ends now: its settle carries the old token and is refused,
    // answered to A's bus, and counted for its handler.
    closed.add_permits(1);
    tidings_conformance::eventually_within(wait, "A's settle answered stale", || {
        a.stats().handler("h").is_some_and(|h| h.stale_settles == 1)
    })
    .await;
    let stats = a.stats();
    assert_eq!(stats.store.map(|s| s.stale_settles), Some(1));
    assert_eq!(b.stats().handler("h").unwrap().stale_settles, 0);
    assert!(
        shared.server.lock().unwrap().rows.is_empty(),
        "B's settle counted"
    );
}
