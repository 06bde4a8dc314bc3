//! How an event and a dead letter look on the server.
//!
//! An event is one stream message: its JSON text as the payload, and headers
//! for the rest (`Nats-Msg-Id` is its id, which also makes the server drop a
//! second publish of it within the stream's duplicate window). A replayed
//! dead letter is its event published again for one handler: a message id
//! of its own (the replay's), the event's id in `Tidings-Replay-Of` and the
//! handler's name in `Tidings-Replay-For`; every other handler's consumer
//! of the type acknowledges it unrun. A dead letter is one JSON value in
//! the bus's dead-letter bucket (marked with its replay's message id while
//! that replay is in the stream). Both are read back as untrusted input:
//! what does not parse is refused with a reason that never quotes the
//! payload.

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidings::store::{BoundHandler, StoredDeadLetter, StoredEvent};
use uuid::Uuid;

const ID: &str = "Nats-Msg-Id";
const TYPE: &str = "Tidings-Type";
const KEY: &str = "Tidings-Key";
const AT: &str = "Tidings-Emitted-At";
const REPLAY_OF: &str = "Tidings-Replay-Of";
const REPLAY_FOR: &str = "Tidings-Replay-For";
/// The headers an event's message may carry, in the order of `__fuzz::event`.
pub(crate) const HEADERS: [&str; 6] = [ID, TYPE, KEY, AT, REPLAY_OF, REPLAY_FOR];

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The headers of an event's message.
pub(crate) fn headers(event: &StoredEvent) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ID, event.id.to_string());
    h.insert(TYPE, event.event_type.as_str());
    if let Some(k) = &event.key {
        h.insert(KEY, k.as_str());
    }
    h.insert(AT, nanos(event.emitted_at).to_string());
    h
}

/// The headers of a replay of `event`'s dead letter for `handler`: its own
/// message id `replay` (the event's id would be dropped as a duplicate
/// within the stream's window, and is in `Tidings-Replay-Of`).
pub(crate) fn replay_headers(event: &StoredEvent, handler: &str, replay: Uuid) -> HeaderMap {
    let mut h = headers(event);
    h.insert(ID, replay.to_string());
    h.insert(REPLAY_OF, event.id.to_string());
    h.insert(REPLAY_FOR, handler);
    h
}

/// The one handler a message is for, if it is a dead letter's replay.
pub(crate) fn replay_for(message: &async_nats::Message) -> Option<&str> {
    Some(message.headers.as_ref()?.get(REPLAY_FOR)?.as_str())
}

/// When the event of a stored message was emitted, from its headers.
pub(crate) fn emitted_at(h: &HeaderMap) -> Option<SystemTime> {
    h.get(AT)?.as_str().parse().ok().map(time)
}

/// The bus's stream says in its description how many partitions its keyed
/// events are spread over, so that every process uses the first one's
/// count, and whether they are in a stream of their own (`tidings_layout`
/// 2; absent in a stream made before).
#[derive(Serialize, Deserialize)]
struct StreamLabel {
    tidings_key_partitions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tidings_layout: Option<u32>,
}

/// The layout of a bus whose keyed events are in a stream of their own.
pub(crate) const KEYED_APART: u32 = 2;

/// The description of a bus's stream made now: its partition count, keyed
/// events apart.
pub(crate) fn stream_label(partitions: u32) -> String {
    serde_json::json!(StreamLabel {
        tidings_key_partitions: partitions,
        tidings_layout: Some(KEYED_APART),
    })
    .to_string()
}

/// The partition count and layout a stream's description records, if it
/// is a tidings stream's made by a version that partitions keyed events.
pub(crate) fn stream_partitions(description: &str) -> Option<(u32, Option<u32>)> {
    serde_json::from_str::<StreamLabel>(description)
        .ok()
        .map(|l| (l.tidings_key_partitions, l.tidings_layout))
}

/// A handler's consumer says whose it is in its description (the consumer's
/// name keeps only safe characters of the handler's name).
#[derive(Serialize, Deserialize)]
struct Label {
    tidings_handler: String,
    event_type: String,
}

/// The description of a handler's consumer.
pub(crate) fn label(h: &BoundHandler) -> String {
    serde_json::json!(Label {
        tidings_handler: h.name.clone(),
        event_type: h.event_type.clone(),
    })
    .to_string()
}

/// The handler a consumer's description names, if it is a tidings consumer's.
pub(crate) fn unlabel(description: &str) -> Option<BoundHandler> {
    let l: Label = serde_json::from_str(description).ok()?;
    Some(BoundHandler {
        name: l.tidings_handler,
        event_type: l.event_type,
    })
}

/// An event read back from its message (no deliveries yet).
pub(crate) fn event(message: &async_nats::Message) -> Result<StoredEvent, &'static str> {
    let h = message.headers.as_ref().ok_or("no headers")?;
    let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
    let message_id = get(ID)
        .and_then(|v| Uuid::parse_str(&v).ok())
        .ok_or("no valid event id")?;
    // A replay's message id is its own; the event's is in `REPLAY_OF`.
    let id = match get(REPLAY_OF) {
        None => message_id,
        Some(v) => Uuid::parse_str(&v).map_err(|_| "no valid replayed event id")?,
    };
    let event_type = get(TYPE).ok_or("no event type")?;
    let emitted_at = get(AT)
        .and_then(|v| v.parse().ok())
        .map(time)
        .ok_or("no valid emit time")?;
    let data = String::from_utf8(message.payload.to_vec()).map_err(|_| "payload is not UTF-8")?;
    Ok(StoredEvent {
        id,
        event_type,
        key: get(KEY),
        emitted_at,
        data,
        deliveries: Vec::new(),
    })
}

