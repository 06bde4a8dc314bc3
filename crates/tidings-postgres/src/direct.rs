//! [`Direct`]: a lone emit written by the emitting task itself.
//!
//! An emit is handed to the writer task, which gathers whatever is queued
//! into one statement: under load, that is what makes an emit cheap. For an
//! emit on its own (one emitter, a request now and then) the hand-over buys
//! nothing and costs two task wake-ups, the writer's and the emitter's: one
//! emitter's wait (`examples/emit_latency.rs`, six rounds alternated), p50
//! 340-453 µs (median 368) through the writer, 290-347 µs (median 331)
//! written by the emitter, against a raw one-row insert's 233-300 µs beside
//! it: 1.45-1.53 → 1.23-1.44 times raw (docs/BENCHMARKS.md, section 7,
//! session 24).
//!
//! So an emit is written on its own task, on the writer's connection, when
//! all of this holds (else it goes to the writer as before):
//!
//! - **nothing handed to the writer is unwritten** ([`Queue`]): whatever was
//!   queued first is written first (a shared instance's registration of its
//!   handlers must commit before its first event is written);
//! - **the writer's last batch was one operation**: under load, emits go on
//!   being gathered (a lone write between two batches would halve them);
//! - **the connection is free and up**: losing the server, connecting again
//!   and telling the relay stay the writer's.
//!
//! This is decided when the emit's future is first polled, not when it is
//! made: a future not yet polled holds nothing (holding the writer's
//! connection, it would stall every other emit until polled; one awaited
//! while it waited, never polled before, would never end). An emit made
//! while the writer is busy is handed to it at once, as before.
//!
//! The statement is the writer's ([`crate::writer::append`]): the same
//! taking of a shared instance's own emits, the same fencing token. A write
//! that fails is handed to the writer as it is, with the time the emit
//! began (its patience counts from then): the writer writes it again (the
//! insert is idempotent, so a first write whose answer was lost is not
//! doubled), connects again, or refuses it, as for any emit. An emit whose
//! future is dropped mid-write has its write run on to the end on a task of
//! its own ([`to_the_end`]): its statement may be on the server, and a
//! taking's token must be answered.

use crate::link::Link;
use crate::writer::Claims;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tidings::store::StoredEvent;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// What the main writer was handed and has not yet written, and whether
/// its last batch was one operation.
#[derive(Debug)]
pub(crate) struct Queue {
    pending: AtomicUsize,
    lone: AtomicBool,
}

impl Queue {
    pub(crate) fn new() -> Self {
        Self {
            pending: AtomicUsize::new(0),
            lone: AtomicBool::new(true),
        }
    }

    /// An operation is handed to the writer.
    pub(crate) fn handed(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// The writer is done with a batch of `n` operations (written,
    /// refused or expired).
    pub(crate) fn done(&self, n: usize) {
        self.lone.store(n == 1, Ordering::SeqCst);
        self.pending.fetch_sub(n, Ordering::SeqCst);
    }

    fn idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0 && self.lone.load(Ordering::SeqCst)
    }
}

/// What an emit needs to write itself on the writer's connection.
pub(crate) struct Direct {
    pub(crate) link: Arc<tokio::sync::Mutex<Link>>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) bus: String,
    pub(crate) owner: Option<Uuid>,
    pub(crate) claims: Arc<Mutex<Claims>>,
    pub(crate) unflushed: Arc<AtomicBool>,
    /// Emits written here.
    #[cfg(test)]
    pub(crate) written: AtomicUsize,
}

impl Direct {
    /// Whether the writer is idle: an emit may be written on its own task
    /// if the connection is free and up when it is first polled.
    pub(crate) fn idle(&self) -> bool {
        self.queue.idle()
    }

    /// The writer's connection, if an emit may be written on its own task
    /// now (see the module docs).
    pub(crate) fn take(&self) -> Option<OwnedMutexGuard<Link>> {
        if !self.queue.idle() {
            return None;
        }
        let link = self.link.clone().try_lock_owned().ok()?;
        // Checked again under the lock: the writer may have been handed
        // something meanwhile.
        (link.is_connected() && self.queue.idle()).then_some(link)
    }

