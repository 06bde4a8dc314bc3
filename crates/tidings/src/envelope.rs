//! [`Envelope`]: one event as a handler receives it.

use crate::handler_error::HandlerError;
use crate::store::Claim;
use crate::Event;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use uuid::Uuid;

/// One event as a handler receives it: id, type, time, attempt, key and data.
///
/// Cloning is cheap (one reference count). All handlers of an event share one
/// copy of its payload.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::{Envelope, EventBus, HandlerError};
///
/// struct Audit;
/// impl tidings::EventHandler for Audit {
///     fn event_type(&self) -> &str { "login" }
///     async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
///         assert_eq!(event.event_type(), "login");
///         assert_eq!(event.attempt(), 1);
///         assert_eq!(event.data()["user_id"], 7);
///         assert_eq!(event.data()["_event_type"], "login");
///         assert!(event.data()["_emitted_at"].is_string());
///         Ok(())
///     }
/// }
/// let bus = EventBus::builder().discover(false).handler(Audit).build().unwrap();
/// bus.emit("login", serde_json::json!({"user_id": 7})).await.unwrap();
/// bus.wait_idle().await;
/// assert_eq!(bus.stats().handler("Audit").unwrap().succeeded, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Envelope {
    pub(crate) shared: Arc<Body>,
    pub(crate) attempt: u32,
    pub(crate) mark: BeginMark,
}

/// The bus's side of the begin mark whose store side is
/// [`crate::store::Begun`]: whether the attempts of a delivery are marked
/// begun in the store before they run. Only deliveries an earlier process
/// may have begun are (`Begun::Maybe` → `Due`, `Begun::Interrupted` →
/// `Interrupted`), never on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BeginMark {
    /// Never: a fresh delivery (`Begun::Never`), or a bus without a store.
    Never,
    /// Before its next attempt.
    Due,
    /// Its current attempt is marked.
    Made,
    /// Its current attempt was marked and never ended: it counts as failed
    /// before anything else.
    Interrupted,
}

impl BeginMark {
    /// What a delivery the store handed back as `begun` starts with.
    pub(crate) fn of(begun: crate::store::Begun) -> Self {
        match begun {
            crate::store::Begun::Maybe => BeginMark::Due,
            crate::store::Begun::Interrupted => BeginMark::Interrupted,
            _ => BeginMark::Never,
        }
    }

    /// What the next attempt of a delivery starts with.
    pub(crate) fn next(self) -> Self {
        match self {
            BeginMark::Never => BeginMark::Never,
            _ => BeginMark::Due,
        }
    }
}

/// The event's name, shared without copying.
#[derive(Clone)]
pub(crate) enum TypeName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl TypeName {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            TypeName::Static(s) => s,
            TypeName::Shared(s) => s,
        }
    }
}

/// What identifies an event; copied as is into dead letters and replays.
#[derive(Clone)]
pub(crate) struct Meta {
    pub(crate) id: Uuid,
    pub(crate) emitted_at: SystemTime,
    pub(crate) event_type: TypeName,
    pub(crate) key: Option<Box<str>>,
    /// The span that emitted the event, when tracing was on.
    pub(crate) span: Option<Box<tracing::Span>>,
    /// The data as JSON text, metadata included: set at emit for dynamic
    /// events (encoded once, parsed only if a handler asks).
    pub(crate) raw: Option<Box<str>>,
}

impl Meta {
    pub(crate) fn new(
        id: Uuid,
        emitted_at: SystemTime,
        event_type: TypeName,
        key: Option<Box<str>>,
    ) -> Self {
        // The handler's span (at INFO) is its only use: skip the lookup when
        // INFO is off everywhere, as it is with no subscriber.
        let span = if tracing::level_enabled!(tracing::Level::INFO) {
            let span = tracing::Span::current();
            (!span.is_none()).then(|| Box::new(span))
        } else {
            None
        };
        Self {
            id,
            emitted_at,
            event_type,
            key,
            span,
            raw: None,
        }
    }
}

/// The body of one event, which the envelopes of all its deliveries share
/// (one allocation per event). `P` is the typed payload, if any.
pub(crate) struct Body<P: ?Sized + AnyPayload = dyn AnyPayload> {
    pub(crate) meta: Meta,
    /// Deliveries of this event not yet settled. The worker that settles the
    /// last one hands the event's place in the bus back (see [`Body::settle`]).
    /// Zero for copies that hold no place (dead letters, test envelopes).
    remaining: AtomicU32,
    /// The data as a JSON value, made on first use.
    pub(crate) json: OnceLock<Box<Value>>,
    /// What the store handed this event's deliveries out with, by handler
    /// (the handler's name, the very `Arc` its worker holds): only for an
    /// event a store handed back. Kept here, once per event, not in each
    /// envelope, which stays two words on the hot path (and behind one thin
    /// pointer: the body of an event the bus queued itself grows by a word).
    claims: Option<Claims>,
    pub(crate) payload: P,
}

