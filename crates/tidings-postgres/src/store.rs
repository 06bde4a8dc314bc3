//! [`PgStore`]: connecting, the bus-name lock, and the [`Store`] methods the bus calls.

use crate::direct::{to_the_end, Direct, Queue};
use crate::link::Link;
use crate::writer::{lock, Item, Op, Writer};
use futures_util::future::BoxFuture;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings::store::{
    Answers, BoundHandler, Change, Count, Delivery, DeliveryRef, Feed, Health, Recovered, Reply,
    Store, StoreHealth, StoredEvent, Summary,
};
use tidings::EventBus;
use tidings::StoreError;
use tokio::sync::Notify;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// The most operations written in one transaction.
const MAX_BATCH: usize = 4_096;

/// How long `connect` waits for another holder of the bus name to let go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The least time a handler must have been unused to be pruned (a live
/// process says it has its handlers with every lease renewal).
const MIN_UNUSED: Duration = Duration::from_secs(60);

/// How long an emit waits for an unreachable server by default.
const EMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The least time between the starts of two claims of a shared instance
/// woken by notifications. Every instance hears every append's
/// notification and claims, and each claim walks the heads of the name's
/// keys whatever it takes: with several instances, the claims' server work
/// grew with the instances rather than with the events (4 processes moved
/// less than 2: 17-18 k events/s against 23-26 k without keys, 10 k against
/// 15-16 k with 1 000 keys). Spaced by this, 4 processes moved 23-26 k and
/// 13-14 k, one process the same as before (docs/BENCHMARKS.md, section 7,
/// session 21; 3 ms gained half as much, 10 ms no more). It holds only
/// after a claim that took nothing or many ([`is_spaced`]): held after
/// every claim, one event at a time from a front end waited 7 ms for each
/// claim (0.8 ms now), for scale-out rows within their spread either way
/// but 4 processes with 1 000 keys, 6-8 % lower this way (session 23).
const CLAIM_GAP: Duration = Duration::from_millis(6);

/// A claim that took this many deliveries or more is a sign of load: the
/// next waits for the gap (with [`is_spaced`]).
const SPACED_FROM: usize = 8;

/// Whether the claim gap holds after a claim that took `took` deliveries:
/// after one that took nothing (other instances took them: the sign of
/// instances all claiming on one notification) or [`SPACED_FROM`] or more
/// (under load, the gap gathers more into each claim); not after a few,
/// one event at a time from a front end, whose claims then come at once.
fn is_spaced(took: usize) -> bool {
    took == 0 || took >= SPACED_FROM
}

/// A bus's events in PostgreSQL. See the [crate docs](crate) for the guarantees.
///
/// Dropping it (with the bus that holds it) lets its writer finish what it
/// was handed, then releases the bus name.
pub struct PgStore {
    bus: Arc<str>,
    /// Opened with `connect_shared`: deliveries are shared by its instances.
    shared: bool,
    ops: mpsc::UnboundedSender<Item>,
    /// The writer of outcomes (settles, begin marks, flushes), on a
    /// connection of its own, so that an emit never waits behind them.
    outcomes: mpsc::UnboundedSender<Item>,
    recovered: Mutex<Option<Recovered>>,
    /// Where the writer answers refused settles (given by `recover`).
    answers: Arc<std::sync::OnceLock<Answers>>,
    /// Notified when an outbox transaction for this bus commits.
    changed: Arc<Notify>,
    health: Arc<Health>,
    /// How long an emit waits for an unreachable server.
    emit_timeout: Duration,
    /// A shared store's handler names, renewed with its lease.
    bound_names: Arc<Mutex<Vec<String>>>,
    /// Whether the bus's handlers are registered (always, on a bus name of
    /// its own).
    bound: watch::Receiver<bool>,
    /// Dropped with the store: stops the listener task.
    _stop_listening: oneshot::Sender<()>,
    /// Dropped with the store: stops a shared instance's lease renewal.
    _stop_renewing: Option<oneshot::Sender<()>>,
    /// What a shared instance holds, and the events its appends took.
    claims: Arc<Mutex<crate::writer::Claims>>,
    /// A lone emit's write on its own task, and the writer's queue.
    pub(crate) direct: Arc<Direct>,
}

