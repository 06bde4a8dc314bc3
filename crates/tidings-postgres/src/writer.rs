//! The writer task: the only user of its connection. It takes every
//! operation queued for it, up to a batch, and writes them in one
//! transaction of a fixed handful of set-based statements over `UNNEST`ed
//! arrays, however large the batch: a thousand acks are one `DELETE`, not a
//! thousand round trips (a first version wrote each run of one kind as a
//! statement; with emits and acks interleaved, a batch of 126 made ~126 round
//! trips and took 20 ms).
//!
//! Reordering is safe because of what a batch can hold: an outcome always
//! refers to an event appended in an earlier batch (an event is queued only
//! after its append committed), so appends go first; and the outcomes of one
//! delivery are folded, in order, into their net effect ([`Net`]), so that
//! each delivery is touched by one statement at most. If a batch fails, its
//! operations are written again one by one, so that one bad operation fails
//! alone.

use crate::append::{Commit, Deliveries, Taken, Taking};
use crate::claims::Bound;
use crate::direct::Queue;
use crate::link::{broke, Link};
use crate::rejoin::Rejoin;
use crate::schema::{to_attempt, to_nanos};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tidings::store::{Answers, Change, Claim, Health, StoredDelivery, StoredEvent};
use tidings::StoreError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use uuid::Uuid;

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// How long a dropped store's writer keeps trying to write the outcomes it
/// holds while the server is unreachable.
const CLOSING_PATIENCE: Duration = Duration::from_secs(5);

/// How long a write, a claim or a renewal may take before its connection
/// is taken for stalled (dropped and made again), when no waiter says
/// otherwise.
pub(crate) const STALL: Duration = Duration::from_secs(5);

pub(crate) enum Op {
    Append(StoredEvent, Reply),
    /// A delivery's outcome, with the claim it was handed out with (a
    /// shared bus's fencing token).
    Update(Uuid, Box<str>, Claim, Change),
    /// Marks an attempt begun (`Store::begin`): written last in its batch.
    Begin(Uuid, Box<str>, Claim, u32, Reply),
    Flush(Reply),
    /// The relay's claim: on the writer's connection after the batch (a
    /// bus name of its own: under its lock), or on the claimer's (shared).
    Claim(usize, oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>),
    /// A shared bus's instance registers its handlers (before any append).
    Bind(Bound),
    /// Deliveries to a shared bus's handlers not yet done, anywhere.
    Outstanding(oneshot::Sender<Result<u64, StoreError>>),
}

/// An operation, when it was handed over, and how long whoever waits for
/// it waits for an unreachable server (outcomes of deliveries: until
/// written, while the store lives).
pub(crate) struct Item {
    pub(crate) op: Op,
    pub(crate) at: Instant,
    pub(crate) patience: Duration,
    /// The task that handed it over (an emit's: its emitter), if any.
    pub(crate) from: Option<tokio::task::Id>,
}

/// What the writer needs besides its queue.
pub(crate) struct Writer {
    /// Shared with [`Direct`](crate::direct::Direct), which writes a lone
    /// emit on it while the writer is idle.
    pub(crate) link: Arc<tokio::sync::Mutex<Link>>,
    /// The main writer's: what it was handed and has not yet written, and
    /// whether its last batch was one operation (`None`: the outcomes
    /// writer).
    pub(crate) queue: Option<Arc<Queue>>,
    /// Operations taken from the queue for the batch being written.
    pub(crate) received: usize,
    /// A shared bus's claimer's connection (`None`: claims run here).
    pub(crate) claim_link: Option<Link>,
    pub(crate) bus: String,
    /// A shared bus's instance.
    pub(crate) owner: Option<Uuid>,
    pub(crate) max_batch: usize,
    /// The outcomes writer of a bus name of its own: how long a small
    /// batch of handled deliveries waits for more ([`lingers`],
    /// [`OUTCOMES_LINGER`]).
    pub(crate) linger: Option<Duration>,
    /// The main writer's: a batch of emits waits for the last batch's
    /// emitters ([`Rejoin`]).
    pub(crate) rejoin: Option<Rejoin>,
    pub(crate) health: Arc<Health>,
    /// Woken after the connection came back: the relay claims at once.
    pub(crate) changed: Arc<Notify>,
    /// A shared instance's lease task: the writer marks the instance gone
    /// only once it has stopped.
    pub(crate) renewing: Option<tokio::task::JoinHandle<()>>,
    /// The main writer's (emits, claims, the name or the instance): the
    /// writer of the store's outcomes, on a connection of its own; the main
    /// writer releases the name (or ends the instance) only after it is
    /// done. `None`: this is the outcomes writer.
    pub(crate) outcomes: Option<tokio::task::JoinHandle<()>>,
    /// What a shared instance holds, shared by the claimer and both writers.
    pub(crate) claims: Arc<Mutex<Claims>>,
    /// The claims' fencing tokens (a bus name of its own claims here).
    pub(crate) tokens: Tokens,
    /// Whether outcomes were committed without waiting for the disk since
    /// the last commit that waited (a flush then makes sure of them).
    pub(crate) unflushed: Arc<AtomicBool>,
    /// Set once a shared bus's handlers are registered (their `Op::Bind`
    /// committed): an outbox write waits for it, since deliveries of an
    /// event go to the handlers registered when it is written.
    pub(crate) bound: tokio::sync::watch::Sender<bool>,
    /// Where refused settles are answered (set by `Store::recover`).
    pub(crate) answers: Arc<std::sync::OnceLock<Answers>>,
}

/// The fencing tokens of a store's claims: each claim writes the next, so
/// that a claim whose answer never came back can be found again
/// ([`crate::claims::reclaim`]) and its deliveries run, instead of staying
/// owned by a live store that does not know it has them.
///
/// - A bus name of its own: the claim ran on the writer's connection, which
///   holds the name's lock; the server ends the old session (and whatever
///   it was running) before a new connection can take the lock, so looking
///   for the lost tokens once, before the next claim, is exact.
/// - A shared instance: a claim given up (the connection broke or stalled)
///   may still commit on the server *later* (a statement already sent runs
///   to its end even when its client is gone; one sent into a cut network
///   may reach the server when TCP retransmits it, up to about 15 minutes
///   later), after any immediate look. So the instance also sweeps: the
///   tokens of the deliveries it owns on the server that are not among the
///   claims it holds are claims it never heard of, and are found again.
///   The sweep reads the bus's pending deliveries (no index names their
///   owner: a claim writes no indexed column, see `schema`), so it runs
///   every [`SWEEP`] for [`SWEEP_FIRST`] after a claim failed, every
///   [`SWEEP_SUSPECT`] until [`SUSPECT`] has passed, and every
///   [`SWEEP_CALM`] otherwise.
pub(crate) struct Tokens {
    /// Tokens of claims that may have been committed unheard.
    lost: Vec<i64>,
    /// When a shared instance last swept.
    swept: Option<Instant>,
    /// When a claim last failed.
    failed: Option<Instant>,
    /// Where the next walk of the keys' heads starts, and whether it reads
    /// the horizon (a shared instance's).
    walk: crate::claims::Walk,
}

/// How often a shared instance looks for claims of its own it never heard
/// of, for [`SWEEP_FIRST`] after a claim failed (a statement the server received
/// before its client gave up commits within that): the longest such a
/// claim's deliveries (and, for a keyed one, its key) wait then.
const SWEEP: Duration = Duration::from_secs(1);
/// How long after a failed claim the instance sweeps every [`SWEEP`].
const SWEEP_FIRST: Duration = Duration::from_secs(60);
/// How often after that, until [`SUSPECT`] has passed (a statement sent
/// into a cut network, delivered by TCP's later retransmissions): a sweep
/// reads the bus's pending deliveries, which may be millions.
const SWEEP_SUSPECT: Duration = Duration::from_secs(10);
/// How long after a claim failed it may still commit (TCP's retransmissions
/// of a statement sent into a cut network give up after about 15 minutes
/// on Linux's defaults).
const SUSPECT: Duration = Duration::from_secs(20 * 60);
/// How often a shared instance sweeps otherwise: a claim that failed
/// without the store seeing it fail (none is known) waits this long at most.
const SWEEP_CALM: Duration = Duration::from_secs(60);

impl Tokens {
    /// Nothing lost, never swept (the tokens themselves come from
    /// [`Claims`], which the appends' takings draw from too).
    pub(crate) fn new() -> Self {
        Self {
            lost: Vec::new(),
            swept: None,
            failed: None,
            walk: Default::default(),
        }
    }

