//! How an event and a dead letter look on the server.
//!
//! An event is one stream message. On a bus made by this version (stream
//! layout [`FRAMED`]) it has no headers: its payload is one line of frame,
//! `tidings/1 <id> <emit time, ns> <type>[ <key>]`, then the event's JSON
//! text. Headers cost the engine a quarter of its rate (raw JetStream, 64
//! publishers: 60-67 k events/s bare, 47-50 k with the three headers an
//! unkeyed event had, 57-65 k with the same fields in the payload;
//! `examples/raw_headers.rs`, docs/BENCHMARKS.md, section 7, session 28). On a bus made before
//! (layout [`KEYED_APART`]), events keep the headers they had, so that the
//! processes of the version before can still share it: the JSON text as the
//! payload, `Nats-Msg-Id` its id (the server drops a second publish of it
//! within the stream's duplicate window), `Tidings-Type`, `Tidings-Key`,
//! `Tidings-Emitted-At`, until an operator records layout [`FRAMED`] once
//! no process of the version before remains
//! ([`JetStreamStore::finish_upgrade`](crate::JetStreamStore::finish_upgrade)).
//! Both are read on every bus.
//!
//! A replayed dead letter is its event published again for one handler, in
//! headers on every bus: a message id of its own (the replay's, so that a
//! publish tried again is dropped as a duplicate), the event's id in
//! `Tidings-Replay-Of` and the handler's name in `Tidings-Replay-For`;
//! every other handler's consumer of the type acknowledges it unrun. A dead
//! letter is one JSON value in the bus's dead-letter bucket (marked with its
//! replay's message id while that replay is in the stream). Both are read
//! back as untrusted input: what does not parse is refused with a reason
//! that never quotes the payload.

use async_nats::{HeaderMap, HeaderName};
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

/// The header names looked up on every delivery, made once: a lookup by
/// `&str` checks and copies the name each time (2 450 of the 63 000
/// instructions the process spent per keyed event; BENCHMARKS section 7,
/// session 29).
static TYPE_NAME: HeaderName = HeaderName::from_static(TYPE);
static REPLAY_FOR_NAME: HeaderName = HeaderName::from_static(REPLAY_FOR);

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// How a bus's events are written (its stream's layout says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The fields in headers (a bus made before [`FRAMED`]).
    Headers,
    /// The fields in the payload's first line, no headers.
    Framed,
}

/// What starts a framed event's payload.
const FRAME: &str = "tidings/1 ";

/// An event's message: its headers (none when framed) and payload.
pub(crate) fn message(event: &StoredEvent, format: Format) -> (Option<HeaderMap>, bytes::Bytes) {
    match format {
        Format::Headers => (Some(headers(event)), event.data.clone().into()),
        Format::Framed => {
            use std::fmt::Write;
            // One allocation: the frame (an id of 36, a time of up to 20)
            // and the payload after it.
            let key = event.key.as_deref().map_or(0, |k| k.len() + 1);
            let size = FRAME.len() + 60 + event.event_type.len() + key + event.data.len();
            let mut frame = String::with_capacity(size);
            let _ = write!(
                frame,
                "{FRAME}{} {} {}",
                event.id,
                nanos(event.emitted_at),
                event.event_type
            );
            if let Some(k) = &event.key {
                frame.push(' ');
                frame.push_str(k);
            }
            frame.push('\n');
            frame.push_str(&event.data);
            (None, frame.into())
        }
    }
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
    Some(
        message
            .headers
            .as_ref()?
            .get(REPLAY_FOR_NAME.clone())?
            .as_str(),
    )
}

