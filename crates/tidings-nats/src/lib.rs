//! # A tidings bus over NATS JetStream, for many processes on many machines
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let store = tidings_nats::JetStreamStore::connect("nats://127.0.0.1:4222", "orders").await?;
//! let bus = tidings::EventBus::builder().store(store).build()?; // handlers found as always
//! bus.emit("order_created", serde_json::json!({"order_id": 42})).await?;
//! # Ok(()) }
//! ```
//!
//! The handlers are the same types as on a memory, SQLite or PostgreSQL bus;
//! only the store changes.
//!
//! ## Delivery
//! - **Emit.** `emit(..).await` returns once the server has stored the event
//!   in the bus's stream (`TIDINGS_<bus>`, file storage; keyed events in
//!   `TIDINGSK_<bus>`, so that acknowledging an event without a key asks
//!   only one consumer per handler whether it still needs it; a bus made
//!   before 2026-12 keeps both in `TIDINGS_<bus>`; a process of a version
//!   from before cannot join a bus made by this one: its key partitions'
//!   consumers would not fit the stream) and acknowledged it. The message
//!   is the event's JSON text after one line naming its id, emit time, type
//!   and key, with no headers (on a bus made before this version, those
//!   stay headers, for the processes of that version, until an operator
//!   ends the upgrade with [`JetStreamStore::finish_upgrade`] (`tidings
//!   upgrade`); see the `wire` module; an earlier version must not join a
//!   bus made by this one: with
//!   key partitions it cannot, without them it would take this version's
//!   events for foreign messages and drop them). The event is not queued
//!   in the emitting process: every delivery
//!   comes back through the server, so a process may emit events it has no
//!   handler for (a web front end that only emits, say), and `try_emit` is
//!   [`tidings::EmitError::MustAwait`]. The receipt's `handlers()` counts
//!   this process's handlers of the type (others may have more).
//! - **Handlers.** Each handler has a durable consumer (named after it,
//!   filtered on its event type). Every process that registers the handler
//!   pulls from that consumer, so each delivery goes to one process: add
//!   processes to share the work. A handler gets the events emitted after
//!   its consumer was first made (when a process with it first started),
//!   and keeps getting them while all of its processes are down.
//! - **At least once.** A claimed delivery is acknowledged when its handler
//!   succeeds or it is dead-lettered. While it is worked on (retries and
//!   their backoff included) the process tells the server so every third of
//!   [`Options::ack_wait`]; a process that dies stops telling, and its
//!   deliveries go to another process (or to the next start) once `ack_wait`
//!   has passed. A shutdown hands back what it did not finish at once.
//!   Handlers must be idempotent on `Envelope::id`, as on every durable bus.
//! - **Retries and dead letters.** Retries run in the process that holds
//!   the delivery, as on any bus; the attempt count is written to the bucket
//!   `TIDINGS_<bus>_attempts`, so that a delivery taken over after a crash
//!   goes on from its attempt. Dead letters are kept in the bucket
//!   `TIDINGS_<bus>_dead`, listed by every bus that starts, and stay there
//!   until a replay of them is handled. A replay (`bus.replay`, in any
//!   process) publishes the event again for that handler alone: it runs in
//!   whichever process pulls it, a keyed one after everything of its key
//!   already in the stream, one at a time with them (see the `settle`
//!   module).
//! - **Order.** Events of one key reach a handler one at a time and in emit
//!   order, across all the processes that share it, and across a crash: a
//!   keyed event goes to one of [`Options::key_partitions`] partitions of its
//!   type (by a digest of the key), and each handler has a consumer per
//!   partition. On nats-server 2.11 or later that consumer is **pinned** to
//!   one process at a time (the default, [`Options::pin_key_partitions`]),
//!   which has up to [`PINNED_WINDOW`] deliveries out and runs each key's
//!   one at a time in stream order; a process newly pinned runs nothing of
//!   the partition until the server counts out only what it holds (see the
//!   `partition` module for how order holds through pauses, cuts and
//!   restarts). On older servers, or with the option off, the consumer
//!   hands out its next delivery only once the last one is settled,
//!   wherever it was held: a partition moves one delivery per round trip to
//!   the server. Keys sharing a partition wait for each other while one
//!   waits to retry. Events without a key are shared out in batches, in no
//!   particular order. Redeliveries come before newer events.
//! - **Saturation.** When a handler has [`Options::max_ack_pending`]
//!   deliveries out, the server keeps pull requests for it waiting; a claim
//!   gives up on that handler after a second (and skips it for another), so
//!   the bus's other handlers go on.
//! - **Idle.** `wait_idle` waits until no delivery of this bus's handlers is
//!   outstanding on the server, in any process.
//!
//! ## Faults of the server
//! The client reconnects by itself (backoff 0 to 1 s) and resubscribes; on
//! each reconnect the store sends the acknowledgements of the last 30 s
//! again and makes the key partitions' pull requests again (see the `link`
//! module). An emit waits up to [`Options::emit_timeout`] (5 s) for the
//! server's acknowledgement, then fails with
//! [`tidings::EmitError::Unavailable`]. A key partition's consumer has an
//! `ack_wait` of at most 5 s, so a delivery lost in a cut holds its
//! partition that long at most. A keyed delivery this process may have
//! lost to another (it was cut off for longer than that) is settled only
//! if the server still says it is this process's; otherwise its outcome is
//! dropped and counted in `stats().store.stale_settles`. The stream's
//! [`Options::max_bytes`] (1 GiB) refuses new events with
//! [`tidings::StoreError::Full`] when reached (each of the bus's two
//! streams); [`Options::max_age`] (none by default) drops old events,
//! delivered or not. A consumer whose immediate fetches come back empty is
//! looked at again now and then (at most once a second, backing off to a
//! minute while idle): if the server counts deliveries pending, a fetch
//! and, if that is empty too, a pull request that waits take them
//! (nats-server 2.9.10 was seen answering every immediate fetch "no
//! messages" for a minute while counting an event pending; see the
//! `look_again` module). **Run nats-server 2.10 or
//! later**: 2.9.10 can strand deliveries that were out when it restarted
//! (tested: lost events on 2.9.10, none on 2.15.1; docs/RELIABILITY.md).
//!
//! ## What it does not cover
//! - A crash of the NATS server itself: JetStream writes the stream to disk
//!   at once but syncs it to the device on its own schedule (`sync_interval`
//!   in the server's configuration, 2 minutes by default); run a cluster with
//!   [`Options::replicas`] for that.
//! - An event of a type no consumer listens to when it is published is not
//!   kept (the stream keeps a message while a consumer still needs it).
//!
//! ## Names
//! The bus name is checked ([`is_valid_bus_name`]); event types (already
//! checked by the bus) become one subject token, `.` written as `~`; handler
//! names become consumer names of safe characters plus a digest of the whole
//! name. Nothing a caller sends can add a subject token or a wildcard.