    /// Writes `event` on `link`, waiting at most `patience`; gives the
    /// event back if it was not written (or may not have been).
    pub(crate) async fn write(
        &self,
        mut link: OwnedMutexGuard<Link>,
        event: StoredEvent,
        patience: Duration,
    ) -> Result<(), StoredEvent> {
        let (bus, owner, claims, unflushed) =
            (&self.bus, self.owner, &self.claims, &self.unflushed);
        let events = [&event];
        let written = link
            .run(patience, async |conn| {
                crate::writer::append(conn, bus, owner, &events, claims, unflushed).await
            })
            .await;
        match written {
            Ok(()) => {
                #[cfg(test)]
                self.written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                tracing::debug!("a lone emit's write failed: handed to the writer");
                Err(event)
            }
        }
    }
}

/// `future`, run on to its end on a task of its own if it is dropped
/// before it is done (outside a runtime, it is dropped).
pub(crate) fn to_the_end<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> BoxFuture<'static, T> {
    Box::pin(ToTheEnd(Some(Box::pin(future))))
}

struct ToTheEnd<T: Send + 'static>(Option<BoxFuture<'static, T>>);

impl<T: Send + 'static> Future for ToTheEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(future) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let done = future.as_mut().poll(cx);
        if done.is_ready() {
            self.0 = None;
        }
        done
    }
}

