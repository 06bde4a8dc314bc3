//! Hostile work, as storms: a poison event among many, handlers that never
//! return, and a flood of emits against a slow handler. Each function runs
//! one storm on a bus built from the given builder (any backend), checks
//! what must hold, and returns the figures (`docs/RELIABILITY.md`).
//!
//! (The storms of [`crate::faults`] inject server faults instead.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::{EmitError, Envelope, EventBusBuilder, EventHandler, HandlerError, HandlerOptions};

/// Waits for the bus to be idle: at most a minute.
async fn idle(bus: &tidings::EventBus) {
    tokio::time::timeout(Duration::from_secs(60), bus.wait_idle())
        .await
        .expect("the bus went idle within a minute");
}

/// Waits for the emitters: at most two minutes (a bus that stopped
/// delivering would leave them waiting for room for ever).
async fn joined(tasks: Vec<tokio::task::JoinHandle<()>>) {
    tokio::time::timeout(Duration::from_secs(120), async {
        for t in tasks {
            t.await.expect("an emitter");
        }
    })
    .await
    .expect("every emit answered within two minutes");
}

/// What one storm did.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Emits made.
    pub emitted: u64,
    /// Emits refused with a typed error (`QueueFull`).
    pub refused: u64,
    /// Deliveries handled.
    pub handled: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
    /// Deliveries handled more than once.
    pub duplicates: u64,
    /// Growth of the resident memory over the storm, at its peak, in bytes.
    pub peak_rss_growth: u64,
    /// How long the storm took.
    pub took: Duration,
}

/// The resident set size of this process, in bytes (Linux; 0 elsewhere).
pub fn rss() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples [`rss`] every 5 ms until dropped; `peak` is the highest seen.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                p.fetch_max(rss(), Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Relaxed)
    }
}

/// Counts deliveries by event number, and panics on the poison one.
struct Poisoned {
    poison: u64,
    seen: Arc<Vec<AtomicU64>>,
}

impl EventHandler for Poisoned {
    fn event_type(&self) -> &str {
        "hostile_poison"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(3)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
            .concurrency(16)
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"].as_u64().unwrap_or(u64::MAX);
        if n == self.poison {
            panic!("poison event {n}");
        }
        if let Some(c) = usize::try_from(n).ok().and_then(|i| self.seen.get(i)) {
            c.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

/// One event that panics its handler on every attempt, among `events`
/// emitted from 8 tasks: the process lives on, the poison delivery is
/// dead-lettered after its attempts, every other one is handled exactly
/// once (checked), and the bus shuts down clean.
///
/// # Panics
/// When any of that does not hold.
pub async fn poison(builder: EventBusBuilder, events: u64) -> Figures {
    let poison = events / 2;
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let bus = builder
        .handler(Poisoned {
            poison,
            seen: seen.clone(),
        })
        .build()
        .expect("the bus builds");
    let sampler = Sampler::start();
    let before = rss();
    let started = Instant::now();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut n = t;
                while n < events {
                    bus.emit("hostile_poison", serde_json::json!({ "n": n }))
                        .await
                        .expect("an emit (the bus waits for room)");
                    n += 8;
                }
            })
        })
        .collect();
    joined(tasks).await;
    idle(&bus).await;
    let took = started.elapsed();
    let stats = bus.stats();
    let h = stats.handler("Poisoned").expect("the handler's figures");
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1, "the poison event alone is dead-lettered");
    assert!(
        letters[0].error.contains("panicked"),
        "{}",
        letters[0].error
    );
    assert_eq!(
        h.panicked, 3,
        "the poison panicked on each of its 3 attempts"
    );
    let mut duplicates = 0;
    for (n, c) in seen.iter().enumerate() {
        let c = c.load(Relaxed);
        if n as u64 == poison {
            continue;
        }
        assert!(c >= 1, "event {n} was never handled");
        duplicates += c - 1;
    }
    assert_eq!(duplicates, 0, "no event handled twice");
    let report = bus.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    Figures {
        emitted: events,
        refused: 0,
        handled: h.succeeded,
        dead_lettered: h.dead_lettered,
        duplicates,
        peak_rss_growth: sampler.peak().saturating_sub(before),
        took,
    }
}

/// Never returns for every 50th event; handles the others at once.
struct Stuck {
    handled: Arc<AtomicU64>,
}

