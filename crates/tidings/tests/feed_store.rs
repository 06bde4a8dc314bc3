//! A store of the shape a networked backend has, in one process: what a new
//! backend must implement, and proof that the conformance suite holds it to
//! the contract. Its deliveries are shared (`Delivery::Shared`): every bus
//! over it is a "process", each delivery goes to whichever claims it first,
//! a key's deliveries one at a time; an instance that is dropped (a stopped
//! or crashed process) leaves what it claimed to the others. It passes the
//! whole suite, durable and shared cases included — the traits, a
//! `Backend` of a dozen lines, and nothing else.

use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tidings::store::{
    Begun, BoundHandler, Change, Delivery, Health, Recovered, Store, StoreHealth, StoredDeadLetter,
    StoredDelivery, StoredEvent,
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
}

/// What every instance sees: the "server".
#[derive(Default)]
struct Server {
    seq: u64,
    /// Handler name → event type, registered by any instance.
    handlers: BTreeMap<String, String>,
    /// Events by sequence, without their deliveries.
    events: BTreeMap<u64, StoredEvent>,
    ids: BTreeMap<Uuid, u64>,
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
                self.ids.remove(&e.id);
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

    fn update(&self, event_id: Uuid, handler: &str, change: Change) {
        let mut s = self.server();
        let Some(&seq) = s.ids.get(&event_id) else {
            return;
        };
        let key = (seq, handler.to_owned());
        // A settle of a delivery another instance claimed since is stale.
        let settles = !matches!(change, Change::Replayed | Change::Discarded);
        if settles && s.rows.get(&key).is_some_and(|r| r.owner != Some(self.me)) {
            drop(s);
            self.health.stale(1);
            return;
        }
        match change {
            Change::Handled => {
                s.rows.remove(&key);
            }
            Change::Retrying { attempt } => {
                if let Some(r) = s.rows.get_mut(&key) {
                    r.attempt = attempt;
                }
            }
            Change::DeadLettered { attempts, error } => {
                s.rows.remove(&key);
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
                s.dead
                    .retain(|d| !(d.event.id == event_id && d.handler == handler));
                let row = Row {
                    attempt: 1,
                    begun: 0,
                    owner: Some(self.me),
                    claimed: true,
                };
                s.rows.insert(key, row);
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

    fn recover(&self, handlers: &[BoundHandler]) -> Result<Recovered, StoreError> {
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

    fn begin(
        &self,
        event_id: Uuid,
        handler: &str,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut s = self.server();
        if let Some(&seq) = s.ids.get(&event_id) {
            if let Some(r) = s.rows.get_mut(&(seq, handler.to_owned())) {
                r.begun = attempt;
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
            let delivery = StoredDelivery {
                handler,
                attempt: row.attempt,
                begun,
            };
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
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        tidings::EventBus::builder()
            .discover(false)
            .store(FeedStore::new(&self.0))
    }
}

tidings_conformance::conformance_tests!(shared: Feed::default());
