//! Helpers for testing handlers without a bus.

use crate::envelope::{Body, Dynamic, Envelope, Meta, TypeName, Typed};
use crate::{BoxedHandler, BuildError, Event, Resources};
use serde_json::Value;

/// An envelope of a dynamic event, as a handler would receive it (attempt 1).
///
/// # Panics
/// If `data` is not a JSON object.
///
/// ```
/// let e = tidings::testing::envelope("my_event", serde_json::json!({"user_id": 1}));
/// assert_eq!(e.data()["user_id"], 1);
/// ```
pub fn envelope(event_type: &str, data: Value) -> Envelope {
    let (id, at) = crate::id::next();
    let mut meta = Meta::new(id, at, TypeName::Shared(event_type.into()), None);
    meta.raw =
        Some(crate::validate::encode(&data, event_type, at, usize::MAX).expect("a JSON object"));
    Envelope::first(Body::new(meta, 0, Dynamic(None)))
}

/// An envelope of a typed event, as a typed handler would receive it.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
/// # #[event(type = "ping")]
/// # struct Ping { n: u8 }
/// let e = tidings::testing::typed_envelope(Ping { n: 1 });
/// assert_eq!(e.event_type(), "ping");
/// ```
pub fn typed_envelope<T: Event>(event: T) -> Envelope {
    let (id, at) = crate::id::next();
    let meta = Meta::new(id, at, TypeName::Static(T::TYPE), None);
    Envelope::first(Body::new(meta, 0, Typed(event)))
}

/// Every registered handler (what a discovering bus would run), built with
/// `resources`, to call directly with [`BoxedHandler::handle`].
///
/// # Errors
/// [`BuildError::MissingResource`] as `build()` would.
///
/// ```
/// let handlers = tidings::testing::discovered_handlers(&tidings::Resources::default()).unwrap();
/// assert!(handlers.iter().all(|h| tidings::is_valid_event_type(h.event_type())));
/// ```
pub fn discovered_handlers(resources: &Resources) -> Result<Vec<BoxedHandler>, BuildError> {
    crate::registry::registered()
        .map(|reg| reg.instantiate(resources))
        .collect()
}