/// The claims of an event a store handed back, by handler (see
/// [`Body::claim_of`]): a thin pointer, so that the bodies of the bus's own
/// events grow by one word only.
#[allow(clippy::box_collection)]
pub(crate) type Claims = Box<Vec<(Arc<str>, Claim)>>;

impl<P: AnyPayload> Body<P> {
    /// An event for `deliveries` handlers, holding one place in the bus if
    /// `deliveries > 0`.
    pub(crate) fn new(meta: Meta, deliveries: u32, payload: P) -> Arc<Body<P>> {
        Self::claimed(meta, deliveries, payload, None)
    }

    /// The same, for an event a store handed back with these claims.
    pub(crate) fn claimed(
        meta: Meta,
        deliveries: u32,
        payload: P,
        claims: Option<Claims>,
    ) -> Arc<Body<P>> {
        Arc::new(Body {
            meta,
            remaining: AtomicU32::new(deliveries),
            json: OnceLock::new(),
            claims,
            payload,
        })
    }
}

impl<P: ?Sized + AnyPayload> Body<P> {
    /// The claim the store handed the delivery to `handler` out with
    /// ([`Claim::NONE`] for an event the bus queued itself).
    pub(crate) fn claim_of(&self, handler: &Arc<str>) -> Claim {
        match &self.claims {
            None => Claim::NONE,
            Some(claims) => claims
                .iter()
                .find(|(h, _)| Arc::ptr_eq(h, handler))
                .map_or(Claim::NONE, |(_, c)| *c),
        }
    }

    /// One delivery of this event is over (handled, dead-lettered, abandoned
    /// or never queued). True for the last one: its caller hands the event's
    /// place back to the bus.
    pub(crate) fn settle(&self) -> bool {
        // Only deliveries decrement, so a count of one is the caller's own:
        // the last delivery skips the atomic write.
        self.remaining.load(Ordering::Acquire) == 1
            || self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// A payload held in memory: typed, or none (dynamic events live in `Meta::raw`).
pub(crate) trait AnyPayload: Send + Sync + 'static {
    fn as_any(&self) -> Option<&dyn Any>;
    fn to_json(&self) -> Result<Value, serde_json::Error>;
}

/// A typed payload.
pub(crate) struct Typed<T>(pub(crate) T);

impl<T: Event> AnyPayload for Typed<T> {
    fn as_any(&self) -> Option<&dyn Any> {
        Some(&self.0)
    }
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(&self.0)
    }
}

/// A dynamic event: its JSON text (`Meta::raw`) is the event. When its type
/// has typed handlers, the payload decoded at emit rides along for them.
pub(crate) struct Dynamic(pub(crate) Option<Box<dyn AnyPayload>>);

impl AnyPayload for Dynamic {
    fn as_any(&self) -> Option<&dyn Any> {
        self.0.as_ref()?.as_any()
    }
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        Ok(Value::Null)
    }
}

/// Adds `_event_type` and `_emitted_at` to a JSON object.
pub(crate) fn add_metadata(data: &mut Value, event_type: &str, at: SystemTime) {
    if let Value::Object(map) = data {
        map.insert("_event_type".into(), Value::String(event_type.into()));
        map.insert(
            "_emitted_at".into(),
            Value::String(crate::time::rfc3339(at)),
        );
    }
}

impl Envelope {
    /// The event's id: a UUIDv7, so ids sort by emit time.
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert_eq!(e.id().get_version_num(), 7);
    /// ```
    pub fn id(&self) -> Uuid {
        self.shared.meta.id
    }

    /// The event type, as emitted.
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert_eq!(e.event_type(), "t");
    /// ```
    pub fn event_type(&self) -> &str {
        self.shared.meta.event_type.as_str()
    }

    /// When the event was emitted (UTC).
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert!(e.emitted_at() <= chrono::Utc::now());
    /// ```
    pub fn emitted_at(&self) -> DateTime<Utc> {
        crate::time::to_chrono(self.shared.meta.emitted_at)
    }

    /// Which attempt this is for the handler receiving it, from 1.
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert_eq!(e.attempt(), 1);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ordering key given at emit, if any.
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert_eq!(e.key(), None);
    /// ```
    pub fn key(&self) -> Option<&str> {
        self.shared.meta.key.as_deref()
    }

