//! Which handlers the processes of a bus have, and removing those none has
//! had for a while ([`JetStreamStore::registrations`],
//! [`JetStreamStore::prune`]).
//!
//! A handler's consumers outlive it: renamed or removed from the code, its
//! consumers keep getting every event of its type, which the stream keeps
//! for them (interest retention) for ever. Every process therefore writes,
//! at start and every minute, when it last had each of its handlers (the
//! bucket `TIDINGS_<bus>_handlers`); a prune turns what waits in the
//! consumers of a handler unused for long into dead letters, then deletes
//! them.

use crate::names::{self, Names};
use crate::store::{backend, JetStreamStore};
use crate::wire::{self, DeadRecord};
use async_nats::jetstream::{self, consumer, kv, AckKind};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidings::store::{BoundHandler, Pruned, Registration, StoreError};

/// How often a process says which handlers it has.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);

/// How long a prune's pull of a consumer waits for its next message before
/// taking the consumer for drained.
const DRAINED: Duration = Duration::from_millis(1500);

/// The least time a handler must have been unused to be pruned.
const MIN_UNUSED: Duration = Duration::from_secs(300);

/// Writes, for each of `handlers`, that this process has it now.
pub(crate) async fn announce(bucket: &kv::Store, handlers: &[BoundHandler]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for h in handlers {
        let value = serde_json::json!({"handler": h.name, "event_type": h.event_type, "seen_at_ns": now.to_string()});
        if let Err(e) = bucket
            .put(names::consumer(&h.name), value.to_string().into())
            .await
        {
            tracing::debug!(handler = h.name, "could not say the handler is in use: {e}");
        }
    }
}

/// When a process last said it had the handler whose consumer is `consumer`.
async fn seen(bucket: &kv::Store, consumer: &str) -> Option<SystemTime> {
    let value = bucket.get(consumer).await.ok()??;
    let v: serde_json::Value = serde_json::from_slice(&value).ok()?;
    let ns: u128 = v["seen_at_ns"].as_str()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).ok()?))
}

/// A handler's consumers on the server, and what they hold.
struct Found {
    event_type: String,
    /// Each consumer's stream (its index in those given) and name.
    consumers: Vec<(usize, String)>,
    pending: u64,
    out: u64,
    created: SystemTime,
}

async fn found(
    streams: &[jetstream::stream::Stream],
) -> Result<BTreeMap<String, Found>, StoreError> {
    let mut by: BTreeMap<String, Found> = BTreeMap::new();
    for (i, stream) in streams.iter().enumerate() {
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(backend)?;
            let Some(h) = info.config.description.as_deref().and_then(wire::unlabel) else {
                continue;
            };
            let created = UNIX_EPOCH
                + Duration::from_nanos(
                    u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0),
                );
            let f = by.entry(h.name).or_insert(Found {
                event_type: h.event_type,
                consumers: Vec::new(),
                pending: 0,
                out: 0,
                created,
            });
            f.consumers.push((i, info.name.clone()));
            f.pending += info.num_pending + info.num_ack_pending as u64;
            f.out += info.num_ack_pending as u64;
            f.created = f.created.min(created);
        }
    }
    Ok(by)
}

impl JetStreamStore {
    /// The handlers that have consumers on the bus `bus`, with when a
    /// process last said it had each (every minute; for a version that did
    /// not say it, when its first consumer was made) and how many
    /// deliveries wait for it. Safe while the bus runs.
    ///
    /// # Errors
    /// A bad bus name, no such bus, or the server could not be reached.
    pub async fn registrations(url: &str, bus: &str) -> Result<Vec<Registration>, StoreError> {
        let names = Names::new(bus)?;
        let client = crate::link::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let streams = crate::store::streams_of(&js, &names, bus).await?;
        let bucket = js.get_key_value(names.handlers_bucket()).await.ok();
        let mut out = Vec::new();
        for (handler, f) in found(&streams).await? {
            let said = match &bucket {
                Some(bucket) => seen(bucket, &names::consumer(&handler)).await,
                None => None,
            };
            let last_seen = said.unwrap_or(f.created);
            out.push(Registration {
                handler,
                event_type: f.event_type,
                last_seen,
                pending: f.pending,
            });
        }
        Ok(out)
    }