impl EventHandler for Stuck {
    fn event_type(&self) -> &str {
        "hostile_stuck"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
            .timeout(Duration::from_millis(200))
            .concurrency(8)
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if event.data()["n"].as_u64().unwrap_or(0).is_multiple_of(50) {
            std::future::pending::<()>().await;
        }
        self.handled.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Handlers that never return for one event in 50, among `events`: each
/// attempt of those times out (200 ms, two attempts, then a dead letter),
/// and every other event is handled meanwhile, by the slots the stuck ones
/// do not hold.
///
/// # Panics
/// When any of that does not hold.
pub async fn stuck(builder: EventBusBuilder, events: u64) -> Figures {
    let handled = Arc::new(AtomicU64::new(0));
    let bus = builder
        .handler(Stuck {
            handled: handled.clone(),
        })
        .build()
        .expect("the bus builds");
    let started = Instant::now();
    for n in 0..events {
        bus.emit("hostile_stuck", serde_json::json!({ "n": n }))
            .await
            .expect("an emit");
    }
    idle(&bus).await;
    let took = started.elapsed();
    let stuck = events.div_ceil(50);
    let stats = bus.stats();
    let h = stats.handler("Stuck").expect("the handler's figures");
    assert_eq!(
        handled.load(Relaxed),
        events - stuck,
        "every other event handled"
    );
    assert_eq!(
        h.timed_out,
        2 * stuck,
        "each stuck delivery timed out twice"
    );
    assert_eq!(h.dead_lettered, stuck);
    assert!(bus
        .dead_letters()
        .iter()
        .all(|l| l.error.contains("timed out")));
    let report = bus.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    Figures {
        emitted: events,
        handled: h.succeeded,
        dead_lettered: h.dead_lettered,
        took,
        ..Figures::default()
    }
}

/// Takes 1 ms per delivery, 64 at a time.
struct Slow {
    handled: Arc<AtomicU64>,
}

impl EventHandler for Slow {
    fn event_type(&self) -> &str {
        "hostile_flood"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().concurrency(64)
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.handled.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// `emits` emits from 64 tasks against a slow handler, on a bus of
/// `capacity` pending events: half the tasks wait for room (`emit`), half
/// are refused when the bus is full (`try_emit`). Every emit is either
/// refused with `QueueFull` or handled (checked), and the resident memory
/// grows by at most `capacity` × 4 KiB + 64 MiB (checked): the queue, not
/// the callers, bounds it.
///
/// # Panics
/// When any of that does not hold.
pub async fn flood(builder: EventBusBuilder, emits: u64, capacity: usize) -> Figures {
    let handled = Arc::new(AtomicU64::new(0));
    let bus = builder
        .capacity(capacity)
        .handler(Slow {
            handled: handled.clone(),
        })
        .build()
        .expect("the bus builds");
    let refused = Arc::new(AtomicU64::new(0));
    let before = rss();
    let sampler = Sampler::start();
    let started = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (bus, refused) = (bus.clone(), refused.clone());
            tokio::spawn(async move {
                let mut n = t;
                while n < emits {
                    let data = serde_json::json!({ "n": n, "pad": "x".repeat(64) });
                    if t % 2 == 0 {
                        bus.emit("hostile_flood", data)
                            .await
                            .expect("a waiting emit");
                    } else {
                        match bus.try_emit("hostile_flood", data) {
                            Ok(_) => {}
                            Err(EmitError::QueueFull { .. }) => {
                                refused.fetch_add(1, Relaxed);
                                // A refused caller lets the others run.
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("refused with {e:?}"),
                        }
                    }
                    n += 64;
                }
            })
        })
        .collect();
    joined(tasks).await;
    idle(&bus).await;
    let took = started.elapsed();
    let peak = sampler.peak();
    let refused = refused.load(Relaxed);
    let handled = handled.load(Relaxed);
    assert_eq!(handled + refused, emits, "every emit refused or handled");
    let growth = peak.saturating_sub(before);
    let bound = capacity as u64 * 4096 + (64 << 20);
    assert!(
        growth <= bound,
        "resident memory grew by {growth} bytes, over the bound of {bound} for a capacity of {capacity}"
    );
    let report = bus.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    Figures {
        emitted: emits,
        refused,
        handled,
        peak_rss_growth: growth,
        took,
        ..Figures::default()
    }
}