impl PgStore {
    /// Connects, takes the bus name (one live store per name), creates the
    /// tables if missing, reads what the name's last bus left pending, and
    /// starts the writer task on the current Tokio runtime.
    ///
    /// The bus name follows the rules of event type names (1 to 128
    /// characters of `A-Za-z0-9_.:-`).
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name;
    /// [`StoreError::Locked`] if another store holds the name for more than
    /// two seconds; [`StoreError::Backend`] if the server is unreachable or
    /// refuses.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = tidings_postgres::PgStore::connect("postgres://127.0.0.1/x", "no spaces").await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn connect(url: &str, bus: &str) -> Result<Self, StoreError> {
        Self::open(url, bus, None).await
    }

    /// Connects as one of several processes sharing the bus name `bus` (a
    /// service with replicas, or a front end that only emits): **each
    /// delivery goes to one of them**, whichever claims it first (or the
    /// emitting process itself, below).
    ///
    /// - An event gets a delivery for every handler of its type bound to the
    ///   name by any of its processes (each process registers its handlers
    ///   at `build()`; a handler gets the events written after it was first
    ///   registered). An emit writes the event and returns; it is not queued
    ///   in the emitting process, which needs no handler for it.
    /// - Every process's relay claims deliveries to its own handlers, woken
    ///   by a notification when events are written (and every second). A
    ///   process takes its own unkeyed emits as it writes them, when their
    ///   type has one handler on the name and it is this process's, while it
    ///   holds at most 256 deliveries not yet done: they go to its relay
    ///   without a claim; beyond, they are left to whichever claims them.
    /// - A key's deliveries to a handler are claimed one at a time, oldest
    ///   first: the next only once the last is done (handled or
    ///   dead-lettered), wherever it ran. So **per-key order holds across
    ///   processes**, at one claim per delivery of a key.
    /// - Each store is an instance that says it is alive every third of
    ///   `lease`; what it claimed is its own until it stops (its store
    ///   dropped: the others claim it at once) or stays silent for `lease`
    ///   (its process died: the others claim it then).
    /// - Nothing is recovered at start but the dead letters: the relay claims.
    ///
    /// Do not mix [`connect`](Self::connect) and `connect_shared` on one name.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), less [`StoreError::Locked`];
    /// [`StoreError::InvalidConfig`] for a lease under a second.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let lease = std::time::Duration::from_millis(10);
    /// let err = tidings_postgres::PgStore::connect_shared("postgres://127.0.0.1/x", "orders", lease).await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn connect_shared(url: &str, bus: &str, lease: Duration) -> Result<Self, StoreError> {
        if lease < Duration::from_secs(1) {
            return Err(StoreError::InvalidConfig(
                "a shared store's lease is at least a second".into(),
            ));
        }
        Self::open(url, bus, Some(lease)).await
    }

    async fn open(url: &str, bus: &str, lease: Option<Duration>) -> Result<Self, StoreError> {
        check_name(bus)?;
        let health = Arc::new(Health::new());
        // The writer's connection holds the bus name (a session advisory
        // lock): exclusively for `connect`; a shared instance's lease
        // connection holds it shared. The two modes refuse each other, and
        // a writer whose connection broke writes nothing until it has
        // connected and taken the name again.
        let mut conn = crate::link::dial(url).await.map_err(error)?;
        if lease.is_none() {
            hold(&mut conn, bus).await?;
        }
        // A schema change can deadlock with buses writing meanwhile; PostgreSQL
        // then aborts one side, and trying again is what it asks for.
        let mut tries = 0;
        while let Err(e) = crate::schema::migrate(&mut conn).await {
            tries += 1;
            if tries == 3 || !is_deadlock(&e) {
                return Err(e);
            }
        }
        let owner = lease.map(|_| Uuid::now_v7());
        let bound_names: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut renewing = None;
        let mut stop_renewing = None;
        if let (Some(me), Some(lease)) = (owner, lease) {
            let mut keep = crate::link::dial(url).await.map_err(error)?;
            if !share(&mut keep, bus).await.map_err(error)? {
                return Err(StoreError::Locked(format!(
                    "bus {bus} is held by a store opened with connect (connect and connect_shared cannot share a name)"
                )));
            }
            crate::claims::alive(&mut keep, bus, me, lease, &[])
                .await
                .map_err(error)?;
            let link = Link::new(url, bus, Some(keep), Some(take_shared), health.clone());
            let (stop, stopped) = oneshot::channel();
            stop_renewing = Some(stop);
            renewing = Some(tokio::spawn(keep_alive(
                link,
                bus.into(),
                me,
                lease,
                bound_names.clone(),
                stopped,
            )));
        }
        let recovered = crate::recover::recover(&mut conn, bus, owner.is_some()).await?;
        let changed = Arc::new(Notify::new());
        let (stop_listening, stopped) = oneshot::channel();
        let mut listener = PgListener::connect(url).await.map_err(error)?;
        listener.listen(CHANNEL).await.map_err(error)?;
        tokio::spawn(listen(listener, bus.into(), changed.clone(), stopped));
        let claim_link = match lease {
            Some(_) => {
                let mut claim_conn = crate::link::dial(url).await.map_err(error)?;
                crate::claims::set_up_claimer(&mut claim_conn, bus)
                    .await
                    .map_err(error)?;
                Some(Link::new(
                    url,
                    bus,
                    Some(claim_conn),
                    Some(crate::claims::set_up_claimer),
                    health.clone(),
                ))
            }
            None => None,
        };
        let setup: Option<crate::link::Setup> = match lease {
            None => Some(take_exclusive),
            Some(_) => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A bus name of its own has no registrations to wait for.
        let (bound_tx, bound) = watch::channel(lease.is_none());
        let answers = Arc::new(std::sync::OnceLock::new());
        // Outcomes are written beside the emits, on a connection of their
        // own. (They need not hold a bus name's lock: an outcome only ends a
        // delivery this store's handler made; written after the name passed
        // to another store, it makes that store's delivery a duplicate, never
        // a loss. A shared instance's are fenced by owner and token.)
        let claims = Arc::new(Mutex::new(crate::writer::Claims::new()));
        let (outcomes, outcome_writer) = {
            let conn = crate::link::dial(url).await.map_err(error)?;
            let (otx, orx) = mpsc::unbounded_channel();
            let writer = Writer {
                link: Arc::new(tokio::sync::Mutex::new(Link::new(
                    url,
                    bus,
                    Some(conn),
                    None,
                    health.clone(),
                ))),
                queue: None,
                received: 0,
                claim_link: None,
                bus: bus.to_owned(),
                owner,
                max_batch: MAX_BATCH,
                linger: lease.is_none().then_some(crate::writer::OUTCOMES_LINGER),
                rejoin: None,
                health: health.clone(),
                changed: changed.clone(),
                renewing: None,
                outcomes: None,
                claims: claims.clone(),
                tokens: crate::writer::Tokens::new(),
                unflushed: Default::default(),
                bound: watch::channel(true).0,
                answers: answers.clone(),
            };
            (otx, tokio::spawn(writer.run(orx)))
        };
        let link = Link::new(url, bus, Some(conn), setup, health.clone());
        let direct = Arc::new(Direct {
            link: Arc::new(tokio::sync::Mutex::new(link)),
            queue: Arc::new(Queue::new()),
            bus: bus.to_owned(),
            owner,
            claims: claims.clone(),
            unflushed: Arc::default(),
            #[cfg(test)]
            written: Default::default(),
        });
        let writer = Writer {
            link: direct.link.clone(),
            queue: Some(direct.queue.clone()),
            received: 0,
            claim_link,
            bus: bus.to_owned(),
            owner,
            max_batch: MAX_BATCH,
            linger: None,
            rejoin: Some(crate::rejoin::Rejoin::new()),
            health: health.clone(),
            changed: changed.clone(),
            renewing,
            outcomes: Some(outcome_writer),
            claims: claims.clone(),
            tokens: crate::writer::Tokens::new(),
            unflushed: direct.unflushed.clone(),
            bound: bound_tx,
            answers: answers.clone(),
        };
        // The name is released (the writer's connection closed) only once
        // the writer has written everything: the next store of this name
        // then recovers an up-to-date state.
        tokio::spawn(writer.run(rx));
        Ok(Self {
            bus: bus.into(),
            shared: lease.is_some(),
            ops: tx,
            outcomes,
            recovered: Mutex::new(Some(recovered)),
            answers,
            changed,
            health,
            emit_timeout: EMIT_TIMEOUT,
            bound_names,
            bound,
            _stop_listening: stop_listening,
            _stop_renewing: stop_renewing,
            claims,
            direct,
        })
    }

    /// How long an emit (and a begin mark, a flush, a claim) waits for the
    /// server when it is unreachable, before it fails with
    /// [`StoreError::Unavailable`] (the emit with
    /// [`tidings::EmitError::Unavailable`]). Default: 5 seconds. Meanwhile
    /// the store connects again with backoff; outcomes of deliveries are
    /// kept and written once it is back.
    ///
    /// ```no_run
    /// # async fn run(url: &str) -> anyhow::Result<()> {
    /// let store = tidings_postgres::PgStore::connect(url, "orders").await?
    ///     .emit_timeout(std::time::Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn emit_timeout(mut self, limit: Duration) -> Self {
        self.emit_timeout = limit;
        self
    }

    /// Deletes everything the bus name `bus` holds: events, pending
    /// deliveries, dead letters, instances, registered handlers. For decommissioning a bus and for
    /// tests; run it when no store of that name is live (what a live store
    /// writes afterwards stays).
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name;
    /// [`StoreError::Backend`] if the server is unreachable or refuses.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = tidings_postgres::PgStore::purge("postgres://127.0.0.1/x", "bad name").await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn purge(url: &str, bus: &str) -> Result<(), StoreError> {
        check_name(bus)?;
        let mut conn = PgConnection::connect(url).await.map_err(error)?;
        let mut tx = conn.begin().await.map_err(error)?;
        // Every delivery carries its bus: one pass over the deliveries at
        // worst, where the join with the events was planned as a scan of
        // the events per delivery when the statistics said they were few
        // (18 s seen, in the session 13 profile).
        for sql in [
            "DELETE FROM tidings_deliveries WHERE bus = $1",
            crate::admin::PURGE_DEAD_LETTERS,
            "DELETE FROM tidings_events WHERE bus = $1",
            "DELETE FROM tidings_instances WHERE bus = $1",
            "DELETE FROM tidings_handlers WHERE bus = $1",
        ] {
            sqlx::query(sql)
                .bind(bus)
                .execute(&mut *tx)
                .await
                .map_err(error)?;
        }
        tx.commit().await.map_err(error)?;
        let _ = conn.close().await;
        Ok(())
    }

    /// What the bus name `bus` holds: pending deliveries and dead letters by
    /// event type and handler, with the oldest emit time (never the data).
    /// Safe while stores of that name run (a snapshot).
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name;
    /// [`StoreError::Backend`] if the server is unreachable or the tables missing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = tidings_postgres::PgStore::summarize("postgres://127.0.0.1/x", "bad name").await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn summarize(url: &str, bus: &str) -> Result<Summary, StoreError> {
        check_name(bus)?;
        let mut conn = PgConnection::connect(url).await.map_err(error)?;
        let mut summary = Summary::default();
        for (sql, out) in [
            (crate::admin::SUMMARY_PENDING, &mut summary.pending),
            (crate::admin::SUMMARY_DEAD, &mut summary.dead_letters),
        ] {
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(sql)
                .bind(bus)
                .fetch_all(&mut conn)
                .await
                .map_err(error)?;
            out.extend(
                rows.into_iter()
                    .map(|(event_type, handler, count, oldest)| Count {
                        event_type,
                        handler,
                        count: u64::try_from(count).unwrap_or(0),
                        oldest: std::time::SystemTime::UNIX_EPOCH
                            + Duration::from_nanos(u64::try_from(oldest).unwrap_or(0)),
                    }),
            );
        }
        let _ = conn.close().await;
        Ok(summary)
    }

    /// The handlers registered on the shared bus name `bus`
    /// ([`connect_shared`](Self::connect_shared)), with when a process last
    /// had each (at its start and with each lease renewal) and how many
    /// deliveries wait for it. Safe while the bus runs.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name;
    /// [`StoreError::Backend`] if the server is unreachable or the tables missing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = tidings_postgres::PgStore::registrations("postgres://127.0.0.1/x", "bad name").await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn registrations(
        url: &str,
        bus: &str,
    ) -> Result<Vec<tidings::store::Registration>, StoreError> {
        check_name(bus)?;
        let mut conn = PgConnection::connect(url).await.map_err(error)?;
        let out = crate::admin::registrations(&mut conn, bus)
            .await
            .map_err(error);
        let _ = conn.close().await;
        out
    }

    /// Removes from the shared bus name `bus` the handlers no process has
    /// had for `unused_for` (at least a minute): a handler renamed or
    /// removed from the code, which would otherwise get every event of its
    /// type for ever. Its waiting deliveries become dead letters first (with
    /// the error `pruned: ...`), in the same transaction, so nothing
    /// disappears silently. Returns what was removed.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid name or a shorter
    /// `unused_for`; [`StoreError::Backend`] if the server is unreachable.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let soon = std::time::Duration::from_secs(1);
    /// let err = tidings_postgres::PgStore::prune("postgres://127.0.0.1/x", "orders", soon).await;
    /// assert!(matches!(err, Err(tidings::StoreError::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn prune(
        url: &str,
        bus: &str,
        unused_for: Duration,
    ) -> Result<Vec<tidings::store::Pruned>, StoreError> {
        check_name(bus)?;
        if unused_for < MIN_UNUSED {
            return Err(StoreError::InvalidConfig(
                "a handler is pruned after a minute unused at least".into(),
            ));
        }
        let mut conn = PgConnection::connect(url).await.map_err(error)?;
        let out = crate::admin::prune(&mut conn, bus, unused_for)
            .await
            .map_err(error);
        let _ = conn.close().await;
        out
    }

    /// A handle for writing this bus's events in the application's own
    /// transactions (the transactional outbox). Take it before giving the
    /// store to the builder.
    ///
    /// ```no_run
    /// # async fn run(url: &str) -> anyhow::Result<()> {
    /// let store = tidings_postgres::PgStore::connect(url, "orders").await?;
    /// let outbox = store.outbox();
    /// let bus = tidings::EventBus::builder().store(store).build()?;
    /// # Ok(()) }
    /// ```
    pub fn outbox(&self) -> Outbox {
        Outbox {
            bus: self.bus.clone(),
            shared: self.shared,
            bound: self.bound.clone(),
            patience: self.emit_timeout,
        }
    }

    /// Hands the writer an operation that answers; resolves with the answer.
    fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Op,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        request(&self.ops, Some(&self.direct.queue), self.emit_timeout, make)
    }
}

