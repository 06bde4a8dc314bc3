//! One worker task per handler: takes deliveries from the handler's
//! [`Mailbox`] (all that is queued, in one swap) and runs them, with retries,
//! timeouts, per-key order and a concurrency limit.
//!
//! A handler whose call finishes on its first poll (the common case for fast
//! handlers) costs one boxed future and no task switch. A call that has to wait
//! moves into the worker's set of running calls; up to `concurrency` of them
//! interleave on the worker's task. A failed attempt waits for its retry
//! outside that set, so it holds no concurrency slot and, for a keyed event,
//! holds up only its own key.
//!
//! A delivery an earlier process may have begun (handed back by a durable
//! store, see [`crate::store::Begun`]) has each attempt marked begun in the
//! store before it runs; the wait for that write, like a retry's, holds no
//! concurrency slot. One whose attempt was marked and never ended counts
//! as a failed attempt first.

use crate::clock;
use crate::dead_letter::DeadLetters;
use crate::envelope::{BeginMark, Body, Envelope};
use crate::gate::Gate;
use crate::handler::ErasedHandler;
use crate::keys::KeyBacklog;
use crate::mailbox::{Fifo, Mailbox};
use crate::redact::{one_line, MAX_ERROR_LEN};
use crate::stats::{HandlerCells, Tally};
use crate::store::{Change, Claim, DeliveryRef, Store};
use crate::tail::{Settled, Tiding};
use crate::{HandlerError, HandlerOptions};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tracing::Instrument;
use uuid::Uuid;

pub(crate) struct Worker {
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) name: Arc<str>,
    pub(crate) event_type: Arc<str>,
    pub(crate) options: HandlerOptions,
    pub(crate) cells: Arc<HandlerCells>,
    pub(crate) dead: Arc<DeadLetters>,
    pub(crate) global: Option<Arc<Semaphore>>,
    pub(crate) gate: Arc<Gate>,
    /// Told what became of each delivery, on a bus with a store.
    pub(crate) store: Option<Arc<dyn Store>>,
    /// The bus's tail: told each outcome while somebody listens.
    pub(crate) tail: Arc<crate::tail::Hub>,
}

enum Outcome {
    Ok,
    Failed(HandlerError),
    Panicked(String),
    TimedOut(Duration),
    /// A process stopped during this attempt (found by the store at start).
    Interrupted,
}

enum Done {
    Attempt {
        env: Envelope,
        outcome: Outcome,
        took: Duration,
    },
    /// Cleared to start: a retry came due, or an attempt's begin mark was written.
    Due(Envelope),
}

/// A future in the worker's running set, with the event it is for.
struct Running<'a> {
    event: Arc<Body>,
    /// The attempt it runs, if that attempt is marked begun in the store.
    marked: Option<u32>,
    fut: Pin<Box<dyn Future<Output = Done> + Send + 'a>>,
}

impl<'a> Running<'a> {
    fn new(event: Arc<Body>, fut: impl Future<Output = Done> + Send + 'a) -> Self {
        Self {
            event,
            marked: None,
            fut: Box::pin(fut),
        }
    }

    /// An attempt, remembered as `marked` begun in the store if it is.
    fn attempt(
        event: Arc<Body>,
        marked: Option<u32>,
        fut: impl Future<Output = Done> + Send + 'a,
    ) -> Self {
        Self {
            event,
            marked,
            fut: Box::pin(fut),
        }
    }
}

impl Future for Running<'_> {
    type Output = Done;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        self.fut.as_mut().poll(cx)
    }
}

struct State<'a> {
    /// Attempts running (not retries waiting).
    running: usize,
    tasks: FuturesUnordered<Running<'a>>,
    /// Keys with a delivery in progress, and the deliveries waiting behind it.
    keys: HashMap<Box<str>, VecDeque<Envelope>>,
    /// Deliveries cleared to start (a retry that came due, the next of a key).
    ready: VecDeque<Envelope>,
    /// Where the next attempt's future is built; reused while attempts finish at once.
    slot: ReusableBoxFuture<'a, Result<(), HandlerError>>,
    /// When the previous attempt of this batch ended: the next one starts then
    /// (give or take taking it off the queue), which saves a clock read per
    /// delivery. Cleared whenever the worker waits.
    clock: Option<clock::Tick>,
    /// Durations of this batch's attempts, recorded together (one lock).
    took: Vec<Duration>,
    /// Places in the bus freed by this batch's settled events, handed back
    /// together (one atomic write) after the figures are recorded.
    freed: usize,
    /// Deliveries taken from the mailbox, not yet admitted.
    incoming: Fifo,
    /// Deliveries waiting in `keys` behind their key's current one.
    behind_keys: usize,
}

/// Deliveries admitted per turn of the worker's loop, between looks at its
/// running calls, at cancellation and at the runtime's budget.
const BATCH: usize = 64;