/// When the event of a stored message was emitted, from its headers or
/// its frame.
pub(crate) fn emitted_at(h: Option<&HeaderMap>, payload: &[u8]) -> Option<SystemTime> {
    match h.and_then(|h| h.get(AT)) {
        Some(at) => at.as_str().parse().ok().map(time),
        None => framed(payload).ok().map(|f| time(f.at)),
    }
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

/// The layout of a bus whose keyed events are in a stream of their own and
/// whose events are framed ([`Format::Framed`]): made by this version.
pub(crate) const FRAMED: u32 = 3;

/// The description of a bus's stream made now: its partition count, keyed
/// events apart and framed.
pub(crate) fn stream_label(partitions: u32) -> String {
    serde_json::json!(StreamLabel {
        tidings_key_partitions: partitions,
        tidings_layout: Some(FRAMED),
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

/// An event read back from its message (no deliveries yet): from its
/// headers if it has them, else from its frame.
pub(crate) fn event(message: &async_nats::Message) -> Result<StoredEvent, &'static str> {
    let h = message
        .headers
        .as_ref()
        .filter(|h| h.get(TYPE_NAME.clone()).is_some());
    let Some(h) = h else {
        let f = framed(&message.payload)?;
        return Ok(StoredEvent {
            id: f.id,
            event_type: f.event_type.to_owned(),
            key: f.key.map(str::to_owned),
            emitted_at: time(f.at),
            data: f.data.to_owned(),
            deliveries: Vec::new(),
        });
    };
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

/// A framed event's fields, borrowed from its payload.
struct Framed<'a> {
    id: Uuid,
    at: u64,
    event_type: &'a str,
    key: Option<&'a str>,
    data: &'a str,
}

/// Reads a framed payload (see [`Format::Framed`]). The type and key are
/// checked by the claim, as a headers' are.
fn framed(payload: &[u8]) -> Result<Framed<'_>, &'static str> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8")?;
    let rest = text.strip_prefix(FRAME).ok_or("no headers and no frame")?;
    let (line, data) = rest.split_once('\n').ok_or("no end to its frame")?;
    let mut fields = line.splitn(4, ' ');
    let id = fields
        .next()
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or("no valid event id")?;
    let at = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("no valid emit time")?;
    let (event_type, key) = match fields.next().ok_or("no event type")? {
        "" => return Err("no event type"),
        t => (t, fields.next()),
    };
    Ok(Framed {
        id,
        at,
        event_type,
        key,
        data,
    })
}

/// A dead letter as the bucket keeps it.
#[derive(Serialize, Deserialize)]
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
    pub(crate) fn replayed(mut self, replay: Uuid) -> Self {
        self.replay = Some(replay);
        self
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
        let m = sent(Some(headers(&e)), e.data.clone().into());
        assert_eq!(event(&m).unwrap(), e);
    }

    fn sent(headers: Option<HeaderMap>, payload: bytes::Bytes) -> async_nats::Message {
        async_nats::Message {
            subject: "s".into(),
            reply: None,
            length: payload.len(),
            payload,
            headers,
            status: None,
            description: None,
        }
    }

    #[test]
    fn an_event_survives_its_framed_message_with_or_without_a_key() {
        let mut e = sample();
        let (h, payload) = message(&e, Format::Framed);
        assert!(h.is_none(), "no headers");
        assert!(payload.starts_with(b"tidings/1 "));
        assert_eq!(event(&sent(None, payload)).unwrap(), e);
        e.key = None;
        e.data = "{\"multi\":\"line\n text\"}".into();
        let (_, payload) = message(&e, Format::Framed);
        let back = event(&sent(None, payload.clone())).unwrap();
        assert_eq!(back, e);
        // Headers without a type (a server's own, say) leave the frame to say.
        let mut h = HeaderMap::new();
        h.insert("Nats-Something", "x");
        assert_eq!(event(&sent(Some(h), payload.clone())).unwrap(), e);
        let at = emitted_at(None, &payload);
        assert_eq!(at, Some(e.emitted_at));
        // The format a bus made before writes: headers, as they were.
        let (h, payload) = message(&e, Format::Headers);
        assert_eq!(payload, e.data.as_bytes());
        assert_eq!(event(&sent(h.clone(), payload.clone())).unwrap(), e);
        assert_eq!(emitted_at(h.as_ref(), &payload), Some(e.emitted_at));
    }

    #[test]
    fn a_bad_frame_is_refused_with_a_reason() {
        let id = Uuid::now_v7();
        for (payload, why) in [
            ("secret".to_owned(), "no headers and no frame"),
            (format!("tidings/1 {id} 5 t"), "no end to its frame"),
            ("tidings/1 secret 5 t\n{}".to_owned(), "no valid event id"),
            (
                format!("tidings/1 {id} secret t\n{{}}"),
                "no valid emit time",
            ),
            (format!("tidings/1 {id} 5\n{{}}"), "no event type"),
            (format!("tidings/1 {id} 5 \n{{}}"), "no event type"),
        ] {
            let m = sent(None, payload.into());
            assert_eq!(event(&m).unwrap_err(), why);
        }
        let m = sent(None, vec![0xff, 0xfe].into());
        assert_eq!(event(&m).unwrap_err(), "payload is not UTF-8");
    }

    #[test]
    fn foreign_messages_are_refused_with_a_reason() {
        let mut m = sent(None, "secret".into());
        assert_eq!(event(&m).unwrap_err(), "no headers and no frame");
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
        let m = sent(
            Some(replay_headers(&e, "notify", replay)),
            e.data.clone().into(),
        );
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