    /// The event's data as JSON, with the metadata keys `_event_type` and
    /// `_emitted_at` (RFC 3339, UTC) added, as the seed's handlers expect.
    ///
    /// For a dynamic event this is the emitted object. For a typed event it is
    /// made on first call (typed handlers never need it) and is `null` if the
    /// type cannot be serialized to JSON.
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({"a": 1}));
    /// assert_eq!(e.data()["a"], 1);
    /// assert_eq!(e.data()["_event_type"], "t");
    /// ```
    pub fn data(&self) -> &Value {
        let s = &*self.shared;
        s.json.get_or_init(|| {
            let parsed = match &s.meta.raw {
                Some(raw) => serde_json::from_str(raw),
                None => s.payload.to_json().map(|mut v| {
                    add_metadata(&mut v, s.meta.event_type.as_str(), s.meta.emitted_at);
                    v
                }),
            };
            Box::new(parsed.unwrap_or_else(|e| {
                tracing::error!(event_type = s.meta.event_type.as_str(), event_id = %s.meta.id, "event data is not valid JSON: {e}");
                Value::Null
            }))
        })
    }

    /// The data as JSON text, metadata included, for a dynamic event: what
    /// `emit` encoded. `None` for a typed event (its data was never encoded).
    ///
    /// ```
    /// # let e = tidings::testing::envelope("t", serde_json::json!({"a": 1}));
    /// assert!(e.json_text().unwrap().starts_with(r#"{"a":1,"_event_type":"t""#));
    /// ```
    pub fn json_text(&self) -> Option<&str> {
        self.shared.meta.raw.as_deref()
    }

    /// The typed payload, if this event was published (or checked at emit) as `T`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping { n: u32 }
    /// let e = tidings::testing::typed_envelope(Ping { n: 3 });
    /// assert_eq!(e.payload::<Ping>().unwrap().n, 3);
    /// ```
    pub fn payload<T: 'static>(&self) -> Option<&T> {
        self.shared.payload.as_any()?.downcast_ref()
    }

    /// The payload as `T`: borrowed when the event carries a `T`, otherwise
    /// decoded from [`Envelope::data`]. A decode failure is a permanent
    /// [`HandlerError`]: no retry will fix it.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping { n: u32 }
    /// let e = tidings::testing::envelope("ping", serde_json::json!({"n": 4}));
    /// assert_eq!(e.decode::<Ping>().unwrap().n, 4);
    /// let bad = tidings::testing::envelope("ping", serde_json::json!({"n": "x"}));
    /// assert!(matches!(bad.decode::<Ping>(), Err(e) if !e.is_retryable()));
    /// ```
    pub fn decode<T: DeserializeOwned + 'static>(&self) -> Result<EventRef<'_, T>, HandlerError> {
        if let Some(v) = self.payload::<T>() {
            return Ok(EventRef::Borrowed(v));
        }
        let raw = self
            .json_text()
            .filter(|_| self.shared.json.get().is_none());
        let decoded = match raw {
            Some(raw) => serde_json::from_str(raw),
            None => T::deserialize(self.data()),
        };
        // serde's message quotes the value: the error names the field and
        // what was expected instead (it is logged, and stored with a dead letter).
        decoded.map(EventRef::Owned).map_err(|_| {
            HandlerError::permanent(crate::redact::decode_failure::<T>(raw, || self.data()))
        })
    }

    /// A delivery's first attempt, never marked begun: a fresh event, a replay.
    pub(crate) fn first(shared: Arc<Body>) -> Envelope {
        Envelope {
            shared,
            attempt: 1,
            mark: BeginMark::Never,
        }
    }

    /// The attempt it makes, if that attempt is marked begun in the store.
    pub(crate) fn marked(&self) -> Option<u32> {
        (self.mark == BeginMark::Made).then_some(self.attempt)
    }

    /// A copy for storing beyond the event's life in the bus (a dead letter):
    /// it holds no place in the queue and keeps its data as JSON text.
    pub(crate) fn detached(&self) -> Envelope {
        let mut meta = self.shared.meta.clone();
        if meta.raw.is_none() {
            meta.raw = Some(self.data().to_string().into_boxed_str());
        }
        Envelope {
            shared: Body::new(meta, 0, Dynamic(None)),
            attempt: self.attempt,
            mark: BeginMark::Never,
        }
    }
}

impl std::fmt::Debug for Envelope {
    /// Never prints the payload: it may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id())
            .field("event_type", &self.event_type())
            .field("emitted_at", &self.emitted_at())
            .field("attempt", &self.attempt)
            .field("key", &self.key())
            .finish_non_exhaustive()
    }
}

/// A payload borrowed from the envelope or decoded from its JSON.
/// Dereferences to `T`.
///
/// ```
/// let r = tidings::EventRef::Owned(5u32);
/// assert_eq!(*r + 1, 6);
/// ```
#[derive(Debug)]
pub enum EventRef<'a, T> {
    /// The event carried a `T`.
    Borrowed(&'a T),
    /// The `T` was decoded from JSON.
    Owned(T),
}

impl<T> std::ops::Deref for EventRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            EventRef::Borrowed(v) => v,
            EventRef::Owned(v) => v,
        }
    }
}
