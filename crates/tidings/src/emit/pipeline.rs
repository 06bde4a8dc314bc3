//! The emit pipeline's steps, in order: [`Inner::route`] (disabled,
//! unrouted, shutting down), `prepare_dynamic` / `prepare_typed` (checked,
//! encoded once, a [`Pending`] event built in its final place), then either
//! `try_admit` (a place in the bus, or wait) and [`Inner::dispatch`] (one
//! envelope per handler's mailbox), or, with a store, `stored` (the record
//! to write first) and, on a shared bus, `append_only_record` (written only).
//! The policy around them (wait or not, write then queue) is in the parent
//! module.

use crate::bus::{in_handler, lock, Inner, Route};
use crate::envelope::{AnyPayload, Body, Dynamic, Envelope, Meta, TypeName};
use crate::error::EmitError;
use crate::gate::Refused;
use crate::mailbox::Mailbox;
use crate::receipt::{Receipt, Status};
use crate::shutdown::Abandoned;
use crate::store::{StoredDelivery, StoredEvent};
use crate::{validate, Event, Overflow};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use uuid::Uuid;

/// An event ready to queue, waiting for room. Built in its final place on
/// the heap, so that queueing it moves two pointers, not the event.
pub(crate) struct Pending<'a, P: AnyPayload> {
    route: &'a Route,
    shared: Arc<Body<P>>,
}

pub(crate) enum Step<'a, P: AnyPayload> {
    Done(Receipt),
    Admit(Pending<'a, P>),
}

/// Whether an event got its place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It holds a place: dispatch it.
    Taken,
    /// The bus is full and the caller may wait for room.
    Wait,
}

/// Whether an emit may wait for room.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Never wait.
    Try,
    /// Follow the bus's overflow policy.
    Policy,
}

impl Inner {
    /// The record an outbox transaction writes for an event, or `None` for
    /// one the bus would drop (disabled) or has no handler for (a bus name
    /// of its own): the steps of an emit, less the queueing.
    pub(crate) fn outbox_record(
        &self,
        event_type: &str,
        data: Value,
        key: Option<&str>,
    ) -> Result<Option<StoredEvent>, EmitError> {
        if self.shared_feed.is_some() {
            let record = self.append_only_record(event_type, Ok(data), key.map(str::to_owned))?;
            return Ok(record.ok().map(|(event, _)| event));
        }
        match self.prepare_dynamic(event_type, data, key.map(str::to_owned))? {
            Step::Done(_) => Ok(None),
            Step::Admit(p) => {
                let record = self.stored(&p)?;
                p.route.cells.emitted();
                Ok(Some(record))
            }
        }
    }
    /// Where an event goes: its route, or the receipt of an event the bus
    /// drops (disabled) or has no handler for (unrouted), each counted.
    /// A name without a route is checked before it reaches the counters.
    fn route(&self, event_type: &str, id: Uuid) -> Result<Result<&Route, Receipt>, EmitError> {
        if self.gate.is_closed() {
            return Err(EmitError::ShuttingDown);
        }
        let route = self.routes.get(event_type);
        if route.is_none() {
            validate::event_type(event_type)?;
        }
        if let Some(receipt) = self.dropped(event_type, route, id) {
            return Ok(Err(receipt));
        }
        match route {
            Some(route) => Ok(Ok(route)),
            None => {
                self.unrouted.count(event_type, false);
                Ok(Err(Receipt::new(id, Status::Unrouted, 0)))
            }
        }
    }

    /// The receipt of an event the disabled bus drops (counted), or `None`
    /// while the bus is enabled.
    fn dropped(&self, event_type: &str, route: Option<&Route>, id: Uuid) -> Option<Receipt> {
        if self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        match route {
            Some(r) => r.cells.dropped(),
            None => self.unrouted.count(event_type, true),
        }
        Some(Receipt::new(id, Status::Dropped, 0))
    }