mod link;
mod names;
mod options;
mod registrations;
mod store;
mod wire;

pub use link::credentials as connect_options;
pub use names::{is_valid_bus_name, MAX_BUS_NAME_LEN};
pub use options::{Options, PINNED_WINDOW};
pub use store::{JetStreamAdmin, JetStreamStore};

/// The decoders of what the server hands back, for the fuzz targets
/// (`fuzz/`); not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    use tidings::store::{StoredDeadLetter, StoredEvent};

    /// An event read back from a stream message whose headers (message id,
    /// type, key, emit time, replayed event id, replay's handler) have these
    /// values, and this payload (read as a frame when there is no type
    /// header).
    pub fn event(headers: [Option<&str>; 6], payload: &[u8]) -> Result<StoredEvent, &'static str> {
        let mut h = async_nats::HeaderMap::new();
        for (name, value) in crate::wire::HEADERS.iter().zip(headers) {
            if let Some(value) = value {
                h.insert(*name, value);
            }
        }
        let message = async_nats::Message {
            subject: "fuzz".into(),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(payload),
            headers: Some(h),
            status: None,
            description: None,
            length: payload.len(),
        };
        crate::wire::event(&message)
    }

    /// A dead letter read back from its bucket's value.
    pub fn dead_letter(value: &[u8]) -> Option<StoredDeadLetter> {
        serde_json::from_slice::<crate::wire::DeadRecord>(value)
            .ok()
            .map(|r| r.letter())
    }

    /// A consumer's description read back as its handler.
    pub fn handler_label(description: &str) -> Option<(String, String)> {
        crate::wire::unlabel(description).map(|h| (h.name, h.event_type))
    }
}
