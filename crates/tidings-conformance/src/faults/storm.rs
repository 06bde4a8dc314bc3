//! [`storm`]: many emitters on a bus whose server faults are injected
//! while they run, then a check that nothing acknowledged was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings::{EmitError, Envelope, EventBus, EventHandler, HandlerError, HandlerOptions};

/// The event type a storm emits.
pub const STORM_EVENT: &str = "storm";

/// What the buses of a storm handled: give each bus a [`Sink`] over the same
/// record (they may be several processes sharing deliveries).
#[derive(Debug, Default)]
pub struct Record {
    /// How many times each event was handled.
    handled: Mutex<HashMap<u64, u32>>,
    /// Each key's events in the order of their first deliveries.
    firsts: Mutex<HashMap<String, Vec<u64>>>,
    /// When each first delivery happened, of which event, and whether it
    /// had a key, in order.
    first_at: Mutex<Vec<(Instant, u64, bool)>>,
}

/// The storm's handler: records each delivery of a `storm` event.
#[derive(Clone, Debug)]
pub struct Sink(pub Arc<Record>);

impl EventHandler for Sink {
    fn event_type(&self) -> &str {
        STORM_EVENT
    }
    fn name(&self) -> &str {
        "storm_sink"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().concurrency(8)
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"]
            .as_u64()
            .ok_or_else(|| HandlerError::permanent("no field n"))?;
        let first = {
            let mut handled = self.0.handled.lock().unwrap_or_else(|e| e.into_inner());
            let c = handled.entry(n).or_insert(0);
            *c += 1;
            *c == 1
        };
        // With RUST_LOG=tidings_conformance=debug, each handling by event
        // id (what a backend's own logs name), to trace a failed storm.
        tracing::debug!(n, event_id = %event.id(), first, "a storm event was handled");
        if first {
            if let Some(key) = event.key() {
                self.0
                    .firsts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.to_owned())
                    .or_default()
                    .push(n);
            }
            self.0
                .first_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), n, event.key().is_some()));
        }
        Ok(())
    }
}

/// A fault, injected when the storm has acknowledged `at` (a fraction of
/// its events); `inject` blocks until the server is back (it runs on a
/// thread of its own) and says what it did.
pub struct Fault {
    /// When: the fraction of the events acknowledged (0.0 to 1.0).
    pub at: f64,
    /// Causes the fault and ends it; returns its name.
    pub inject: Box<dyn FnOnce() -> String + Send>,
}

impl Fault {
    /// A fault at `at` of the events.
    pub fn at(at: f64, inject: impl FnOnce() -> String + Send + 'static) -> Self {
        Self {
            at,
            inject: Box::new(inject),
        }
    }
}

/// What a storm saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Events emitted.
    pub emitted: u64,
    /// Emits acknowledged (`Ok`).
    pub acknowledged: u64,
    /// Emits answered [`EmitError::Unavailable`] (during an outage).
    pub unavailable: u64,
    /// Acknowledged events never handled: must be 0.
    pub lost: u64,
    /// Deliveries beyond the first (at least once allows them).
    pub duplicates: u64,
    /// Events answered `Unavailable` that were handled all the same (their
    /// commit went through as the connection broke).
    pub unavailable_but_handled: u64,
    /// The longest time from a fault's end (the server back, the
    /// connections thawed) to the next first delivery of an event.
    pub recovery: Duration,
    /// The same, to the next first delivery of a keyed event (keyed
    /// deliveries may take another path back, as NATS's key partitions do).
    pub keyed_recovery: Duration,
    /// The faults after which deliveries, and keyed deliveries, took
    /// longest to resume (their names, as in [`faults`](Self::faults)).
    pub slowest: (Option<String>, Option<String>),
    /// From the last acknowledged emit to the last first delivery.
    pub drain: Duration,
    /// The event handled last (its number, and whether it had a key).
    pub last: Option<(u64, bool)>,
    /// The faults injected, in order.
    pub faults: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "emitted {}, acknowledged {}, unavailable {} ({} of them handled), lost {}, duplicates {}, deliveries resumed {:.2} s after a fault at worst ({:.2} s for keyed ones; slowest after {} and, keyed, {}), drained {:.2} s after the last emit (the last event handled: {}); faults: {}",
            self.emitted,
            self.acknowledged,
            self.unavailable,
            self.unavailable_but_handled,
            self.lost,
            self.duplicates,
            self.recovery.as_secs_f64(),
            self.keyed_recovery.as_secs_f64(),
            self.slowest.0.as_deref().unwrap_or("none"),
            self.slowest.1.as_deref().unwrap_or("none"),
            self.drain.as_secs_f64(),
            match self.last {
                Some((n, true)) => format!("{n}, keyed"),
                Some((n, false)) => format!("{n}, no key"),
                None => "none".into(),
            },
            self.faults.join(", ")
        )
    }
}