impl PgStore {
    /// Hands the writer an operation; `Err` if the writer is gone.
    fn send(&self, op: Op) -> Result<(), StoreError> {
        send(&self.ops, Some(&self.direct.queue), self.emit_timeout, op)
    }
}

/// Hands a writer an operation, to wait at most `patience` for the server;
/// `Err` if the writer is gone. `queue`: the main writer's (`None`: the
/// outcomes writer).
fn send(
    ops: &mpsc::UnboundedSender<Item>,
    queue: Option<&Queue>,
    patience: Duration,
    op: Op,
) -> Result<(), StoreError> {
    send_at(ops, queue, tokio::time::Instant::now(), patience, op)
}

/// As [`send`], for an operation that began at `at` (its patience counts
/// from then).
fn send_at(
    ops: &mpsc::UnboundedSender<Item>,
    queue: Option<&Queue>,
    at: tokio::time::Instant,
    patience: Duration,
    op: Op,
) -> Result<(), StoreError> {
    if let Some(queue) = queue {
        queue.handed();
    }
    // Only an emit's task is looked at (the writer's rejoin).
    let from = matches!(op, Op::Append(..))
        .then(tokio::task::try_id)
        .flatten();
    ops.send(Item {
        op,
        at,
        patience,
        from,
    })
    .map_err(|_| StoreError::Closed)
}