    /// Claims up to `limit` deliveries on `link` under the next token of
    /// `claims`; first, what earlier claims (or a shared instance's
    /// appends) took unheard, if any.
    async fn claim(
        &mut self,
        link: &mut Link,
        bus: &str,
        limit: usize,
        owner: Option<Uuid>,
        bound: Option<&Bound>,
        claims: &Mutex<Claims>,
    ) -> Result<crate::claims::Claimed, sqlx::Error> {
        {
            let mut claims = lock(claims);
            if !claims.lost.is_empty() {
                self.lost.append(&mut claims.lost);
                self.failed = Some(Instant::now());
            }
        }
        let sweep = match owner {
            Some(me) => {
                let every = match self.failed.map(|at| at.elapsed()) {
                    Some(ago) if ago < SWEEP_FIRST => SWEEP,
                    Some(ago) if ago < SUSPECT => SWEEP_SUSPECT,
                    _ => SWEEP_CALM,
                };
                let due =
                    !self.lost.is_empty() || self.swept.is_none_or(|at| at.elapsed() >= every);
                due.then_some((me, claims))
            }
            _ => None,
        };
        if sweep.is_some() || !self.lost.is_empty() {
            let lost = &self.lost;
            let found = link
                .run(STALL, async |conn| match sweep {
                    // Known first: a claim it holds now has its rows on the
                    // server until after it leaves `held`. And after: an
                    // append may have taken rows meanwhile, under a token
                    // held before its statement ran.
                    Some((me, claims)) => {
                        let mut known: HashSet<i64> = lock(claims).held.keys().copied().collect();
                        let owned = crate::claims::claim_tokens(conn, bus, me).await?;
                        known.extend(lock(claims).held.keys().copied());
                        let unknown: Vec<i64> =
                            owned.into_iter().filter(|t| !known.contains(t)).collect();
                        if unknown.is_empty() {
                            return Ok(crate::claims::Claimed::default());
                        }
                        crate::claims::reclaim(conn, bus, owner, &unknown).await
                    }
                    None => crate::claims::reclaim(conn, bus, owner, lost).await,
                })
                .await?;
            self.lost.clear();
            if sweep.is_some() {
                self.swept = Some(Instant::now());
            }
            if !found.events.is_empty() {
                tracing::info!(
                    deliveries = found
                        .events
                        .iter()
                        .map(|e| e.deliveries.len())
                        .sum::<usize>(),
                    "deliveries claimed by a claim whose answer was lost were found again"
                );
                return Ok(found);
            }
        }
        let token = lock(claims).token();
        let walk = &self.walk;
        let claimed = link
            .run(STALL, async |conn| {
                crate::claims::claim(conn, bus, limit, owner, bound, token, walk).await
            })
            .await;
        if let Ok(claimed) = &claimed {
            if let Some(cursor) = &claimed.cursor {
                self.walk.cursor.clone_from(cursor);
            }
            self.walk.keyed = claimed.keyed;
        }
        if claimed.is_err() {
            // (An error that is not a broken connection rolled the claim
            // back, unless it came after the commit, decoding the answer.)
            self.lost.push(token);
            self.failed = Some(Instant::now());
        }
        claimed
    }
}

/// What a shared bus's instance holds of one claim (a fencing token): how
/// many of its deliveries are not settled yet, and whether one of them has
/// a key (settling it lets the key's next go: this instance's relay is
/// woken, see [`ends_a_key`]). Each delivery carries its token itself ([`Claim`]); this count
/// is only for the sweep, which must tell its own claims from claims it
/// never heard of.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    deliveries: usize,
    keyed: bool,
}

/// The most deliveries a shared instance may hold (claimed or taken by its
/// appends, not settled yet) for its appends to take more: beyond, its
/// emits are left for any instance to claim, so that a busy instance does
/// not keep its own work from the others. The relay's batch.
const TAKE_WHILE_HOLDING: usize = 256;

/// What the writers, the claimer and the relay's feed share.
pub(crate) struct Claims {
    /// A shared bus's handlers in this instance, once bound.
    bound: Option<Arc<Bound>>,
    /// The claims this instance holds deliveries of, by fencing token.
    held: HashMap<i64, Held>,
    /// How many deliveries `held` counts in all.
    holding: usize,
    /// The next fencing token (the claimer's claims and the appends'
    /// takings draw from it).
    next: i64,
    /// Tokens of appends that may have taken deliveries unheard (their
    /// batch failed): the claimer looks for them as for its own lost claims.
    lost: Vec<i64>,
    /// Events the appends took for this instance, not yet taken by its
    /// relay.
    handed: VecDeque<StoredEvent>,
    /// Woken when `handed` gets events.
    handed_ready: Arc<Notify>,
    /// The claimer's last claim asks for the next at once (see
    /// `claims::Claimed::again`).
    again: bool,
    /// A keyed delivery of this instance's ended since the last claim
    /// (its settle woke the relay).
    key_ended: bool,
}

impl Claims {
    /// Nothing held; tokens from a random start (the owner and the token
    /// together tell one claim from another).
    pub(crate) fn new() -> Self {
        let (_, random) = Uuid::now_v7().as_u64_pair();
        Self {
            bound: None,
            held: HashMap::new(),
            holding: 0,
            next: i64::try_from(random >> 2).unwrap_or(1),
            lost: Vec::new(),
            handed: VecDeque::new(),
            handed_ready: Arc::default(),
            again: false,
            key_ended: false,
        }
    }

    /// The next fencing token.
    fn token(&mut self) -> i64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }

    /// Up to `limit` of the events the appends took, oldest first.
    pub(crate) fn take_handed(&mut self, limit: usize) -> Vec<StoredEvent> {
        let n = limit.min(self.handed.len());
        self.handed.drain(..n).collect()
    }

    /// Whether the last claim asked for the next at once; asked once.
    pub(crate) fn take_again(&mut self) -> bool {
        std::mem::take(&mut self.again)
    }

    /// A keyed delivery of this instance's ended: the relay is woken to
    /// claim the key's next. A dry claim that follows is no sign of
    /// instances racing on a notification (the feed takes it as woken by
    /// a signal already waiting: the claim gap stays as it was).
    pub(crate) fn key_ends(&mut self) {
        self.key_ended = true;
    }

    /// Whether a keyed delivery ended since this was last asked.
    pub(crate) fn take_key_ended(&mut self) -> bool {
        std::mem::take(&mut self.key_ended)
    }

    /// Woken when the appends took events.
    pub(crate) fn handed_ready(&self) -> Arc<Notify> {
        self.handed_ready.clone()
    }

    /// Gives the events an append took back to the relay (a claim of the
    /// relay's failed after it was handed them), before any taken since.
    pub(crate) fn hand_back(&mut self, events: Vec<StoredEvent>) {
        for e in events.into_iter().rev() {
            self.handed.push_front(e);
        }
    }

    /// Whether an append of `n` events may take them (a shared instance
    /// with handlers, bound, holding no more than [`TAKE_WHILE_HOLDING`]
    /// with them): its token, held from now on (a sweep running meanwhile
    /// takes the rows it writes for its own), and the handlers.
    fn begin_taking(&mut self, n: usize) -> Option<(i64, Arc<Bound>)> {
        let bound = self.bound.clone()?;
        if bound.handlers.is_empty() || self.holding + n > TAKE_WHILE_HOLDING {
            return None;
        }
        let token = self.token();
        self.held.insert(token, Held::default());
        Some((token, bound))
    }

    /// What an append with `token` took: held and handed to the relay.
    fn took(&mut self, token: i64, events: Vec<StoredEvent>) {
        if events.is_empty() {
            self.held.remove(&token);
            return;
        }
        self.held.insert(
            token,
            Held {
                deliveries: events.len(),
                keyed: false,
            },
        );
        self.holding += events.len();
        self.handed.extend(events);
    }

    /// An append with `token` failed: whatever it took may be on the server
    /// unheard, and is looked for.
    fn lost_taking(&mut self, token: i64) {
        self.held.remove(&token);
        self.lost.push(token);
    }

    /// Counts what a claim handed out.
    fn hold(&mut self, events: &[StoredEvent]) {
        for e in events {
            for d in &e.deliveries {
                let h = self.held.entry(fence(d.claim)).or_default();
                h.deliveries += 1;
                h.keyed |= e.key.is_some();
                self.holding += 1;
            }
        }
    }

    /// A delivery of claim `fence` is over here (handled or dead-lettered,
    /// or refused as stale); whether it was keyed.
    fn release(&mut self, fence: i64) -> bool {
        let Entry::Occupied(mut h) = self.held.entry(fence) else {
            return false;
        };
        let keyed = h.get().keyed;
        h.get_mut().deliveries = h.get().deliveries.saturating_sub(1);
        self.holding = self.holding.saturating_sub(1);
        if h.get().deliveries == 0 {
            h.remove();
        }
        keyed
    }
}

/// A claim's fencing token (`0`: none, such as a replay's; tokens are
/// positive).
fn fence(claim: Claim) -> i64 {
    claim.token().map_or(0, |t| i64::try_from(t).unwrap_or(0))
}

