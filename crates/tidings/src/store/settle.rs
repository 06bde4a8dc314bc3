//! Settling: a delivery the bus names to its store ([`DeliveryRef`]) carries
//! the [`Claim`] it was handed out with, and the store answers the settles
//! it refused ([`Answers`]).
//!
//! - **A claim is the store's.** A store that hands deliveries out (a
//!   [`Feed`](super::Feed) claim, a recovery) may put in each
//!   [`StoredDelivery`](super::StoredDelivery) whatever it needs to settle
//!   it later: PostgreSQL the fencing token of the claim, NATS JetStream the
//!   number under which it keeps the broker's message. The bus carries it,
//!   untouched, to every [`Store::settle`](super::Store::settle) and
//!   [`Store::begin`](super::Store::begin) of that delivery, so a store
//!   looks nothing up by event and handler. A delivery the bus queued
//!   itself (an emit, a replay) has [`Claim::NONE`].
//! - **A settle can be refused.** On a store whose claims can be lost (a
//!   process paused past its lease: another process took the delivery
//!   over), a settle of a delivery this process no longer holds must change
//!   nothing. The store refuses it when it writes, and answers through the
//!   [`Answers`] the bus gave it at [`Store::recover`](super::Store::recover):
//!   the bus counts it per handler
//!   ([`HandlerStats::stale_settles`](crate::HandlerStats::stale_settles),
//!   metric `tidings_store_stale_settles_total{handler}`) and logs the event
//!   id and the handler (never the data). The settle itself stays fire and
//!   forget on the hot path: nothing waits for the answer.

use crate::stats::HandlerCells;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use uuid::Uuid;

/// What a store needs to settle a delivery it handed out, chosen by the
/// store and carried by the bus untouched (see [`Store`](super::Store)).
///
/// ```
/// use tidings::store::Claim;
/// let c = Claim::new(42);
/// assert_eq!(c.token(), Some(42));
/// assert_eq!(Claim::NONE.token(), None);
/// assert_eq!(Claim::new(0), Claim::NONE); // 0 is no claim
/// assert_eq!(Claim::default(), Claim::NONE);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Claim(Option<NonZeroU64>);

impl Claim {
    /// No claim: a delivery the bus queued itself (an emit, a replay), or
    /// one from a store that needs nothing to settle it.
    pub const NONE: Self = Self(None);

    /// A claim carrying `token` (`0` is [`Claim::NONE`]).
    pub const fn new(token: u64) -> Self {
        Self(NonZeroU64::new(token))
    }

    /// The token, if the delivery came with one.
    pub const fn token(self) -> Option<u64> {
        match self.0 {
            Some(t) => Some(t.get()),
            None => None,
        }
    }
}

/// A delivery as the bus names it to its store: the event, the handler and
/// the claim it was handed out with.
///
/// ```
/// use tidings::store::{Claim, DeliveryRef};
/// let id = uuid::Uuid::now_v7();
/// let d = DeliveryRef::new(id, "notify", Claim::new(7));
/// assert_eq!((d.event_id, d.handler, d.claim.token()), (id, "notify", Some(7)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryRef<'a> {
    /// The event's id.
    pub event_id: Uuid,
    /// The handler's name.
    pub handler: &'a str,
    /// What the store handed it out with ([`Claim::NONE`] for a delivery
    /// the bus queued itself).
    pub claim: Claim,
}

impl<'a> DeliveryRef<'a> {
    /// The delivery of event `event_id` to `handler`, handed out with `claim`.
    pub const fn new(event_id: Uuid, handler: &'a str, claim: Claim) -> Self {
        Self {
            event_id,
            handler,
            claim,
        }
    }
}

/// Where a store answers the bus about the settles it refused as stale (see
/// [`Store`](super::Store)). Given by the bus at
/// [`Store::recover`](super::Store::recover); cheap to clone; callable from
/// any thread.
///
/// ```
/// use tidings::store::Answers;
/// let answers = Answers::default(); // counts, for nobody's figures
/// answers.stale(uuid::Uuid::now_v7(), "notify");
/// assert_eq!(answers.stale_settles(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Answers(Arc<Tally>);

#[derive(Default)]
struct Tally {
    /// The bus's handlers, by name, whose figures count their stale settles.
    handlers: Vec<(Arc<str>, Arc<HandlerCells>)>,
    stale: AtomicU64,
}

impl Answers {
    /// The bus's answers, counted in these handlers' figures.
    pub(crate) fn counting(handlers: Vec<(Arc<str>, Arc<HandlerCells>)>) -> Self {
        Self(Arc::new(Tally {
            handlers,
            stale: AtomicU64::new(0),
        }))
    }

    /// The settle of `handler`'s delivery of event `event_id` was refused:
    /// this process no longer held it (another process has it now, or will
    /// after the broker's redelivery). It changed nothing.
    pub fn stale(&self, event_id: Uuid, handler: &str) {
        tracing::warn!(
            handler,
            %event_id,
            "a delivery's outcome was refused: this process no longer held it (it was out of touch past its lease or ack_wait, and another process took the delivery over)"
        );
        self.count_stale(handler);
    }

    /// The store said a delivery it had handed out may no longer be this
    /// process's, before its attempt started ([`Store::admits`](super::Store::admits)): it was not
    /// run. Counted with the stale settles.
    ///
    /// ```
    /// let answers = tidings::store::Answers::default();
    /// answers.not_started(uuid::Uuid::now_v7(), "notify");
    /// assert_eq!(answers.stale_settles(), 1);
    /// ```
    pub fn not_started(&self, event_id: Uuid, handler: &str) {
        tracing::warn!(
            handler,
            %event_id,
            "a delivery was not started: this process may no longer hold it (it was out of touch past its lease or ack_wait); its holder now runs it"
        );
        self.count_stale(handler);
    }

    fn count_stale(&self, handler: &str) {
        self.0.stale.fetch_add(1, Relaxed);
        match self.0.handlers.iter().find(|(name, _)| **name == *handler) {
            Some((_, cells)) => cells.stale_settled(),
            None => metrics::counter!("tidings_store_stale_settles_total").increment(1),
        }
    }

    /// How many settles were refused so far, all handlers together.
    pub fn stale_settles(&self) -> u64 {
        self.0.stale.load(Relaxed)
    }
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("stale_settles", &self.stale_settles())
            .finish_non_exhaustive()
    }
}