/// Hands a writer an operation that answers; resolves with the answer.
fn request<T: Send + 'static>(
    ops: &mpsc::UnboundedSender<Item>,
    queue: Option<&Queue>,
    patience: Duration,
    make: impl FnOnce(Reply<T>) -> Op,
) -> BoxFuture<'static, Result<T, StoreError>> {
    request_at(ops, queue, tokio::time::Instant::now(), patience, make)
}

/// As [`request`], for an operation that began at `at`.
fn request_at<T: Send + 'static>(
    ops: &mpsc::UnboundedSender<Item>,
    queue: Option<&Queue>,
    at: tokio::time::Instant,
    patience: Duration,
    make: impl FnOnce(Reply<T>) -> Op,
) -> BoxFuture<'static, Result<T, StoreError>> {
    tidings::store::request(|op| send_at(ops, queue, at, patience, op).is_ok(), make)
}

/// The store's [`Feed`]: claims from the writer's claim connection, woken by
/// the bus name's notifications. It does not keep the writer alive: once
/// the store is dropped, a claim fails `Closed`.
///
/// A shared instance's appends take its own unkeyed emits as they write
/// them (`append::Taking`): the feed hands those out first, without a
/// claim, and claims from the server only when it may find something there
/// (a notification, a keyed delivery ended, the connection back: whatever
/// wakes `changed`), after a full claim, or once [`LOOK`] has passed since
/// the last (deliveries of instances that died, claims lost unheard).
struct PgFeed {
    ops: mpsc::WeakUnboundedSender<Item>,
    /// The outcomes writer's: a count of what is pending waits for the
    /// outcomes handed over before it (a replay's, on a shared bus).
    outcomes: mpsc::WeakUnboundedSender<Item>,
    /// The main writer's.
    queue: Arc<Queue>,
    patience: Duration,
    changed: Arc<Notify>,
    /// A shared instance's (`None`: a bus name of its own's outbox, which
    /// claims at every call).
    shared: Option<SharedFeed>,
}

/// What a shared instance's feed keeps: the events its appends took, when
/// it last claimed from the server, and whether the next claim is due.
#[derive(Clone)]
struct SharedFeed {
    claims: Arc<Mutex<crate::writer::Claims>>,
    /// Woken when the appends took events (`Claims::handed_ready`).
    ready: Arc<Notify>,
    /// When the last claim from the server started.
    last_claim: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// Whether [`CLAIM_GAP`] holds after the last claim ([`is_spaced`]).
    spaced: Arc<AtomicBool>,
    /// Something woke `changed`: a claim is due, no sooner than the gap
    /// after the last if it holds.
    due: Arc<AtomicBool>,
    /// The last claim was full: the next is due at once.
    more: Arc<AtomicBool>,
    /// The wake that made the claim due was waiting when the relay came
    /// to wait: sent while the last claim was on its way or its events
    /// being queued, most likely for what that claim took (an append's
    /// notification after the claim that a key's end made took its event).
    /// A dry claim woken so leaves the gap as the claim before left it.
    stale: Arc<AtomicBool>,
}

impl SharedFeed {
    fn of(claims: &Arc<Mutex<crate::writer::Claims>>) -> Self {
        Self {
            ready: lock(claims).handed_ready(),
            claims: claims.clone(),
            last_claim: Arc::default(),
            spaced: Arc::default(),
            due: Arc::default(),
            more: Arc::default(),
            stale: Arc::default(),
        }
    }

    /// When the last claim started.
    fn last_claim(&self) -> Option<tokio::time::Instant> {
        *self
            .last_claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Until [`CLAIM_GAP`] has passed since the last claim, if it holds.
    async fn gap_over(&self) {
        if let Some(last) = self
            .last_claim()
            .filter(|_| self.spaced.load(Ordering::Acquire))
        {
            tokio::time::sleep_until(last + CLAIM_GAP).await;
        }
    }
}

/// The longest a shared instance whose appends hand it events goes without
/// a claim from the server (the relay's own tick).
const LOOK: Duration = Duration::from_secs(1);

impl PgFeed {
    fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Op,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        match self.ops.upgrade() {
            Some(ops) => request(&ops, Some(&self.queue), self.patience, make),
            None => Box::pin(async { Err(StoreError::Closed) }),
        }
    }
}

