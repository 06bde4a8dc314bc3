//! Claiming: a handler's consumer pulled, each message held (with what its
//! settle needs) and handed to the relay as an event; the key partitions' pollers.

use super::*;

impl Inner {
    /// Each bound handler's consumer, made on first use (before the first
    /// append, so that no event of this process's handlers is published
    /// before their consumers exist).
    pub(super) async fn consumers(&self) -> Result<&[Bound], StoreError> {
        let bound = self
            .consumers
            .get_or_try_init(|| async {
                let handlers = lock(&self.bound).clone();
                let mut wanted = Vec::new();
                for h in &handlers {
                    wanted.push((h, None));
                    wanted.extend((0..self.partitions).map(|p| (h, Some(p))));
                }
                let made = wanted.into_iter().map(|(h, p)| self.bind_consumer(h, p));
                let bound = futures_util::future::try_join_all(made).await?;
                if !handlers.is_empty() {
                    tokio::spawn(announce(self.me.clone(), handlers.clone()));
                }
                let mut pollers = lock(&self.pollers);
                let mut shares: HashMap<Arc<str>, Arc<partition::Share>> = HashMap::new();
                for b in bound.iter().filter(|b| b.keyed) {
                    pollers.push(tokio::spawn(poll_partition(
                        self.me.clone(),
                        b.handler.clone(),
                        b.consumer.clone(),
                        b.window,
                        shares.entry(b.handler.clone()).or_default().clone(),
                        self.stop.subscribe(),
                        self.reconnected.subscribe(),
                    )));
                }
                drop(pollers);
                Ok::<_, StoreError>(bound)
            })
            .await?;
        Ok(bound)
    }

