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
        let (stream, partitions) = open_stream(&js, &names, &options).await?;
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
            stream,
            attempts,
            dead,
            handlers,
            options,
            partitions,
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

/// Opens the bus's stream, making it first if needed, and returns it with
/// its key partition count: the one recorded in the stream (the first
/// process's), or for a stream made before partitions, `options`' (which is
/// then recorded, and the stream's subjects widened to take keyed subjects).
pub(super) async fn open_stream(
    js: &jetstream::Context,
    names: &Names,
    options: &Options,
) -> Result<(stream::Stream, u32), StoreError> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: names.stream(),
            description: Some(wire::stream_label(options.key_partitions)),
            subjects: vec![names.all_events()],
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
        // Limits are this process's options (the last to connect wins).
        config.max_bytes = options.max_bytes;
        config.max_age = options.max_age;
        config.discard = stream::DiscardPolicy::New;
        js.update_stream(&config).await.map_err(backend)?;
        stream.info().await.map_err(backend)?;
    }
    let recorded = config
        .description
        .as_deref()
        .and_then(wire::stream_partitions);
    if let Some(n) = recorded {
        if n != options.key_partitions {
            tracing::info!(
                stream = config.name,
                recorded = n,
                asked = options.key_partitions,
                "the bus's stream records another key partition count; using the stream's"
            );
        }
        return Ok((stream, n.min(MAX_KEY_PARTITIONS)));
    }
    let upgraded = stream::Config {
        description: Some(wire::stream_label(options.key_partitions)),
        subjects: vec![names.all_events()],
        ..config
    };
    js.update_stream(&upgraded).await.map_err(backend)?;
    stream.info().await.map_err(backend)?;
    Ok((stream, options.key_partitions))
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