impl Worker {
    /// Runs until the queue closes and all work is done, or until `cancel`
    /// fires; then returns the ids of the deliveries it abandoned.
    pub(crate) async fn run(self, inbox: Arc<Mailbox>, cancel: CancellationToken) -> Vec<Uuid> {
        let mut st = State {
            running: 0,
            tasks: FuturesUnordered::new(),
            keys: HashMap::new(),
            ready: VecDeque::new(),
            slot: ReusableBoxFuture::new(std::future::pending()),
            clock: None,
            took: Vec::with_capacity(BATCH + 1),
            freed: 0,
            incoming: Fifo::default(),
            behind_keys: 0,
        };
        let limit = self.options.concurrency;
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let mut open = true;
        loop {
            while st.running < limit {
                match st.ready.pop_front() {
                    Some(env) => self.start(&mut st, env),
                    None => break,
                }
            }
            for _ in 0..BATCH {
                if st.running >= limit {
                    break;
                }
                match st.incoming.pop_front() {
                    Some(env) => self.admit(&mut st, env),
                    None => break,
                }
            }
            self.flush(&mut st);
            // What this worker holds, for `HandlerStats::queued` (one
            // relaxed store per turn, on this worker's own figures).
            self.cells
                .hold(st.incoming.len() + st.ready.len() + st.tasks.len() + st.behind_keys);
            if self.cells.keys.asked() {
                let keys = st
                    .keys
                    .iter()
                    .map(|(k, q)| KeyBacklog::new(&**k, q.len() + 1));
                self.cells.keys.answer(keys.collect());
            }
            if !open && st.tasks.is_empty() && st.ready.is_empty() && st.incoming.is_empty() {
                return Vec::new();
            }
            st.clock = None;
            let room = st.running < limit;
            let more = room && !st.incoming.is_empty();
            tokio::select! {
                biased;
                _ = &mut cancelled => return self.abandon(st, &inbox),
                Some(done) = st.tasks.next(), if !st.tasks.is_empty() => self.finish(&mut st, done),
                // More was taken than one batch: go on, and let the runtime's
                // budget say when to give the thread to other tasks.
                () = tokio::task::consume_budget(), if more => {}
                got = inbox.take(&mut st.incoming), if open && room && !more => open = got,
            }
        }
    }

