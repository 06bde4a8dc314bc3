//! [`EventHandler`]: the seed's `BaseEventHandler`, one type per event handler.

use crate::{Envelope, HandlerError, HandlerOptions, PayloadType};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::ReusableBoxFuture;

/// Handles the events of one type, in the background.
///
/// The seed's `BaseEventHandler`: an `event_type` and an async `handle`.
/// Implement it with a plain `async fn` (no attribute macro needed), then
/// register the type with [`crate::register_handler!`] beside the impl, or add it
/// with [`crate::EventBusBuilder::handler`].
///
/// Each call is isolated: an error, a panic or a timeout counts against this
/// handler alone and never reaches the caller of `emit` or another handler.
/// A retryable error (any `?`) is tried again with backoff up to
/// [`HandlerOptions::max_attempts`]; then the delivery becomes a dead letter.
/// Handlers may run more than once for the same event (after a failure, and on
/// durable backends after a crash): make them idempotent on [`Envelope::id`].
///
/// ```
/// use tidings::{Envelope, EventHandler, HandlerError};
///
/// #[derive(Default)]
/// struct MyEventHandler;
///
/// impl EventHandler for MyEventHandler {
///     fn event_type(&self) -> &str {
///         "my_event"
///     }
///
///     async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
///         let Some(user_id) = event.data()["user_id"].as_u64() else {
///             return Err(HandlerError::permanent("missing required field user_id"));
///         };
///         tracing::info!("processing my_event for user {user_id}");
///         Ok(())
///     }
/// }
/// tidings::register_handler!(MyEventHandler);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event handler",
    label = "implement `tidings::EventHandler` for `{Self}`",
    note = "an event handler needs `fn event_type(&self) -> &str` and `async fn handle(&self, event: &Envelope) -> Result<(), HandlerError>`"
)]
pub trait EventHandler: Send + Sync + 'static {
    /// The event type this handler receives.
    fn event_type(&self) -> &str;

    /// Handles one event. See the trait docs for what an error means.
    fn handle(&self, event: &Envelope) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The handler's name in logs, stats and dead letters; unique per bus.
    /// By default the type's name without its module path.
    fn name(&self) -> &str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// Attempts, backoff, timeout and concurrency for this handler.
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
    }

    /// The typed payload this handler expects, if any. When set, a dynamic
    /// `emit` of this event type is decoded into it at emit time, so that a
    /// wrong payload fails the emit (with the field named) instead of failing
    /// later in the background. [`macro@crate::handler`] sets it for typed handlers.
    fn payload_type(&self) -> Option<PayloadType> {
        None
    }
}

/// `a::b::Name<c::D>` becomes `Name<c::D>`.
pub(crate) fn short_type_name(full: &'static str) -> &'static str {
    let head_end = full.find('<').unwrap_or(full.len());
    let start = full[..head_end].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

/// The object-safe face of [`EventHandler`] that the dispatcher calls.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn event_type(&self) -> &str;
    fn name(&self) -> &str;
    fn options(&self) -> HandlerOptions;
    fn payload_type(&self) -> Option<PayloadType>;
    fn call(self: Arc<Self>, event: Envelope) -> BoxFuture<'static, Result<(), HandlerError>>;
    /// As `call`, but into a reusable allocation: a worker's calls of one
    /// handler have one future type, so the hot path allocates nothing here.
    ///
    /// The future borrows the handler (no reference count to raise and drop
    /// per delivery): the worker that owns the handler owns the slot too.
    fn call_in<'a>(
        &'a self,
        event: Envelope,
        slot: &mut ReusableBoxFuture<'a, Result<(), HandlerError>>,
    );
}

impl<H: EventHandler> ErasedHandler for H {
    fn event_type(&self) -> &str {
        EventHandler::event_type(self)
    }
    fn name(&self) -> &str {
        EventHandler::name(self)
    }
    fn options(&self) -> HandlerOptions {
        EventHandler::options(self)
    }
    fn payload_type(&self) -> Option<PayloadType> {
        EventHandler::payload_type(self)
    }
    fn call(self: Arc<Self>, event: Envelope) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(async move { self.handle(&event).await })
    }
    fn call_in<'a>(
        &'a self,
        event: Envelope,
        slot: &mut ReusableBoxFuture<'a, Result<(), HandlerError>>,
    ) {
        slot.set(async move { self.handle(&event).await });
    }
}

/// A handler ready to be added to a bus. Made by [`BoxedHandler::new`], by
/// [`crate::register_handler!`], and by `EventBusBuilder::handler`.
///
/// ```
/// # use tidings::{Envelope, EventHandler, HandlerError};
/// # struct H;
/// # impl EventHandler for H {
/// #     fn event_type(&self) -> &str { "t" }
/// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// let h = tidings::BoxedHandler::new(H);
/// assert_eq!(h.name(), "H");
/// ```
#[derive(Clone)]
pub struct BoxedHandler(pub(crate) Arc<dyn ErasedHandler>);

impl BoxedHandler {
    /// Wraps a handler.
    ///
    /// ```
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// # struct Audit;
    /// # impl EventHandler for Audit {
    /// #     fn event_type(&self) -> &str { "login" }
    /// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let h = tidings::BoxedHandler::new(Audit);
    /// assert_eq!((h.name(), h.event_type()), ("Audit", "login"));
    /// ```
    pub fn new<H: EventHandler>(handler: H) -> Self {
        Self(Arc::new(handler))
    }

    /// The handler's name.
    ///
    /// ```
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// # struct Audit;
    /// # impl EventHandler for Audit {
    /// #     fn event_type(&self) -> &str { "login" }
    /// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let h = tidings::BoxedHandler::new(Audit);
    /// assert_eq!((h.name(), h.event_type()), ("Audit", "login"));
    /// ```
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The handler's event type.
    ///
    /// ```
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// # struct Audit;
    /// # impl EventHandler for Audit {
    /// #     fn event_type(&self) -> &str { "login" }
    /// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let h = tidings::BoxedHandler::new(Audit);
    /// assert_eq!((h.name(), h.event_type()), ("Audit", "login"));
    /// ```
    pub fn event_type(&self) -> &str {
        self.0.event_type()
    }

    /// Runs the handler once on `event`, outside any bus: no retry, timeout
    /// or panic catching. For tests (a redelivery is two calls with one envelope).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use tidings::{Envelope, EventHandler, HandlerError};
    /// # struct H;
    /// # impl EventHandler for H {
    /// #     fn event_type(&self) -> &str { "t" }
    /// #     async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let h = tidings::BoxedHandler::new(H);
    /// let e = tidings::testing::envelope("t", serde_json::json!({}));
    /// assert!(h.handle(&e).await.is_ok());
    /// # }
    /// ```
    pub async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0.clone().call(event.clone()).await
    }
}

impl std::fmt::Debug for BoxedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxedHandler")
            .field("name", &self.name())
            .field("event_type", &self.event_type())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_names() {
        assert_eq!(super::short_type_name("a::b::Name"), "Name");
        assert_eq!(super::short_type_name("Name"), "Name");
        assert_eq!(super::short_type_name("a::Name<b::C>"), "Name<b::C>");
    }
}