    /// Opens (making it if needed) one of a handler's consumers: of its
    /// events without a key, or of key partition `partition`.
    pub(super) async fn bind_consumer(
        &self,
        h: &BoundHandler,
        partition: Option<u32>,
    ) -> Result<Bound, StoreError> {
        // A key partition's consumer made now is pinned to one process at a
        // time if asked and the server can (see `partition`); one made
        // before keeps its way (a consumer's priority policy cannot change).
        let pins = partition.is_some()
            && self.options.pin_key_partitions
            && partition::server_pins(&self.client.server_info().version);
        let (name, filter, max_ack_pending, ack_wait) = match partition {
            None => (
                names::consumer(&h.name),
                self.names.event_subject(&h.event_type),
                self.options.max_ack_pending,
                self.options.ack_wait,
            ),
            Some(p) => (
                names::partition_consumer(&h.name, p),
                self.names.keyed_subject(&h.event_type, p),
                if pins { crate::PINNED_WINDOW as i64 } else { 1 },
                self.options.partition_ack_wait(),
            ),
        };
        let mut config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(wire::label(h)),
            filter_subject: filter.clone(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_ack_pending,
            max_deliver: -1,
            ..Default::default()
        };
        if pins {
            config.priority_policy = consumer::PriorityPolicy::PinnedClient;
            config.priority_groups = vec![partition::PIN_GROUP.to_owned()];
            config.priority_timeout = partition::pin_timeout(&self.options);
        }
        let stream = match partition {
            None => &self.stream,
            Some(_) => &self.keyed_stream,
        };
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&name, config.clone())
            .await
            .map_err(backend)?;
        // A consumer made for the same handler name and another type: taking
        // it over would hand this handler the wrong events.
        if consumer.cached_info().config.filter_subject != filter {
            return Err(StoreError::InvalidConfig(format!(
                "handler {:?} now handles {:?}, but its consumer {name} on the server was \
                 made for another event type; delete that consumer or rename the handler",
                h.name, h.event_type
            )));
        }
        let made = consumer.cached_info().config.clone();
        let pinned = made.priority_policy == consumer::PriorityPolicy::PinnedClient;
        if partition.is_some() && pinned != pins {
            // Made by another process or version: keep its way.
            config.priority_policy = made.priority_policy;
            config.priority_groups = made.priority_groups.clone();
            config.priority_timeout = made.priority_timeout;
            config.max_ack_pending = made.max_ack_pending;
        }
        // Made with other settings (an earlier start with other Options):
        // the server updates these in place.
        if made.ack_wait != config.ack_wait
            || made.max_ack_pending != config.max_ack_pending
            || made.priority_timeout != config.priority_timeout
        {
            tracing::info!(
                consumer = name,
                "updating the consumer's ack_wait, max_ack_pending and pin timeout to this store's options"
            );
            consumer = stream.create_consumer(config).await.map_err(backend)?;
        }
        let window = usize::try_from(consumer.cached_info().config.max_ack_pending)
            .ok()
            .filter(|_| pinned && partition.is_some());
        if window.is_some() {
            self.any_pinned.store(true, Ordering::Relaxed);
        }
        Ok(Bound {
            handler: h.name.as_str().into(),
            consumer,
            keyed: partition.is_some(),
            window,
            stalled_until: AtomicU64::new(0),
            looks: Default::default(),
        })
    }

    /// Takes up to `limit` deliveries from the consumers of events without
    /// a key, and what the key partitions' pollers took since the last claim.
    pub(super) async fn claim(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let consumers = self.consumers().await?;
        let mut out = std::mem::take(&mut *lock(&self.ready));
        let poked = self.poked.swap(false, Ordering::AcqRel);
        let rung = self.rung.swap(false, Ordering::AcqRel);
        if poked && !rung {
            // Woken by a poller, not by an append or the relay's tick.
            tracing::debug!(
                taken = out.len(),
                "a claim took only what the key partitions' pollers held"
            );
            return Ok(out);
        }
        let now = self.micros();
        let shared = consumers.iter().filter(|b| !b.keyed).count().max(1);
        let per = (limit / shared).max(1);
        // Never ask for more than the consumer may have out: what is held
        // here counts against it until settled.
        let rooms: Vec<i64> = {
            let held = lock(&self.held);
            let mut by: HashMap<&str, i64> = HashMap::new();
            for (_, h) in held.iter() {
                *by.entry(&h.handler).or_default() += 1;
            }
            consumers
                .iter()
                .map(|b| self.options.max_ack_pending - by.get(&*b.handler).unwrap_or(&0))
                .collect()
        };
        let takes = consumers
            .iter()
            .zip(rooms)
            .enumerate()
            .filter(|(_, (b, _))| !b.keyed)
            .filter_map(|(i, (b, room))| {
                let stalled = b.stalled_until.load(Ordering::Relaxed) > now;
                let Some(room) = usize::try_from(room).ok().filter(|&r| r > 0 && !stalled) else {
                    tracing::debug!(handler = &*b.handler, stalled, room, "a consumer skipped");
                    return None;
                };
                Some(self.take(i, b, per.min(room), room))
            });
        let mut failed = None;
        for taken in futures_util::future::join_all(takes).await {
            match taken {
                Ok(mut events) => out.append(&mut events),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                // What the others gave is held already: queue it.
                tracing::warn!("a claim from one of the bus's consumers failed: {e}");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    /// Fetches up to `max` deliveries from consumer `i` and holds them;
    /// looks again at it now and then while such fetches come back empty
    /// (see [`look_again`](super::look_again), which may take up to `room`).
    pub(super) async fn take(
        &self,
        i: usize,
        b: &Bound,
        max: usize,
        room: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        let mut ended = false;
        let asked = Instant::now();
        let mut batch = b
            .consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(backend)?;
        loop {
            let wait = if out.is_empty() {
                FETCH_STALL
            } else {
                FETCH_GAP
            };
            // What was taken so far is held already: return it, not an error.
            match tokio::time::timeout(wait, batch.next()).await {
                Ok(Some(Ok(m))) => {
                    if let Some(at) = Delivered::of(&m) {
                        out.extend(self.hold(&b.handler, m, at, asked, None).await);
                    }
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(handler = &*b.handler, "a claim was cut short: {e}");
                    break;
                }
                Err(_) if out.is_empty() => {
                    let until = self.micros() + FETCH_STALL.as_micros() as u64;
                    b.stalled_until.store(until, Ordering::Relaxed);
                    break;
                }
                Err(_) => break,
            }
        }
        tracing::debug!(
            handler = &*b.handler,
            asked = max,
            taken = out.len(),
            "a claim fetched from a consumer"
        );
        if !out.is_empty() {
            b.looks.took();
        } else if ended && b.looks.empty(self.micros()) {
            tokio::spawn(super::look_again::look_again(self.me.clone(), i, room));
        }
        Ok(out)
    }

    /// Checks a delivery taken from `handler`'s consumer (untrusted: what is
    /// not a tidings event is terminated, never held) and holds it: the
    /// event to queue, or `None`. `asked` is when the pull request it
    /// answers was sent: the server sent it after that, so it cannot have
    /// waited here (in a frozen process's socket, say) for longer.
    /// `at` is where the message stands ([`Delivered::of`], read by the
    /// caller: a message without it is neither held nor acknowledged).
    pub(super) async fn hold(
        &self,
        handler: &Arc<str>,
        m: jetstream::Message,
        at: Delivered,
        asked: Instant,
        pin: Option<Arc<str>>,
    ) -> Option<StoredEvent> {
        let reply = m.reply.clone()?;
        let Delivered {
            seq,
            delivered,
            consumer,
            consumer_seq,
        } = at;
        // Late: delivered before (to a process that may still run it), or
        // possibly sent long ago (it answers a pull request older than half
        // a partition's ack_wait: the server may have given it to another
        // process since). How long it waited in the stream before does not
        // matter: the server sends a partition's message only to the pull
        // request it answers. (Judged by its publication time instead, a
        // backlog made every keyed delivery suspect: a server round trip
        // before each ack, 2.6 ms each, 3 k events/s with 1 000 keys.)
        // Under a pin, a delivery made before went to this process's
        // partition with the pin: its earlier holder's copy is that holder's
        // to drop (it checks before it starts or settles one). And an old
        // request is a smaller risk: the server gives a pinned partition's
        // messages to nobody else while this process keeps pulling under
        // the pin, and moves the pin (an unpin, a timeout) only to a process
        // whose gate waits until this one has settled or lost what it holds;
        // a message whose request is three quarters of an `ack_wait` old,
        // though, may be another's by the time it starts. (Suspect after
        // half an `ack_wait`, as for a partition taken one at a time, a
        // pinned process that fell behind (a batch of redeliveries, each
        // looked up in the attempts bucket) let go much of what it took,
        // and the pins and gates that follow each let-go.)
        let late = match pin {
            None => delivered > 1 || asked.elapsed() > self.options.partition_ack_wait() / 2,
            Some(_) => asked.elapsed() > self.pinned_doubt(),
        };
        // A later delivery, to a pinned partition, of a message this process
        // has settled already (its ack was lost, or crossed the redelivery):
        // settled again, not run again. (Held, it would count as out at the
        // partition's gate while the server counts it settled.)
        if delivered > 1 && pin.is_some() && self.sent.settled(reply.as_str()) {
            tracing::debug!(
                handler = &**handler,
                seq,
                "a settled delivery came again; acknowledged"
            );
            self.reply(reply, AckKind::Ack).await;
            return None;
        }
        let checked = wire::event(&m).and_then(|e| {
            if !tidings::is_valid_event_type(&e.event_type)
                || !self.subject_fits(&e, m.subject.as_str())
            {
                Err("its event type is not that of its subject")
            } else if e.key.as_deref().is_some_and(|k| !tidings::is_valid_key(k)) {
                Err("its key is not valid")
            } else {
                Ok(e)
            }
        });
        let mut event = match checked {
            Ok(e) => e,
            Err(why) => {
                tracing::warn!(
                    handler = &**handler,
                    seq,
                    "a message in the bus's stream is not a tidings event ({why}); dropped"
                );
                let _ = m.ack_with(AckKind::Term).await;
                return None;
            }
        };
        // A dead letter's replay is for its handler alone: the type's other
        // handlers' consumers get it too, and let it go unrun.
        let replay = wire::replay_for(&m);
        if replay.is_some_and(|h| h != &**handler) {
            tracing::debug!(
                handler = &**handler,
                seq,
                "another handler's replay; acknowledged"
            );
            self.reply(reply, AckKind::Ack).await;
            return None;
        }
        // Delivered before (to a process that stopped, or handed back at a
        // shutdown): its attempt count and begin mark are in the bucket.
        let mut delivery = StoredDelivery::new(&**handler, 1);
        let mut in_bucket = false;
        if delivered > 1 {
            delivery.begun = Begun::Maybe;
            let key = names::delivery_key(event.id, handler);
            if let Ok(Some(v)) = self.attempts.get(key).await {
                if let Some(r) = AttemptRecord::decode(&v) {
                    delivery.attempt = r.attempt;
                    if r.begun {
                        delivery.begun = Begun::Interrupted;
                    }
                    in_bucket = true;
                }
            }
        }
        event.deliveries = vec![delivery];
        let held = Held {
            handler: handler.clone(),
            reply,
            seq,
            keyed: event.key.is_some() && self.partitions > 0,
            event: event.clone(),
            in_bucket,
            beat: Instant::now(),
            suspect: late,
            consumer,
            consumer_seq,
            redelivered: delivered > 1,
            pin,
            replay: replay.is_some(),
        };
        // Claimed again while still held here (its progress came late): keep
        // the newer claim, do not queue it twice.
        let pin = held.pin.clone();
        let claim = lock(&self.held).hold(held);
        tracing::debug!(
            handler = &**handler,
            event_id = %event.id,
            seq,
            delivered,
            consumer_seq,
            pin = pin.as_deref(),
            late,
            again = claim.is_none(),
            "held a delivery"
        );
        event.deliveries[0].claim = claim?;
        Some(event)
    }

    /// µs since the store's epoch.
    pub(super) fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a message's subject is the one its event is published on (or,
    /// for a keyed event, the subject of its type: how a version before key
    /// partitions published it).
    pub(super) fn subject_fits(&self, e: &StoredEvent, subject: &str) -> bool {
        self.names
            .subject_fits(subject, &e.event_type, e.key.as_deref(), self.partitions)
    }
}

/// Where a delivered message stands, read from its reply subject (a parse
/// of a few dozen bytes: read once per delivery).
pub(super) struct Delivered {
    /// Its stream sequence.
    pub(super) seq: u64,
    /// How many times the server has delivered it.
    pub(super) delivered: i64,
    pub(super) consumer: String,
    pub(super) consumer_seq: u64,
}

impl Delivered {
    /// `None`: not a JetStream delivery (no reply subject of the form).
    pub(super) fn of(m: &jetstream::Message) -> Option<Self> {
        m.info().ok().map(|i| Self {
            seq: i.stream_sequence,
            delivered: i.delivered,
            consumer: i.consumer.to_owned(),
            consumer_seq: i.consumer_sequence,
        })
    }
}