pub(crate) fn lock(claims: &Mutex<Claims>) -> MutexGuard<'_, Claims> {
    claims.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Writer {
    /// Runs until every sender is gone and all that was sent is written (or,
    /// with the server gone, given up after `patience`). Claims and counts of
    /// a shared bus go to a task of their own, on the claimer's connection,
    /// so that they never wait for a write batch nor hold one up.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut batch: Vec<Item> = Vec::with_capacity(self.max_batch);
        let claims = self.claims.clone();
        let main = self.outcomes.is_some();
        let (to_claimer, claimer_rx) = mpsc::unbounded_channel();
        let claimer = self.claim_link.take().map(|link| {
            tokio::spawn(claimer(
                link,
                self.bus.clone(),
                self.owner,
                claimer_rx,
                claims.clone(),
                self.changed.clone(),
            ))
        });
        let mut closed = false;
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let (mut taken, mut gone) =
                gather(&mut rx, &mut batch, self.max_batch, self.linger).await;
            if let (Some(rejoin), false) = (&mut self.rejoin, gone) {
                let (more, closed) = rejoin.wait(&mut rx, &mut batch, self.max_batch).await;
                (taken, gone) = (taken + more, closed);
            }
            self.received = 1 + taken;
            closed |= gone;
            let (done, failed) = self
                .write_until_done(&mut batch, &claims, &mut closed, &mut rx)
                .await;
            if let Some(rejoin) = &mut self.rejoin {
                rejoin.written(&done);
            }
            for item in done {
                self.note_bound(&item.op);
                match item.op {
                    op @ (Op::Claim(..) | Op::Outstanding(_)) => {
                        if claimer.is_some() {
                            // Gone only with the writer; a dropped reply is `Closed`.
                            let _ = to_claimer.send(op);
                        } else {
                            self.claim_here(op).await;
                        }
                    }
                    op => answer(op, Ok(())),
                }
            }
            // Written one by one, so that one bad operation fails alone.
            for item in failed {
                let mut one = vec![item];
                let (done, failed) = self
                    .write_until_done(&mut one, &claims, &mut closed, &mut rx)
                    .await;
                for item in done {
                    self.note_bound(&item.op);
                    answer(item.op, Ok(()));
                }
                for item in failed {
                    self.refused(item.op);
                }
            }
            if let Some(queue) = &self.queue {
                queue.done(std::mem::take(&mut self.received));
            }
        }
        drop(to_claimer);
        if let Some(claimer) = claimer {
            let _ = claimer.await;
        }
        // The outcomes first, while the instance's lease still runs.
        if let Some(outcomes) = self.outcomes.take() {
            let _ = outcomes.await;
        }
        if let Some(renewing) = self.renewing.take() {
            let _ = renewing.await;
        }
        if !main {
            self.link.lock().await.close().await;
            return;
        }
        let mut link = self.link.lock().await;
        if let (Some(me), Ok(conn)) = (self.owner, link.get().await) {
            // Gone: what this instance still owns may be claimed by the others at
            // once. (Marked dead, not deleted: claims find a dead instance's
            // deliveries through it; it is deleted once they are all taken over.)
            let _ = sqlx::query(
                "UPDATE tidings_instances SET alive_until = now() - interval '1 millisecond' WHERE id = $1",
            )
            .bind(me)
            .execute(conn)
            .await;
        }
        link.close().await;
    }

    /// After a written `op`: a registration committed lets outbox writes go.
    fn note_bound(&self, op: &Op) {
        if matches!(op, Op::Bind(_)) {
            self.bound.send_replace(true);
        }
    }

    /// Writes `batch` in one transaction, connecting again for as long as
    /// the server is unreachable: operations someone waits for are answered
    /// [`StoreError::Unavailable`] once they have waited `patience`, outcomes
    /// are kept until written (or, once the store is dropped, `patience`
    /// after that). Returns what was written, and what the server refused
    /// (the batch failed for another reason than the connection: its
    /// operations are to be written one by one).
    async fn write_until_done(
        &mut self,
        batch: &mut Vec<Item>,
        claims: &Mutex<Claims>,
        closed: &mut bool,
        rx: &mut mpsc::UnboundedReceiver<Item>,
    ) -> (Vec<Item>, Vec<Item>) {
        let mut first_try = true;
        let mut closed_at: Option<Instant> = None;
        loop {
            if batch.is_empty() {
                return (Vec::new(), Vec::new());
            }
            let ops: Vec<&Op> = batch.iter().map(|i| &i.op).collect();
            // A write that takes longer than the most patient waiter would
            // wait is on a stalled connection (a frozen network, a paused
            // server): it is dropped and made again, and the waiters expire.
            let stall = batch.iter().map(|i| i.patience).max().unwrap_or(STALL);
            let reconnected = !self.health.is_connected();
            let (bus, owner, unflushed) = (&self.bus, self.owner, &self.unflushed);
            let changed = &self.changed;
            let mut link = self.link.lock().await;
            let result = link
                .run(stall, async |conn| {
                    write(conn, bus, owner, &ops, claims, unflushed, changed).await
                })
                .await;
            let retry_at = link.retry_at();
            drop(link);
            match result {
                Ok(stale) => {
                    if reconnected {
                        tracing::info!("the store reached its server again");
                        // What was committed meanwhile (by others) is claimed now.
                        self.changed.notify_one();
                    }
                    // (A batch written again after a lost connection may
                    // have committed the first time: its settles then find
                    // their rows gone, which is no refusal.)
                    if first_try {
                        if let Some(answers) = self.answers.get() {
                            for (id, handler) in stale {
                                answers.stale(id, &handler);
                            }
                        }
                    }
                    return (std::mem::take(batch), Vec::new());
                }
                Err(e) if !broke(&e) => {
                    if batch.len() == 1 {
                        tracing::warn!("a store write failed: {e}");
                        return (Vec::new(), std::mem::take(batch));
                    }
                    tracing::warn!(
                        "a batch of {} store writes failed ({e}); writing them one by one",
                        batch.len()
                    );
                    return (Vec::new(), std::mem::take(batch));
                }
                Err(e) => {
                    if first_try {
                        tracing::warn!("the store lost its server ({e}); connecting again");
                    }
                    first_try = false;
                    // What was handed over meanwhile waits (and expires) with the batch.
                    let (taken, gone) = drain(rx, batch, usize::MAX);
                    self.received += taken;
                    *closed |= gone;
                    if *closed && closed_at.is_none() {
                        closed_at = Some(Instant::now());
                    }
                    let now = Instant::now();
                    let give_up = closed_at.is_some_and(|at| now - at >= CLOSING_PATIENCE);
                    let mut kept = Vec::with_capacity(batch.len());
                    let mut dropped_outcomes = 0usize;
                    let mut next_deadline: Option<Instant> =
                        closed_at.map(|at| at + CLOSING_PATIENCE);
                    for item in batch.drain(..) {
                        let waited = now - item.at;
                        match item.op {
                            Op::Update(..) | Op::Bind(_) if !give_up => kept.push(item),
                            Op::Update(..) | Op::Bind(_) => dropped_outcomes += 1,
                            op if waited >= item.patience => {
                                answer(op, Err(StoreError::Unavailable { waited }));
                            }
                            op => {
                                let deadline = item.at + item.patience;
                                next_deadline =
                                    Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                                kept.push(Item { op, ..item });
                            }
                        }
                    }
                    if dropped_outcomes > 0 {
                        tracing::warn!(
                            "the store closed with its server unreachable: {dropped_outcomes} delivery outcomes were not recorded, and those deliveries will be made again"
                        );
                    }
                    *batch = kept;
                    // Until the next attempt to connect, or the next deadline,
                    // or (nothing waiting) a new operation.
                    // (No attempt to connect made yet: at once.)
                    if let Some(retry) = retry_at {
                        let wake = next_deadline.map_or(retry, |d| retry.min(d));
                        tokio::time::sleep_until(wake).await;
                    }
                }
            }
        }
    }

    /// A bus name of its own: the relay's claim runs on the writer's
    /// connection, which holds the name's lock (so a store that lost the
    /// name claims nothing).
    async fn claim_here(&mut self, op: Op) {
        let Op::Claim(limit, reply) = op else {
            if let Op::Outstanding(reply) = op {
                let _ = reply.send(Ok(0));
            }
            return;
        };
        let claimed = self
            .tokens
            .claim(
                &mut *self.link.lock().await,
                &self.bus,
                limit,
                None,
                None,
                &self.claims,
            )
            .await;
        let _ = reply.send(claimed.map(|c| c.events).map_err(crate::store::error));
    }

    fn refused(&self, op: Op) {
        if let Op::Update(id, handler, ..) = &op {
            tracing::warn!(handler = &**handler, event_id = %id, "a delivery's outcome could not be recorded; it will be made again");
        }
        answer(
            op,
            Err(StoreError::Backend("the store refused the write".into())),
        );
    }
}

fn answer(op: Op, result: Result<(), StoreError>) {
    match op {
        // The emit may have been dropped: nobody to tell.
        Op::Append(_, reply) | Op::Begin(.., reply) | Op::Flush(reply) => {
            drop(reply.send(result));
        }
        // A claim in a failed batch claims nothing this time; the relay asks again.
        Op::Claim(_, reply) => drop(reply.send(result.map(|()| Vec::new()))),
        Op::Outstanding(reply) => drop(reply.send(result.map(|()| 1))),
        Op::Update(..) | Op::Bind(_) => {}
    }
}

