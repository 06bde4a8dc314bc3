//! [`Emit`] and [`Publish`]: an event on its way into the bus. Await them.

mod pipeline;

use crate::bus::Inner;
use crate::envelope::{AnyPayload, Body};
use crate::{EmitError, Event, EventBus, Receipt, Store, StoreError};
use futures_util::future::{BoxFuture, Either, Ready};
pub(crate) use pipeline::{Admission, Mode, Pending, Step};
use serde_json::Value;
use std::future::IntoFuture;
use std::sync::Arc;

/// The future of [`Emit`] and [`Publish`]: ready at once unless it must wait for room.
pub type EmitFuture<'a> =
    Either<Ready<Result<Receipt, EmitError>>, BoxFuture<'a, Result<Receipt, EmitError>>>;

/// A dynamic event on its way: set a key if you like, then `.await` it.
/// Made by [`EventBus::emit`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// bus.emit("user_updated", serde_json::json!({"id": 1})).key("user-1").await.unwrap();
/// # }
/// ```
#[must_use = "an emit does nothing until it is awaited (or `try_emit` is called)"]
pub struct Emit<'a> {
    bus: &'a EventBus,
    event_type: &'a str,
    data: Value,
    key: Option<String>,
}

impl<'a> Emit<'a> {
    pub(crate) fn new(bus: &'a EventBus, event_type: &'a str, data: Value) -> Self {
        Self {
            bus,
            event_type,
            data,
            key: None,
        }
    }

    /// Sets the ordering key: events with the same key are handled one at a
    /// time, in emit order, by each handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let r = bus.emit("t", serde_json::json!({})).key("user-1").await;
    /// assert!(r.is_ok());
    /// # }
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Emits without waiting; a full queue is [`EmitError::QueueFull`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.emit("t", serde_json::json!({})).key("k").try_emit().is_ok());
    /// # }
    /// ```
    pub fn try_emit(self) -> Result<Receipt, EmitError> {
        let inner = &*self.bus.inner;
        queue_now(
            inner,
            inner.prepare_dynamic(self.event_type, self.data, self.key),
        )
    }
}

impl<'a> IntoFuture for Emit<'a> {
    type Output = Result<Receipt, EmitError>;
    type IntoFuture = EmitFuture<'a>;

    fn into_future(self) -> Self::IntoFuture {
        let inner: &'a Arc<Inner> = &self.bus.inner;
        if inner.shared_feed.is_some() {
            return append_only(inner, self.event_type, Ok(self.data), self.key);
        }
        queue(
            inner,
            inner.prepare_dynamic(self.event_type, self.data, self.key),
        )
    }
}

/// A typed event on its way: set a key if you like, then `.await` it.
/// Made by [`EventBus::publish`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
/// #[event(type = "cart_updated")]
/// struct CartUpdated { cart: u64 }
///
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// bus.publish(CartUpdated { cart: 3 }).key("cart-3").await.unwrap();
/// # }
/// ```
#[must_use = "a publish does nothing until it is awaited (or `try_publish` is called)"]
pub struct Publish<'a, T> {
    bus: &'a EventBus,
    event: T,
    key: Option<String>,
}

impl<'a, T: Event> Publish<'a, T> {
    pub(crate) fn new(bus: &'a EventBus, event: T) -> Self {
        Self {
            bus,
            event,
            key: None,
        }
    }

    /// Sets the ordering key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping {}
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.publish(Ping {}).key("k").await.is_ok());
    /// # }
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Publishes without waiting; a full queue is [`EmitError::QueueFull`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
    /// # #[event(type = "ping")]
    /// # struct Ping {}
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// assert!(bus.publish(Ping {}).key("k").try_publish().is_ok());
    /// # }
    /// ```
    pub fn try_publish(self) -> Result<Receipt, EmitError> {
        let inner = &*self.bus.inner;
        queue_now(inner, inner.prepare_typed(self.event, self.key))
    }
}

impl<'a, T: Event> IntoFuture for Publish<'a, T> {
    type Output = Result<Receipt, EmitError>;
    type IntoFuture = EmitFuture<'a>;

    fn into_future(self) -> Self::IntoFuture {
        let inner: &'a Arc<Inner> = &self.bus.inner;
        if inner.shared_feed.is_some() {
            return append_only(inner, T::TYPE, serde_json::to_value(&self.event), self.key);
        }
        queue(inner, inner.prepare_typed(self.event, self.key))
    }
}

fn ready<'a>(r: Result<Receipt, EmitError>) -> EmitFuture<'a> {
    Either::Left(futures_util::future::ready(r))
}

/// Queues a prepared event now, or says why not (never waits).
fn queue_now<P: AnyPayload>(
    inner: &Inner,
    step: Result<Step<'_, P>, EmitError>,
) -> Result<Receipt, EmitError> {
    // Even for a type without a local handler: on a shared bus such an
    // event is written for other processes, which needs an await.
    if inner.shared_feed.is_some() {
        return Err(EmitError::MustAwait);
    }
    let p = match step? {
        Step::Done(receipt) => return Ok(receipt),
        Step::Admit(p) => p,
    };
    if inner.store.is_some() {
        return Err(EmitError::MustAwait);
    }
    match inner.try_admit(&p, Mode::Try)? {
        Admission::Taken => Ok(inner.dispatch(p)),
        Admission::Wait => Err(EmitError::QueueFull {
            capacity: inner.gate.capacity(),
        }),
    }
}