impl Feed for PgFeed {
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        let Some(shared) = self.shared.clone() else {
            return self.request(|done| Op::Claim(limit, done));
        };
        let handed = lock(&shared.claims).take_handed(limit);
        if handed.len() == limit {
            return Box::pin(std::future::ready(Ok(handed)));
        }
        let mut last_claim = shared
            .last_claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = last_claim.map(|at| at.elapsed());
        // (As `changed` waits: the gap holds only after a spaced claim.)
        let gap_holds =
            shared.spaced.load(Ordering::Acquire) && since.is_some_and(|s| s < CLAIM_GAP);
        let due = shared.more.load(Ordering::Acquire)
            || (shared.due.load(Ordering::Acquire) && !gap_holds)
            || since.is_none_or(|s| s >= LOOK);
        if !due {
            return Box::pin(std::future::ready(Ok(handed)));
        }
        shared.more.store(false, Ordering::Release);
        shared.due.store(false, Ordering::Release);
        let key_ended = lock(&shared.claims).take_key_ended();
        let stale = shared.stale.swap(false, Ordering::AcqRel) || key_ended;
        *last_claim = Some(tokio::time::Instant::now());
        drop(last_claim);
        let rest = limit - handed.len();
        let claim = self.request(|done| Op::Claim(rest, done));
        Box::pin(async move {
            match claim.await {
                Ok(mut claimed) => {
                    // (A dry claim is the sign of other instances taking
                    // what a notification announced only when the
                    // notification came while the relay waited for one:
                    // else it was most likely for what the claim before
                    // took. Made spaced, one keyed event at a time waited
                    // 7.5 ms each for its handler: docs/BENCHMARKS.md
                    // section 7, session 26.)
                    if !(stale && claimed.is_empty()) {
                        shared
                            .spaced
                            .store(is_spaced(claimed.len()), Ordering::Release);
                    }
                    if claimed.len() == rest || lock(&shared.claims).take_again() {
                        // A full claim: more may wait. (Or one that left
                        // keys' heads for the next: see `claims::Walk`.)
                        shared.more.store(true, Ordering::Release);
                    }
                    claimed.extend(handed);
                    Ok(claimed)
                }
                Err(e) => {
                    // Held by this instance: never dropped.
                    lock(&shared.claims).hand_back(handed);
                    shared.ready.notify_one();
                    Err(e)
                }
            }
        })
    }

    /// Woken by what the appends took, at once; by a notification, on a
    /// shared name no sooner than [`CLAIM_GAP`] after the last claim started
    /// if that claim took nothing or many ([`is_spaced`]).
    fn changed(&self) -> BoxFuture<'static, ()> {
        let changed = self.changed.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(shared) = shared else {
                return changed.notified().await;
            };
            if shared.more.load(Ordering::Acquire) {
                return;
            }
            // (Woken, the claim is due until made: what the appends took
            // meanwhile is handed out without it, and the gap still holds.)
            if !shared.due.load(Ordering::Acquire) {
                let mut woken = std::pin::pin!(changed.notified());
                if futures_util::poll!(woken.as_mut()).is_ready() {
                    shared.stale.store(true, Ordering::Release);
                    shared.due.store(true, Ordering::Release);
                } else {
                    tokio::select! {
                        () = shared.ready.notified() => return,
                        () = woken => shared.due.store(true, Ordering::Release),
                    }
                }
            }
            tokio::select! {
                () = shared.ready.notified() => {}
                () = shared.gap_over() => {}
            }
        })
    }

    /// Counted once the outcomes handed over before are written: a
    /// replay on a shared bus is pending only in the table (the bus
    /// queues nothing for it), and `wait_idle` right after it waits for
    /// it.
    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        let written = match self.outcomes.upgrade() {
            Some(outcomes) => request(&outcomes, None, self.patience, Op::Flush),
            None => Box::pin(async { Err(StoreError::Closed) }),
        };
        let (ops, queue, patience) = (self.ops.clone(), self.queue.clone(), self.patience);
        Box::pin(async move {
            written.await?;
            match ops.upgrade() {
                Some(ops) => request(&ops, Some(&queue), patience, Op::Outstanding).await,
                None => Err(StoreError::Closed),
            }
        })
    }
}

/// A bus name follows the rules of event type names.
fn check_name(bus: &str) -> Result<(), StoreError> {
    if tidings::is_valid_event_type(bus) {
        return Ok(());
    }
    Err(StoreError::InvalidConfig(format!(
        "bus name {:?}: expected 1 to 128 characters of A-Za-z0-9_.:-",
        bus.chars().take(64).collect::<String>()
    )))
}

/// Renews a shared store's instance every third of its lease, on a
/// connection of its own (never behind the writer's batches), until `stop`
/// fires; after a failure, again every 200 ms until it is back.
async fn keep_alive(
    mut link: Link,
    bus: Arc<str>,
    me: Uuid,
    lease: Duration,
    handlers: Arc<Mutex<Vec<String>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut next = lease / 3;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(next) => {}
        }
        let renewed = tokio::select! {
            _ = &mut stop => break,
            r = async {
                let names = handlers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                if let Some(at) = link.retry_at() {
                    tokio::time::sleep_until(at).await;
                }
                link.run(lease / 3, async |conn| crate::claims::alive(conn, &bus, me, lease, &names).await).await
            } => r,
        };
        next = match renewed {
            Ok(()) => lease / 3,
            Err(e) => {
                tracing::warn!("the store could not renew its instance's lease: {e}");
                Duration::from_millis(200)
            }
        };
    }
    link.close().await;
}

/// Forwards notifications for `bus` to `changed` until `stop` fires.
/// `PgListener` connects again by itself on the next `recv`; what was
/// committed meanwhile is claimed once it is back (and by the relay's
/// look every second).
async fn listen(
    mut listener: PgListener,
    bus: Arc<str>,
    changed: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut failing = Duration::ZERO;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            n = listener.recv() => match n {
                Ok(n) => {
                    if !failing.is_zero() {
                        failing = Duration::ZERO;
                        changed.notify_one();
                    }
                    if n.payload() == &*bus {
                        changed.notify_one();
                    }
                }
                Err(e) => {
                    if failing.is_zero() {
                        tracing::warn!("the store's notification listener lost its server ({e}); connecting again");
                    }
                    failing = (failing * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                    tokio::time::sleep(failing).await;
                }
            },
        }
    }
}