/// A dead letter as the bucket keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DeadRecord {
    id: Uuid,
    event_type: String,
    key: Option<String>,
    emitted_at_ns: u64,
    data: String,
    handler: String,
    attempts: u32,
    error: String,
    failed_at_ns: u64,
    /// The message id of this letter's replay, published and not handled
    /// yet: the letter is not listed while it is in the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay: Option<Uuid>,
}

impl DeadRecord {
    pub(crate) fn new(event: &StoredEvent, handler: &str, attempts: u32, error: &str) -> Self {
        Self {
            id: event.id,
            event_type: event.event_type.clone(),
            key: event.key.clone(),
            emitted_at_ns: nanos(event.emitted_at),
            data: event.data.clone(),
            handler: handler.to_owned(),
            attempts,
            error: error.to_owned(),
            failed_at_ns: nanos(SystemTime::now()),
            replay: None,
        }
    }

    /// The letter, marked as replayed by the message `replay`.
    pub(crate) fn replayed(&self, replay: Uuid) -> Self {
        Self {
            replay: Some(replay),
            ..self.clone()
        }
    }

    /// Whether its replay is in the stream (see [`DeadRecord::replayed`]).
    pub(crate) fn is_replaying(&self) -> bool {
        self.replay.is_some()
    }

    pub(crate) fn letter(&self) -> StoredDeadLetter {
        StoredDeadLetter {
            event: self.event(),
            handler: self.handler.clone(),
            attempts: self.attempts,
            error: self.error.clone(),
            failed_at: time(self.failed_at_ns),
        }
    }

    pub(crate) fn event(&self) -> StoredEvent {
        StoredEvent {
            id: self.id,
            event_type: self.event_type.clone(),
            key: self.key.clone(),
            emitted_at: time(self.emitted_at_ns),
            data: self.data.clone(),
            deliveries: Vec::new(),
        }
    }

    pub(crate) fn handler(&self) -> &str {
        &self.handler
    }

    pub(crate) fn failed_at_ns(&self) -> u64 {
        self.failed_at_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredEvent {
        StoredEvent {
            id: Uuid::now_v7(),
            event_type: "order.created".into(),
            key: Some("cart 7".into()),
            emitted_at: time(1_700_000_000_123_456_789),
            data: r#"{"n":1}"#.into(),
            deliveries: Vec::new(),
        }
    }

    #[test]
    fn an_event_survives_its_message() {
        let e = sample();
        let m = async_nats::Message {
            subject: "s".into(),
            reply: None,
            payload: e.data.clone().into(),
            headers: Some(headers(&e)),
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(event(&m).unwrap(), e);
    }

    #[test]
    fn foreign_messages_are_refused_with_a_reason() {
        let mut m = async_nats::Message {
            subject: "s".into(),
            reply: None,
            payload: "secret".into(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(event(&m).unwrap_err(), "no headers");
        let mut h = headers(&sample());
        h.insert(ID, "not-a-uuid");
        m.headers = Some(h);
        assert_eq!(event(&m).unwrap_err(), "no valid event id");
        m.headers = Some(headers(&sample()));
        m.payload = vec![0xff, 0xfe].into();
        assert_eq!(event(&m).unwrap_err(), "payload is not UTF-8");
    }

    #[test]
    fn a_replay_is_read_back_as_its_event_for_its_handler() {
        let e = sample();
        let replay = Uuid::now_v7();
        let m = async_nats::Message {
            subject: "s".into(),
            reply: None,
            payload: e.data.clone().into(),
            headers: Some(replay_headers(&e, "notify", replay)),
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(event(&m).unwrap(), e);
        assert_eq!(replay_for(&m), Some("notify"));
        let h = m.headers.as_ref().unwrap();
        assert_eq!(h.get(ID).unwrap().as_str(), replay.to_string());
        let mut bad = m.clone();
        let mut h = replay_headers(&e, "notify", replay);
        h.insert(REPLAY_OF, "secret");
        bad.headers = Some(h);
        assert_eq!(event(&bad).unwrap_err(), "no valid replayed event id");
    }

    #[test]
    fn a_consumer_label_names_its_handler() {
        let h = BoundHandler {
            name: "notify \"ops\" team".into(),
            event_type: "order.created".into(),
        };
        assert_eq!(unlabel(&label(&h)), Some(h));
        assert_eq!(unlabel("someone else's consumer"), None);
    }

    #[test]
    fn a_dead_letter_survives_its_record() {
        let e = sample();
        let r = DeadRecord::new(&e, "notify", 3, "smtp down");
        let back: DeadRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        let d = back.letter();
        assert_eq!(
            (d.event, d.handler.as_str(), d.attempts, d.error.as_str()),
            (e, "notify", 3, "smtp down")
        );
        assert!(!back.is_replaying());
        let marked = back.replayed(Uuid::now_v7());
        let json = serde_json::to_vec(&marked).unwrap();
        let again: DeadRecord = serde_json::from_slice(&json).unwrap();
        assert!(again.is_replaying());
    }
}