/// Takes what else is queued into `batch`, up to `max`; a batch that
/// [`lingers`] then waits up to `linger` (if any) for more, up to
/// [`LINGER_UP_TO`]. Returns how many it took, and whether the queue is
/// closed.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Item>,
    batch: &mut Vec<Item>,
    max: usize,
    linger: Option<Duration>,
) -> (usize, bool) {
    let (mut taken, closed) = drain(rx, batch, max);
    let Some(linger) = linger.filter(|_| !closed) else {
        return (taken, closed);
    };
    let until = Instant::now() + linger;
    while batch.len() < LINGER_UP_TO.min(max) && lingers(batch) {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(item)) => {
                batch.push(item);
                taken += 1;
            }
            Ok(None) => return (taken, true),
            Err(_) => break,
        }
    }
    (taken, false)
}

/// Takes what is queued into `batch`, up to `max`, without waiting.
/// Returns how many it took, and whether the queue is closed.
fn drain(
    rx: &mut mpsc::UnboundedReceiver<Item>,
    batch: &mut Vec<Item>,
    max: usize,
) -> (usize, bool) {
    let mut taken = 0;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => {
                batch.push(item);
                taken += 1;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return (taken, true),
        }
    }
    (taken, false)
}

/// How long the outcomes writer of a bus name of its own lets a small batch
/// of handled deliveries wait for more. Their deletes ran beside the next
/// emits' inserts, one statement per event for one emitter: one emitter's
/// wait, p50 1.26-1.42 times a raw one-row insert beside it, 1.13-1.18 times
/// with this (0.5 ms: 1.27-1.35; 1 ms: 1.16-1.19; 5 ms: 1.13-1.23;
/// docs/BENCHMARKS.md, section 7, session 24). Nobody waits for a handled
/// delivery's delete (an operation somebody waits for, a flush or a begin
/// mark, ends the wait at once), and a delivery is made again after a
/// crash only if its outcome was not written, as before. (On a shared
/// name, a keyed delivery's next waits for its delete: a shared
/// instance's outcomes do not wait.)
pub(crate) const OUTCOMES_LINGER: Duration = Duration::from_millis(2);

/// The most handled deliveries a batch waits to gather ([`Writer::linger`]).
const LINGER_UP_TO: usize = 64;

/// Whether a batch may wait for more: it holds handled deliveries alone
/// (nobody waits for them: a flush, a begin mark or a replay in the batch
/// ends the wait at once).
fn lingers(batch: &[Item]) -> bool {
    batch
        .iter()
        .all(|i| matches!(i.op, Op::Update(_, _, _, Change::Handled)))
}

/// What the outcomes of one delivery in a batch amount to, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Net {
    delivery: Row,
    dead: Dead,
    /// Its begin mark is cleared if it is still this attempt's (a shutdown
    /// abandoned the attempt).
    unbegun: Option<u32>,
}

/// The delivery's row after the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Row {
    /// Untouched.
    #[default]
    Same,
    /// Deleted (handled or dead-lettered).
    Deleted,
    /// Its attempt set, if the row exists.
    Attempt(u32),
    /// Inserted (replayed) at this attempt, if its event exists.
    Inserted(u32),
}

/// The delivery's dead letter after the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Dead {
    #[default]
    Same,
    Deleted,
    Kept {
        attempts: u32,
        error: String,
    },
}

impl Net {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Handled => self.delivery = Row::Deleted,
            Change::Retrying { attempt } => {
                self.delivery = match self.delivery {
                    Row::Deleted => Row::Deleted,
                    Row::Inserted(_) => Row::Inserted(*attempt),
                    Row::Same | Row::Attempt(_) => Row::Attempt(*attempt),
                }
            }
            Change::DeadLettered { attempts, error } => {
                self.delivery = Row::Deleted;
                self.dead = Dead::Kept {
                    attempts: *attempts,
                    error: error.clone(),
                };
            }
            Change::Replayed => {
                self.dead = Dead::Deleted;
                self.delivery = Row::Inserted(1);
            }
            Change::Discarded => self.dead = Dead::Deleted,
            Change::Abandoned { attempt } => self.unbegun = Some(*attempt),
            // A change this version does not know: leave the delivery as it is.
            _ => {}
        }
    }
}

/// A delivery (event, handler), the claim its last outcome came with, and
/// the net effect of its outcomes.
type Outcomes<'a> = ((Uuid, &'a str), (Claim, Net));

/// The net effect of each delivery's outcomes in `ops`, in order of first
/// appearance, with the claim its last outcome came with.
fn net<'a>(ops: &[&'a Op]) -> Vec<Outcomes<'a>> {
    let mut out: Vec<Outcomes<'a>> = Vec::new();
    let mut at: HashMap<(Uuid, &str), usize> = HashMap::new();
    for op in ops {
        if let Op::Update(id, handler, claim, change) = op {
            let i = match at.entry((*id, &**handler)) {
                Entry::Occupied(i) => *i.get(),
                Entry::Vacant(v) => {
                    v.insert(out.len());
                    out.push(((*id, handler), (*claim, Net::default())));
                    out.len() - 1
                }
            };
            out[i].1 .0 = *claim;
            out[i].1 .1.apply(change);
        }
    }
    out
}

/// Runs a shared bus's claims and `wait_idle`'s counts on a connection of
/// its own, until the writer stops. Each claim's fencing token is kept, so
/// that the writer's settles carry it.
async fn claimer(
    mut link: Link,
    bus: String,
    owner: Option<Uuid>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    claims: Arc<Mutex<Claims>>,
    changed: Arc<Notify>,
) {
    let mut tokens = Tokens::new();
    while let Some(op) = rx.recv().await {
        let bound = lock(&claims).bound.clone();
        let bound = bound.as_deref();
        match op {
            Op::Claim(limit, reply) => {
                // A shared store claims only for its own handlers: nothing
                // before they are registered, nothing without any (a front
                // end's: claimed, its walk's lock was NULL and every claim
                // failed while keyed deliveries were pending).
                if owner.is_some() && bound.is_none_or(|b| b.handlers.is_empty()) {
                    let _ = reply.send(Ok(Vec::new()));
                    continue;
                }
                let claimed = tokens
                    .claim(&mut link, &bus, limit, owner, bound, &claims)
                    .await;
                if let Ok(claimed) = &claimed {
                    lock(&claims).hold(&claimed.events);
                    if claimed.walk_busy {
                        // Claims again, no sooner than the claim gap.
                        changed.notify_one();
                    }
                    if claimed.again {
                        // Claims again at once, reading the horizon (the
                        // feed's `more`, which returns from `changed`
                        // without taking this wake). The wake is left
                        // stored and does a second job: when the relay next
                        // waits, it makes one more claim due after the gap
                        // even if no notification comes, and the feed takes
                        // it for a signal already waiting, so that claim's
                        // dryness is no sign of instances racing and leaves
                        // the gap as it was. (Without it, a front end's
                        // lone keyed emit waited for the gap: 7.8-8.4 ms to
                        // its handler against 1.4 ms, docs/BENCHMARKS.md
                        // section 7, session 27. Folding it into the key's
                        // end mark, which only marks, would lose that claim.)
                        lock(&claims).again = true;
                        changed.notify_one();
                    }
                }
                let _ = reply.send(claimed.map(|c| c.events).map_err(crate::store::error));
            }
            Op::Outstanding(reply) => {
                let n = match bound {
                    None => Ok(0),
                    Some(b) => {
                        link.run(STALL, async |conn| {
                            crate::claims::outstanding(conn, &bus, b).await
                        })
                        .await
                    }
                };
                let _ = reply.send(n.map_err(crate::store::error));
            }
            _ => {}
        }
    }
    link.close().await;
}

/// The net outcomes of a batch's settles, each with its claim's token.
fn settles_of<'a>(ops: &[&'a Op]) -> Vec<Settle<'a>> {
    net(ops)
        .into_iter()
        .map(|((id, handler), (claim, net))| Settle {
            id,
            handler,
            net,
            fence: fence(claim),
        })
        .collect()
}

/// One delivery's net outcome in a batch, with the fencing token of this
/// instance's claim, from the delivery's [`Claim`] (`0`: one it did not
/// claim through the relay, such as a replay).
struct Settle<'a> {
    id: Uuid,
    handler: &'a str,
    net: Net,
    fence: i64,
}

