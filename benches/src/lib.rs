//! Shared by the benches: the seed's activity_log payload, typed and dynamic,
//! no-op handlers, and the optional mimalloc switch.

use serde::{Deserialize, Serialize};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};

/// The allocator the benches measure with: the system's, or mimalloc with `--features mimalloc`.
#[cfg(feature = "mimalloc")]
pub type Allocator = mimalloc::MiMalloc;
/// The allocator the benches measure with: the system's, or mimalloc with `--features mimalloc`.
#[cfg(not(feature = "mimalloc"))]
pub type Allocator = std::alloc::System;

/// An instance of [`Allocator`].
#[cfg(feature = "mimalloc")]
pub const ALLOCATOR_INSTANCE: Allocator = mimalloc::MiMalloc;
/// An instance of [`Allocator`].
#[cfg(not(feature = "mimalloc"))]
pub const ALLOCATOR_INSTANCE: Allocator = std::alloc::System;

/// Which allocator this build measures with.
pub const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system (glibc)"
};

/// The seed's activity_log example as a typed event.
#[derive(Clone, Debug, Serialize, Deserialize, tidings::Event)]
#[event(type = "activity_log")]
pub struct ActivityLog {
    /// Who.
    pub user_id: u64,
    /// What kind of incident.
    pub incident_type: String,
    /// How bad.
    pub severity: String,
    /// What happened.
    pub description: String,
    /// From where.
    pub ip_address: String,
}

impl ActivityLog {
    /// The seed's example, for user `n`.
    pub fn sample(n: u64) -> Self {
        Self {
            user_id: n,
            incident_type: "UNAUTHORIZED_ACCESS".into(),
            severity: "HIGH".into(),
            description: "User attempted to access restricted resource".into(),
            ip_address: "192.168.1.1".into(),
        }
    }
}

/// The same payload built per event as the seed does: a five-field JSON object.
pub fn dynamic_payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "user_id": n,
        "incident_type": "UNAUTHORIZED_ACCESS",
        "severity": "HIGH",
        "description": "User attempted to access restricted resource",
        "ip_address": "192.168.1.1"
    })
}

/// Emits `events` `activity_log` events ([`dynamic_payload`]) from
/// `emitters` tasks, each emit awaited (its event written, on a durable bus)
/// before the task's next; with `keys` > 0 they have keys, `keys` of them in
/// turn (`key-0`, `key-1`, ...). Returns how many were emitted: `events`
/// rounded down to a multiple of `emitters`.
///
/// # Errors
/// The first emit that failed.
///
/// ```
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// runtime.block_on(async {
///     let bus = tidings_benches::bus_with(1, "activity_log");
///     assert_eq!(tidings_benches::emit_awaited(&bus, 100, 8, 10).await.unwrap(), 96);
///     bus.wait_idle().await;
///     assert_eq!(bus.stats().handlers[0].succeeded, 96);
/// });
/// ```
pub async fn emit_awaited(
    bus: &tidings::EventBus,
    events: usize,
    emitters: usize,
    keys: usize,
) -> Result<usize, tidings::EmitError> {
    let per = events / emitters.max(1);
    let mut tasks = Vec::new();
    for e in 0..emitters {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per as u64 {
                let n = (e * per) as u64 + i;
                let emit = bus.emit("activity_log", dynamic_payload(n));
                if keys > 0 {
                    emit.key(format!("key-{}", n % keys as u64)).await?;
                } else {
                    emit.await?;
                }
            }
            Ok::<_, tidings::EmitError>(())
        }));
    }
    for t in tasks {
        t.await.expect("an emitter panicked")?;
    }
    Ok(per * emitters)
}

