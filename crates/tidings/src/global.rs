//! The process-wide bus: the seed's `get_event_bus()`.
//!
//! Built on first use, inside the Tokio runtime of the caller, from every
//! registered handler with default settings; [`init`] installs a configured
//! one first. Its workers live on that runtime: use it from a long-lived
//! runtime (your `#[tokio::main]`), and build private buses in tests.

use crate::{BuildError, EventBus, EventBusBuilder, InitError};
use std::sync::{Mutex, OnceLock};

static BUS: OnceLock<EventBus> = OnceLock::new();
static BUILDING: Mutex<()> = Mutex::new(());

/// The process-wide bus, built on first use.
///
/// # Panics
/// If it must be built and cannot be: called outside a Tokio runtime, or a
/// registered handler needs a resource (use [`init`] with the resources, or
/// [`try_event_bus`] to get the error instead).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::event_bus();
/// assert!(bus.is_enabled());
/// # }
/// ```
pub fn event_bus() -> EventBus {
    match try_event_bus() {
        Ok(bus) => bus,
        Err(e) => panic!("cannot build the process-wide event bus: {e}"),
    }
}

/// The process-wide bus, built on first use; the error instead of a panic.
///
/// # Errors
/// The [`BuildError`] of the first build.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::try_event_bus().unwrap();
/// assert!(bus.is_enabled());
/// # }
/// ```
pub fn try_event_bus() -> Result<EventBus, BuildError> {
    if let Some(bus) = BUS.get() {
        return Ok(bus.clone());
    }
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bus) = BUS.get() {
        return Ok(bus.clone());
    }
    let bus = EventBus::builder().build()?;
    Ok(BUS.get_or_init(|| bus).clone())
}

/// Installs a configured process-wide bus before first use.
///
/// # Errors
/// [`InitError::AlreadyInitialized`] if the bus exists already;
/// [`InitError::Build`] if building fails.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let _ = tidings::init(tidings::EventBus::builder().capacity(1_000));
/// assert!(matches!(
///     tidings::init(tidings::EventBus::builder()),
///     Err(tidings::InitError::AlreadyInitialized)
/// ));
/// # }
/// ```
pub fn init(builder: EventBusBuilder) -> Result<EventBus, InitError> {
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if BUS.get().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    let bus = builder.build()?;
    Ok(BUS.get_or_init(|| bus).clone())
}