/// Writes `ops` in one transaction: a shared bus's settles checked against
/// the instance's claims, and a notification to every instance's relay when
/// the batch writes new events. When it settles a keyed delivery of this
/// instance's, the key's next may go: this instance's relay is woken
/// (`changed`), not every instance's (see [`ends_a_key`]). Returns the
/// settles refused as stale (event, handler).
async fn write(
    conn: &mut PgConnection,
    bus: &str,
    owner: Option<Uuid>,
    ops: &[&Op],
    claims: &Mutex<Claims>,
    unflushed: &AtomicBool,
    changed: &Notify,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    // Claims, counts and flushes alone write nothing: no empty transaction
    // (a claim in a quiet moment is then one round trip, not three).
    if ops
        .iter()
        .all(|op| matches!(op, Op::Claim(..) | Op::Outstanding(_) | Op::Flush(_)))
    {
        if ops.iter().any(|op| matches!(op, Op::Flush(_))) && unflushed.load(Ordering::Acquire) {
            // A transaction that waits for the disk makes every earlier
            // commit durable too (the WAL is flushed in order).
            sqlx::query("SELECT txid_current()")
                .execute(&mut *conn)
                .await?;
            unflushed.store(false, Ordering::Release);
        }
        return Ok(Vec::new());
    }
    // Emits alone: one statement, no transaction (on a shared bus, it wakes
    // every instance's relay itself).
    if ops.iter().all(|op| {
        matches!(
            op,
            Op::Append(..) | Op::Claim(..) | Op::Outstanding(_) | Op::Flush(_)
        )
    }) {
        append(conn, bus, owner, &appended(ops), claims, unflushed).await?;
        return Ok(Vec::new());
    }
    let handled_alone = ops.iter().all(|op| {
        matches!(
            op,
            Op::Update(_, _, _, Change::Handled) | Op::Claim(..) | Op::Outstanding(_)
        )
    });
    // Handled deliveries alone, on a shared bus: one fenced statement that
    // commits without waiting for the disk, where a transaction took five
    // round trips; the events of those not written alone in their rows are
    // deleted after it, if nothing else refers to them.
    if handled_alone && owner.is_some() {
        return handled_shared(conn, owner, ops, claims, unflushed, changed).await;
    }
    // Handled deliveries alone, on a bus name of its own: one statement
    // that commits without waiting for the disk (four round trips before:
    // `BEGIN`, two deletes, `COMMIT`; an emit queued behind them waited
    // for all four).
    if handled_alone {
        let (ids, handlers): (Vec<Uuid>, Vec<&str>) = ops
            .iter()
            .filter_map(|op| match op {
                Op::Update(id, handler, ..) => Some((*id, &**handler)),
                _ => None,
            })
            .unzip();
        if !ids.is_empty() {
            handled_at_once(conn, &ids, &handlers).await?;
            unflushed.store(true, Ordering::Release);
        }
        return Ok(Vec::new());
    }
    let outcomes_only = commits_without_waiting(ops);
    let settles = settles_of(ops);
    // A shared bus wakes every instance's relay for new deliveries, and its
    // own for the next of a key when a keyed delivery ends.
    let wake = owner.is_some() && ops.iter().any(|op| matches!(op, Op::Append(..)));
    let ends_a_key = owner.is_some() && ends_a_key(claims, &settles);
    // A shared bus's replays are pending for the claims (`REPLAYED_SHARED`
    // wakes the others).
    let replays = owner.is_some()
        && settles
            .iter()
            .any(|s| matches!(s.net.delivery, Row::Inserted(_)));
    let mut tx = if outcomes_only {
        conn.begin_with("BEGIN; SET LOCAL synchronous_commit TO OFF")
            .await?
    } else {
        conn.begin().await?
    };
    let mut bound = None;
    for op in ops {
        if let Op::Bind(handlers) = op {
            bound = Some(crate::claims::bind(&mut tx, bus, handlers).await?);
        }
    }
    let stale = apply(&mut tx, bus, owner, ops, &settles, wake).await?;
    tx.commit().await?;
    unflushed.store(outcomes_only, Ordering::Release);
    if ends_a_key {
        lock(claims).key_ends();
    }
    if ends_a_key || replays {
        changed.notify_one();
    }
    let mut claims = lock(claims);
    if let Some(bound) = bound {
        claims.bound = Some(Arc::new(bound));
    }
    if owner.is_some() {
        for s in settles.iter().filter(|s| s.net.delivery == Row::Deleted) {
            claims.release(s.fence);
        }
    }
    Ok(stale)
}

/// Writes `events` in one statement without a transaction (on a shared
/// bus, it wakes every instance's relay itself). A shared instance takes
/// its own emits where it can, and hands them to its feed after the commit.
pub(crate) async fn append(
    conn: &mut PgConnection,
    bus: &str,
    owner: Option<Uuid>,
    events: &[&StoredEvent],
    claims: &Mutex<Claims>,
    unflushed: &AtomicBool,
) -> Result<(), sqlx::Error> {
    // A shared instance takes its own emits where it can.
    let taking = owner.and_then(|me| Some((me, lock(claims).begin_taking(events.len())?)));
    let to = match &taking {
        Some((owner, (token, bound))) => Deliveries::Bound(Some(Taking {
            owner: *owner,
            token: *token,
            bound,
        })),
        None => deliveries_of(owner),
    };
    let taken = match crate::append::insert_events(conn, bus, events, to, Commit::Alone).await {
        Ok(taken) => taken,
        Err(e) => {
            if let Some((_, (token, _))) = taking {
                lock(claims).lost_taking(token);
            }
            return Err(e);
        }
    };
    // It waited for the disk, and so did everything committed before it.
    unflushed.store(false, Ordering::Release);
    if let Some((_, (token, _))) = taking {
        let events = handed(events, taken, token);
        let any = !events.is_empty();
        let ready = {
            let mut claims = lock(claims);
            claims.took(token, events);
            claims.handed_ready()
        };
        if any {
            ready.notify_one();
        }
    }
    Ok(())
}

/// [`handled_shared`]'s statement: `$1`–`$3` the settles (event, handler,
/// fencing token), `$4` the instance. Each
/// delivery found by its primary key under the claim the instance holds,
/// locked, deleted by its row's address (see [`settled!`]); answers, in one
/// row, the settles refused as stale and the events of the deleted
/// deliveries that have a row of their own.
pub(crate) const HANDLED_SHARED: &str = "WITH u AS (
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[]) AS u(id, h, f)),
     mine AS MATERIALIZED (SELECT x.row, x.alone, u.id, u.h FROM u CROSS JOIN LATERAL (
         SELECT t.ctid AS row, t.data IS NOT NULL AS alone FROM tidings_deliveries t
         WHERE t.event_id = u.id AND t.handler = u.h AND t.owner = $4 AND t.fence = u.f
         FOR UPDATE) x),
     done AS (DELETE FROM tidings_deliveries t WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine)))
     SELECT set_config('synchronous_commit', 'off', true), stale.ids, stale.hs,
            ARRAY(SELECT DISTINCT m.id FROM mine m WHERE NOT m.alone)
     FROM (SELECT COALESCE(array_agg(u.id), '{}') AS ids, COALESCE(array_agg(u.h), '{}') AS hs
           FROM u WHERE NOT EXISTS (SELECT 1 FROM mine m WHERE m.id = u.id AND m.h = u.h)) stale";

/// Writes a shared bus's handled deliveries ([`HANDLED_SHARED`]), then
/// deletes their events that nothing refers to any more ([`EVENTS_GONE`],
/// after the commit: an instance settling another delivery of the same
/// event at the same moment, in a statement of its own, sees this one's
/// delete once it has committed, so the last of them deletes the event).
/// Returns the settles refused as stale.
async fn handled_shared(
    conn: &mut PgConnection,
    owner: Option<Uuid>,
    ops: &[&Op],
    claims: &Mutex<Claims>,
    unflushed: &AtomicBool,
    changed: &Notify,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let settles = settles_of(ops);
    if settles.is_empty() {
        return Ok(Vec::new());
    }
    let ends_a_key = ends_a_key(claims, &settles);
    let ids: Vec<Uuid> = settles.iter().map(|s| s.id).collect();
    let handlers: Vec<&str> = settles.iter().map(|s| s.handler).collect();
    let fences: Vec<i64> = settles.iter().map(|s| s.fence).collect();
    let (_, stale_ids, stale_handlers, kept): (String, Vec<Uuid>, Vec<String>, Vec<Uuid>) =
        sqlx::query_as(HANDLED_SHARED)
            .bind(&ids)
            .bind(&handlers)
            .bind(&fences)
            .bind(owner)
            .fetch_one(&mut *conn)
            .await?;
    unflushed.store(true, Ordering::Release);
    {
        let mut claims = lock(claims);
        for s in &settles {
            claims.release(s.fence);
        }
    }
    if ends_a_key {
        lock(claims).key_ends();
        changed.notify_one();
    }
    if !kept.is_empty() {
        // (Failed, the events stay: rows nothing refers to, never a
        // delivery. The settles above are committed and answered as such.)
        if let Err(e) = sqlx::query(EVENTS_GONE)
            .bind(&kept)
            .execute(&mut *conn)
            .await
        {
            tracing::warn!(
                events = kept.len(),
                "handled events were left in tidings_events: {e}"
            );
        }
    }
    Ok(stale_ids.into_iter().zip(stale_handlers).collect())
}

/// Who a batch's events go to: a shared bus's (`owner` set) to every
/// handler of their type bound to the name, in whichever instance claims
/// each delivery; a bus name of its own's to its own handlers, queued.
fn deliveries_of(owner: Option<Uuid>) -> Deliveries<'static> {
    match owner {
        Some(_) => Deliveries::Bound(None),
        None => Deliveries::Queued,
    }
}

