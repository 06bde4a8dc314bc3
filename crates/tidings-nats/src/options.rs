//! [`Options`]: the settings of a [`JetStreamStore`](crate::JetStreamStore), and their defaults.

use std::time::Duration;

/// How many deliveries a key partition pinned to one process
/// ([`Options::pin_key_partitions`], the default) has out at once: its consumer's
/// `max_ack_pending`.
///
/// ```
/// assert_eq!(tidings_nats::PINNED_WINDOW, 256);
/// ```
pub const PINNED_WINDOW: usize = 256;

/// Settings of a [`JetStreamStore`](crate::JetStreamStore).
///
/// ```
/// let o = tidings_nats::Options::default().ack_wait(std::time::Duration::from_secs(5));
/// assert_eq!(o.ack_wait, std::time::Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// How long a claimed delivery stays with its process without news: the
    /// store tells the server every third of it that the delivery is still
    /// being worked on; a process that died stops telling, and its
    /// deliveries go to another process once this has passed. It also
    /// bounds how long a delivery lost on its way to a process (a
    /// connection cut while the server sent it) waits before the server
    /// sends it again. Default 5 s (it was 30 s: a delivery lost in a cut
    /// then came 23 s after the others); longer means fewer progress
    /// messages while handlers run and slower recovery. A store whose
    /// `ack_wait` differs from that of a handler's consumer on the server
    /// updates the consumer (keep it the same in every process).
    pub ack_wait: Duration,
    /// Most deliveries one handler may have claimed and not settled, over all
    /// processes. Default 20 000.
    pub max_ack_pending: i64,
    /// Copies of the stream and buckets in a cluster. Default 1.
    pub replicas: usize,
    /// Whether a key partition's consumer made by this store is pinned to
    /// one process at a time (**on by default** since session 21; nats-server
    /// 2.11 or later: older servers get one-at-a-time consumers whatever
    /// this says). The pinned process takes up to [`PINNED_WINDOW`] of the
    /// partition's deliveries at once and runs each key's in order, instead
    /// of the server handing out one delivery at a time to any process (see
    /// the `partition` module): keyed events at 0.64-0.80 of unkeyed
    /// throughput against 0.37-0.46 one at a time, and 3 to 4 times the
    /// keyed throughput of processes whose handlers wait on I/O
    /// (BENCHMARKS.md, section 7, sessions 15-21).
    ///
    /// What it costs: after a server restart, keyed deliveries resume up to
    /// about 2 s later (each partition pinned anew waits until the server
    /// counts out only what its new holder has) against about 1 s one at a
    /// time; a partition's keys all go to one process at a time, so
    /// [`Options::key_partitions`] bounds how many processes share a
    /// handler's keyed work. How it was proven: the fault storms of
    /// `tests/faults.rs` found a way for it to run a key's events out of
    /// order, or hold a partition's events back, in each of sessions 17, 18
    /// and 19 (each at about 1 run in 40 to 1 in 180; each traced, fixed,
    /// and caused by a fault test since); with those fixes the pinned storms
    /// then ran clean 75 times in session 19 and 120 times in session 21
    /// (RELIABILITY.md). Set it to `false` for the one-at-a-time
    /// consumers, the longer-proven way. A consumer keeps the way it was
    /// made: a pinned one stays pinned for every process, and one made one
    /// at a time (by an older version, say) stays so.
    pub pin_key_partitions: bool,
    /// Partitions that events with a key are spread over, by a digest of
    /// the key. Each handler has one consumer per partition that hands out
    /// one delivery at a time, to whichever process asks: events of one key
    /// reach a handler one at a time and in emit order across all
    /// processes, at the cost of one round trip to the server per delivery
    /// of a partition (keys sharing a partition wait for each other).
    /// 0 turns it off: keyed events are shared out like the rest, in order
    /// within a process only. Default 16. Recorded in the bus's stream by
    /// the first process; the others use the recorded count.
    pub key_partitions: u32,
    /// How long an emit waits for the server's acknowledgement (the server
    /// restarting, or cut off) before it fails with
    /// [`tidings::EmitError::Unavailable`]. Default 5 s. The client
    /// reconnects by itself; an emit that timed out may still be stored if
    /// its publish reached the server, and is then delivered.
    pub emit_timeout: Duration,
    /// Most bytes the bus's stream holds (events not yet handled by every
    /// handler). When it is full, an emit fails with a typed error
    /// ([`tidings::StoreError::Full`]); nothing already stored is dropped.
    /// Default 1 GiB; -1 for no limit. Applied to the stream at every
    /// connect.
    pub max_bytes: i64,
    /// How long the stream keeps an event at most, handled or not. Zero
    /// (the default) keeps events until every handler is done with them.
    /// **Setting it drops events older than this without delivering
    /// them**: for buses whose events are worthless once old.
    pub max_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 20_000,
            replicas: 1,
            key_partitions: 16,
            pin_key_partitions: true,
            emit_timeout: Duration::from_secs(5),
            max_bytes: 1 << 30,
            max_age: Duration::ZERO,
        }
    }
}