    pub(crate) fn prepare_dynamic(
        &self,
        event_type: &str,
        data: Value,
        key: Option<String>,
    ) -> Result<Step<'_, Dynamic>, EmitError> {
        validate::event_type(event_type)?;
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let (id, at) = crate::id::next();
        let raw = validate::encode(&data, event_type, at, self.max_payload)?;
        let route = match self.route(event_type, id)? {
            Ok(route) => route,
            Err(receipt) => return Ok(Step::Done(receipt)),
        };
        let decoded = route.decode(event_type, &data)?;
        // The caller's value is freed here, on its own thread; handlers share the text.
        drop(data);
        let mut meta = Meta::new(
            id,
            at,
            TypeName::Shared(route.name.clone()),
            key.map(String::into_boxed_str),
        );
        meta.raw = Some(raw);
        Ok(Step::Admit(Pending {
            route,
            shared: Body::new(meta, route.deliveries(), Dynamic(decoded)),
        }))
    }

    pub(crate) fn prepare_typed<T: Event>(
        &self,
        event: T,
        key: Option<String>,
    ) -> Result<Step<'_, crate::envelope::Typed<T>>, EmitError> {
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let (id, at) = crate::id::next();
        let route = match self.route(T::TYPE, id)? {
            Ok(route) => route,
            Err(receipt) => return Ok(Step::Done(receipt)),
        };
        let meta = Meta::new(
            id,
            at,
            TypeName::Static(T::TYPE),
            key.map(String::into_boxed_str),
        );
        Ok(Step::Admit(Pending {
            route,
            shared: Body::new(meta, route.deliveries(), crate::envelope::Typed(event)),
        }))
    }

    /// Takes a place without waiting, or says why not.
    pub(crate) fn try_admit<P: AnyPayload>(
        &self,
        pending: &Pending<'_, P>,
        mode: Mode,
    ) -> Result<Admission, EmitError> {
        match self.gate.try_acquire() {
            Ok(()) => Ok(Admission::Taken),
            Err(Refused::Closed) => Err(EmitError::ShuttingDown),
            Err(Refused::Full) => {
                // Inside a handler an emit never waits: a full bus of handlers all
                // waiting for room would never drain. The handler fails and retries.
                if mode == Mode::Policy && self.overflow == Overflow::Wait && !in_handler() {
                    Ok(Admission::Wait)
                } else {
                    pending.route.cells.dropped();
                    Err(EmitError::QueueFull {
                        capacity: self.gate.capacity(),
                    })
                }
            }
        }
    }

    pub(crate) async fn admit_waiting(&self) -> Result<(), EmitError> {
        self.gate
            .acquire()
            .await
            .map_err(|_| EmitError::ShuttingDown)
    }

    /// Queues the event, which holds a place, for each of its handlers.
    pub(crate) fn dispatch<P: AnyPayload>(&self, p: Pending<'_, P>) -> Receipt {
        let id = p.shared.meta.id;
        let shared: Arc<Body> = p.shared;
        let route = p.route;
        route.cells.emitted();
        self.tail.tell(|| crate::tail::Tiding::Emitted {
            event_type: shared.meta.event_type.as_str().to_owned(),
            event_id: id,
            key: shared.meta.key.as_deref().map(str::to_owned),
        });
        let n = route.mailboxes.len();
        if let Some((last, rest)) = route.mailboxes.split_last() {
            for mailbox in rest {
                self.send(mailbox, Envelope::first(shared.clone()));
            }
            self.send(last, Envelope::first(shared));
        }
        Receipt::new(id, Status::Queued, n)
    }

    /// An event for a shared-delivery store ([`Delivery::Shared`](crate::store::Delivery::Shared)):
    /// checked and encoded as any emit, then only written; the store's
    /// consumers decide who handles it, so no local handler is needed. `Ok`
    /// holds the record and how many handlers of its type this bus has; `Err`
    /// the receipt of an event the disabled bus drops.
    pub(crate) fn append_only_record(
        &self,
        event_type: &str,
        data: Result<Value, serde_json::Error>,
        key: Option<String>,
    ) -> Result<Result<(StoredEvent, usize), Receipt>, EmitError> {
        validate::event_type(event_type)?;
        if let Some(k) = &key {
            validate::key(k)?;
        }
        let data = data.map_err(|e| EmitError::InvalidPayload {
            reason: e.to_string(),
        })?;
        if self.gate.is_closed() {
            return Err(EmitError::ShuttingDown);
        }
        let (id, at) = crate::id::next();
        let raw = validate::encode(&data, event_type, at, self.max_payload)?;
        let route = self.routes.get(event_type);
        if let Some(receipt) = self.dropped(event_type, route, id) {
            return Ok(Err(receipt));
        }
        let mut local = 0;
        if let Some(route) = route {
            route.decode(event_type, &data)?;
            route.cells.emitted();
            local = route.mailboxes.len();
        }
        let record = StoredEvent {
            id,
            event_type: event_type.to_owned(),
            key,
            emitted_at: at,
            data: raw.into_string(),
            deliveries: Vec::new(),
        };
        Ok(Ok((record, local)))
    }

    /// The event as the store keeps it: its JSON text (encoded now for a
    /// typed event) and one delivery per handler.
    pub(crate) fn stored<P: AnyPayload>(
        &self,
        p: &Pending<'_, P>,
    ) -> Result<StoredEvent, EmitError> {
        let meta = &p.shared.meta;
        let data = match &meta.raw {
            Some(raw) => raw.to_string(),
            None => {
                let value = p
                    .shared
                    .payload
                    .to_json()
                    .map_err(|e| EmitError::InvalidPayload {
                        reason: e.to_string(),
                    })?;
                let text = validate::encode(
                    &value,
                    meta.event_type.as_str(),
                    meta.emitted_at,
                    self.max_payload,
                )?;
                text.into_string()
            }
        };
        Ok(StoredEvent {
            id: meta.id,
            event_type: meta.event_type.as_str().to_owned(),
            key: meta.key.as_deref().map(str::to_owned),
            emitted_at: meta.emitted_at,
            data,
            deliveries: p
                .route
                .mailboxes
                .iter()
                .map(|m| StoredDelivery::new(m.handler.to_string(), 1))
                .collect(),
        })
    }

    /// Queues one delivery. One that finds its worker gone (an emit that
    /// took its place just before a shutdown's deadline) is settled here, so
    /// that its place is not lost, and named in the shutdown's report.
    pub(crate) fn send(&self, mailbox: &Mailbox, env: Envelope) {
        if let Err(env) = mailbox.send(env) {
            lock(&self.late).push(Abandoned {
                event_id: env.id(),
                handler: mailbox.handler.to_string(),
            });
            if env.shared.settle() {
                self.gate.release(1);
            }
        }
    }
}