impl<T: Send + 'static> Drop for ToTheEnd<T> {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(future);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::PgStore;
    use futures_util::FutureExt;
    use serde_json::json;
    use std::future::IntoFuture;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};
    use tidings::store::{Store, StoredDelivery, StoredEvent};
    use tidings::{Envelope, EventBus, EventHandler, HandlerError};
    use uuid::Uuid;

    struct Pg;

    impl tidings_conformance::scratch::Server for Pg {
        const URL_VAR: &'static str = "TIDINGS_TEST_POSTGRES_URL";
        fn purge(url: String, bus: String) -> tidings_conformance::scratch::Purging {
            Box::pin(async move { PgStore::purge(&url, &bus).await })
        }
    }

    type TestBus = tidings_conformance::scratch::ScratchBus<Pg>;

    fn event(n: u64) -> StoredEvent {
        StoredEvent {
            id: Uuid::now_v7(),
            event_type: "job".into(),
            key: None,
            emitted_at: SystemTime::now(),
            data: json!({ "n": n }).to_string(),
            deliveries: vec![StoredDelivery::new("worker", 1)],
        }
    }

    /// Each of the bus's deliveries to `worker`, as the server has them.
    async fn written(url: &str, bus: &str) -> i64 {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM tidings_deliveries WHERE bus = $1")
            .bind(bus)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// An emit on its own is written on its own task; emits that come
    /// together are gathered by the writer, and the first emit after a
    /// batch of several goes to the writer too (the next after a batch of
    /// one is written on its own task again). Without the batch-of-one
    /// rule, the fifth emit below is written on its own task (checked).
    ///
    /// (The three emits together are first polled while the test holds the
    /// writer's connection, as a write in progress would: left to
    /// `join!`, the first one's write could end within its first poll when
    /// the server answered at once, and the second was then an emit on its
    /// own, 3-7 % of runs.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_emit_is_written_on_its_own_task_and_emits_together_are_gathered() {
        let Some(test_bus) = TestBus::new("direct") else {
            return;
        };
        let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
        let store = PgStore::connect(&url, &name).await.unwrap();
        let direct = store.direct.clone();
        let on_own_task = || direct.written.load(Ordering::Relaxed);
        store.append(event(1)).await.unwrap();
        assert_eq!(on_own_task(), 1, "a lone emit");
        // Three at once, the connection busy: the writer gathers them.
        let busy = direct.link.clone().lock_owned().await;
        let (mut a, mut b, mut c) = (
            store.append(event(2)),
            store.append(event(3)),
            store.append(event(4)),
        );
        for emit in [&mut a, &mut b, &mut c] {
            assert!(futures_util::poll!(emit).is_pending());
        }
        drop(busy);
        let (a, b, c) = tokio::join!(a, b, c);
        a.and(b).and(c).unwrap();
        assert_eq!(on_own_task(), 1, "three together: by the writer");
        store.append(event(5)).await.unwrap();
        assert_eq!(on_own_task(), 1, "after a batch of three: to the writer");
        store.append(event(6)).await.unwrap();
        assert_eq!(on_own_task(), 2, "after a batch of one: on its own task");
        assert_eq!(written(&url, &name).await, 6, "all written");
    }

    /// An emit's future made and not yet polled holds nothing: another
    /// emit awaited meanwhile is written. (With the writer's connection
    /// taken when the future is made, the second waited for the first to
    /// be polled, for ever: checked.)
    #[tokio::test(flavor = "current_thread")]
    async fn an_emit_not_yet_polled_holds_up_no_other() {
        let Some(test_bus) = TestBus::new("direct-unpolled") else {
            return;
        };
        let (url, name) = (test_bus.url.clone(), test_bus.name.clone());
        let store = PgStore::connect(&url, &name).await.unwrap();
        let first = store.append(event(1));
        let second = tokio::time::timeout(Duration::from_secs(10), store.append(event(2))).await;
        assert!(matches!(second, Ok(Ok(()))), "the second emit is written");
        first.await.unwrap();
        assert_eq!(written(&url, &name).await, 2, "both written");
    }

    #[derive(Clone, Default)]
    struct Worker(Arc<Mutex<Vec<u64>>>);

    impl EventHandler for Worker {
        fn event_type(&self) -> &str {
            "job"
        }
        fn name(&self) -> &str {
            "worker"
        }
        async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
            let n = event.data()["n"].as_u64().unwrap_or(u64::MAX);
            self.0.lock().unwrap().push(n);
            Ok(())
        }
    }

    /// Waits (10 s at most) until `worker` has handled `n` events; what it
    /// handled, sorted.
    async fn handled(worker: &Worker, n: usize) -> Vec<u64> {
        for _ in 0..200 {
            if worker.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut seen = worker.0.lock().unwrap().clone();
        seen.sort_unstable();
        seen
    }

    /// A shared instance on `test_bus` with one handler, `worker`, built
    /// (its registration handed to the writer), and its store's [`Direct`].
    async fn shared_bus(test_bus: &TestBus) -> (EventBus, Worker, Arc<super::Direct>) {
        let store = PgStore::connect_shared(&test_bus.url, &test_bus.name, Duration::from_secs(10))
            .await
            .unwrap();
        let direct = store.direct.clone();
        let worker = Worker::default();
        let bus = EventBus::builder()
            .discover(false)
            .handler(worker.clone())
            .store(store)
            .build()
            .unwrap();
        (bus, worker, direct)
    }

    /// What was handed to the writer first is written first: a shared
    /// instance's first emit, made as soon as its bus is built, waits for
    /// the registration of its handlers and reaches its handler. (Written
    /// on its own task ahead of the registration, the event found no
    /// handler on the name and was not kept: checked.)
    #[tokio::test(flavor = "current_thread")]
    async fn an_emit_is_not_written_ahead_of_what_the_writer_was_handed() {
        let Some(test_bus) = TestBus::new("direct-first") else {
            return;
        };
        let (bus, worker, _) = shared_bus(&test_bus).await;
        bus.emit("job", json!({ "n": 1 })).await.unwrap();
        assert_eq!(handled(&worker, 1).await, vec![1]);
        bus.shutdown(Duration::from_secs(5)).await;
    }

    /// An emit dropped while its own task wrote it (a caller's timeout, a
    /// cancelled request) is written to the end all the same, and what the
    /// shared instance's append took for its handler is handed to it.
    /// (Without [`to_the_end`], the dropped write left its taking's token
    /// held: the event, owned by the live instance under that token, was
    /// never handled: checked.)
    #[tokio::test(flavor = "current_thread")]
    async fn an_emit_dropped_mid_write_is_written_and_handled() {
        let Some(test_bus) = TestBus::new("direct-drop") else {
            return;
        };
        let (bus, worker, direct) = shared_bus(&test_bus).await;
        // Emits until the writer is idle after a batch of one (the first
        // went with the registration, the relay's claims come between).
        // Nothing else runs between that check and the next emit (one
        // thread): it is written on its own task.
        let mut n = 0;
        while !direct.queue.idle() {
            n += 1;
            assert!(n < 20, "the writer never idle");
            bus.emit("job", json!({ "n": n })).await.unwrap();
        }
        let before = direct.written.load(Ordering::Relaxed);
        let polled_once = bus
            .emit("job", json!({ "n": n + 1 }))
            .into_future()
            .now_or_never();
        assert!(polled_once.is_none(), "dropped before it was written");
        let all: Vec<u64> = (1..=n + 1).collect();
        assert_eq!(handled(&worker, all.len()).await, all);
        assert_eq!(
            direct.written.load(Ordering::Relaxed),
            before + 1,
            "on its own task"
        );
        bus.shutdown(Duration::from_secs(5)).await;
    }
}