    /// Removes from the bus `bus` the consumers of handlers no process has
    /// had for `unused_for` (at least 5 minutes): each one's waiting
    /// deliveries are first written as dead letters (error `pruned: ...`)
    /// and acknowledged, then its consumers are deleted. A handler with
    /// deliveries still out to a process (not yet past `ack_wait`) is left
    /// for a later prune. Events published while a handler is being pruned
    /// may miss its dead letters (they had no other place to wait).
    ///
    /// # Errors
    /// A bad bus name or a shorter `unused_for`, no such bus, or the server
    /// could not be reached.
    pub async fn prune(
        url: &str,
        bus: &str,
        unused_for: Duration,
    ) -> Result<Vec<Pruned>, StoreError> {
        let names = Names::new(bus)?;
        if unused_for < MIN_UNUSED {
            return Err(StoreError::InvalidConfig(
                "a handler is pruned after 5 minutes unused at least".into(),
            ));
        }
        let cutoff = SystemTime::now() - unused_for;
        let unused: Vec<Registration> = Self::registrations(url, bus)
            .await?
            .into_iter()
            .filter(|r| r.last_seen < cutoff)
            .collect();
        let client = crate::link::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let streams = crate::store::streams_of(&js, &names, bus).await?;
        let dead = js
            .get_key_value(names.dead_bucket())
            .await
            .map_err(backend)?;
        let handlers = js.get_key_value(names.handlers_bucket()).await.ok();
        let all = found(&streams).await?;
        let mut out = Vec::new();
        for r in unused {
            let Some(f) = all.get(&r.handler) else {
                continue;
            };
            if f.out > 0 {
                tracing::warn!(
                    handler = r.handler,
                    out = f.out,
                    "not pruned: deliveries are still out to a process; try again after ack_wait"
                );
                continue;
            }
            let error = format!(
                "pruned: no process had handler {} for more than {} s",
                r.handler,
                unused_for.as_secs()
            );
            let mut kept = 0;
            for (i, name) in &f.consumers {
                let stream = &streams[*i];
                let c: consumer::PullConsumer = stream
                    .get_consumer(name)
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string().into()))?;
                // A key partition pinned to a process (gone: the handler is
                // unused) would keep this pull on standby until its pin
                // timed out.
                let pinned = c.cached_info().config.priority_policy
                    == consumer::PriorityPolicy::PinnedClient;
                if pinned {
                    let _ = stream.unpin_consumer(name, crate::store::PIN_GROUP).await;
                }
                let mut pull = c
                    .stream()
                    .max_messages_per_batch(256)
                    .expires(Duration::from_secs(1))
                    .heartbeat(Duration::from_millis(400));
                if pinned {
                    pull = pull.group(crate::store::PIN_GROUP);
                }
                // What it holds (none is out: checked above); or drained
                // once nothing comes for a while.
                let mut want = c.get_info().await.map_err(backend)?.num_pending;
                let mut messages = pull.messages().await.map_err(backend)?;
                while want > 0 {
                    let Ok(Some(m)) = tokio::time::timeout(DRAINED, messages.next()).await else {
                        break;
                    };
                    let m = m.map_err(backend)?;
                    want -= 1;
                    let Ok(event) = wire::event(&m) else {
                        let _ = m.ack_with(AckKind::Term).await;
                        continue;
                    };
                    let record = DeadRecord::new(&event, &r.handler, 0, &error);
                    let key = names::delivery_key(event.id, &r.handler);
                    let json = serde_json::to_vec(&record).map_err(backend)?;
                    dead.put(&key, json.into()).await.map_err(backend)?;
                    m.double_ack()
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string().into()))?;
                    kept += 1;
                }
                drop(messages);
                // Deleted only once it holds nothing.
                let left = c.get_info().await.map_err(backend)?;
                if left.num_pending + left.num_ack_pending as u64 > 0 {
                    return Err(StoreError::Backend(
                        format!(
                            "consumer {name} of handler {} still holds deliveries after draining; \
                             try the prune again",
                            r.handler
                        )
                        .into(),
                    ));
                }
                stream.delete_consumer(name).await.map_err(backend)?;
            }
            if let Some(bucket) = &handlers {
                let _ = bucket.purge(names::consumer(&r.handler)).await;
            }
            out.push(Pruned {
                handler: r.handler,
                event_type: f.event_type.clone(),
                dead_lettered: kept,
            });
        }
        Ok(out)
    }
}