/// A load run on `bus` (with one handler of `activity_log`, say
/// [`noop_builder`]'s): [`emit_awaited`], then until the bus is idle.
/// Prints as `N events/s; emits done after A ms of B ms`.
///
/// # Errors
/// The first emit that failed.
///
/// ```
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// runtime.block_on(async {
///     let bus = tidings_benches::bus_with(1, "activity_log");
///     let load = tidings_benches::load(&bus, 64, 8, 0).await.unwrap();
///     assert_eq!(load.events, 64);
///     assert!(load.to_string().ends_with(" ms"));
/// });
/// ```
pub async fn load(
    bus: &tidings::EventBus,
    events: usize,
    emitters: usize,
    keys: usize,
) -> Result<Load, tidings::EmitError> {
    let start = std::time::Instant::now();
    let events = emit_awaited(bus, events, emitters, keys).await?;
    let emitted = start.elapsed();
    bus.wait_idle().await;
    Ok(Load {
        events,
        emitted,
        handled: start.elapsed(),
    })
}

/// A load run's shape, from the environment: `EVENTS` (default 20 000),
/// `EMITTERS` (64), `KEYS` (0: none), `ROUNDS` (1).
///
/// ```
/// let shape = tidings_benches::LoadShape::from_env().unwrap();
/// assert!(shape.emitters > 0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LoadShape {
    /// Events in all, a round.
    pub events: usize,
    /// Tasks emitting them, each awaiting its emit.
    pub emitters: usize,
    /// Keys in turn (0: no keys).
    pub keys: usize,
    /// Rounds, each on a fresh bus name.
    pub rounds: usize,
}

impl LoadShape {
    /// Reads the shape from the environment.
    ///
    /// # Errors
    /// A variable that is set but is not a number (named in the message).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str, default: usize| match std::env::var(name) {
            Ok(v) => v.parse().map_err(|_| format!("{name} is not a number")),
            Err(_) => Ok(default),
        };
        Ok(Self {
            events: var("EVENTS", 20_000)?,
            emitters: var("EMITTERS", 64)?.max(1),
            keys: var("KEYS", 0)?,
            rounds: var("ROUNDS", 1)?,
        })
    }
}

/// What [`load`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Events emitted (and handled).
    pub events: usize,
    /// From the first emit to the last emit's return.
    pub emitted: std::time::Duration,
    /// From the first emit to the last handled.
    pub handled: std::time::Duration,
}

impl Load {
    /// Events handled per second, from the first emit to the last handled.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.handled.as_secs_f64()
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events/s; emits done after {:.0} ms of {:.0} ms",
            self.rate() as u64,
            self.emitted.as_secs_f64() * 1e3,
            self.handled.as_secs_f64() * 1e3
        )
    }
}

/// A handler that does nothing, for a given event type; with a gate, it
/// first waits for a permit (so that events pile up as pending).
pub struct Noop {
    /// Its name.
    pub name: String,
    /// Its event type.
    pub event_type: &'static str,
    /// When set, each call waits for a permit of this semaphore.
    pub gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl EventHandler for Noop {
    fn event_type(&self) -> &str {
        self.event_type
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> HandlerOptions {
        let concurrency = if self.gate.is_some() { 1 } else { 32 };
        HandlerOptions::default()
            .concurrency(concurrency)
            .no_timeout()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await;
        }
        std::hint::black_box(event);
        Ok(())
    }
}

/// A bus with `n` no-op handlers of `event_type`.
pub fn bus_with(n: usize, event_type: &'static str) -> tidings::EventBus {
    gated_bus(n, event_type, 65_536, None)
}

/// A bus with `n` no-op handlers of `event_type`, a capacity, and an optional gate.
pub fn gated_bus(
    n: usize,
    event_type: &'static str,
    capacity: usize,
    gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
) -> tidings::EventBus {
    noop_builder(n, event_type, capacity, gate)
        .build()
        .expect("bus")
}

/// The builder of [`gated_bus`], for adding more (a store).
pub fn noop_builder(
    n: usize,
    event_type: &'static str,
    capacity: usize,
    gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
) -> tidings::EventBusBuilder {
    let mut b = tidings::EventBus::builder()
        .discover(false)
        .capacity(capacity);
    for i in 0..n {
        b = b.handler(Noop {
            name: format!("noop{i}"),
            event_type,
            gate: gate.clone(),
        });
    }
    b
}