/// The events of a batch that its append took (`taken`, with `token`), in
/// the batch's order, each with its one delivery as a claim hands it out.
fn handed(events: &[&StoredEvent], taken: Taken, token: i64) -> Vec<StoredEvent> {
    if taken.ids.is_empty() {
        return Vec::new();
    }
    let by_id: HashMap<Uuid, String> = taken.ids.into_iter().zip(taken.handlers).collect();
    let claim = Claim::new(u64::try_from(token).unwrap_or(0));
    events
        .iter()
        .filter_map(|e| {
            let handler = by_id.get(&e.id)?;
            Some(StoredEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                key: e.key.clone(),
                emitted_at: e.emitted_at,
                data: e.data.clone(),
                deliveries: vec![StoredDelivery::new(handler.clone(), 1).claimed(claim)],
            })
        })
        .collect()
}

/// Whether a shared bus's settles end a keyed delivery of a claim it
/// holds: the key's next may go, and this instance's relay is woken to
/// claim it. Not every instance's: a notification sent at a commit holds
/// PostgreSQL's one lock for notifying commits (database-wide) until the
/// commit is over, so settles that notified queued behind every append
/// waiting for its disk flush (`pg_stat_activity`: `Lock:object` waits,
/// docs/BENCHMARKS.md section 7, session 22). This instance is bound to
/// the handler and has just finished a call of it; the others hear of
/// the key with the next append's notification, or look within the
/// relay's tick.
fn ends_a_key(claims: &Mutex<Claims>, settles: &[Settle<'_>]) -> bool {
    let held = &lock(claims).held;
    settles
        .iter()
        .any(|s| s.net.delivery == Row::Deleted && held.get(&s.fence).is_some_and(|h| h.keyed))
}

/// The events a batch appends, in order.
fn appended<'a>(ops: &[&'a Op]) -> Vec<&'a StoredEvent> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Append(e, _) => Some(e),
            _ => None,
        })
        .collect()
}

/// Whether a batch commits without waiting for the disk: when it holds
/// only outcomes of deliveries. A crash of the server may undo the last of
/// them, and those deliveries are made again (at least once, as after a
/// crash of the process). What must survive once answered waits for the
/// disk, as does any batch holding some of it: emits, begin marks, replays
/// and discards, registrations. (Measured: one emitter's emit waited for
/// two commits to reach the disk, the previous event's settle and its own.)
fn commits_without_waiting(ops: &[&Op]) -> bool {
    ops.iter().all(|op| {
        matches!(
            op,
            Op::Claim(..)
                | Op::Outstanding(_)
                | Op::Update(
                    _,
                    _,
                    _,
                    Change::Handled
                        | Change::Retrying { .. }
                        | Change::DeadLettered { .. }
                        | Change::Abandoned { .. }
                )
        )
    })
}

/// Collects the (event, handler, fence) of the settles that `pick` selects, with a value.
fn select<'a, T>(
    settles: &'a [Settle<'a>],
    pick: impl Fn(&'a Net) -> Option<T>,
) -> (Vec<Uuid>, Vec<&'a str>, Vec<i64>, Vec<T>) {
    let (mut ids, mut handlers, mut fences, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in settles {
        if let Some(v) = pick(&s.net) {
            ids.push(s.id);
            handlers.push(s.handler);
            fences.push(s.fence);
            values.push(v);
        }
    }
    (ids, handlers, fences, values)
}

/// The statements that settle deliveries find each delivery by its primary
/// key, lock it, and change it by its row's address (`ctid`), so that no
/// plan can read more rows than the batch names, whatever the statistics
/// say. (Joined to the batch directly, they were planned as a scan of every
/// pending delivery for each settle whenever autovacuum's `ANALYZE` had
/// seen the queue empty between bursts: 8 to 87 s a statement, the store's
/// connections dropped as stalled, the PostgreSQL rows of `tidings bench`
/// collapsing to 0 k events/s; docs/BENCHMARKS.md section 7, session 13.)
///
/// `settled!(change)`: the settles `u(id, h, a, f)` ($1–$4: event, handler,
/// attempt, fencing token), and `mine(row, id, h, a)`: the rows of those
/// this store may settle — on a shared bus (`$5`, the instance), only
/// under the claim it still holds — locked; `change` writes them, and the
/// statement answers the settles that found no row of theirs (refused as
/// stale; nothing on a bus name of its own).
macro_rules! settled {
    ($change:literal) => {
        concat!(
            "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int8[])
                        AS u(id, h, a, f)),
             mine AS (SELECT x.row, u.id, u.h, u.a FROM u CROSS JOIN LATERAL (
                 SELECT t.ctid AS row FROM tidings_deliveries t
                 WHERE t.event_id = u.id AND t.handler = u.h
                   AND ($5::uuid IS NULL
                        OR (t.owner IS NOT DISTINCT FROM $5 AND t.fence = u.f))
                 FOR UPDATE) x),
             done AS (",
            $change,
            ")
             SELECT u.id, u.h FROM u
             WHERE $5::uuid IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM mine m WHERE m.id = u.id AND m.h = u.h)"
        )
    };
}

/// Handled or dead-lettered: the delivery's row goes.
pub(crate) const SETTLE_DELETE: &str =
    settled!("DELETE FROM tidings_deliveries t WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine))");
/// Failed, to be retried: the delivery's next attempt.
pub(crate) const SETTLE_ATTEMPT: &str = settled!(
    "UPDATE tidings_deliveries t SET attempt = m.a FROM mine m
     WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine)) AND t.ctid = m.row"
);
/// Begin marks: the attempt a delivery was begun at.
pub(crate) const BEGIN_MARK: &str = settled!(
    "UPDATE tidings_deliveries t SET begun = m.a FROM mine m
     WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine)) AND t.ctid = m.row"
);
/// An attempt that ended without running its handler: its begin mark goes.
pub(crate) const UNBEGUN: &str = settled!(
    "UPDATE tidings_deliveries t SET begun = 0 FROM mine m
     WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine)) AND t.ctid = m.row AND t.begun = m.a"
);

/// Runs one of the [`settled!`] statements; answers the settles refused
/// as stale (a shared bus's deliveries another instance holds now). The
/// answer costs no round trip and, normally, no row.
async fn fenced_settle(
    tx: &mut Transaction<'_, Postgres>,
    owner: Option<Uuid>,
    statement: &'static str,
    (ids, handlers, attempts, fences): (&[Uuid], &[&str], &[i32], &[i64]),
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(statement)
        .bind(ids)
        .bind(handlers)
        .bind(attempts)
        .bind(fences)
        .bind(owner)
        .fetch_all(&mut **tx)
        .await
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    bus: &str,
    owner: Option<Uuid>,
    ops: &[&Op],
    settles: &[Settle<'_>],
    wake: bool,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let events = appended(ops);
    if !events.is_empty() {
        crate::append::insert_events(
            tx,
            bus,
            &events,
            deliveries_of(owner),
            Commit::InTransaction,
        )
        .await?;
    }
    let mut stale = Vec::new();
    if !settles.is_empty() {
        stale = apply_settles(tx, bus, owner, settles).await?;
    }
    if wake {
        // Wakes every instance's relay: new deliveries, or the next of a key.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::store::CHANNEL)
            .bind(bus)
            .execute(&mut **tx)
            .await?;
    }
    // Begin marks last: a delivery replayed (inserted) in this batch is
    // there to be marked. (A mark and the end of its attempt are never in
    // one batch: the attempt starts once its mark is written.)
    let (mut ids, mut handlers, mut attempts, mut fences) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        if let Op::Begin(id, handler, claim, a, _) = op {
            ids.push(*id);
            handlers.push(&**handler);
            attempts.push(to_attempt(*a));
            fences.push(fence(*claim));
        }
    }
    if !ids.is_empty() {
        // (A mark refused as stale needs no answer: the attempt's outcome
        // is refused too.)
        fenced_settle(tx, owner, BEGIN_MARK, (&ids, &handlers, &attempts, &fences)).await?;
    }
    Ok(stale)
}

/// `gone!(events, except)`: deletes the events `g(id)` of `events` that no
/// delivery (but those `except` leaves out) or dead letter refers to, each
/// found by its primary key, locked, and deleted by its row's address (see
/// [`settled!`] for why no join).
macro_rules! gone {
    ($events:literal, $except:literal) => {
        concat!(
            "DELETE FROM tidings_events e WHERE e.ctid = ANY(ARRAY(
                 SELECT y.row FROM ",
            $events,
            " CROSS JOIN LATERAL (
                     SELECT e2.ctid AS row FROM tidings_events e2 WHERE e2.id = g.id
                       AND NOT EXISTS (SELECT 1 FROM tidings_deliveries d
                                       WHERE d.event_id = e2.id ",
            $except,
            ")
                       AND NOT EXISTS (SELECT 1 FROM tidings_dead_letters l
                                       WHERE l.event_id = e2.id)
                     FOR UPDATE) y))"
        )
    };
}

