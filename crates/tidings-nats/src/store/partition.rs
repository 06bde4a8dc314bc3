//! A key partition's poller: the deliveries of one handler's consumer of
//! one key partition, pulled and held for the relay, in stream order.
//!
//! A key's events reach a handler one at a time and in emit order, across
//! every process sharing it. Two ways keep that, chosen per consumer when it
//! is made (and kept for its life):
//!
//! - **Pinned** (the default, [`Options::pin_key_partitions`]; nats-server
//!   2.11 or later): the consumer has a priority
//!   group with the `pinned_client` policy. The server gives its deliveries
//!   to one process at a time (the pinned one), up to a window of
//!   [`Bound::window`](super::Bound) out at once; that process's worker runs a
//!   key's deliveries one at a time, in the order they came. The other
//!   processes' pull requests wait on standby. The pin moves when its process
//!   stops asking for [`pin_timeout`] (it died, or was paused or cut off for
//!   that long), or at once when it shuts down (it hands back what it held,
//!   then unpins).
//! - **One at a time** (older servers, the option off, and consumers made
//!   one at a time before): the consumer has at most one delivery out, in any
//!   process; the next goes to whichever process asks once the last is
//!   settled.
//!
//! ## The gate
//! A process that is newly pinned may not run what it receives while
//! another process still holds deliveries of the partition (the one whose
//! pin moved: paused, cut off, shut down, or the server restarted and pinned
//! another first): those are older, and may be of the same keys. Nor may a
//! pinned process whose request was lost (a reconnect, a restart), or
//! whose delivery came after a gap in the consumer's sequence (while
//! pinned, it is sent every delivery of the consumer, numbered one after
//! another; a request's inbox can come back with a reconnect before the
//! poller hears of it, and deliveries sent into the cut connection are
//! missing): the server may have sent it deliveries that never arrived,
//! which it counts out until `ack_wait` and sends again after the ones
//! that follow. So the
//! first deliveries under a new pin wait, held here and told to the server as
//! worked on, until the server counts no delivery of the consumer out but
//! those this process holds: the others' were settled, or came back to this
//! process after `ack_wait` (or at once, handed back). They then go to the
//! relay in stream order. The check is made while this process has no pull
//! request out (so nothing is on its way to it), and only when its own
//! count did not change while the server was asked. First deliveries and
//! redeliveries are counted apart, against the server's count of
//! deliveries out and of those delivered before: a first delivery held here
//! went to no other process, but another holder may settle a redelivery
//! after the server sent it here (its acknowledgement crossed the
//! redelivery), and a total that counted it would match while one of that
//! holder's deliveries is still out. When fewer redeliveries are out than
//! are held here, the gated ones go back to the server, which sends again
//! those still out. What this
//! process still holds under a pin it lost without giving it up (the server
//! moved it, or restarted) is not counted: another process may have settled
//! it since; it is let go unstarted when its turn comes
//! ([`Store::admits`]), and comes back after `ack_wait` if it is still out;
//! what the gate held back under it goes back to the server at once (held,
//! its heartbeats would keep it out, and the new gate shut, for good).
//!
//! ## Sharing out
//! A process takes at most ⌈partitions / processes⌉ of a handler's pins. It
//! counts the processes by the pull requests a pinned consumer has waiting
//! (each other process keeps one on standby), the fewest seen in the last
//! 30 s: requests the server still keeps for answers given up on (a cut, a
//! restart) would count as processes, and every process would refuse
//! partitions no one then takes. Over its share, a process gives a pin up
//! (unpins it, and asks nothing of that partition for 2 s) when it is newly
//! pinned, and every 10 s; a new pin it refused that comes back within 30 s
//! is kept: the others refused it too.
//!
//! ## Late deliveries
//! A delivery is taken for possibly another's (`Store::admits` lets it go
//! unstarted, and the pin with it) when its pull request is three quarters
//! of an `ack_wait` old as it is held, or its last confirmed heartbeat is.
//! A request asks for a quarter of the window, so that a process taking
//! over many deliveries made before (each looked up in the attempts bucket)
//! holds them well within that.
//!
//! ## Shutdown
//! A stopping poller sends no new request. Pinned, it reads the last one to
//! its end (at most [`PIN_POLL`]), so that every delivery sent to this
//! process is held and handed back at once; then the store unpins the
//! consumer if the pin is still this process's, and the next process's gate
//! finds nothing to wait for.

