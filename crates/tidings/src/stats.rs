//! [`BusStats`]: what the bus has done, per event type and per handler.
//!
//! Counters are exact. The same figures go to the `metrics` facade (install a
//! recorder before building the bus): `tidings_events_emitted_total`,
//! `tidings_events_dropped_total`, `tidings_events_unrouted_total` (label
//! `event_type`), `tidings_handler_calls_total` (labels `handler`, `outcome`)
//! and the histogram `tidings_handler_duration_seconds` (label `handler`).

use hdrhistogram::Histogram;
use metrics::{counter, histogram, Counter};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A snapshot of the bus's figures.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// bus.emit("nobody_listens", serde_json::json!({})).await.unwrap();
/// let stats = bus.stats();
/// assert_eq!(stats.event_type("nobody_listens").unwrap().unrouted, 1);
/// # }
/// ```
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BusStats {
    /// Whether emits are accepted (see `disable`).
    pub enabled: bool,
    /// Events queued, running or waiting to retry.
    pub pending: usize,
    /// Most events that may be pending.
    pub capacity: usize,
    /// Dead letters held now.
    pub dead_letters: usize,
    /// Dead letters evicted to make room for newer ones.
    pub dead_letters_evicted: u64,
    /// Per event type, sorted by name.
    pub event_types: Vec<EventTypeStats>,
    /// Per handler, sorted by name.
    pub handlers: Vec<HandlerStats>,
    /// The store's link to its server (`None` for a bus in memory or on a
    /// file): connected or not, since when, reconnections, stale settles.
    pub store: Option<crate::store::StoreHealth>,
    /// The store's backend ([`Store::kind`](crate::Store::kind)): `None`
    /// for a bus in memory.
    pub store_kind: Option<&'static str>,
}

impl BusStats {
    /// The figures of one handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let stats: tidings::BusStats = bus.stats();
    /// assert!(stats.handler("none").is_none());
    /// let t: Option<&tidings::EventTypeStats> = stats.event_type("none");
    /// assert!(t.is_none());
    /// let h: Option<&tidings::HandlerStats> = stats.handlers.first();
    /// assert!(h.map(|h| &h.latency).map(|l: &tidings::Latency| l.count).is_none());
    /// # }
    /// ```
    pub fn handler(&self, name: &str) -> Option<&HandlerStats> {
        self.handlers.iter().find(|h| h.name == name)
    }

    /// The figures of one event type.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let stats: tidings::BusStats = bus.stats();
    /// assert!(stats.handler("none").is_none());
    /// let t: Option<&tidings::EventTypeStats> = stats.event_type("none");
    /// assert!(t.is_none());
    /// let h: Option<&tidings::HandlerStats> = stats.handlers.first();
    /// assert!(h.map(|h| &h.latency).map(|l: &tidings::Latency| l.count).is_none());
    /// # }
    /// ```
    pub fn event_type(&self, name: &str) -> Option<&EventTypeStats> {
        self.event_types.iter().find(|t| t.event_type == name)
    }
}

/// Figures of one event type.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let stats: tidings::BusStats = bus.stats();
/// assert!(stats.handler("none").is_none());
/// let t: Option<&tidings::EventTypeStats> = stats.event_type("none");
/// assert!(t.is_none());
/// let h: Option<&tidings::HandlerStats> = stats.handlers.first();
/// assert!(h.map(|h| &h.latency).map(|l: &tidings::Latency| l.count).is_none());
/// # }
/// ```
pub struct EventTypeStats {
    /// The event type. Types seen without handlers beyond the first 1 024 are
    /// counted together under `(other)`.
    pub event_type: String,
    /// Events accepted and queued for at least one handler.
    pub emitted: u64,
    /// Events dropped: emitted while the bus was disabled, or refused as the queue was full.
    pub dropped: u64,
    /// Events accepted with no handler to run.
    pub unrouted: u64,
}

/// Figures of one handler. `failed` counts attempts; the others count deliveries.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let stats: tidings::BusStats = bus.stats();
/// assert!(stats.handler("none").is_none());
/// let t: Option<&tidings::EventTypeStats> = stats.event_type("none");
/// assert!(t.is_none());
/// let h: Option<&tidings::HandlerStats> = stats.handlers.first();
/// assert!(h.map(|h| &h.latency).map(|l: &tidings::Latency| l.count).is_none());
/// # }
/// ```
pub struct HandlerStats {
    /// The handler's name.
    pub name: String,
    /// Its event type.
    pub event_type: String,
    /// Deliveries handled successfully.
    pub succeeded: u64,
    /// Attempts that failed (errors, panics, timeouts and interruptions).
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Attempts that panicked.
    pub panicked: u64,
    /// Attempts that ran out of time.
    pub timed_out: u64,
    /// Attempts a process stopped in the middle of (a crash or a kill during
    /// the handler), found by a durable store when the delivery came back.
    pub interrupted: u64,
    /// Deliveries given up and stored as dead letters.
    pub dead_lettered: u64,
    /// Outcomes the store refused because this process no longer held the
    /// delivery (paused or cut off past its lease or `ack_wait`: another
    /// process took it over and makes it). Only on a shared store; see
    /// [`crate::store::Answers`].
    pub stale_settles: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Deliveries to this handler not yet settled in this process: queued
    /// for its worker, waiting behind an earlier event of their key,
    /// running, or waiting to retry. (A snapshot: the worker updates its
    /// part once per turn of its loop.)
    pub queued: u64,
    /// Duration of attempts.
    pub latency: Latency,
}