/// [`handled_at_once`]'s statement: each delivery found by its primary
/// key and locked, deleted by its row's address; each of their events
/// deleted unless a delivery this statement does not delete (the
/// statement's own deletes are not in its snapshot), or a dead letter,
/// still refers to it ([`gone!`]). An event written alone in its
/// delivery's row (see `schema`) goes with the row: no event to look up
/// (told apart in the one pass over the batch that locks the rows).
pub(crate) const HANDLED_AT_ONCE: &str = concat!(
    "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[]) AS u(id, h)),
     mine AS MATERIALIZED (SELECT x.row, x.alone, u.id, u.h FROM u LEFT JOIN LATERAL (
         SELECT t.ctid AS row, t.data IS NOT NULL AS alone FROM tidings_deliveries t
         WHERE t.event_id = u.id AND t.handler = u.h FOR UPDATE) x ON true),
     done AS (DELETE FROM tidings_deliveries t
              WHERE t.ctid = ANY(ARRAY(SELECT row FROM mine WHERE row IS NOT NULL))),
     gone AS (",
    gone!(
        "(SELECT id, array_agg(h) AS hs FROM mine WHERE alone IS NOT TRUE GROUP BY id) g",
        "AND d.handler <> ALL(g.hs)"
    ),
    ")
     SELECT set_config('synchronous_commit', 'off', true)"
);

/// Deletes handled deliveries, and their events once nothing else refers to
/// them, in one statement that commits without waiting for the disk (the
/// `set_config` is local to the statement's own transaction, in force at
/// its commit: measured, 1 WAL sync for 50 such statements against 50).
/// Only for a bus name of its own: one writer deletes its deliveries, so
/// the event's other deliveries seen in the statement's snapshot are all
/// there is (those this statement deletes are excluded).
async fn handled_at_once(
    conn: &mut PgConnection,
    ids: &[Uuid],
    handlers: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(HANDLED_AT_ONCE)
        .bind(ids)
        .bind(handlers)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Dead letters (`$1` events, `$2` handlers) deleted: replayed and handled,
/// or discarded. Found by primary key, deleted by row address (see
/// [`SETTLE_DELETE`] for why).
pub(crate) const DEAD_LETTERS_GONE: &str =
    "DELETE FROM tidings_dead_letters WHERE ctid = ANY(ARRAY(
         SELECT l.ctid FROM UNNEST($1::uuid[], $2::text[]) AS u(id, h)
         CROSS JOIN LATERAL (
             SELECT l.ctid FROM tidings_dead_letters l
             WHERE l.event_id = u.id AND l.handler = u.h FOR UPDATE) l))";

/// Events written alone in their delivery's row (`$1` events, `$2`
/// handlers; see `schema`) written to `tidings_events`, for the dead
/// letters their deliveries become: run before the deliveries are deleted.
/// Each delivery is looked up by its primary key (see [`settled!`]).
pub(crate) const EVENTS_KEPT: &str =
    "INSERT INTO tidings_events (id, seq, bus, event_type, key, emitted_at_ns, data)
     SELECT d.event_id, d.seq, d.bus, d.event_type, d.key, d.emitted_at_ns, d.data
     FROM UNNEST($1::uuid[], $2::text[]) AS u(id, h)
     CROSS JOIN LATERAL (SELECT * FROM tidings_deliveries d
                         WHERE d.event_id = u.id AND d.handler = u.h AND d.data IS NOT NULL
                         OFFSET 0) d
     ON CONFLICT (id) DO NOTHING";

/// Dead letters kept (`$1`–`$4`: event, handler, attempts, error; `$5`
/// when), not for a delivery still pending: its delete in the same batch
/// was refused (another instance holds it now). Each delivery is looked up
/// by its primary key (see [`settled!`]).
pub(crate) const DEAD_LETTERS_KEPT: &str =
    "INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
     SELECT u.id, u.h, u.a, u.e, $5
     FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::text[]) AS u(id, h, a, e)
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM tidings_deliveries d
                         WHERE d.event_id = u.id AND d.handler = u.h) p
     WHERE p.n = 0
     ON CONFLICT (event_id, handler) DO UPDATE
       SET attempts = EXCLUDED.attempts, error = EXCLUDED.error,
           failed_at_ns = EXCLUDED.failed_at_ns";

/// Deliveries replayed (`$1`–`$3`: event, handler, attempt; `$4` the
/// instance: on a shared bus, the replaying instance owns them), each event
/// looked up by its primary key (see [`settled!`]).
pub(crate) const REPLAYED: &str =
    "INSERT INTO tidings_deliveries (event_id, handler, attempt, owner, shared, bus, seq, key)
     SELECT u.id, u.h, u.a, $4, $4::uuid IS NOT NULL, e.bus, e.seq, e.key
     FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) AS u(id, h, a)
     CROSS JOIN LATERAL (SELECT e.bus, e.seq, e.key FROM tidings_events e
                         WHERE e.id = u.id OFFSET 0) e
     ON CONFLICT (event_id, handler) DO UPDATE
       SET attempt = EXCLUDED.attempt, owner = EXCLUDED.owner, fence = 0";

/// A shared bus's deliveries replayed (`$1`–`$3`: event, handler,
/// attempt; `$4` the bus): pending again for any instance's claim, each as
/// its key's newest — a `seq` drawn now, after its key's bucket is
/// registered as an append's is (`horizon`) — so that a keyed one runs
/// after what of its key is pending or running anywhere, never beside it.
/// Wakes every instance's relay (at commit).
pub(crate) const REPLAYED_SHARED: &str = concat!(
    "WITH u AS MATERIALIZED (
         SELECT u.id, u.h, u.a, u.n, e.key
         FROM UNNEST($1::uuid[], $2::text[], $3::int4[]) WITH ORDINALITY AS u(id, h, a, n)
         CROSS JOIN LATERAL (SELECT e.key FROM tidings_events e
                             WHERE e.id = u.id OFFSET 0) e),
     reg AS MATERIALIZED (",
    crate::horizon::register!("$4", "ARRAY(SELECT u.key FROM u)"),
    "),
     ins AS (
         INSERT INTO tidings_deliveries (event_id, handler, attempt, owner, fence, queued, shared,
                                         bus, seq, key)
         SELECT u.id, u.h, u.a, NULL, 0, true, true, $4, nextval('tidings_events_seq_seq'), u.key
         FROM u WHERE (SELECT r.n FROM reg r) >= 0
         ORDER BY u.n
         ON CONFLICT (event_id, handler) DO UPDATE
           SET attempt = EXCLUDED.attempt, owner = NULL, fence = 0, seq = EXCLUDED.seq
         RETURNING 1)
     SELECT count(*), pg_notify($5, $4) FROM ins"
);

/// Deletes the events `$1` that no delivery or dead letter refers to any
/// more ([`gone!`]).
pub(crate) const EVENTS_GONE: &str = gone!("UNNEST($1::uuid[]) AS g(id)", "");