/// The advisory lock of a bus name, as SQL.
const NAME_LOCK: &str = "hashtextextended('tidings-bus:' || $1, 0)";

/// Takes the session advisory lock of `bus` exclusively, waiting up to
/// [`LOCK_WAIT`].
async fn hold(lock: &mut PgConnection, bus: &str) -> Result<(), StoreError> {
    let until = Instant::now() + LOCK_WAIT;
    loop {
        if try_exclusive(lock, bus).await.map_err(error)? {
            return Ok(());
        }
        if Instant::now() >= until {
            // Shared instances hold it shared: say so.
            let by = if share(lock, bus).await.map_err(error)? {
                let _ = sqlx::query(&format!("SELECT pg_advisory_unlock_shared({NAME_LOCK})"))
                    .bind(bus)
                    .execute(&mut *lock)
                    .await;
                "by instances opened with connect_shared (connect and connect_shared cannot share a name)"
            } else {
                "by another store"
            };
            return Err(StoreError::Locked(format!("bus {bus} is held {by}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn try_exclusive(conn: &mut PgConnection, bus: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({NAME_LOCK})"))
        .bind(bus)
        .fetch_one(&mut *conn)
        .await
}

/// Takes the bus name's lock shared (a shared instance); `false` if a
/// `connect` store holds it.
async fn share(conn: &mut PgConnection, bus: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock_shared({NAME_LOCK})"))
        .bind(bus)
        .fetch_one(&mut *conn)
        .await
}

/// The writer's set-up after it connects again: take the name back. While
/// another store holds it, this one writes nothing (its emits wait, then
/// fail `Unavailable`).
fn take_exclusive<'c>(
    conn: &'c mut PgConnection,
    bus: &'c str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        if try_exclusive(conn, bus).await? {
            tracing::info!(bus, "the store holds its bus name again");
            Ok(())
        } else {
            tracing::error!(
                bus,
                "another store holds this bus name now: this store writes nothing until it is free"
            );
            Err(sqlx::Error::Protocol(
                "the bus name is held by another store".into(),
            ))
        }
    })
}

/// A shared instance's lease connection after it connects again.
fn take_shared<'c>(
    conn: &'c mut PgConnection,
    bus: &'c str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        if share(conn, bus).await? {
            Ok(())
        } else {
            tracing::error!(bus, "a store opened with connect holds this bus name");
            Err(sqlx::Error::Protocol(
                "the bus name is held by a connect store".into(),
            ))
        }
    })
}

impl Store for PgStore {
    /// Written on the emitter's own task when the writer is idle
    /// (`direct.rs`; decided when the future is first polled, so that one
    /// not yet polled holds nothing), else handed to the writer.
    fn append(&self, event: StoredEvent) -> BoxFuture<'static, Result<(), StoreError>> {
        if !self.direct.idle() {
            return self.request(|done| Op::Append(event, done));
        }
        let (direct, ops, patience) = (self.direct.clone(), self.ops.clone(), self.emit_timeout);
        let at = tokio::time::Instant::now();
        to_the_end(async move {
            let event = match direct.take() {
                Some(link) => match direct.write(link, event, patience).await {
                    Ok(()) => return Ok(()),
                    Err(event) => event,
                },
                None => event,
            };
            request_at(&ops, Some(&direct.queue), at, patience, |done| {
                Op::Append(event, done)
            })
            .await
        })
    }

    fn settle(&self, delivery: DeliveryRef<'_>, change: Change) {
        let DeliveryRef {
            event_id,
            handler,
            claim,
            ..
        } = delivery;
        let op = Op::Update(event_id, handler.into(), claim, change);
        if send(&self.outcomes, None, self.emit_timeout, op).is_err() {
            tracing::warn!(handler, %event_id, "the store is closed: this delivery's outcome is not recorded and it will be made again");
        }
    }

    /// A shared store registers the handlers here (renewed with its
    /// lease), before anything is appended.
    fn recover(
        &self,
        handlers: &[BoundHandler],
        answers: Answers,
    ) -> Result<Recovered, StoreError> {
        let _ = self.answers.set(answers);
        if self.shared {
            let bound = crate::claims::Bound {
                handlers: handlers.iter().map(|h| h.name.clone()).collect(),
                types: handlers.iter().map(|h| h.event_type.clone()).collect(),
            };
            *self
                .bound_names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = bound.handlers.clone();
            self.send(Op::Bind(bound))?;
        }
        Ok(self
            .recovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default())
    }

    /// A shared bus's replays are pending for the claims, as their key's
    /// newest (`writer::REPLAYED_SHARED`).
    fn claims_replays(&self) -> bool {
        self.shared
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        request(&self.outcomes, None, self.emit_timeout, Op::Flush)
    }

    fn begin(
        &self,
        delivery: DeliveryRef<'_>,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        request(&self.outcomes, None, self.emit_timeout, |done| {
            Op::Begin(
                delivery.event_id,
                delivery.handler.into(),
                delivery.claim,
                attempt,
                done,
            )
        })
    }

    /// Shared (`connect_shared`), or relayed: the outbox writes events too.
    fn delivery(&self) -> Delivery {
        let feed = Arc::new(PgFeed {
            ops: self.ops.downgrade(),
            outcomes: self.outcomes.downgrade(),
            queue: self.direct.queue.clone(),
            patience: self.emit_timeout,
            changed: self.changed.clone(),
            shared: self.shared.then(|| SharedFeed::of(&self.claims)),
        });
        if self.shared {
            Delivery::Shared(feed)
        } else {
            Delivery::Relayed(feed)
        }
    }

    fn health(&self) -> Option<StoreHealth> {
        Some(self.health.snapshot())
    }
}

/// The notification channel; the payload is the bus name.
pub(crate) const CHANNEL: &str = "tidings";

/// Writes a bus's events in the application's own transactions: the
/// transactional outbox. The event exists if and only if the transaction
/// commits; the bus then delivers it (a notification at commit wakes its
/// relay at once; it also looks every second).
///
/// Made by [`PgStore::outbox`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    bus: Arc<str>,
    shared: bool,
    /// Whether the bus's handlers are registered yet.
    bound: watch::Receiver<bool>,
    /// How long a write waits for that.
    patience: Duration,
}