/// Percentiles of attempt durations, in nanoseconds (3 significant digits).
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let stats: tidings::BusStats = bus.stats();
/// assert!(stats.handler("none").is_none());
/// let t: Option<&tidings::EventTypeStats> = stats.event_type("none");
/// assert!(t.is_none());
/// let h: Option<&tidings::HandlerStats> = stats.handlers.first();
/// assert!(h.map(|h| &h.latency).map(|l: &tidings::Latency| l.count).is_none());
/// # }
/// ```
pub struct Latency {
    /// Attempts measured.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Adds one to a counter that only its handler's worker writes: a plain load
/// and store, not a locked read-modify-write, since there is one writer.
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// One handler's figures. Written by that handler's worker task alone (see
/// [`bump`]); read by anyone.
pub(crate) struct HandlerCells {
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) interrupted: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// Written by the store's tasks (any thread), not the worker.
    stale: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    /// What the worker holds (see `HandlerStats::queued`), beside its mailbox.
    held: AtomicU64,
    /// Where the bus asks the worker for its keys ([`crate::EventBus::pending_keys`]).
    pub(crate) keys: crate::keys::Probe,
    latency: Mutex<Histogram<u64>>,
    m: HandlerMetrics,
}

struct HandlerMetrics {
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    panicked: Counter,
    timed_out: Counter,
    interrupted: Counter,
    dead_lettered: Counter,
    stale: Counter,
    duration: metrics::Histogram,
}

/// What happened to one attempt, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tally {
    Succeeded,
    Failed,
    Panicked,
    TimedOut,
    Interrupted,
}

impl HandlerCells {
    pub(crate) fn new(name: &str) -> Self {
        let h = name.to_owned();
        let c = |outcome: &'static str| counter!("tidings_handler_calls_total", "handler" => h.clone(), "outcome" => outcome);
        Self {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            held: AtomicU64::new(0),
            keys: crate::keys::Probe::default(),
            // 1 ns to 1 hour, 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            ),
            m: HandlerMetrics {
                succeeded: c("succeeded"),
                failed: c("failed"),
                retried: c("retried"),
                panicked: c("panicked"),
                timed_out: c("timed_out"),
                interrupted: c("interrupted"),
                dead_lettered: c("dead_lettered"),
                stale: counter!("tidings_store_stale_settles_total", "handler" => h.clone()),
                duration: histogram!("tidings_handler_duration_seconds", "handler" => h.clone()),
            },
        }
    }

    /// Counts one attempt's outcome.
    pub(crate) fn attempt(&self, tally: Tally) {
        match tally {
            Tally::Succeeded => {
                bump(&self.succeeded);
                self.m.succeeded.increment(1);
            }
            Tally::Failed | Tally::Panicked | Tally::TimedOut | Tally::Interrupted => {
                bump(&self.failed);
                self.m.failed.increment(1);
                let (cell, metric) = match tally {
                    Tally::Panicked => (&self.panicked, &self.m.panicked),
                    Tally::TimedOut => (&self.timed_out, &self.m.timed_out),
                    Tally::Interrupted => (&self.interrupted, &self.m.interrupted),
                    _ => return,
                };
                bump(cell);
                metric.increment(1);
            }
        }
    }

