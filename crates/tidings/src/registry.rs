//! Automatic registration: a handler declared anywhere in the program is found
//! at build time, the seed's "create a file, it is discovered".
//!
//! Registration happens at link time (the `inventory` crate): no list to keep,
//! no start-up scan. Order of discovery is unspecified. A handler in a library
//! crate is only linked, and so only discovered, if the program uses something
//! from that crate.

use crate::resources::MissingResource;
use crate::{BoxedHandler, BuildError, Resources};

/// One registered handler: what [`crate::register_handler!`] submits. Not built by hand.
#[doc(hidden)]
pub struct HandlerRegistration {
    pub(crate) site: &'static str,
    pub(crate) type_name: fn() -> &'static str,
    pub(crate) build: fn(&Resources) -> Result<BoxedHandler, MissingResource>,
}

impl HandlerRegistration {
    #[doc(hidden)]
    pub const fn __new(
        site: &'static str,
        type_name: fn() -> &'static str,
        build: fn(&Resources) -> Result<BoxedHandler, MissingResource>,
    ) -> Self {
        Self {
            site,
            type_name,
            build,
        }
    }
}

impl HandlerRegistration {
    /// `my_crate::MyHandler registered at src/my_handler.rs:12`.
    pub(crate) fn label(&self) -> String {
        format!("{} registered at {}", (self.type_name)(), self.site)
    }

    /// Builds the handler from `resources`, or names the handler and the missing resource.
    pub(crate) fn instantiate(&self, resources: &Resources) -> Result<BoxedHandler, BuildError> {
        (self.build)(resources).map_err(|missing| BuildError::MissingResource {
            handler: self.label(),
            resource: missing.type_name,
        })
    }
}

inventory::collect!(HandlerRegistration);

pub(crate) fn registered() -> impl Iterator<Item = &'static HandlerRegistration> {
    inventory::iter::<HandlerRegistration>.into_iter()
}

/// Registers a handler type so that every bus built with discovery (the
/// default, and [`crate::event_bus`]) runs it. Put it beside the impl.
///
/// `register_handler!(MyHandler)` builds the handler with `Default`.
/// `register_handler!(MyHandler, MyHandler::new)` builds it with a constructor
/// `fn(&Resources) -> Result<MyHandler, MissingResource>` that takes what it
/// needs (a database pool, a client) from the builder's resources.
///
/// ```
/// use tidings::{Envelope, EventHandler, HandlerError, MissingResource, Resources};
///
/// #[derive(Clone)]
/// struct Mailer { from: String }
///
/// struct Welcome { mailer: Mailer }
/// impl Welcome {
///     fn new(res: &Resources) -> Result<Self, MissingResource> {
///         Ok(Self { mailer: res.get::<Mailer>()? })
///     }
/// }
/// impl EventHandler for Welcome {
///     fn event_type(&self) -> &str { "user_signed_up" }
///     async fn handle(&self, _event: &Envelope) -> Result<(), HandlerError> {
///         let _ = &self.mailer.from;
///         Ok(())
///     }
/// }
/// tidings::register_handler!(Welcome, Welcome::new);
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder()
///     .resource(Mailer { from: "hi@example.com".into() })
///     .build()
///     .unwrap();
/// assert_eq!(bus.handler_count(Some("user_signed_up")), 1);
/// # }
/// ```
#[macro_export]
macro_rules! register_handler {
    ($ty:ty) => {
        $crate::__private::inventory::submit! {
            $crate::__private::HandlerRegistration::__new(
                ::core::concat!(::core::file!(), ":", ::core::line!()),
                ::core::any::type_name::<$ty>,
                |_resources| ::core::result::Result::Ok($crate::BoxedHandler::new(
                    <$ty as ::core::default::Default>::default(),
                )),
            )
        }
    };
    ($ty:ty, $ctor:expr) => {
        $crate::__private::inventory::submit! {
            $crate::__private::HandlerRegistration::__new(
                ::core::concat!(::core::file!(), ":", ::core::line!()),
                ::core::any::type_name::<$ty>,
                |resources| {
                    let handler: $ty = ($ctor)(resources)?;
                    ::core::result::Result::Ok($crate::BoxedHandler::new(handler))
                },
            )
        }
    };
}