use super::*;
use serde::Serialize;

/// The priority group of a pinned partition consumer.
pub(crate) const PIN_GROUP: &str = "tidings";

/// How long a pinned partition's pull request waits at the server. A
/// stopping process reads its last one to the end, so this bounds what a
/// shutdown waits for a partition.
pub(super) const PIN_POLL: Duration = Duration::from_secs(1);

/// How long a pull request waits while the gate is shut: the gate is checked
/// when it ends.
const GATE_POLL: Duration = Duration::from_millis(200);

/// The most deliveries one pull request of a pinned partition asks for: a
/// quarter of the window, so that what one request brings is held (one
/// attempts-bucket read each for a delivery made before) well within the
/// three quarters of an `ack_wait` after which [`Inner::hold`] takes it for
/// late. (Asked for the whole window, a process taking over a dead one's
/// partitions, all of them delivered before, held their last ones 1.5 s
/// after the request in a debug build: late, let go, and the pin and gate
/// again, over and over.)
const PIN_BATCH: usize = crate::PINNED_WINDOW / 4;

/// How long the server keeps a partition pinned to a process that stopped
/// asking: above the partition's `ack_wait` and a pull request's wait, so
/// that a process that dies or freezes has its deliveries back in the
/// consumer's queue about when the pin moves (the gate keeps order either
/// way; this only spares the next process a wait at the gate).
pub(super) fn pin_timeout(options: &Options) -> Duration {
    options.partition_ack_wait() + 2 * PIN_POLL
}

/// Whether the server can pin a consumer to one process (2.11 or later).
pub(super) fn server_pins(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 11)
}

/// A pull request of a pinned consumer, with the pin this process holds
/// (`async-nats`'s `request_batch` sends none).
#[derive(Serialize)]
struct PinnedPull<'a> {
    batch: usize,
    /// Nanoseconds.
    expires: u64,
    group: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// How a pull request ended.
enum Ended {
    /// With a status, or with all it asked for: nothing more comes for it.
    Done,
    /// The server restarted, or the request's answer is overdue: an answer
    /// may still come to the inbox, which is dropped.
    Lost,
}

/// What a poller hands the store when it stops: a consumer pinned to this
/// process, and its pin, to unpin once its deliveries are handed back.
pub(super) type Pinned = Option<(consumer::PullConsumer, String)>;

/// How often a process holding a partition's pin checks that it does not
/// hold more than its share of the handler's partitions.
const BALANCE_EVERY: Duration = Duration::from_secs(10);

/// How long a process that gave up a pin sends no pull request of that
/// partition, so that another's waiting request is first in line for it.
const COOL_OFF: Duration = Duration::from_secs(2);

/// How long the lowest count of the processes sharing a handler is kept.
const PEERS_FOR: Duration = Duration::from_secs(30);

/// How long a poller that gave up a new pin (over its share) keeps the next
/// one it gets: if the partition came back meanwhile, every other process
/// gave it up too, and it must be someone's.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// One handler's partitions in this process, shared by their pollers: how
/// many are pinned here, and how many processes share the handler (the
/// pull requests a pinned partition's consumer has waiting: each other
/// process keeps one out on standby).
#[derive(Default)]
pub(super) struct Share {
    pinned: std::sync::atomic::AtomicUsize,
    peers: Mutex<Option<(usize, Instant)>>,
}

impl Share {
    /// Notes that `processes` share the handler: the fewest seen in the last
    /// [`PEERS_FOR`]. (The most, as it was, counted pull requests the server
    /// still kept for an answer that had been given up on (a cut, a
    /// restart) as processes: both processes of a restart storm took
    /// themselves for one of four, gave up every new pin over a share of 4
    /// and handed a partition to and fro for 24 s, its gate never opening.
    /// Fewer seen than there are only leaves this process more than its
    /// share until the next count.)
    fn saw(&self, processes: usize) {
        let mut peers = lock(&self.peers);
        let now = Instant::now();
        match *peers {
            Some((n, at)) if n < processes && at.elapsed() < PEERS_FOR => {}
            _ => *peers = Some((processes, now)),
        }
    }

    /// The most of `partitions` this process should hold pinned.
    fn fair(&self, partitions: usize) -> usize {
        let n = lock(&self.peers)
            .filter(|(_, at)| at.elapsed() < PEERS_FOR)
            .map_or(1, |(n, _)| n.max(1));
        partitions.div_ceil(n)
    }
}

