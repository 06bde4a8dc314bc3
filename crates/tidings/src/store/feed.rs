//! [`Delivery`] and [`Feed`]: how a store's deliveries reach the bus's
//! handlers.
//!
//! A store says once, at `build()`, which of three modes it is in
//! ([`Store::delivery`](super::Store::delivery)):
//!
//! - **[`Delivery::Local`]** (SQLite): the bus queues the deliveries of the
//!   events it appends, and only those. No feed.
//! - **[`Delivery::Relayed`]** (PostgreSQL `connect`): as `Local`, and
//!   others write events for this bus too (the transactional outbox). The
//!   bus runs a relay over the store's [`Feed`]: it claims whenever
//!   [`Feed::changed`] resolves, and at least every second, waits for a
//!   place for each event claimed (never over capacity), and queues it.
//! - **[`Delivery::Shared`]** (NATS JetStream, PostgreSQL `connect_shared`):
//!   deliveries are shared by the bus's processes, each to whichever claims
//!   it first. An emit only appends (no local handler needed, no place
//!   held); every delivery, its own included, comes back through the relay;
//!   and [`EventBus::wait_idle`](crate::EventBus::wait_idle) also waits
//!   until [`Feed::outstanding`] is zero.
//!
//! The feed is carried by the mode, so a store without one cannot be asked
//! to claim, and a mode cannot be half chosen.

use super::{StoreError, StoredEvent};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// How a store's deliveries reach the bus's handlers (see the [module
/// docs](crate::store)): one of three modes, the two that claim carrying the
/// [`Feed`] they claim from.
///
/// ```
/// use tidings::store::{Delivery, Feed, StoreError, StoredEvent};
/// use futures_util::future::BoxFuture;
/// use std::sync::Arc;
///
/// struct Nothing;
/// impl Feed for Nothing {
///     fn claim(&self, _: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
///         Box::pin(async { Ok(Vec::new()) })
///     }
/// }
///
/// assert!(matches!(Delivery::default(), Delivery::Local));
/// let shared = Delivery::Shared(Arc::new(Nothing));
/// assert!(shared.feed().is_some() && shared.shared());
/// assert!(Delivery::Local.feed().is_none());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Delivery {
    /// The bus queues the deliveries of the events it appends, and only
    /// those.
    #[default]
    Local,
    /// As `Local`, and the bus also queues what it claims from the feed
    /// (events others wrote: the outbox).
    Relayed(Arc<dyn Feed>),
    /// Deliveries are shared by the bus's processes: emits only append, and
    /// every delivery comes from the feed.
    Shared(Arc<dyn Feed>),
}

impl Delivery {
    /// The feed the bus's relay claims from, if the store has one.
    pub fn feed(&self) -> Option<&Arc<dyn Feed>> {
        match self {
            Self::Local => None,
            Self::Relayed(feed) | Self::Shared(feed) => Some(feed),
        }
    }

    /// Whether deliveries are shared by the bus's processes.
    pub fn shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "Local",
            Self::Relayed(_) => "Relayed",
            Self::Shared(_) => "Shared",
        })
    }
}

/// Where a store's deliveries written elsewhere come from: events the
/// application wrote (the outbox), or deliveries shared by the bus's
/// processes. Carried by [`Delivery::Relayed`] and [`Delivery::Shared`];
/// the bus's relay is its only caller.
///
/// Methods are called from the relay task and from `wait_idle`, never
/// concurrently with themselves by the relay.
///
/// ```
/// fn relay(_: &dyn tidings::store::Feed) {} // object safe
/// ```
pub trait Feed: Send + Sync + 'static {
    /// Up to `limit` committed events with deliveries this process has not
    /// queued yet, oldest first, each marked as taken (so that no later
    /// claim returns it again while this process holds it; a recovery at
    /// start returns what is still pending then). Each event's
    /// `deliveries` are the ones claimed, with their attempt and
    /// [`Begun`](super::Begun) state.
    ///
    /// # Errors
    /// The store could not be read; the relay tries again at its next
    /// tick.
    fn claim(&self, limit: usize) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>>;

    /// Resolves when [`claim`](Self::claim) may find something new (a
    /// database notification, a broker's message). Default: never (the
    /// relay still claims every second).
    fn changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// Deliveries of this bus's handlers not yet done anywhere (not yet
    /// claimed, or claimed and not yet handled or dead-lettered). Asked by
    /// `wait_idle` of a [`Delivery::Shared`] store only. Default: zero.
    ///
    /// # Errors
    /// The store could not be asked; `wait_idle` asks again.
    fn outstanding(&self) -> BoxFuture<'static, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}