    fn admit<'a>(&'a self, st: &mut State<'a>, env: Envelope) {
        if let Some(key) = env.key() {
            if let Some(waiting) = st.keys.get_mut(key) {
                waiting.push_back(env);
                st.behind_keys += 1;
                return;
            }
            st.keys.insert(key.into(), VecDeque::new());
        }
        self.start(st, env);
    }

    fn span(&self, env: &Envelope) -> tracing::Span {
        let parent = env.shared.meta.span.as_deref().and_then(tracing::Span::id);
        tracing::info_span!(
            parent: parent,
            "handle",
            handler = &*self.name,
            event_type = env.event_type(),
            event_id = %env.id(),
            attempt = env.attempt(),
        )
    }

    /// Starts one attempt. It runs to its first await right here; only if it
    /// has to wait does it join the running set.
    fn start<'a>(&'a self, st: &mut State<'a>, env: Envelope) {
        if let Some(store) = &self.store {
            // A claimed delivery the store may have lost to another process:
            // not run here (the store told the bus, and lets it go). One the
            // bus queued itself has no claim, and no other holder.
            let delivery = self.delivery(&env.shared);
            if delivery.claim != Claim::NONE && !store.admits(delivery) {
                return self.release(st, env);
            }
        }
        match (env.mark, &self.store) {
            (BeginMark::Never | BeginMark::Made, _) | (_, None) => {}
            (BeginMark::Due, Some(store)) => return self.mark(st, store, env),
            (BeginMark::Interrupted, Some(_)) => {
                return self.settle(st, env, Outcome::Interrupted, Duration::ZERO)
            }
        }
        let permit = match &self.global {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    st.running += 1;
                    self.cells.started();
                    let (event, marked) = (env.shared.clone(), env.marked());
                    let fut = self.slow_attempt(sem.clone(), env);
                    st.tasks.push(Running::attempt(event, marked, fut));
                    return;
                }
            },
        };
        let span = self.span(&env);
        let started = st.clock.take().unwrap_or_else(clock::now);
        self.handler.call_in(env.clone(), &mut st.slot);
        let first = {
            let _entered = span.enter();
            let mut cx = Context::from_waker(Waker::noop());
            std::panic::catch_unwind(AssertUnwindSafe(|| st.slot.poll(&mut cx)))
        };
        let outcome = match first {
            Ok(Poll::Ready(Ok(()))) => Outcome::Ok,
            Ok(Poll::Ready(Err(e))) => Outcome::Failed(e),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
            Ok(Poll::Pending) => {
                st.running += 1;
                self.cells.started();
                let timeout = self.options.timeout;
                // The runtime's clock from here on (timeouts, and paused time in tests).
                let spent = clock::now().since(started);
                let started = Instant::now()
                    .checked_sub(spent)
                    .unwrap_or_else(Instant::now);
                let fut =
                    std::mem::replace(&mut st.slot, ReusableBoxFuture::new(std::future::pending()));
                let (event, marked) = (env.shared.clone(), env.marked());
                let rest = finish_attempt(fut, span, started, timeout, permit, env);
                st.tasks.push(Running::attempt(event, marked, rest));
                return;
            }
        };
        drop(permit);
        let ended = clock::now();
        st.clock = Some(ended);
        self.settle(st, env, outcome, ended.since(started));
    }

    /// Has the store mark the delivery's next attempt begun, and starts the
    /// attempt once the mark is written (or could not be: the attempt runs
    /// anyway, unprotected, rather than wait for ever).
    fn mark<'a>(&'a self, st: &mut State<'a>, store: &Arc<dyn Store>, env: Envelope) {
        let write = store.begin(self.delivery(&env.shared), env.attempt);
        // Counted as marked from now: a shutdown that abandons it while the
        // mark is being written clears the mark after it (same queue).
        let (event, marked) = (env.shared.clone(), Some(env.attempt));
        st.tasks.push(Running::attempt(event, marked, async move {
            if let Err(e) = write.await {
                tracing::warn!(
                    handler = &*self.name,
                    event_id = %env.id(),
                    attempt = env.attempt,
                    "the store could not mark this attempt begun ({e}); it runs anyway, and will not be counted if it stops the process"
                );
            }
            Done::Due(Envelope {
                mark: BeginMark::Made,
                ..env
            })
        }));
    }

    fn slow_attempt(
        &self,
        sem: Arc<Semaphore>,
        env: Envelope,
    ) -> impl Future<Output = Done> + Send + 'static {
        let handler = self.handler.clone();
        let timeout = self.options.timeout;
        let span = self.span(&env);
        async move {
            let permit = sem.acquire_owned().await.ok();
            let started = Instant::now();
            let fut = handler.call(env.clone());
            finish_attempt(fut, span, started, timeout, permit, env).await
        }
    }

    fn finish<'a>(&'a self, st: &mut State<'a>, done: Done) {
        match done {
            Done::Attempt { env, outcome, took } => {
                st.running -= 1;
                self.cells.ended();
                self.settle(st, env, outcome, took);
            }
            Done::Due(env) => st.ready.push_front(env),
        }
    }

    /// Records an attempt's outcome and decides what comes next.
    fn settle<'a>(&'a self, st: &mut State<'a>, env: Envelope, outcome: Outcome, took: Duration) {
        if !matches!(outcome, Outcome::Interrupted) {
            st.took.push(took);
        }
        let (tally, error, retryable) = match outcome {
            Outcome::Ok => {
                self.cells.attempt(Tally::Succeeded);
                self.tell(&env, Settled::Handled);
                self.record(&env, Change::Handled);
                return self.release(st, env);
            }
            // Logged and stored: one line, bounded (a handler's text may
            // hold anything; the bus's own never holds a payload value).
            Outcome::Failed(e) => (
                Tally::Failed,
                one_line(&e.to_string(), MAX_ERROR_LEN),
                e.is_retryable(),
            ),
            Outcome::Panicked(msg) => (
                Tally::Panicked,
                one_line(&format!("panicked: {msg}"), MAX_ERROR_LEN),
                true,
            ),
            Outcome::TimedOut(after) => {
                (Tally::TimedOut, format!("timed out after {after:?}"), true)
            }
            Outcome::Interrupted => (
                Tally::Interrupted,
                format!(
                    "the process stopped during attempt {} (it crashed or was killed)",
                    env.attempt()
                ),
                true,
            ),
        };
        self.cells.attempt(tally);
        let attempt = env.attempt();
        if retryable && attempt < self.options.max_attempts {
            let delay = self.options.backoff.delay(attempt);
            tracing::warn!(
                handler = &*self.name,
                event_type = &*self.event_type,
                event_id = %env.id(),
                attempt,
                retry_in = ?delay,
                "Error in {} for '{}' event: {}",
                self.name,
                self.event_type,
                error
            );
            self.cells.retried();
            self.tell(&env, Settled::Retrying);
            self.record(
                &env,
                Change::Retrying {
                    attempt: attempt + 1,
                },
            );
            let next = Envelope {
                shared: env.shared,
                attempt: attempt + 1,
                mark: env.mark.next(),
            };
            let running = Running::new(next.shared.clone(), async move {
                tokio::time::sleep(delay).await;
                Done::Due(next)
            });
            st.tasks.push(running);
            return;
        }
        tracing::error!(
            handler = &*self.name,
            event_type = &*self.event_type,
            event_id = %env.id(),
            attempt,
            "Error in {} for '{}' event: {}",
            self.name,
            self.event_type,
            error
        );
        self.cells.dead_lettered();
        self.tell(&env, Settled::DeadLettered);
        if self.store.is_some() {
            self.record(
                &env,
                Change::DeadLettered {
                    attempts: attempt,
                    error: error.clone(),
                },
            );
        }
        self.dead.push(&self.name, &env, error);
        self.release(st, env);
    }

    /// Tells the tail, if anybody listens, what became of a delivery.
    #[inline]
    fn tell(&self, env: &Envelope, outcome: Settled) {
        self.tail.tell(|| Tiding::Settled {
            event_type: self.event_type.to_string(),
            event_id: env.id(),
            handler: self.name.to_string(),
            attempt: env.attempt(),
            outcome,
        });
    }

    /// Tells the store, if any, what became of a delivery.
    fn record(&self, env: &Envelope, change: Change) {
        self.record_of(&env.shared, change);
    }

    fn record_of(&self, event: &Body, change: Change) {
        if let Some(store) = &self.store {
            store.settle(self.delivery(event), change);
        }
    }

    /// The delivery as the store knows it: its event, this handler, and the
    /// claim the store handed it out with.
    fn delivery<'e>(&'e self, event: &Body) -> DeliveryRef<'e> {
        DeliveryRef::new(event.meta.id, &self.name, event.claim_of(&self.name))
    }

    /// The delivery is over: let the next one of its key go, and free the
    /// event's place if it was its last delivery.
    fn release(&self, st: &mut State<'_>, env: Envelope) {
        if env.shared.settle() {
            st.freed += 1;
        }
        if let Some(key) = env.key() {
            match st.keys.get_mut(key).and_then(VecDeque::pop_front) {
                Some(next) => {
                    st.behind_keys -= 1;
                    st.ready.push_back(next);
                }
                None => {
                    st.keys.remove(key);
                }
            }
        }
    }
}