/// Queues a prepared event, waiting for room when the overflow policy says
/// so: ready at once unless it has to wait.
fn queue<'a, P: AnyPayload>(
    inner: &'a Arc<Inner>,
    step: Result<Step<'a, P>, EmitError>,
) -> EmitFuture<'a> {
    let p = match step {
        Err(e) => return ready(Err(e)),
        Ok(Step::Done(receipt)) => return ready(Ok(receipt)),
        Ok(Step::Admit(p)) => p,
    };
    if let Some(store) = &inner.store {
        return Either::Right(Box::pin(durable(inner, store, p)));
    }
    match inner.try_admit(&p, Mode::Policy) {
        Err(e) => ready(Err(e)),
        Ok(Admission::Taken) => ready(Ok(inner.dispatch(p))),
        Ok(Admission::Wait) => Either::Right(Box::pin(async move {
            inner.admit_waiting().await?;
            Ok(inner.dispatch(p))
        })),
    }
}

/// Emits on a bus whose store shares deliveries between processes: writes
/// the event and returns; it comes back to a handler (here or in another
/// process) through the store's consumers, so it takes no place here.
fn append_only<'a>(
    inner: &'a Arc<Inner>,
    event_type: &'a str,
    data: Result<Value, serde_json::Error>,
    key: Option<String>,
) -> EmitFuture<'a> {
    let (record, local) = match inner.append_only_record(event_type, data, key) {
        Err(e) => return ready(Err(e)),
        Ok(Err(receipt)) => return ready(Ok(receipt)),
        Ok(Ok(made)) => made,
    };
    let Some(store) = &inner.store else {
        return ready(Err(EmitError::ShuttingDown));
    };
    let id = record.id;
    // What the tail is told once the event is written (made, and the tail
    // held, only while somebody listens).
    let tell = inner.tail.listening().then(|| {
        let tiding = crate::tail::Tiding::Emitted {
            event_type: record.event_type.clone(),
            event_id: id,
            key: record.key.clone(),
        };
        (inner.tail.clone(), tiding)
    });
    let write = store.append(record);
    Either::Right(Box::pin(async move {
        write.await.map_err(EmitError::from)?;
        if let Some((tail, tiding)) = tell {
            tail.tell(|| tiding);
        }
        Ok(Receipt::new(id, crate::Status::Queued, local))
    }))
}

/// Queues an event on a bus with a store: takes a place (waiting if the
/// policy says so), writes the event, then queues it.
async fn durable<P: AnyPayload>(
    inner: &Arc<Inner>,
    store: &Arc<dyn Store>,
    p: Pending<'_, P>,
) -> Result<Receipt, EmitError> {
    let record = inner.stored(&p)?;
    if inner.try_admit(&p, Mode::Policy)? == Admission::Wait {
        inner.admit_waiting().await?;
    }
    let (name, shared) = p.into_parts();
    Writing {
        owner: inner.clone(),
        name,
        shared: Some(shared),
        write: Some(store.append(record)),
    }
    .finish()
    .await
}

/// An event being written, which holds a place: queued once written. If it
/// is dropped first (its emit was cancelled), a task finishes the job, so
/// that a written event is delivered in this process, not only after a
/// restart, and its place is never lost.
struct Writing<P: AnyPayload> {
    owner: Arc<Inner>,
    name: Arc<str>,
    shared: Option<Arc<Body<P>>>,
    write: Option<BoxFuture<'static, Result<(), StoreError>>>,
}

impl<P: AnyPayload> Writing<P> {
    async fn finish(mut self) -> Result<Receipt, EmitError> {
        let written = match self.write.as_mut() {
            Some(write) => write.await,
            None => Err(StoreError::Closed),
        };
        self.write = None;
        conclude(&self.owner, &self.name, self.shared.take(), written)
    }
}

impl<P: AnyPayload> Drop for Writing<P> {
    fn drop(&mut self) {
        let (Some(write), Some(shared)) = (self.write.take(), self.shared.take()) else {
            return;
        };
        let owner = self.owner.clone();
        let name = self.name.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = conclude(&owner, &name, Some(shared), write.await);
                });
            }
            // No runtime left to finish on: a written event is delivered
            // when the store is next opened.
            Err(_) => owner.gate.release(1),
        }
    }
}

/// Queues a written event, or frees its place if the write failed.
fn conclude<P: AnyPayload>(
    inner: &Inner,
    name: &str,
    shared: Option<Arc<Body<P>>>,
    written: Result<(), StoreError>,
) -> Result<Receipt, EmitError> {
    let pending = shared.and_then(|s| Pending::from_parts(inner, name, s));
    match (written, pending) {
        (Ok(()), Some(p)) => Ok(inner.dispatch(p)),
        (Err(e), _) => {
            inner.gate.release(1);
            Err(EmitError::from(e))
        }
        // Routes never change after build: not reached.
        (Ok(()), None) => {
            inner.gate.release(1);
            Err(EmitError::ShuttingDown)
        }
    }
}
