//! Connecting: the stream, the buckets and the store's tasks, made or
//! checked at connect.

use super::*;

impl JetStreamStore {
    /// Hands `op` to the settler; resolves with its answer.
    pub(super) fn request(
        &self,
        make: impl FnOnce(tidings::store::Reply<()>) -> Op,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        tidings::store::request(|op| self.ops.send(op).is_ok(), make)
    }

    /// Connects to the server at `url` and opens the bus `bus` (1 to 64
    /// characters of `A-Za-z0-9_-`): its stream and buckets are made if they
    /// do not exist yet. Several processes may open the same bus at once;
    /// that is what it is for.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for a bad bus name;
    /// [`StoreError::Backend`] if the server cannot be reached or refuses.
    pub async fn connect(url: &str, bus: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, bus, Options::default()).await
    }

    /// [`connect`](Self::connect) with [`Options`].
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, bus: &str, options: Options) -> Result<Self, StoreError> {
        let names = Names::new(bus)?;
        let (forward, changes) = link::events();
        let (connect, servers) = link::credentials(url);
        let client = connect
            .event_callback(forward)
            .reconnect_delay_callback(link::reconnect_delay)
            .connect(servers.as_str())
            .await
            .map_err(backend)?;
        let js = jetstream::new(client.clone());
        let streams = open_stream(&js, &names, &options).await?;
        let attempts = bucket(&js, names.attempts_bucket(), options.replicas, ATTEMPTS_AGE).await?;
        // Dead letters stay until replayed: no age.
        let dead = bucket(&js, names.dead_bucket(), options.replicas, Duration::ZERO).await?;
        let handlers = bucket(
            &js,
            names.handlers_bucket(),
            options.replicas,
            Duration::ZERO,
        )
        .await?;
        let letters = read_dead(&dead).await?;
        let bell = Arc::new(Notify::new());
        let mut rings = client.subscribe(names.bell()).await.map_err(backend)?;
        let inner = Arc::new_cyclic(|me| Inner {
            names,
            client,
            js,
            stream: streams.events,
            keyed_stream: streams.keyed,
            attempts,
            dead,
            handlers,
            options,
            partitions: streams.partitions,
            format: streams.format,
            ready: Mutex::new(Vec::new()),
            stop: watch::Sender::new(false),
            pollers: Mutex::new(Vec::new()),
            poke: Arc::new(Notify::new()),
            poked: AtomicBool::new(false),
            rung: AtomicBool::new(false),
            me: me.clone(),
            bound: Mutex::new(Vec::new()),
            consumers: OnceCell::new(),
            recovered: Mutex::new(Some(Recovered {
                events: Vec::new(),
                dead_letters: letters.iter().map(DeadRecord::letter).collect(),
            })),
            held: Mutex::new(holds::Holds::default()),
            answers: std::sync::OnceLock::new(),
            bell: bell.clone(),
            last_ring: AtomicU64::new(0),
            epoch: Instant::now(),
            health: Arc::new(Health::new()),
            sent: Sent::default(),
            reconnected: watch::Sender::new(0),
            lost_pins: Mutex::default(),
            any_pinned: AtomicBool::new(false),
            replaying: AtomicU64::new(0),
        });
        tokio::spawn(follow_connection(Arc::downgrade(&inner), changes));
        let (ops, rx) = mpsc::unbounded_channel();
        let dead_known = letters
            .into_iter()
            .map(|r| ((r.letter().event.id, r.handler().to_owned()), r))
            .collect();
        tokio::spawn(heartbeat(
            Arc::downgrade(&inner),
            inner.options.partition_ack_wait() / 3,
        ));
        tokio::spawn(settler(inner.clone(), rx, dead_known));
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while rings.next().await.is_some() {
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                inner.rung.store(true, Ordering::Release);
                inner.bell.notify_one();
            }
        });
        Ok(Self { inner, ops })
    }
}

/// The bus's streams: of its events, and of its keyed events (the same
/// stream for a bus made before keyed events had one of their own).
pub(super) struct Streams {
    pub(super) events: stream::Stream,
    pub(super) keyed: stream::Stream,
    /// The key partition count recorded in the events' stream.
    pub(super) partitions: u32,
    /// How events are written: framed on a bus made by this version, in
    /// headers on one made before (whose processes may still share it).
    pub(super) format: wire::Format,
}