/// Why [`Outbox::emit`] failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The event was refused as `emit` would refuse it.
    #[error(transparent)]
    Emit(#[from] tidings::EmitError),
    /// The database refused the write (the transaction should be rolled back).
    #[error("the outbox write failed: {0}")]
    Database(#[from] sqlx::Error),
    /// On a shared bus name: the bus's store had not registered its
    /// handlers within its emit timeout (the server is unreachable, or
    /// the bus was never built), or is gone. An event written before its
    /// handlers are registered would get no delivery for them, so nothing
    /// was written.
    #[error(
        "the bus has not registered its handlers (its store is starting, unreachable or gone)"
    )]
    NotRegistered,
}

impl Outbox {
    /// Writes one event on `conn` (a transaction of the application's, as a
    /// rule), validated as [`tidings::EventBus::emit`] validates it, for
    /// every handler of its type on `bus` (on a shared bus name, every
    /// handler of its type registered by any of its processes: `bus` may
    /// have none). Returns its id, or `None` if the bus would drop it
    /// (disabled) or, on a bus name of its own, has no handler for it.
    ///
    /// # Errors
    /// [`OutboxError::Emit`] for an invalid type, key or payload;
    /// [`OutboxError::Database`] if the write fails;
    /// [`OutboxError::NotRegistered`] if, on a shared bus name, the bus's
    /// store has not registered its handlers within its emit timeout
    /// (right after `build()`, the write waits for it).
    ///
    /// ```no_run
    /// # async fn run(pool: sqlx::PgPool, outbox: tidings_postgres::Outbox, bus: tidings::EventBus) -> anyhow::Result<()> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE products SET stock = stock - 1 WHERE sku = 'KB-01'").execute(&mut *tx).await?;
    /// outbox.emit(&mut tx, &bus, "order_created", serde_json::json!({"sku": "KB-01"}), None).await?;
    /// tx.commit().await?; // the stock and the event, both or neither
    /// # Ok(()) }
    /// ```
    pub async fn emit(
        &self,
        conn: &mut PgConnection,
        bus: &EventBus,
        event_type: &str,
        data: serde_json::Value,
        key: Option<&str>,
    ) -> Result<Option<Uuid>, OutboxError> {
        let Some(event) = bus.outbox_event(event_type, data, key)? else {
            return Ok(None);
        };
        if self.shared {
            let mut bound = self.bound.clone();
            let registered = tokio::time::timeout(self.patience, bound.wait_for(|b| *b))
                .await
                .is_ok_and(|r| r.is_ok());
            if !registered {
                return Err(OutboxError::NotRegistered);
            }
        }
        let to = if self.shared {
            crate::append::Deliveries::Bound(None)
        } else {
            crate::append::Deliveries::Unqueued
        };
        crate::append::insert_events(
            conn,
            &self.bus,
            &[&event],
            to,
            crate::append::Commit::InTransaction,
        )
        .await?;
        if !self.shared {
            // (A shared name's append wakes the relays itself.)
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&*self.bus)
                .execute(&mut *conn)
                .await?;
        }
        Ok(Some(event.id))
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn is_deadlock(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01")
}

/// A database error as a store error.
pub(crate) fn error(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// [`tidings::store::Admin`] for the bus names in one PostgreSQL database:
/// what `tidings inspect`, `purge` and `prune` use. Each call connects on
/// its own ([`PgStore::summarize`], [`PgStore::purge`],
/// [`PgStore::registrations`], [`PgStore::prune`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::store::Admin;
/// let admin = tidings_postgres::PgAdmin::new("postgres://127.0.0.1/x");
/// assert!(matches!(admin.purge("bad name").await, Err(tidings::StoreError::InvalidConfig(_))));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PgAdmin {
    url: String,
}

impl PgAdmin {
    /// For the database at `url` (not connected until a call).
    pub fn new(url: &str) -> Self {
        Self { url: url.into() }
    }
}

impl tidings::store::Admin for PgAdmin {
    fn summarize<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<Summary, StoreError>> {
        Box::pin(PgStore::summarize(&self.url, bus))
    }
    fn purge<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(PgStore::purge(&self.url, bus))
    }
    fn registrations<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Vec<tidings::store::Registration>, StoreError>> {
        Box::pin(PgStore::registrations(&self.url, bus))
    }
    fn prune<'a>(
        &'a self,
        bus: &'a str,
        unused_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<tidings::store::Pruned>, StoreError>> {
        Box::pin(PgStore::prune(&self.url, bus, unused_for))
    }
    /// Nothing: the first store of a version to connect upgrades the
    /// schema, and older versions' processes go on working with it
    /// (docs/OPERATIONS.md).
    fn upgrade_left<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move { check_name(bus).map(|()| None) })
    }
    /// Nothing to do ([`upgrade_left`](tidings::store::Admin::upgrade_left)).
    fn finish_upgrade<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        self.upgrade_left(bus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored event for the feed tests.
    fn event(n: u8) -> StoredEvent {
        StoredEvent {
            id: Uuid::from_u128(u128::from(n) + 1),
            event_type: "job".into(),
            key: None,
            emitted_at: std::time::SystemTime::UNIX_EPOCH,
            data: "{}".into(),
            deliveries: Vec::new(),
        }
    }

    /// Answers the claim the feed sent to the writer with `events`.
    fn answer(writer: &mut mpsc::UnboundedReceiver<Item>, events: Vec<StoredEvent>) {
        let Ok(Item {
            op: Op::Claim(_, reply),
            ..
        }) = writer.try_recv()
        else {
            panic!("no claim sent");
        };
        let _ = reply.send(Ok(events));
    }

    /// A shared name's feed, woken by a notification, claims at once after
    /// a quiet moment or after a claim that took a few, and no sooner than
    /// [`CLAIM_GAP`] after a claim that took nothing or [`SPACED_FROM`] or
    /// more (without the gap, every instance claimed on every append's
    /// notification; with it after every claim, one event at a time from a
    /// front end waited 7 ms for each claim). A dry claim woken by a
    /// signal already waiting when the relay came to wait (most likely for
    /// what the claim before took) leaves the gap as that claim left it:
    /// made spaced, one keyed event at a time waited 7.5 ms each.
    #[tokio::test(start_paused = true)]
    async fn a_shared_feed_claims_again_no_sooner_than_the_gap_after_a_dry_or_full_claim() {
        let (ops, mut writer) = mpsc::unbounded_channel();
        let changed = Arc::new(Notify::new());
        let claims = Arc::new(Mutex::new(crate::writer::Claims::new()));
        let feed = PgFeed {
            ops: ops.downgrade(),
            outcomes: ops.downgrade(),
            queue: Arc::new(Queue::new()),
            patience: EMIT_TIMEOUT,
            changed: changed.clone(),
            shared: Some(SharedFeed::of(&claims)),
        };
        changed.notify_one();
        let quiet = tokio::time::Instant::now();
        feed.changed().await;
        assert_eq!(
            quiet.elapsed(),
            Duration::ZERO,
            "after a quiet moment: at once"
        );
        for (took, gap) in [
            (1, false),
            (0, true),
            (SPACED_FROM - 1, false),
            (SPACED_FROM, true),
        ] {
            let claim = feed.claim(256);
            let claimed = tokio::time::Instant::now();
            let events = (0..took)
                .map(|n| event(u8::try_from(n).unwrap_or(0)))
                .collect();
            answer(&mut writer, events);
            assert_eq!(claim.await.expect("claimed").len(), took);
            // (The notification comes while the relay waits for one.)
            let woken = tokio::spawn(feed.changed());
            tokio::task::yield_now().await;
            changed.notify_one();
            woken.await.expect("woken");
            if gap {
                assert!(
                    claimed.elapsed() >= CLAIM_GAP,
                    "woken {:?} after a claim that took {took}",
                    claimed.elapsed()
                );
            } else {
                assert_eq!(
                    claimed.elapsed(),
                    Duration::ZERO,
                    "after a claim that took {took}: at once"
                );
            }
        }
        // After a claim of one, a signal sent before the relay waits: the
        // dry claim it makes leaves the gap as it was, not holding.
        tokio::time::advance(LOOK).await;
        let claim = feed.claim(256);
        answer(&mut writer, vec![event(0)]);
        assert_eq!(claim.await.expect("claimed").len(), 1);
        changed.notify_one();
        feed.changed().await;
        let dry = dry_claim_then_woken(&feed, &mut writer, &changed).await;
        assert_eq!(
            dry,
            Duration::ZERO,
            "a dry claim woken by a signal already waiting made the gap hold"
        );
        // After a claim of one, a key of this instance's ends while the
        // relay waits: the dry claim its wake makes leaves the gap as it
        // was. (Held, a front end's lone keyed emit met the gap: p99 9 ms
        // against 2 ms, docs/BENCHMARKS.md section 7, session 27.)
        tokio::time::advance(LOOK).await;
        let claim = feed.claim(256);
        answer(&mut writer, vec![event(0)]);
        assert_eq!(claim.await.expect("claimed").len(), 1);
        let woken = tokio::spawn(feed.changed());
        tokio::task::yield_now().await;
        lock(&claims).key_ends();
        changed.notify_one();
        woken.await.expect("woken");
        let dry = dry_claim_then_woken(&feed, &mut writer, &changed).await;
        assert_eq!(
            dry,
            Duration::ZERO,
            "a dry claim woken by a key's end made the gap hold"
        );
    }

    /// Makes a claim that takes nothing, then wakes the relay while it
    /// waits: how long after that claim the next one is due.
    async fn dry_claim_then_woken(
        feed: &PgFeed,
        writer: &mut mpsc::UnboundedReceiver<Item>,
        changed: &Notify,
    ) -> Duration {
        let claim = feed.claim(256);
        let dry = tokio::time::Instant::now();
        answer(writer, Vec::new());
        assert!(claim.await.expect("claimed").is_empty());
        let woken = tokio::spawn(feed.changed());
        tokio::task::yield_now().await;
        changed.notify_one();
        woken.await.expect("woken");
        dry.elapsed()
    }

    /// What a shared instance's appends took is handed out at once and
    /// without a claim from the server; a notification still makes one,
    /// no sooner than the gap. (Claiming at every call, the feed sent a
    /// claim to the writer with the handed events.)
    #[tokio::test(start_paused = true)]
    async fn a_shared_feed_hands_out_what_the_appends_took_without_a_claim() {
        let (ops, mut writer) = mpsc::unbounded_channel::<Item>();
        let changed = Arc::new(Notify::new());
        let claims = Arc::new(Mutex::new(crate::writer::Claims::new()));
        let ready = lock(&claims).handed_ready();
        let shared = SharedFeed {
            last_claim: Arc::new(Mutex::new(Some(tokio::time::Instant::now()))),
            // (The last claim took nothing: the gap holds.)
            spaced: Arc::new(true.into()),
            ..SharedFeed::of(&claims)
        };
        let feed = PgFeed {
            ops: ops.downgrade(),
            outcomes: ops.downgrade(),
            queue: Arc::new(Queue::new()),
            patience: EMIT_TIMEOUT,
            changed: changed.clone(),
            shared: Some(shared),
        };
        lock(&claims).hand_back(vec![event(1), event(2)]);
        ready.notify_one();
        let at = tokio::time::Instant::now();
        feed.changed().await;
        assert_eq!(at.elapsed(), Duration::ZERO, "at once");
        let handed = tokio::time::timeout(Duration::from_secs(1), feed.claim(256)).await;
        assert!(writer.try_recv().is_err(), "no claim sent to the writer");
        assert_eq!(handed.expect("no wait").expect("handed").len(), 2);

        // A notification: a claim, no sooner than the gap after the last.
        tokio::time::advance(Duration::from_millis(1)).await;
        changed.notify_one();
        let at = tokio::time::Instant::now();
        feed.changed().await;
        assert!(
            at.elapsed() >= Duration::from_millis(5),
            "{:?}",
            at.elapsed()
        );
        let claim = feed.claim(256);
        assert!(
            matches!(
                writer.try_recv(),
                Ok(Item {
                    op: Op::Claim(256, _),
                    ..
                })
            ),
            "a claim sent to the writer"
        );
        drop(claim);
    }
}
