//! What a bus name holds, read and removed from outside a running bus:
//! summarize, purge, dead letters; and the end of a rolling upgrade
//! ([`JetStreamStore::finish_upgrade`]).

use super::*;

impl JetStreamStore {
    /// Deletes everything of the bus `bus` from the server at `url`: its
    /// stream, its consumers and its buckets. For tests and for
    /// decommissioning a bus; no bus may be using it. A bus that does not
    /// exist is not an error.
    ///
    /// # Errors
    /// A bad bus name; the server refused or could not be reached.
    pub async fn purge(url: &str, bus: &str) -> Result<(), StoreError> {
        let names = Names::new(bus)?;
        let client = crate::link::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let gone = |e: &dyn std::fmt::Display| e.to_string().contains("not found");
        for stream in [names.stream(), names.keyed_stream()] {
            if let Err(e) = js.delete_stream(stream).await {
                if !gone(&e) {
                    return Err(backend(e));
                }
            }
        }
        for bucket in [
            names.attempts_bucket(),
            names.dead_bucket(),
            names.handlers_bucket(),
        ] {
            if let Err(e) = js.delete_key_value(bucket).await {
                if !gone(&e) {
                    return Err(backend(e));
                }
            }
        }
        Ok(())
    }

    /// What the bus `bus` holds on the server at `url`, for operators:
    /// deliveries not yet done (waiting, or claimed and not yet settled) and
    /// dead letters, by event type and handler; never the payloads. Works
    /// while the bus runs. A delivery a process has just handed back (at its
    /// shutdown) may be counted twice until it is delivered again: the
    /// server (2.9) then reports it both as waiting and as out.
    ///
    /// # Errors
    /// A bad bus name, no such bus, or the server could not be reached.
    pub async fn summarize(url: &str, bus: &str) -> Result<Summary, StoreError> {
        let names = Names::new(bus)?;
        let client = crate::link::connect(url).await.map_err(backend)?;
        let js = jetstream::new(client);
        let mut pending: BTreeMap<(String, String), Count> = BTreeMap::new();
        for stream in connect::streams_of(&js, &names, bus).await? {
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(backend)?;
                let Some(handler) = info.config.description.as_deref().and_then(wire::unlabel)
                else {
                    continue;
                };
                let count = info.num_pending + info.num_ack_pending as u64;
                if count == 0 {
                    continue;
                }
                // The first message of its subject past its acknowledgement floor.
                let oldest = stream
                    .raw_message_builder()
                    .sequence(info.ack_floor.stream_sequence + 1)
                    .next_by_subject(info.config.filter_subject.clone())
                    .send()
                    .await
                    .ok()
                    .and_then(|m| wire::emitted_at(Some(&m.headers), &m.payload))
                    .unwrap_or(UNIX_EPOCH);
                // A handler's consumers (its events without a key, and each key
                // partition) add up to one row.
                let c = pending
                    .entry((handler.event_type.clone(), handler.name.clone()))
                    .or_insert(Count {
                        event_type: handler.event_type,
                        handler: handler.name,
                        count: 0,
                        oldest,
                    });
                c.count += count;
                c.oldest = c.oldest.min(oldest);
            }
        }
        let pending = pending.into_values().collect();
        let dead = js
            .get_key_value(names.dead_bucket())
            .await
            .map_err(backend)?;
        let mut by: BTreeMap<(String, String), Count> = BTreeMap::new();
        for r in read_dead(&dead).await? {
            let d = r.letter();
            let c = by
                .entry((d.event.event_type.clone(), d.handler.clone()))
                .or_insert_with(|| Count {
                    event_type: d.event.event_type.clone(),
                    handler: d.handler.clone(),
                    count: 0,
                    oldest: d.event.emitted_at,
                });
            c.count += 1;
            c.oldest = c.oldest.min(d.event.emitted_at);
        }
        Ok(Summary {
            pending,
            dead_letters: by.into_values().collect(),
        })
    }

    /// What a rolling upgrade leaves to do on the bus `bus` at `url` once no
    /// process of an earlier version uses it, said for people (`None`:
    /// nothing). Changes nothing.
    ///
    /// One thing can be left: a bus made before its events were framed
    /// (stream layout 2, before 2026-12-05) goes on writing each event's id,
    /// type, key and emit time as message headers, so that processes of the
    /// version before can share it; headers cost the server a quarter of its
    /// rate (docs/BENCHMARKS.md, section 7, session 28).
    /// [`finish_upgrade`](Self::finish_upgrade) moves it to layout 3. A bus
    /// older still (its keyed events in the events' stream) keeps its
    /// headers: nothing this version can move.
    ///
    /// # Errors
    /// A bad bus name ([`StoreError::InvalidConfig`]), no such bus
    /// ([`StoreError::InvalidConfig`]), or the server could not be reached.
    pub async fn upgrade_left(url: &str, bus: &str) -> Result<Option<String>, StoreError> {
        let (_, stream) = events_stream_at(url, bus).await?;
        Ok(headers_left(&stream.cached_info().config).map(|_| HEADERS_LEFT.to_owned()))
    }

    /// Does what [`upgrade_left`](Self::upgrade_left) says: a bus of layout
    /// 2 is recorded as layout 3, and the processes that connect from then
    /// on write their events framed, without headers. Processes of this
    /// version already running go on writing headers until they start
    /// again (every process reads both). Returns what it did (`None`:
    /// nothing was left); doing it twice changes nothing.
    ///
    /// **Run it only once no process of an earlier version uses the bus**:
    /// one from before 2026-12-05 takes a framed event for a foreign
    /// message, and drops it. (The server cannot tell a process's version,
    /// so this is not checked; as with a broker's protocol version, it is
    /// the last step of a rolling upgrade.)
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), tidings::StoreError> {
    /// use tidings_nats::JetStreamStore;
    /// let url = "nats://127.0.0.1:4222";
    /// if let Some(left) = JetStreamStore::upgrade_left(url, "orders").await? {
    ///     println!("left: {left}");
    ///     JetStreamStore::finish_upgrade(url, "orders").await?; // every process upgraded
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`upgrade_left`](Self::upgrade_left); or the stream changed
    /// meanwhile (a process started with other stream limits at the same
    /// moment): [`StoreError::Backend`], run it again.
    pub async fn finish_upgrade(url: &str, bus: &str) -> Result<Option<String>, StoreError> {
        let (js, mut stream) = events_stream_at(url, bus).await?;
        let config = stream.cached_info().config.clone();
        let Some(partitions) = headers_left(&config) else {
            return Ok(None);
        };
        let framed = stream::Config {
            description: Some(wire::stream_label(partitions)),
            ..config
        };
        js.update_stream(&framed).await.map_err(backend)?;
        let now = stream.info().await.map_err(backend)?.config.clone();
        if headers_left(&now).is_some() {
            return Err(StoreError::Backend(format!(
                "bus {bus}: its stream was changed meanwhile and still records layout 2; run it again"
            ).into()));
        }
        Ok(Some(format!("{HEADERS_LEFT}: done")))
    }

    /// The number of partitions this bus's keyed events are spread over: the
    /// count recorded in its stream by the first process that opened it,
    /// whatever [`Options::key_partitions`] asked for here.
    ///
    /// ```no_run
    /// # async fn f() -> anyhow::Result<()> {
    /// let options = tidings_nats::Options::default().key_partitions(4);
    /// let store =
    ///     tidings_nats::JetStreamStore::connect_with("nats://127.0.0.1:4222", "orders", options).await?;
    /// println!("{} partitions", store.key_partitions()); // 4, unless "orders" had another count
    /// # Ok(()) }
    /// ```
    pub fn key_partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// The dead letters kept in the server now, oldest first (unreadable ones left out).
    ///
    /// # Errors
    /// The server could not be reached.
    pub async fn dead_letters(&self) -> Result<Vec<StoredDeadLetter>, StoreError> {
        Ok(read_dead(&self.inner.dead)
            .await?
            .iter()
            .map(DeadRecord::letter)
            .collect())
    }
}