/// Opens the bus's streams, making them first if needed. A bus made here
/// keeps its keyed events in a stream of their own and writes its events
/// framed (layout [`wire::FRAMED`], recorded in the events' stream's
/// description with the key partition count; a bus of layout
/// [`wire::KEYED_APART`] keeps writing headers): the events' stream then has one consumer
/// per handler, and each of its acknowledgements asks only those whether
/// they still need the message (with 16 partitions in the same stream, 17
/// consumers per handler; docs/BENCHMARKS.md, section 7, session 14). The
/// partition count is the one recorded (the first process's). A bus made
/// before keeps its layout: keyed events in the events' stream (`ev.>`);
/// a stream made before key partitions (subjects `ev.*`, no description)
/// takes the new layout, as it holds no keyed subject.
pub(super) async fn open_stream(
    js: &jetstream::Context,
    names: &Names,
    options: &Options,
) -> Result<Streams, StoreError> {
    let label = wire::stream_label(options.key_partitions);
    let mut events =
        open_limited(js, names.stream(), names.unkeyed_events(), &label, options).await?;
    let config = events.cached_info().config.clone();
    let recorded = config
        .description
        .as_deref()
        .and_then(wire::stream_partitions);
    let (partitions, layout) = match recorded {
        Some((n, layout)) => {
            if n != options.key_partitions {
                tracing::info!(
                    stream = config.name,
                    recorded = n,
                    asked = options.key_partitions,
                    "the bus's stream records another key partition count; using the stream's"
                );
            }
            (n.min(MAX_KEY_PARTITIONS), layout)
        }
        None => {
            let upgraded = stream::Config {
                description: Some(label.clone()),
                subjects: vec![names.unkeyed_events()],
                ..config
            };
            js.update_stream(&upgraded).await.map_err(backend)?;
            events.info().await.map_err(backend)?;
            (options.key_partitions, Some(wire::FRAMED))
        }
    };
    let apart = matches!(layout, Some(wire::KEYED_APART | wire::FRAMED));
    let format = if layout == Some(wire::FRAMED) {
        wire::Format::Framed
    } else {
        wire::Format::Headers
    };
    let keyed = if apart {
        open_limited(
            js,
            names.keyed_stream(),
            names.keyed_events(),
            &label,
            options,
        )
        .await?
    } else {
        events.clone()
    };
    Ok(Streams {
        events,
        keyed,
        partitions,
        format,
    })
}

/// Opens a stream of the bus, making it (on `subject`, described by
/// `label`) if needed; its limits are this process's options (the last to
/// connect wins).
async fn open_limited(
    js: &jetstream::Context,
    name: String,
    subject: String,
    label: &str,
    options: &Options,
) -> Result<stream::Stream, StoreError> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name,
            description: Some(label.to_owned()),
            subjects: vec![subject],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            duplicate_window: Duration::from_secs(120),
            max_bytes: options.max_bytes,
            max_age: options.max_age,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(backend)?;
    let mut config = stream.cached_info().config.clone();
    if config.max_bytes != options.max_bytes
        || config.max_age != options.max_age
        || config.discard != stream::DiscardPolicy::New
    {
        config.max_bytes = options.max_bytes;
        config.max_age = options.max_age;
        config.discard = stream::DiscardPolicy::New;
        js.update_stream(&config).await.map_err(backend)?;
        stream.info().await.map_err(backend)?;
    }
    Ok(stream)
}

/// The bus's events' stream on the server, for an operator's request.
///
/// # Errors
/// No such bus ([`StoreError::InvalidConfig`]), or the server could not be reached.
pub(crate) async fn events_stream(
    js: &jetstream::Context,
    names: &Names,
    bus: &str,
) -> Result<stream::Stream, StoreError> {
    js.get_stream(names.stream())
        .await
        .map_err(|e| StoreError::InvalidConfig(format!("bus {bus}: {e}")))
}

/// The bus's streams on the server, for an operator's request: the
/// events', and the keyed events' if they have one of their own.
///
/// # Errors
/// No such bus ([`StoreError::InvalidConfig`]), or the server could not be reached.
pub(crate) async fn streams_of(
    js: &jetstream::Context,
    names: &Names,
    bus: &str,
) -> Result<Vec<stream::Stream>, StoreError> {
    let mut out = vec![events_stream(js, names, bus).await?];
    match js.get_stream(names.keyed_stream()).await {
        Ok(keyed) => out.push(keyed),
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            // A bus made before keyed events had a stream of their own.
        }
        Err(e) => return Err(backend(e)),
    }
    Ok(out)
}

/// Opens a key-value bucket, making it first if needed. Its stream is made
/// here with the settings `async-nats` would give it, because the client's
/// own `create_key_value` first asks for the account's details in a shape
/// that servers before 2.10 do not answer.
pub(super) async fn bucket(
    js: &jetstream::Context,
    name: String,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(backend)?;
    js.get_key_value(name).await.map_err(backend)
}

/// The dead letters kept, oldest first; unreadable ones are named in a warning and left.
pub(super) async fn read_dead(dead: &kv::Store) -> Result<Vec<DeadRecord>, StoreError> {
    let mut keys = dead.keys().await.map_err(backend)?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(backend)?;
        let Some(value) = dead.get(key.as_str()).await.map_err(backend)? else {
            continue;
        };
        match serde_json::from_slice::<DeadRecord>(&value) {
            // Its replay is in the stream: pending, not dead.
            Ok(r) if r.is_replaying() => {}
            Ok(r) => out.push(r),
            Err(_) => tracing::warn!(
                key,
                "a dead letter in the store could not be read; left there"
            ),
        }
    }
    out.sort_by_key(DeadRecord::failed_at_ns);
    Ok(out)
}
