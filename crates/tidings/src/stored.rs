//! Where an event a store hands back becomes deliveries: at start, what
//! the store still holds ([`restore`]: pending deliveries queued, oldest
//! event first, at the attempt each had reached, before any new event; dead
//! letters listed again), and while the bus runs, what the relay claims
//! ([`queue_stored`], the same step).
//!
//! The store's content is checked as if it were user input: an event whose
//! type or key is not valid, or whose handler no longer exists, is left in the
//! store untouched and named in a warning (never its data).

use crate::bus::Inner;
use crate::dead_letter::DeadLetter;
use crate::envelope::{BeginMark, Body, Dynamic, Envelope, Meta, TypeName};
use crate::store::{Claim, Recovered, StoredEvent};
use crate::validate;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Queues what was pending and lists the dead letters. Returns how many
/// deliveries were queued.
pub(crate) fn restore(inner: &Inner, recovered: Recovered) -> usize {
    let mut queued = 0;
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    for event in recovered.events {
        queued += queue_stored(inner, event, &mut left, Place::TakeOver);
    }
    warn_left(&left);
    for letter in recovered.dead_letters {
        let Some(meta) = meta_of(inner, &letter.event) else {
            continue;
        };
        inner.dead.restore(DeadLetter {
            id: 0,
            handler: letter.handler,
            event: Envelope {
                shared: Body::new(meta, 0, Dynamic(None)),
                attempt: letter.attempts,
                mark: BeginMark::Never,
            },
            // Read back as untrusted input, as all the store holds.
            error: crate::redact::one_line(&letter.error, crate::redact::MAX_ERROR_LEN),
            attempts: letter.attempts,
            failed_at: crate::time::to_chrono(letter.failed_at),
        });
    }
    if queued > 0 {
        tracing::info!(
            deliveries = queued,
            "recovered pending deliveries from the store"
        );
    }
    queued
}

/// Names, in a warning, the deliveries this bus cannot make (never their data).
pub(crate) fn warn_left(left: &BTreeMap<String, usize>) {
    for (handler, n) in left {
        tracing::warn!(
            handler = handler.as_str(),
            deliveries = n,
            "the store holds deliveries this bus cannot make (no such handler for that event type, or an invalid type or key); they stay in the store"
        );
    }
}

/// Whether the event's place in the bus is to be taken (whatever the
/// capacity: recovered events are already accepted) or is already held (the
/// relay waited for room), and then freed if nothing is queued.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    TakeOver,
    Held,
}

/// Queues the deliveries of one stored event that this bus can make;
/// returns how many. The others are counted in `left`.
pub(crate) fn queue_stored(
    inner: &Inner,
    event: StoredEvent,
    left: &mut BTreeMap<String, usize>,
    place: Place,
) -> usize {
    let Some(meta) = meta_of(inner, &event) else {
        for d in event.deliveries {
            *left.entry(d.handler).or_default() += 1;
        }
        if place == Place::Held {
            inner.gate.release(1);
        }
        return 0;
    };
    let mut targets = Vec::with_capacity(event.deliveries.len());
    for d in event.deliveries {
        let slot = inner
            .slots
            .iter()
            .find(|s| *s.name == *d.handler && *s.event_type == *event.event_type);
        match slot {
            Some(slot) => targets.push((slot, d.attempt.max(1), BeginMark::of(d.begun), d.claim)),
            None => *left.entry(d.handler).or_default() += 1,
        }
    }
    if targets.is_empty() {
        if place == Place::Held {
            inner.gate.release(1);
        }
        return 0;
    }
    let n = u32::try_from(targets.len()).unwrap_or(u32::MAX);
    let claims = targets
        .iter()
        .any(|t| t.3 != Claim::NONE)
        .then(|| Box::new(targets.iter().map(|t| (t.0.name.clone(), t.3)).collect()));
    let shared: Arc<Body> = Body::claimed(meta, n, Dynamic(None), claims);
    if place == Place::TakeOver {
        inner.gate.take_over(1);
    }
    for &(slot, attempt, mark, _) in &targets {
        inner.send(
            &slot.mailbox,
            Envelope {
                shared: shared.clone(),
                attempt,
                mark,
            },
        );
    }
    targets.len()
}

/// The event's metadata, if its type and key are valid.
fn meta_of(inner: &Inner, event: &StoredEvent) -> Option<Meta> {
    if validate::event_type(&event.event_type).is_err() {
        return None;
    }
    if let Some(k) = &event.key {
        validate::key(k).ok()?;
    }
    let name = match inner.routes.get(event.event_type.as_str()) {
        Some(route) => TypeName::Shared(route.name.clone()),
        None => TypeName::Shared(event.event_type.as_str().into()),
    };
    let mut meta = Meta::new(
        event.id,
        event.emitted_at,
        name,
        event.key.as_deref().map(Into::into),
    );
    meta.raw = Some(event.data.as_str().into());
    Some(meta)
}