    /// Records attempt durations, a batch at a time (one lock per batch).
    pub(crate) fn record(&self, took: &[Duration]) {
        if let Ok(mut h) = self.latency.lock() {
            for t in took {
                h.saturating_record(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1));
            }
        }
        for t in took {
            self.m.duration.record(t.as_secs_f64());
        }
    }

    /// An attempt left the worker's inline path to wait.
    pub(crate) fn started(&self) {
        bump(&self.in_flight);
    }

    /// How many deliveries the worker holds now.
    pub(crate) fn hold(&self, n: usize) {
        self.held.store(n as u64, Relaxed);
    }

    /// A waiting attempt ended.
    pub(crate) fn ended(&self) {
        self.in_flight
            .store(self.in_flight.load(Relaxed).saturating_sub(1), Relaxed);
    }

    pub(crate) fn retried(&self) {
        bump(&self.retried);
        self.m.retried.increment(1);
    }

    pub(crate) fn dead_lettered(&self) {
        bump(&self.dead_lettered);
        self.m.dead_lettered.increment(1);
    }

    /// The store refused a settle as stale (from the store's tasks).
    pub(crate) fn stale_settled(&self) {
        self.stale.fetch_add(1, Relaxed);
        self.m.stale.increment(1);
    }

    /// Deliveries that reached an end: succeeded or given up.
    pub(crate) fn finished(&self) -> u64 {
        self.succeeded.load(Relaxed) + self.dead_lettered.load(Relaxed)
    }

    pub(crate) fn snapshot(&self, name: &str, event_type: &str, queued: usize) -> HandlerStats {
        let latency = self
            .latency
            .lock()
            .map(|h| Latency {
                count: h.len(),
                p50_ns: h.value_at_quantile(0.5),
                p90_ns: h.value_at_quantile(0.9),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
            })
            .unwrap_or_default();
        HandlerStats {
            name: name.to_owned(),
            event_type: event_type.to_owned(),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            interrupted: self.interrupted.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            stale_settles: self.stale.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            queued: queued as u64 + self.held.load(Relaxed),
            latency,
        }
    }
}

/// Counters of an event type that has handlers (lock-free).
pub(crate) struct TypeCells {
    pub(crate) emitted: AtomicU64,
    pub(crate) dropped: AtomicU64,
    m_emitted: Counter,
    m_dropped: Counter,
}

impl TypeCells {
    pub(crate) fn new(event_type: &str) -> Self {
        let t = event_type.to_owned();
        Self {
            emitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            m_emitted: counter!("tidings_events_emitted_total", "event_type" => t.clone()),
            m_dropped: counter!("tidings_events_dropped_total", "event_type" => t),
        }
    }

    pub(crate) fn emitted(&self) {
        self.emitted.fetch_add(1, Relaxed);
        self.m_emitted.increment(1);
    }

    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
        self.m_dropped.increment(1);
    }
}

/// Counters of event types without handlers, bounded so that hostile input
/// cannot grow them without limit.
#[derive(Default)]
pub(crate) struct Unrouted {
    map: Mutex<HashMap<String, EventTypeStats>>,
}

const MAX_UNROUTED_TYPES: usize = 1024;
pub(crate) const OTHER: &str = "(other)";

impl Unrouted {
    pub(crate) fn count(&self, event_type: &str, dropped: bool) {
        let Ok(mut map) = self.map.lock() else { return };
        let name = if map.contains_key(event_type) || map.len() < MAX_UNROUTED_TYPES {
            event_type
        } else {
            OTHER
        };
        if !map.contains_key(name) {
            let fresh = EventTypeStats {
                event_type: name.to_owned(),
                ..Default::default()
            };
            map.insert(name.to_owned(), fresh);
        }
        let Some(entry) = map.get_mut(name) else {
            return;
        };
        if dropped {
            entry.dropped += 1;
        } else {
            entry.unrouted += 1;
        }
        drop(map);
        let metric = if dropped {
            "tidings_events_dropped_total"
        } else {
            "tidings_events_unrouted_total"
        };
        counter!(metric, "event_type" => name.to_owned()).increment(1);
    }

    pub(crate) fn snapshot(&self) -> Vec<EventTypeStats> {
        self.map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl crate::EventBus {
    /// Sets the `metrics` facade's gauges from a snapshot of the bus:
    /// `tidings_bus_pending`, `tidings_bus_capacity`, `tidings_dead_letters`,
    /// and per handler `tidings_handler_queued` and
    /// `tidings_handler_in_flight`. Gauges are set when asked (an exporter
    /// calls this before each scrape: `tidings_admin::metrics_router` does),
    /// so that no emit pays for them. The counters and histograms
    /// (`tidings_events_emitted_total`, `tidings_handler_calls_total` by
    /// outcome, `tidings_handler_duration_seconds`, the store's) are
    /// recorded as things happen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// bus.record_gauges(); // a no-op without a recorder
    /// # }
    /// ```
    pub fn record_gauges(&self) {
        let stats = self.stats();
        metrics::gauge!("tidings_bus_pending").set(stats.pending as f64);
        metrics::gauge!("tidings_bus_capacity").set(stats.capacity as f64);
        metrics::gauge!("tidings_dead_letters").set(stats.dead_letters as f64);
        for h in stats.handlers {
            metrics::gauge!("tidings_handler_queued", "handler" => h.name.clone())
                .set(h.queued as f64);
            metrics::gauge!("tidings_handler_in_flight", "handler" => h.name)
                .set(h.in_flight as f64);
        }
    }
}