/// Writes the net effect of the batch's delivery outcomes; returns those
/// refused as stale (a shared bus's deliveries another instance holds now:
/// the statement answers the settles that matched no row of theirs).
async fn apply_settles(
    tx: &mut Transaction<'_, Postgres>,
    bus: &str,
    owner: Option<Uuid>,
    settles: &[Settle<'_>],
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let mut stale = Vec::new();
    let (ids, handlers, _, _) = select(settles, |n| match &n.dead {
        Dead::Kept { .. } => Some(()),
        _ => None,
    });
    if !ids.is_empty() {
        // Before the deliveries go: an event in its delivery's row alone.
        sqlx::query(EVENTS_KEPT)
            .bind(&ids)
            .bind(&handlers)
            .execute(&mut **tx)
            .await?;
    }
    let (ids, handlers, fences, attempts) = select(settles, |n| match n.delivery {
        Row::Deleted => Some(0),
        _ => None,
    });
    if !ids.is_empty() {
        stale.extend(
            fenced_settle(
                tx,
                owner,
                SETTLE_DELETE,
                (&ids, &handlers, &attempts, &fences),
            )
            .await?,
        );
    }
    let mut touched = ids;
    let (ids, handlers, fences, attempts) = select(settles, |n| match n.delivery {
        Row::Attempt(a) => Some(to_attempt(a)),
        _ => None,
    });
    if !ids.is_empty() {
        stale.extend(
            fenced_settle(
                tx,
                owner,
                SETTLE_ATTEMPT,
                (&ids, &handlers, &attempts, &fences),
            )
            .await?,
        );
    }
    let (ids, handlers, fences, attempts) = select(settles, |n| n.unbegun.map(to_attempt));
    if !ids.is_empty() {
        fenced_settle(tx, owner, UNBEGUN, (&ids, &handlers, &attempts, &fences)).await?;
    }
    let (ids, handlers, _, _) = select(settles, |n| (n.dead == Dead::Deleted).then_some(()));
    if !ids.is_empty() {
        sqlx::query(DEAD_LETTERS_GONE)
            .bind(&ids)
            .bind(&handlers)
            .execute(&mut **tx)
            .await?;
        // A discarded dead letter may have been the event's last row.
        touched.extend(ids);
    }
    let (ids, handlers, _, kept) = select(settles, |n| match &n.dead {
        Dead::Kept { attempts, error } => Some((to_attempt(*attempts), error.as_str())),
        _ => None,
    });
    if !ids.is_empty() {
        let (counts, errors): (Vec<i32>, Vec<&str>) = kept.into_iter().unzip();
        // Not for a delivery still pending: its delete above was refused
        // (another instance holds it now).
        sqlx::query(DEAD_LETTERS_KEPT)
            .bind(&ids)
            .bind(&handlers)
            .bind(&counts)
            .bind(&errors)
            .bind(to_nanos(SystemTime::now()))
            .execute(&mut **tx)
            .await?;
    }
    let (ids, handlers, _, attempts) = select(settles, |n| match n.delivery {
        Row::Inserted(a) => Some(to_attempt(a)),
        _ => None,
    });
    if !ids.is_empty() {
        match owner {
            Some(_) => {
                sqlx::query(REPLAYED_SHARED)
                    .bind(&ids)
                    .bind(&handlers)
                    .bind(&attempts)
                    .bind(bus)
                    .bind(crate::store::CHANNEL)
                    .execute(&mut **tx)
                    .await?;
            }
            None => {
                sqlx::query(REPLAYED)
                    .bind(&ids)
                    .bind(&handlers)
                    .bind(&attempts)
                    .bind(owner)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    if !touched.is_empty() {
        // Events no delivery or dead letter refers to any more.
        sqlx::query(EVENTS_GONE)
            .bind(&touched)
            .execute(&mut **tx)
            .await?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: Uuid, change: Change) -> Op {
        Op::Update(id, "h".into(), Claim::NONE, change)
    }

    fn item(op: Op) -> Item {
        Item {
            op,
            at: Instant::now(),
            patience: STALL,
            from: None,
        }
    }

    /// Sends `op` to `ops` after `after`.
    fn later(ops: &mpsc::UnboundedSender<Item>, after: Duration, op: Op) {
        let ops = ops.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = ops.send(item(op));
        });
    }

    /// A lone handled delivery waits up to the linger for more to write
    /// with it; a batch holding something a caller waits for (a flush) is
    /// written at once, and so is one without a linger. (Without the wait,
    /// the second handled delivery, 1 ms later, makes a batch of its own:
    /// checked.)
    #[tokio::test(start_paused = true)]
    async fn a_batch_of_handled_deliveries_waits_the_linger_for_more() {
        let (ops, mut rx) = mpsc::unbounded_channel();
        let handled = || update(Uuid::now_v7(), Change::Handled);
        let first = |rx: &mut mpsc::UnboundedReceiver<Item>| rx.try_recv().map(|i| vec![i]);
        // With a linger: the one sent 1 ms later joins; the one 3 ms
        // later does not.
        ops.send(item(handled())).unwrap();
        later(&ops, Duration::from_millis(1), handled());
        later(&ops, Duration::from_millis(3), handled());
        tokio::task::yield_now().await;
        let mut batch = first(&mut rx).unwrap();
        let started = Instant::now();
        let (taken, closed) = gather(&mut rx, &mut batch, 100, Some(OUTCOMES_LINGER)).await;
        assert_eq!((taken, closed, batch.len()), (1, false, 2), "gathered");
        assert_eq!(started.elapsed(), OUTCOMES_LINGER, "waited the linger");
        // Without one: alone.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut batch = first(&mut rx).unwrap();
        later(&ops, Duration::from_millis(1), handled());
        assert_eq!(gather(&mut rx, &mut batch, 100, None).await, (0, false));
        // A flush ends the wait at once.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut batch = first(&mut rx).unwrap();
        let (reply, _answer) = oneshot::channel();
        ops.send(item(Op::Flush(reply))).unwrap();
        later(&ops, Duration::from_millis(1), handled());
        let started = Instant::now();
        assert_eq!(
            gather(&mut rx, &mut batch, 100, Some(OUTCOMES_LINGER)).await,
            (1, false)
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait");
    }

    #[test]
    fn only_outcomes_commit_without_waiting_for_the_disk() {
        let id = Uuid::now_v7();
        let (reply, _) = oneshot::channel();
        let handled = update(id, Change::Handled);
        let dead = update(
            id,
            Change::DeadLettered {
                attempts: 3,
                error: "e".into(),
            },
        );
        assert!(commits_without_waiting(&[&handled, &dead]));
        let event = StoredEvent {
            id,
            event_type: "t".into(),
            key: None,
            emitted_at: SystemTime::now(),
            data: "{}".into(),
            deliveries: Vec::new(),
        };
        let append = Op::Append(event, reply);
        assert!(
            !commits_without_waiting(&[&handled, &append]),
            "an emit waits"
        );
        for change in [Change::Replayed, Change::Discarded] {
            let op = update(id, change);
            assert!(
                !commits_without_waiting(&[&handled, &op]),
                "replays and discards wait"
            );
        }
        let (reply, _) = oneshot::channel();
        let begin = Op::Begin(id, "h".into(), Claim::NONE, 1, reply);
        assert!(!commits_without_waiting(&[&begin]), "a begin mark waits");
    }

    #[test]
    fn outcomes_of_one_delivery_fold_in_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let dead = Change::DeadLettered {
            attempts: 3,
            error: "e".into(),
        };
        let ops = [
            update(a, Change::Retrying { attempt: 2 }),
            update(b, Change::Handled),
            update(a, dead.clone()),
            update(a, Change::Replayed),
            update(a, Change::Retrying { attempt: 2 }),
        ];
        let nets = net(&ops.iter().collect::<Vec<_>>());
        assert_eq!(nets.len(), 2);
        assert_eq!(
            nets[0].1 .1,
            Net {
                delivery: Row::Inserted(2),
                dead: Dead::Deleted,
                unbegun: None,
            }
        );
        assert_eq!(
            nets[1].1 .1,
            Net {
                delivery: Row::Deleted,
                dead: Dead::Same,
                unbegun: None,
            }
        );
        let ops = [update(a, Change::Replayed), update(a, Change::Handled)];
        let nets = net(&ops.iter().collect::<Vec<_>>());
        assert_eq!(
            nets[0].1 .1.delivery,
            Row::Deleted,
            "replayed, then handled"
        );
        assert_eq!(nets[0].1 .1.dead, Dead::Deleted);
        let ops = [
            update(a, Change::Handled),
            update(a, Change::Retrying { attempt: 4 }),
        ];
        let nets = net(&ops.iter().collect::<Vec<_>>());
        assert_eq!(
            nets[0].1 .1.delivery,
            Row::Deleted,
            "a late retry does not revive it"
        );
        let ops = [update(a, dead)];
        let nets = net(&ops.iter().collect::<Vec<_>>());
        assert_eq!(
            nets[0].1 .1.dead,
            Dead::Kept {
                attempts: 3,
                error: "e".into()
            }
        );
    }
}

#[cfg(test)]
mod taking {
    use super::*;
    use crate::append::{insert_events, Commit, Deliveries, Taking};
    use crate::plans::{owner_alive, scratch, OWNER};

    /// An append whose batch failed may have committed what it took for
    /// its instance, unheard: the claimer looks for its token at its next
    /// claim, however recently it swept. (Without the token handed over,
    /// the claim finds nothing: the delivery stays owned by a live instance
    /// that does not know it has it, until the calm sweep a minute later.)
    #[tokio::test]
    async fn a_lost_takings_deliveries_are_found_at_the_next_claim() {
        let Some((mut conn, _schema)) = scratch().await else {
            return;
        };
        owner_alive(&mut conn).await;
        let bound = Bound {
            handlers: vec!["h".into()],
            types: vec!["activity_log".into()],
        };
        let claims = Mutex::new(Claims::new());
        let token = {
            let mut c = lock(&claims);
            c.bound = Some(Arc::new(bound.clone()));
            c.begin_taking(1).expect("may take").0
        };
        let event = StoredEvent {
            id: Uuid::now_v7(),
            event_type: "activity_log".into(),
            key: None,
            emitted_at: SystemTime::now(),
            data: "{}".into(),
            deliveries: Vec::new(),
        };
        let taking = Taking {
            owner: OWNER,
            token,
            bound: &bound,
        };
        let taken = insert_events(
            &mut conn,
            "plans",
            &[&event],
            Deliveries::Bound(Some(taking)),
            Commit::Alone,
        )
        .await
        .expect("appended");
        assert_eq!(taken.ids, vec![event.id], "taken");
        // The batch's answer was lost.
        lock(&claims).lost_taking(token);
        let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").expect("set: scratch ran");
        let mut link = Link::new(&url, "plans", Some(conn), None, Arc::new(Health::new()));
        let mut tokens = Tokens::new();
        tokens.swept = Some(Instant::now());
        let found = tokens
            .claim(&mut link, "plans", 16, Some(OWNER), Some(&bound), &claims)
            .await
            .expect("a claim");
        let ids: Vec<Uuid> = found.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![event.id], "found again");
        assert_eq!(
            found.events[0].deliveries[0].claim.token(),
            u64::try_from(token).ok(),
            "under its token"
        );
    }
}