/// Whether a pinned consumer's delivery numbered `at` (the consumer's
/// sequence) leaves out one after `last`, the last taken under the same
/// pin: while pinned, this process is sent every delivery of the consumer,
/// one number after another.
fn gap(last: Option<u64>, at: u64) -> bool {
    last.is_some_and(|last| at > last + 1)
}

/// A key partition's poller's state (see [`poll_partition`]).
struct Poller {
    inner: Weak<Inner>,
    client: async_nats::Client,
    handler: Arc<str>,
    consumer: consumer::PullConsumer,
    name: String,
    /// `Some` for a pinned consumer: the most it has out at once.
    window: Option<usize>,
    share: Arc<Share>,
    /// The pin this process holds, from the last delivery's header.
    pin: Option<String>,
    /// Counted in `share.pinned` (its gate opened under the pin).
    counted: bool,
    /// Deliveries under a new pin, held until the gate opens (`None`: open).
    gated: Option<Vec<StoredEvent>>,
    /// The consumer's sequence of the last delivery taken under the pin: a
    /// delivery after a gap shuts the gate (see [`Poller::take`]).
    last_delivery: Option<u64>,
    /// No pull request before this (a pin just given up).
    quiet_until: Option<Instant>,
    /// When this poller last gave up a new pin as over its share.
    refused_at: Option<Instant>,
    last_balance: Instant,
}