impl<'a, P: AnyPayload> Pending<'a, P> {
    /// The route's name and the event: what a task that outlives the borrow
    /// of the bus needs to make the `Pending` again.
    pub(crate) fn into_parts(self) -> (Arc<str>, Arc<Body<P>>) {
        (self.route.name.clone(), self.shared)
    }

    pub(crate) fn from_parts(inner: &'a Inner, name: &str, shared: Arc<Body<P>>) -> Option<Self> {
        let route = inner.routes.get(name)?;
        Some(Self { route, shared })
    }
}

impl Route {
    /// Deliveries per event: one per handler.
    fn deliveries(&self) -> u32 {
        u32::try_from(self.mailboxes.len()).unwrap_or(u32::MAX)
    }

    /// A dynamic payload decoded as each typed handler's payload type: the
    /// first decoded value (it rides along for them), or the first mismatch.
    fn decode(
        &self,
        event_type: &str,
        data: &Value,
    ) -> Result<Option<Box<dyn AnyPayload>>, EmitError> {
        let mut decoded = None;
        for pt in &self.payload_types {
            match (pt.decode)(data) {
                Ok(v) => {
                    decoded.get_or_insert(v);
                }
                Err((field, reason)) => {
                    return Err(EmitError::PayloadMismatch {
                        event_type: event_type.to_owned(),
                        type_name: pt.type_name(),
                        field,
                        reason,
                    })
                }
            }
        }
        Ok(decoded)
    }
}
