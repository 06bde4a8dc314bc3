//! Typed events: [`Event`], a payload type with a fixed event type name.

use crate::envelope::{AnyPayload, Typed};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::any::TypeId;

/// A typed event payload: a Rust type bound to one event type name.
///
/// Publishing a typed event with [`crate::EventBus::publish`] never touches
/// JSON in memory: typed handlers receive `&T` as it was published. A dynamic
/// [`crate::EventBus::emit`] of the same type name is checked against `T` at
/// emit time, so a wrong payload fails the emit with the field named.
///
/// Derive it with `#[derive(tidings::Event)]` and `#[event(type = "...")]`, or
/// implement it by hand:
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, tidings::Event)]
/// #[event(type = "order_created")]
/// struct OrderCreated {
///     order_id: u64,
///     user_id: u64,
///     total: f64,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Shipped { order_id: u64 }
/// impl tidings::Event for Shipped {
///     const TYPE: &'static str = "order_shipped";
/// }
/// assert_eq!(<OrderCreated as tidings::Event>::TYPE, "order_created");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tidings event",
    label = "add `#[derive(tidings::Event)]` with `#[event(type = \"...\")]`",
    note = "an event type is `Serialize + DeserializeOwned + Send + Sync + 'static` with a `const TYPE: &str`"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event type name (1 to 128 characters of `A-Za-z0-9_.:-`).
    const TYPE: &'static str;
}

/// Decodes a payload, or names the field (path) that failed and why.
pub(crate) type Decoder = fn(&Value) -> Result<Box<dyn AnyPayload>, (String, String)>;

/// The Rust type a handler expects for its event type, so that the bus can
/// check dynamic emits against it. See [`crate::EventHandler::payload_type`].
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, tidings::Event)]
/// # #[event(type = "ping")]
/// # struct Ping { n: u32 }
/// let p = tidings::PayloadType::of::<Ping>();
/// assert!(p.type_name().ends_with("Ping"));
/// ```
#[derive(Clone, Copy)]
pub struct PayloadType {
    pub(crate) id: TypeId,
    name: &'static str,
    pub(crate) decode: Decoder,
}

impl PayloadType {
    /// The payload type of event `T`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping {}
    /// let p = tidings::PayloadType::of::<Ping>();
    /// assert!(p.type_name().contains("Ping"));
    /// ```
    pub fn of<T: Event>() -> Self {
        Self {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
            decode: decode::<T>,
        }
    }

    /// The Rust type's name.
    ///
    /// ```
    /// let p = tidings::PayloadType::of::<Ping>();
    /// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping {}
    /// assert!(p.type_name().ends_with("Ping"));
    /// ```
    pub fn type_name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for PayloadType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PayloadType").field(&self.name).finish()
    }
}

fn decode<T: Event>(value: &Value) -> Result<Box<dyn AnyPayload>, (String, String)> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Ok(Box::new(Typed(v))),
        Err(e) => Err(crate::redact::told(&e)),
    }
}