/// Takes one key partition's deliveries for one handler (see the module
/// docs); `window` is `Some` for a pinned consumer. A pull request waits
/// at the server until there is something to give; what comes is held and
/// left for the relay's next claim, which the poke calls. Its own task, so
/// that a partition waiting for another process never holds up a claim.
/// Ends with the store, or at shutdown.
///
/// The answers come on one subscription, kept for the poller's life: one
/// request out at a time, so that each delivery is known to answer the
/// last request (its age is what [`Inner::hold`] judges lateness by). A new
/// one is made when an answer may still be on its way to the old one: after
/// a reconnect, or a request the server never ended.
pub(super) async fn poll_partition(
    inner: Weak<Inner>,
    handler: Arc<str>,
    consumer: consumer::PullConsumer,
    window: Option<usize>,
    share: Arc<Share>,
    mut stop: watch::Receiver<bool>,
    mut reconnected: watch::Receiver<u64>,
) -> Pinned {
    let client = inner.upgrade()?.client.clone();
    let name = consumer.cached_info().name.clone();
    let mut p = Poller {
        inner,
        client,
        handler,
        consumer,
        name,
        window,
        share,
        pin: None,
        counted: false,
        gated: None,
        last_delivery: None,
        quiet_until: None,
        refused_at: None,
        last_balance: Instant::now(),
    };
    let mut answers: Option<(Subject, async_nats::Subscriber)> = None;
    let mut stopping = false;
    loop {
        stopping |= *stop.borrow();
        if stopping {
            // The last request was read to its end (or lost): whatever
            // reached this process is held (gated or not), and handed back
            // by the store.
            p.uncount();
            return p.pin.map(|pin| (p.consumer, pin));
        }
        if let Some(until) = p.quiet_until.take() {
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                _ = stop.changed() => continue,
            }
        }
        reconnected.borrow_and_update();
        if answers.is_none() {
            let inbox = Subject::from(p.client.new_inbox());
            match p.client.subscribe(inbox.clone()).await {
                Ok(sub) => answers = Some((inbox, sub)),
                Err(e) => {
                    tracing::debug!(
                        handler = &*p.handler,
                        "a key partition could not subscribe: {e}"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some((inbox, sub)) = answers.as_mut() else {
            continue;
        };
        let asked = Instant::now();
        let (batch, expires) = match p.window {
            Some(w) => (
                w.min(PIN_BATCH),
                if p.gated.is_some() {
                    GATE_POLL
                } else {
                    PIN_POLL
                },
            ),
            None => (1, PARTITION_POLL),
        };
        if let Err(e) = p.request(inbox, batch, expires).await {
            tracing::debug!(
                handler = &*p.handler,
                "a key partition's pull request failed: {e}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // The server ends a request with a status, or once it gave all it
        // was asked for; past this, it is taken for lost.
        let lost = tokio::time::sleep(expires + Duration::from_secs(5));
        tokio::pin!(lost);
        let mut taken = 0;
        let ended = loop {
            let m = tokio::select! {
                m = sub.next() => m,
                // Drop the request (the server forgets it with the
                // subscription) and what it may still bring, which waits
                // out `ack_wait`: one at a time, one delivery that nothing
                // passes; pinned, what the next pinned process's gate waits
                // for. A pinned process reads its request to the end instead,
                // so that the next one has nothing to wait for.
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    // On standby, the server sends this process nothing.
                    p.pin.as_ref()?;
                    continue;
                }
                // A restarted server forgot the request: ask again now.
                _ = reconnected.changed() => break Ended::Lost,
                () = &mut lost => break Ended::Lost,
            };
            let Some(m) = m else {
                break Ended::Lost;
            };
            match m.status.unwrap_or(async_nats::StatusCode::OK) {
                async_nats::StatusCode::OK => {}
                async_nats::StatusCode::IDLE_HEARTBEAT => continue,
                // Expired, or ended with nothing (more) to give.
                async_nats::StatusCode::TIMEOUT | async_nats::StatusCode::NOT_FOUND => {
                    break Ended::Done
                }
                async_nats::StatusCode::PIN_ID_MISMATCH => {
                    // The pin moved to another process: this one waits on
                    // standby.
                    tracing::debug!(
                        handler = &*p.handler,
                        consumer = p.name,
                        pin = p.pin.as_deref(),
                        "a key partition's pin moved away"
                    );
                    if let (Some(store), Some(pin)) = (p.inner.upgrade(), p.pin.as_deref()) {
                        store.lose(pin);
                    }
                    p.let_go().await;
                    break Ended::Done;
                }
                status => {
                    // The server's status (a leader change, a shutdown: 409):
                    // ask again after a pause (asked at once, a server
                    // shutting down was sent requests back to back, and its
                    // restart delivered again 1.2 s later: measured).
                    tracing::debug!(
                        handler = &*p.handler,
                        "a key partition's pull ended: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break Ended::Done;
                }
            }
            taken += 1;
            p.take(m, asked).await?;
            if taken >= batch {
                break Ended::Done;
            }
        };
        if matches!(ended, Ended::Lost) {
            // An answer may still come to the old inbox: use a new one.
            answers = None;
            tracing::debug!(
                handler = &*p.handler,
                consumer = p.name,
                pin = p.pin.as_deref(),
                "a key partition's pull request was lost"
            );
            if p.pin.is_some() {
                // What the server sent meanwhile may be lost on its way (a
                // cut, a restart): it counts as out until `ack_wait`, and
                // what follows it under the pin must wait for it.
                p.gated.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if p.pin.is_some() && !stopping {
            p.check().await?;
        }
        p.given_up().await?;
    }
}

impl Poller {
    /// Sends a pull request for up to `batch` deliveries, answered on `inbox`.
    async fn request(
        &self,
        inbox: &Subject,
        batch: usize,
        expires: Duration,
    ) -> Result<(), String> {
        if self.window.is_none() {
            let request = consumer::pull::BatchConfig {
                batch,
                expires: Some(expires),
                ..Default::default()
            };
            return self
                .consumer
                .request_batch(request, inbox.clone())
                .await
                .map_err(|e| e.to_string());
        }
        let request = PinnedPull {
            batch,
            expires: u64::try_from(expires.as_nanos()).unwrap_or(u64::MAX),
            group: PIN_GROUP,
            id: self.pin.as_deref(),
        };
        // The client's JetStream prefix (the store uses the default one).
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            self.consumer.cached_info().stream_name,
            self.name
        );
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        self.client
            .publish_with_reply(subject, inbox.clone(), body.into())
            .await
            .map_err(|e| e.to_string())
    }

    /// Holds a delivery that answered the request sent at `asked`, and
    /// queues it for the relay unless the gate holds it back. `None` once the
    /// store is gone.
    async fn take(&mut self, m: async_nats::Message, asked: Instant) -> Option<()> {
        let store = self.inner.upgrade()?;
        if self.window.is_some() {
            let came_with = m
                .headers
                .as_ref()
                .and_then(|h| h.get_last(async_nats::header::NATS_PIN_ID))
                .map(|v| v.as_str().to_owned());
            if came_with.is_some() && came_with != self.pin {
                // Newly pinned: the gate shuts until the server counts
                // nothing out of this partition but what this holds.
                tracing::debug!(
                    handler = &*self.handler,
                    consumer = self.name,
                    pin = came_with.as_deref(),
                    old = self.pin.as_deref(),
                    "a key partition is pinned here"
                );
                if let Some(old) = self.pin.take() {
                    // Moved without this process seeing it go (a restart):
                    // what it still holds under the old pin may be another's.
                    store.lose(&old);
                }
                self.uncount();
                self.pin = came_with;
                self.last_delivery = None;
                // What the gate held back under the old pin goes back now:
                // not counted at the new gate, but kept out by the
                // heartbeats while held, it would keep that gate shut for
                // good. The server sends it again, here, under the new pin.
                if let Some(old) = self.gated.replace(Vec::new()) {
                    if !old.is_empty() {
                        tracing::debug!(
                            handler = &*self.handler,
                            consumer = self.name,
                            handed_back = old.len(),
                            "a key partition pinned anew handed back what its gate held"
                        );
                    }
                    store.hand_back(&old).await;
                }
            }
        }
        let m = jetstream::Message {
            message: m,
            context: store.js.clone(),
        };
        let delivered = super::claim::Delivered::of(&m);
        if self.window.is_some() {
            if let Some(at) = delivered.as_ref().map(|d| d.consumer_seq) {
                if gap(self.last_delivery, at) && self.gated.is_none() {
                    // A delivery between the last one and this never came
                    // (sent into a connection that was cut; the request's
                    // inbox came back with the reconnect before the poller
                    // heard of it): the server counts it out until
                    // `ack_wait`, then sends it again after this one. The
                    // gate holds what follows until it is back.
                    tracing::debug!(
                        handler = &*self.handler,
                        consumer = self.name,
                        pin = self.pin.as_deref(),
                        last = self.last_delivery,
                        at,
                        "a key partition's delivery came after a gap; its gate shuts"
                    );
                    self.gated = Some(Vec::new());
                }
                self.last_delivery = Some(self.last_delivery.map_or(at, |l| l.max(at)));
            }
        }
        let Some(delivered) = delivered else {
            return Some(());
        };
        let pin = self.window.and(self.pin.as_deref()).map(Arc::from);
        if let Some(event) = store.hold(&self.handler, m, delivered, asked, pin).await {
            match self.gated.as_mut() {
                Some(waiting) => waiting.push(event),
                None => store.queue(vec![event]),
            }
        }
        Some(())
    }

    /// After a request under a pin: opens the gate once the server counts
    /// nothing else out, and gives the pin up if this process holds more
    /// than its share of the handler's partitions (when it is newly pinned,
    /// and every [`BALANCE_EVERY`]). `None` once the store is gone.
    async fn check(&mut self) -> Option<()> {
        let gated = self.gated.is_some();
        if !gated && self.last_balance.elapsed() < BALANCE_EVERY {
            return Some(());
        }
        self.last_balance = Instant::now();
        let store = self.inner.upgrade()?;
        let Some((found, waiting)) = store.ask_partition(&self.consumer, &self.name).await else {
            return Some(());
        };
        if found == Gate::Settled {
            if let Some(events) = self.gated.take() {
                let kept = store.hand_back_redelivered(events).await;
                tracing::debug!(
                    handler = &*self.handler,
                    consumer = self.name,
                    pin = self.pin.as_deref(),
                    kept = kept.len(),
                    "a key partition's gated redeliveries were handed back: another holder settled some"
                );
                self.gated = Some(kept);
            }
        }
        let open = found == Gate::Open;
        // This process has no request out: those waiting are the others'.
        self.share.saw(waiting + 1);
        let fair = self.share.fair(store.partitions as usize);
        let pinned = self.share.pinned.load(Ordering::Relaxed);
        let refused_lately = self.refused_at.is_some_and(|t| t.elapsed() < REFUSED_FOR);
        let over = over_share(self.counted, pinned, fair, refused_lately);
        if over && waiting > 0 {
            if !self.counted {
                self.refused_at = Some(Instant::now());
            }
            tracing::debug!(
                handler = &*self.handler,
                consumer = self.name,
                pinned,
                fair,
                "a key partition's pin is given up to another process"
            );
            let pin = self.pin.clone();
            self.let_go().await;
            if let Some(pin) = pin {
                store.unpin_if_mine(&self.consumer, &pin).await;
            }
            self.quiet_until = Some(Instant::now() + COOL_OFF);
            return Some(());
        }
        if gated && open {
            if !self.counted {
                self.counted = true;
                self.share.pinned.fetch_add(1, Ordering::Relaxed);
            }
            let mut events = self.gated.take().unwrap_or_default();
            events.sort_by_key(|e| store.seq_of(e));
            tracing::debug!(
                handler = &*self.handler,
                consumer = self.name,
                pin = self.pin.as_deref(),
                released = events.len(),
                "a key partition's gate opened"
            );
            store.queue(events);
        }
        Some(())
    }

    /// Gives the pin up if the store let a delivery under it go unstarted
    /// (this process may have lost it: see [`Store::admits`]): on standby
    /// again, a new pin and its gate follow. `None` once the store is gone.
    async fn given_up(&mut self) -> Option<()> {
        let Some(pin) = self.pin.clone() else {
            return Some(());
        };
        let store = self.inner.upgrade()?;
        if !lock(&store.lost_pins).contains(pin.as_str()) {
            return Some(());
        }
        tracing::debug!(
            handler = &*self.handler,
            "a key partition's pin is given up: a delivery under it was let go"
        );
        self.let_go().await;
        store.unpin_if_mine(&self.consumer, &pin).await;
        self.quiet_until = Some(Instant::now() + COOL_OFF);
        Some(())
    }

    /// The pin is no longer this process's: what the gate held back goes back.
    async fn let_go(&mut self) {
        self.pin = None;
        self.uncount();
        if let Some(events) = self.gated.take() {
            if let Some(store) = self.inner.upgrade() {
                store.hand_back(&events).await;
            }
        }
    }

    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.share.pinned.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Inner {
    /// Whether the server counts no delivery of `consumer` out but those
    /// this process holds (the gate of the module docs: [`gate`]), and how
    /// many pull requests it has waiting. Asked while this process has no
    /// pull request of it out; a count of its own that changed meanwhile (a
    /// settle) keeps the gate shut until the next time. `None` if the
    /// server did not answer.
    async fn ask_partition(
        &self,
        consumer: &consumer::PullConsumer,
        name: &str,
    ) -> Option<(Gate, usize)> {
        let held = || {
            // Never `lost_pins` while `held` is locked in this order: the
            // store's `admits` locks `held`, then `lost_pins`.
            let lost = lock(&self.lost_pins).clone();
            lock(&self.held).of_consumer(name, &lost)
        };
        let before = held();
        let asked = consumer.get_info();
        let info = tokio::time::timeout(self.options.partition_ack_wait() / 2, asked)
            .await
            .ok()?
            .ok()?;
        let after = held();
        // What this process holds at or below the consumer's ack floor is
        // settled already (by this process, its ack crossing a redelivery,
        // or by an earlier holder whose late ack the server took): the
        // server does not count it out, nor does the gate. (Counted, the
        // gate waited for a count the server never reaches: seen, held 258
        // against 256 out, the window full, events never delivered.)
        let floor = info.ack_floor.stream_sequence;
        let out = (info.num_ack_pending, info.num_redelivered);
        let (gate, mine) = gate(&before, &after, out, floor);
        if gate != Gate::Open {
            tracing::debug!(
                consumer = name,
                out = info.num_ack_pending,
                again = info.num_redelivered,
                held = mine,
                settled = after.len() - mine,
                floor,
                ?gate,
                "a key partition's gate stays shut"
            );
        } else if mine < after.len() {
            tracing::debug!(
                consumer = name,
                settled = after.len() - mine,
                floor,
                "a key partition's gate opened past holdings settled already"
            );
        }
        Some((gate, info.num_waiting))
    }

    /// Notes that `pin` is no longer this process's though it may not have
    /// seen it go: what it holds under it is let go unstarted
    /// ([`Store::admits`]) and not counted at a gate.
    pub(super) fn lose(&self, pin: &str) {
        let mut lost = lock(&self.lost_pins);
        if lost.len() >= super::LOST_PINS_KEPT {
            lost.clear();
        }
        lost.insert(Arc::from(pin));
    }

    /// Queues held deliveries for the relay's next claim, and wakes it.
    fn queue(&self, mut events: Vec<StoredEvent>) {
        if events.is_empty() {
            return;
        }
        lock(&self.ready).append(&mut events);
        self.poked.store(true, Ordering::Release);
        self.poke.notify_one();
    }

    /// Unpins `consumer` if `pin` is still its pin (moved meanwhile, it is
    /// another process's: unpinning it would not wait for what that one holds).
    pub(super) async fn unpin_if_mine(&self, consumer: &consumer::PullConsumer, pin: &str) {
        let name = &consumer.cached_info().name;
        let mine = consumer.get_info().await.is_ok_and(|info| {
            info.priority_groups
                .iter()
                .any(|g| g.pinned_client_id.as_deref() == Some(pin))
        });
        if mine {
            if let Err(e) = self.keyed_stream.unpin_consumer(name, PIN_GROUP).await {
                tracing::debug!(
                    consumer = name,
                    "a key partition could not be unpinned: {e}"
                );
            }
        }
    }

    /// The stream sequence of a held event's delivery (0 if no longer held).
    fn seq_of(&self, e: &StoredEvent) -> u64 {
        let held = lock(&self.held);
        e.deliveries
            .first()
            .and_then(|d| held.get(d.claim))
            .map_or(0, |h| h.seq)
    }

    /// Hands back deliveries this process held but never queued (they go to
    /// the pinned process, after what it holds back at its own gate).
    async fn hand_back(&self, events: &[StoredEvent]) {
        let taken: Vec<Held> = {
            let mut held = lock(&self.held);
            events
                .iter()
                .filter_map(|e| held.remove(e.deliveries.first()?.claim))
                .collect()
        };
        self.nak_in_order(taken).await;
    }

    /// Hands back the redeliveries among `events` (held, never queued) and
    /// returns the others: the server sends again those still out, and
    /// forgets those another holder settled.
    async fn hand_back_redelivered(&self, events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        let (again, first): (Vec<_>, Vec<_>) = {
            let held = lock(&self.held);
            events.into_iter().partition(|e| {
                e.deliveries
                    .first()
                    .and_then(|d| held.get(d.claim))
                    .is_some_and(|h| h.redelivered)
            })
        };
        self.hand_back(&again).await;
        first
    }

    /// Hands deliveries back to the server at once, oldest first (it sends
    /// them again in that order).
    pub(super) async fn nak_in_order(&self, mut held: Vec<Held>) {
        held.sort_by_key(|h| h.seq);
        for h in held {
            self.reply(h.reply, AckKind::Nak(None)).await;
        }
    }
}

/// Whether a pinned partition is one too many for this process: `pinned`
/// of the handler's partitions are pinned here (counted once their gates
/// opened; this one is among them if `counted`), `fair` its share. A new pin
/// at the share is refused, unless this poller refused one lately: it came
/// back, so the other processes refused it too, and it must be someone's.
fn over_share(counted: bool, pinned: usize, fair: usize, refused_lately: bool) -> bool {
    if counted {
        pinned > fair
    } else {
        pinned >= fair && !refused_lately
    }
}

/// What a gate check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// The server counts out only what this process holds.
    Open,
    /// Others' deliveries are out (or this process's count changed while
    /// the server was asked).
    Shut,
    /// Fewer redeliveries are out than this process holds: another holder
    /// settled some after the server gave them here again (its
    /// acknowledgement crossed the redelivery). The gate stays shut, and
    /// the gated redeliveries go back: the server sends again those still out.
    Settled,
}

/// A gate check: this process's holdings of the consumer (stream sequence,
/// delivered before), the same before and after the server was asked for
/// `out` (deliveries out) of which `again` were delivered before (its
/// redelivered count), and `floor` (its ack floor). Holdings at or below the
/// floor are settled already, and not counted. First deliveries and
/// redeliveries are counted apart: a first delivery held here was sent to
/// no other process, so the server counts it out until this process settles
/// it, while another holder may settle a redelivery. (Counted together, a
/// redelivery another holder settled hid one of that holder's deliveries
/// still out: the counts matched, the gate opened, and a key's event ran
/// after its successor.) Also says how many held the server counts out.
fn gate(
    before: &[(u64, bool)],
    after: &[(u64, bool)],
    (out, again): (usize, usize),
    floor: u64,
) -> (Gate, usize) {
    let held = |redelivered: bool| {
        after
            .iter()
            .filter(|(seq, r)| *seq > floor && *r == redelivered)
            .count()
    };
    let (first, redelivered) = (held(false), held(true));
    let gate = if before != after {
        Gate::Shut
    } else if out.saturating_sub(again) == first && again == redelivered {
        Gate::Open
    } else if again < redelivered {
        Gate::Settled
    } else {
        Gate::Shut
    };
    (gate, first + redelivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_after_a_missing_one_is_a_gap() {
        assert!(!gap(None, 7), "the first under a pin");
        assert!(!gap(Some(6), 7));
        assert!(gap(Some(4), 7), "5 and 6 never came");
        assert!(!gap(Some(9), 7), "an older delivery's late message");
    }

    #[test]
    fn a_new_pin_over_the_share_is_refused_once() {
        assert!(
            !over_share(true, 8, 8, false),
            "at its share, it keeps its own"
        );
        assert!(over_share(true, 9, 8, false));
        assert!(
            !over_share(false, 7, 8, false),
            "under its share, it takes a new one"
        );
        assert!(
            over_share(false, 8, 8, false),
            "at its share, a new one is refused"
        );
        // Refused lately and back: every process refused it (each counted
        // more processes than there are); it is kept, not handed to and fro.
        assert!(!over_share(false, 8, 8, true));
    }

    fn first(seqs: &[u64]) -> Vec<(u64, bool)> {
        seqs.iter().map(|s| (*s, false)).collect()
    }

    #[test]
    fn a_gate_opens_when_the_server_counts_out_only_what_is_held_here() {
        let held = first(&[5, 6, 7]);
        assert_eq!(gate(&held, &held, (3, 0), 4), (Gate::Open, 3));
        // Another process still has one out.
        assert_eq!(gate(&held, &held, (4, 0), 4), (Gate::Shut, 3));
        // A settle here while the server was asked: the count may be stale.
        assert_eq!(gate(&held, &first(&[6, 7]), (2, 0), 5), (Gate::Shut, 2));
        // Held here but settled (at or below the floor): not out.
        let held = first(&[3, 5, 6, 7]);
        assert_eq!(gate(&held, &held, (3, 0), 4), (Gate::Open, 3));
        let held = first(&[3, 4, 6]);
        assert_eq!(gate(&held, &held, (3, 0), 4), (Gate::Shut, 1));
    }

    #[test]
    fn a_redelivery_another_holder_settled_hides_no_delivery_still_out() {
        // Held here: 5 (first delivery), 6 and 7 delivered again. Another
        // process settled 7 after the server sent it here again, and still
        // holds 4, a first delivery: out are 4, 5 and 6, one of them (6)
        // delivered before. The total matches what is held here (3); the
        // gate must not open.
        let held = vec![(5, false), (6, true), (7, true)];
        assert_eq!(gate(&held, &held, (3, 1), 3), (Gate::Settled, 3));
        // Once the redeliveries went back and 6 came again, 4 still out.
        let held = vec![(5, false), (6, true)];
        assert_eq!(gate(&held, &held, (3, 1), 3), (Gate::Shut, 2));
        // 4 settled by its holder: only what is held here is out.
        assert_eq!(gate(&held, &held, (2, 1), 4), (Gate::Open, 2));
        // A redelivery of the other's still out, none settled: shut.
        assert_eq!(gate(&held, &held, (3, 2), 3), (Gate::Shut, 2));
    }

    #[test]
    fn servers_from_2_11_pin() {
        assert!(server_pins("2.11.0"));
        assert!(server_pins("2.15.1"));
        assert!(server_pins("v2.12.0-beta.1"));
        assert!(server_pins("3.0.0"));
        assert!(!server_pins("2.10.22"));
        assert!(!server_pins("2.9.10"));
        assert!(!server_pins(""));
        assert!(!server_pins("garbage"));
    }

    #[test]
    fn a_process_holds_its_share_of_the_partitions() {
        let share = Share::default();
        assert_eq!(share.fair(16), 16, "alone, all of them");
        share.saw(2);
        assert_eq!(share.fair(16), 8);
        share.saw(4);
        assert_eq!(share.fair(16), 8, "the fewest seen lately");
        *lock(&share.peers) = Some((2, Instant::now() - PEERS_FOR));
        share.saw(3);
        assert_eq!(share.fair(16), 6, "an old count is forgotten");
    }

    #[test]
    fn a_pin_outlasts_a_partition_s_ack_wait_and_a_pull() {
        let o = Options::default();
        assert!(pin_timeout(&o) > o.partition_ack_wait() + PIN_POLL);
    }
}