/// What [`JetStreamStore::upgrade_left`] says of a bus of layout 2.
const HEADERS_LEFT: &str =
    "events are written with headers (stream layout 2): frame them (layout 3)";

/// The key partition count of a bus whose events are written with headers
/// though the bus could frame them (its keyed events in a stream of their
/// own, layout 2), from its events' stream's configuration.
fn headers_left(config: &stream::Config) -> Option<u32> {
    match config
        .description
        .as_deref()
        .and_then(wire::stream_partitions)
    {
        Some((partitions, Some(wire::KEYED_APART))) => Some(partitions),
        _ => None,
    }
}

/// The bus's events' stream on the server at `url`.
async fn events_stream_at(
    url: &str,
    bus: &str,
) -> Result<(jetstream::Context, stream::Stream), StoreError> {
    let names = Names::new(bus)?;
    let client = crate::link::connect(url).await.map_err(backend)?;
    let js = jetstream::new(client);
    let stream = connect::events_stream(&js, &names, bus).await?;
    Ok((js, stream))
}

/// [`tidings::store::Admin`] for the bus names on one NATS JetStream
/// server: what `tidings inspect`, `purge`, `prune` and `upgrade` use. Each
/// call connects on its own ([`JetStreamStore::summarize`],
/// [`JetStreamStore::purge`], [`JetStreamStore::registrations`],
/// [`JetStreamStore::prune`], [`JetStreamStore::finish_upgrade`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings::store::Admin;
/// let admin = tidings_nats::JetStreamAdmin::new("nats://127.0.0.1:4222");
/// assert!(matches!(admin.purge("bad name").await, Err(tidings::StoreError::InvalidConfig(_))));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct JetStreamAdmin {
    url: String,
}

impl JetStreamAdmin {
    /// For the server at `url` (not connected until a call).
    pub fn new(url: &str) -> Self {
        Self { url: url.into() }
    }
}

impl tidings::store::Admin for JetStreamAdmin {
    fn summarize<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<Summary, StoreError>> {
        Box::pin(JetStreamStore::summarize(&self.url, bus))
    }
    fn purge<'a>(&'a self, bus: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(JetStreamStore::purge(&self.url, bus))
    }
    fn registrations<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Vec<tidings::store::Registration>, StoreError>> {
        Box::pin(JetStreamStore::registrations(&self.url, bus))
    }
    fn prune<'a>(
        &'a self,
        bus: &'a str,
        unused_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<tidings::store::Pruned>, StoreError>> {
        Box::pin(JetStreamStore::prune(&self.url, bus, unused_for))
    }
    fn upgrade_left<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(JetStreamStore::upgrade_left(&self.url, bus))
    }
    fn finish_upgrade<'a>(
        &'a self,
        bus: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(JetStreamStore::finish_upgrade(&self.url, bus))
    }
}