impl Worker {
    /// Records the batch's figures, then hands back the places it freed: in
    /// this order, so that a bus seen idle has counted everything.
    fn flush(&self, st: &mut State<'_>) {
        if !st.took.is_empty() {
            self.cells.record(&st.took);
            st.took.clear();
        }
        self.gate.release(std::mem::take(&mut st.freed));
    }

    /// Stops at a shutdown deadline: every delivery not finished is settled
    /// as abandoned (its place freed) and its event id returned.
    fn abandon(&self, mut st: State<'_>, inbox: &Mailbox) -> Vec<Uuid> {
        // Attempts marked begun that a shutdown cuts short (running, having
        // their mark written, or marked and waiting for a concurrency slot)
        // were not stopped by a crash: their marks are cleared.
        let marked = st
            .tasks
            .iter()
            .filter_map(|r| Some((r.event.clone(), r.marked?)));
        let ready = st
            .ready
            .iter()
            .filter_map(|e| Some((e.shared.clone(), e.marked()?)));
        for (event, attempt) in marked.chain(ready) {
            self.record_of(&event, Change::Abandoned { attempt });
        }
        let mut events: Vec<Arc<Body>> = st.tasks.iter().map(|r| r.event.clone()).collect();
        st.tasks.clear();
        events.extend(st.ready.drain(..).map(|e| e.shared));
        events.extend(st.keys.drain().flat_map(|(_, q)| q).map(|e| e.shared));
        events.extend(std::mem::take(&mut st.incoming).map(|e| e.shared));
        events.extend(inbox.close_and_drain().map(|e| e.shared));
        let ids = events.iter().map(|e| e.meta.id).collect();
        st.freed += events.iter().filter(|e| e.settle()).count();
        self.flush(&mut st);
        ids
    }
}

async fn finish_attempt(
    fut: impl Future<Output = Result<(), HandlerError>> + Send,
    span: tracing::Span,
    started: Instant,
    timeout: Option<Duration>,
    permit: Option<OwnedSemaphorePermit>,
    env: Envelope,
) -> Done {
    let guarded = AssertUnwindSafe(fut).catch_unwind().instrument(span);
    let result = match timeout {
        Some(limit) => tokio::time::timeout_at(started + limit, guarded)
            .await
            .map_err(|_| limit),
        None => Ok(guarded.await),
    };
    drop(permit);
    let outcome = match result {
        Ok(Ok(Ok(()))) => Outcome::Ok,
        Ok(Ok(Err(e))) => Outcome::Failed(e),
        Ok(Err(panic)) => Outcome::Panicked(panic_message(&*panic)),
        Err(limit) => Outcome::TimedOut(limit),
    };
    Done::Attempt {
        env,
        outcome,
        took: started.elapsed(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