/// Emits `events` `storm` events from `emitters` tasks, spread over the
/// `buses` (each emitter on one; half of the emitters with a key of their
/// own, four keys each, so that per-key order can be checked), pacing each
/// emitter by `pace`; injects the `faults` as the acknowledgements pass
/// their marks; then waits up to `drain` for every acknowledged event to be
/// handled. Panics (with the report) if an emit fails otherwise than with
/// [`EmitError::Unavailable`], or if a key's first deliveries are out of
/// emit order; the caller checks [`Report::lost`] (after looking at the
/// server, if it wants to say why).
pub async fn storm(
    buses: &[EventBus],
    record: &Arc<Record>,
    events: u64,
    emitters: u64,
    pace: Duration,
    faults: Vec<Fault>,
    drain: Duration,
) -> Report {
    assert!(!buses.is_empty(), "a storm needs a bus");
    let acked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(Mutex::new(Vec::<u64>::new()));
    // Each acknowledged emit's number, and its event's id (to name a lost
    // one: the logs say ids).
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    // Each fault injected, by name, and when its injection ended.
    let injected = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let fault_thread = {
        let (acked, injected) = (acked.clone(), injected.clone());
        std::thread::spawn(move || {
            for fault in faults {
                let mark = (fault.at * events as f64) as u64;
                while acked.load(Relaxed) < mark {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let name = (fault.inject)();
                eprintln!("storm: {name} done at {} acknowledged", acked.load(Relaxed));
                injected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((name, Instant::now()));
            }
        })
    };
    let per = events / emitters;
    let mut tasks = Vec::new();
    for e in 0..emitters {
        let bus = buses[(e as usize) % buses.len()].clone();
        let (acked, unavailable, acknowledged) =
            (acked.clone(), unavailable.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let n = e * per + i;
                let data = serde_json::json!({ "n": n });
                let result = if e % 2 == 0 {
                    bus.emit(STORM_EVENT, data).await
                } else {
                    bus.emit(STORM_EVENT, data)
                        .key(format!("e{e}-k{}", i % 4))
                        .await
                };
                match result {
                    Ok(receipt) => {
                        acknowledged
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((n, receipt.id().to_string()));
                        acked.fetch_add(1, Relaxed);
                    }
                    Err(EmitError::Unavailable { .. }) => {
                        unavailable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(n);
                    }
                    Err(other) => {
                        panic!("emit {n} failed with neither Ok nor Unavailable: {other}")
                    }
                }
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("an emitter panicked");
    }
    let last_emit = Instant::now();
    // Faults not reached (too many emits refused) are injected now.
    acked.fetch_add(events, Relaxed);
    let _ = tokio::task::spawn_blocking(move || fault_thread.join()).await;
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap_or_else(|e| e.into_inner()));
    let unavailable = std::mem::take(&mut *unavailable.lock().unwrap_or_else(|e| e.into_inner()));
    let until = Instant::now() + drain;
    let missing = |r: &Record| {
        let handled = r.handled.lock().unwrap_or_else(|e| e.into_inner());
        acknowledged
            .iter()
            .filter(|(n, _)| !handled.contains_key(n))
            .count() as u64
    };
    while missing(record) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late duplicates (a delivery taken over after a stall) are counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handled = record
        .handled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let first_at = record
        .first_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let injected = injected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The longest resumption after a fault, and the fault's name.
    let resumed = |keyed_only: bool| {
        injected
            .iter()
            .filter_map(|(name, end)| {
                first_at
                    .iter()
                    .find(|(t, _, keyed)| t >= end && (*keyed || !keyed_only))
                    .map(|(t, ..)| (*t - *end, name.clone()))
            })
            .max_by_key(|(took, _)| *took)
            .map_or((Duration::ZERO, None), |(took, name)| (took, Some(name)))
    };
    let ((recovery, slowest), (keyed_recovery, keyed_slowest)) = (resumed(false), resumed(true));
    let report = Report {
        emitted: per * emitters,
        acknowledged: acknowledged.len() as u64,
        unavailable: unavailable.len() as u64,
        lost: missing(record),
        duplicates: handled.values().map(|c| u64::from(c - 1)).sum(),
        unavailable_but_handled: unavailable
            .iter()
            .filter(|n| handled.contains_key(n))
            .count() as u64,
        recovery,
        keyed_recovery,
        slowest: (slowest, keyed_slowest),
        drain: first_at
            .last()
            .map(|(t, ..)| t.saturating_duration_since(last_emit))
            .unwrap_or_default(),
        last: first_at.last().map(|&(_, n, keyed)| (n, keyed)),
        faults: injected.into_iter().map(|(name, _)| name).collect(),
    };
    eprintln!("storm: {report}");
    let firsts = record.firsts.lock().unwrap_or_else(|e| e.into_inner());
    for (key, firsts) in firsts.iter() {
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "key {key}: first deliveries out of emit order: {firsts:?} ({report})"
        );
    }
    drop(firsts);
    let mut lost: Vec<&(u64, String)> = {
        let handled = record.handled.lock().unwrap_or_else(|e| e.into_inner());
        acknowledged
            .iter()
            .filter(|(n, _)| !handled.contains_key(n))
            .collect()
    };
    lost.sort_unstable();
    if !lost.is_empty() {
        let named: Vec<String> = lost[..lost.len().min(50)]
            .iter()
            .map(|(n, id)| format!("{n} ({id})"))
            .collect();
        eprintln!("storm: lost {named:?}");
    }
    report
}