impl Options {
    /// Sets [`Options::ack_wait`] (at least 300 ms).
    ///
    /// ```
    /// let o = tidings_nats::Options::default().ack_wait(std::time::Duration::from_millis(1));
    /// assert_eq!(o.ack_wait, std::time::Duration::from_millis(300));
    /// ```
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(300));
        self
    }

    /// Sets [`Options::replicas`] (at least 1).
    ///
    /// ```
    /// assert_eq!(tidings_nats::Options::default().replicas(3).replicas, 3);
    /// ```
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Sets [`Options::emit_timeout`] (at least 100 ms).
    ///
    /// ```
    /// let o = tidings_nats::Options::default().emit_timeout(std::time::Duration::from_secs(2));
    /// assert_eq!(o.emit_timeout, std::time::Duration::from_secs(2));
    /// ```
    pub fn emit_timeout(mut self, limit: Duration) -> Self {
        self.emit_timeout = limit.max(Duration::from_millis(100));
        self
    }

    /// Sets [`Options::max_bytes`] (-1: no limit).
    ///
    /// ```
    /// assert_eq!(tidings_nats::Options::default().max_bytes(1 << 20).max_bytes, 1 << 20);
    /// ```
    pub fn max_bytes(mut self, bytes: i64) -> Self {
        self.max_bytes = if bytes <= 0 { -1 } else { bytes };
        self
    }

    /// Sets [`Options::max_age`] (zero: none). Events older than this are
    /// dropped by the server, delivered or not.
    ///
    /// ```
    /// let day = std::time::Duration::from_secs(86_400);
    /// assert_eq!(tidings_nats::Options::default().max_age(day).max_age, day);
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Sets [`Options::pin_key_partitions`] (on by default).
    ///
    /// ```
    /// assert!(tidings_nats::Options::default().pin_key_partitions);
    /// assert!(!tidings_nats::Options::default().pin_key_partitions(false).pin_key_partitions);
    /// ```
    pub fn pin_key_partitions(mut self, pin: bool) -> Self {
        self.pin_key_partitions = pin;
        self
    }

    /// Sets [`Options::key_partitions`] (at most 256; 0 for none).
    ///
    /// ```
    /// let o = tidings_nats::Options::default();
    /// assert_eq!(o.clone().key_partitions(4).key_partitions, 4);
    /// assert_eq!(o.key_partitions(100_000).key_partitions, 256);
    /// ```
    pub fn key_partitions(mut self, partitions: u32) -> Self {
        self.key_partitions = partitions.min(MAX_KEY_PARTITIONS);
        self
    }
}

/// The longest `ack_wait` of a key partition's consumer. A partition hands
/// out one delivery at a time, so a delivery lost on its way to a process
/// (a connection cut while the server sent it) holds the whole partition
/// until `ack_wait` passes; this bounds that wait, whatever
/// [`Options::ack_wait`] is (the holder's heartbeats keep a long delivery
/// its own).
pub(crate) const PARTITION_ACK_WAIT: Duration = Duration::from_secs(5);

impl Options {
    /// The `ack_wait` of a key partition's consumer.
    pub(crate) fn partition_ack_wait(&self) -> Duration {
        self.ack_wait.min(PARTITION_ACK_WAIT)
    }
}

/// Most key partitions a bus may have (each is a consumer per handler).
pub(crate) const MAX_KEY_PARTITIONS: u32 = 256;
