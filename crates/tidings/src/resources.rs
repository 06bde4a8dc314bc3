//! [`Resources`]: values (a pool, a client) that handler constructors take from the builder.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Values given to [`crate::EventBusBuilder::resource`], looked up by type.
///
/// ```
/// let mut res = tidings::Resources::default();
/// res.insert(String::from("postgres://..."));
/// assert_eq!(res.get::<String>().unwrap(), "postgres://...");
/// assert!(res.get::<u32>().is_err());
/// ```
#[derive(Clone, Default)]
pub struct Resources {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Resources {
    /// Adds a value, replacing one of the same type.
    ///
    /// ```
    /// let mut res = tidings::Resources::default();
    /// res.insert(42u32);
    /// assert_eq!(res.get::<u32>().unwrap(), 42);
    /// ```
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// A clone of the value of type `T`.
    ///
    /// # Errors
    /// [`MissingResource`] naming `T` when no such value was given.
    ///
    /// ```
    /// let mut res = tidings::Resources::default();
    /// res.insert(42u32);
    /// assert_eq!(res.get::<u32>().unwrap(), 42);
    /// ```
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingResource> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
            .ok_or(MissingResource {
                type_name: std::any::type_name::<T>(),
            })
    }
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("len", &self.map.len())
            .finish()
    }
}

/// A handler constructor asked for a resource the builder was not given.
///
/// ```
/// let err = tidings::Resources::default().get::<u8>().unwrap_err();
/// assert_eq!(err.to_string(), "missing resource u8");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("missing resource {type_name}")]
pub struct MissingResource {
    /// The type that was asked for.
    pub type_name: &'static str,
}
