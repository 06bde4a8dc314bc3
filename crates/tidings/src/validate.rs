//! Checks on what callers hand the bus, before it reaches logs, SQL or subjects.

use crate::error::EmitError;
use serde_json::Value;
use std::time::SystemTime;

/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest ordering key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Whether `name` is a valid event type: 1 to 128 characters of `A-Za-z0-9_.:-`.
///
/// ```
/// assert!(tidings::is_valid_event_type("order_created"));
/// assert!(tidings::is_valid_event_type("billing.invoice:v2"));
/// assert!(!tidings::is_valid_event_type(""));
/// assert!(!tidings::is_valid_event_type("drop table;"));
/// ```
pub fn is_valid_event_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_TYPE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

pub(crate) fn event_type(name: &str) -> Result<(), EmitError> {
    if is_valid_event_type(name) {
        Ok(())
    } else {
        Err(EmitError::InvalidEventType {
            name: Shown::new(name),
        })
    }
}

/// Whether `key` is a valid ordering key: 1 to 256 bytes, no control characters.
///
/// ```
/// assert!(tidings::is_valid_key("user-42"));
/// assert!(!tidings::is_valid_key(""));
/// assert!(!tidings::is_valid_key("a\nb"));
/// ```
pub fn is_valid_key(key: &str) -> bool {
    key_problem(key).is_none()
}

/// What is wrong with `key`, if anything.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("longer than 256 bytes")
    } else if key.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    }
}

pub(crate) fn key(key: &str) -> Result<(), EmitError> {
    match key_problem(key) {
        Some(reason) => Err(EmitError::InvalidKey { reason }),
        None => Ok(()),
    }
}

/// Encodes a dynamic payload once, as the JSON text every handler shares:
/// checks that it is an object under `limit` bytes, and appends the metadata
/// keys `_event_type` and `_emitted_at` (which win over same-named keys of
/// the payload, being last).
/// The encode buffer's first size: a seed-sized event (five fields, about
/// 180 bytes of JSON) plus its metadata (about 75 bytes) fits.
const ENCODE_START: usize = 320;

pub(crate) fn encode(
    data: &Value,
    event_type: &str,
    at: SystemTime,
    limit: usize,
) -> Result<Box<str>, EmitError> {
    let Value::Object(map) = data else {
        return Err(EmitError::InvalidPayload {
            reason: format!("expected a JSON object, got {}", kind(data)),
        });
    };
    // Encoded whole, then measured: the caller's value already holds at least
    // as many bytes, so this bounds the queue without a check per token.
    // Sized for a typical event with its metadata, so that most encodes
    // never grow the buffer (serde_json's own `to_vec` starts at 128 bytes).
    let mut buf = Vec::with_capacity(ENCODE_START);
    serde_json::to_writer(&mut buf, data).map_err(|e| EmitError::InvalidPayload {
        reason: e.to_string(),
    })?;
    if buf.len() > limit {
        return Err(EmitError::PayloadTooLarge { limit });
    }
    const KEY_TYPE: &[u8] = b"\"_event_type\":\"";
    const KEY_AT: &[u8] = b"\",\"_emitted_at\":\"";
    // Room for the metadata up front, so the text is never copied to grow or shrink.
    buf.reserve_exact(
        1 + KEY_TYPE.len() + event_type.len() + KEY_AT.len() + crate::time::RFC3339_LEN + 2,
    );
    buf.pop(); // the closing brace
    if !map.is_empty() {
        buf.push(b',');
    }
    buf.extend_from_slice(KEY_TYPE);
    buf.extend_from_slice(event_type.as_bytes()); // validated: nothing to escape
    buf.extend_from_slice(KEY_AT);
    crate::time::write_rfc3339(at, &mut buf);
    buf.extend_from_slice(b"\"}");
    String::from_utf8(buf)
        .map(String::into_boxed_str)
        .map_err(|_| EmitError::InvalidPayload {
            reason: "payload is not valid UTF-8".into(),
        })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A caller-supplied string made safe to print: escaped, and cut to at most
/// 64 characters of input and [`Shown::MAX_LEN`] bytes of escaped text.
///
/// Errors carry this instead of the raw input, so that a hostile name cannot
/// forge log lines.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// let err = bus.emit("forged\nERROR line", serde_json::json!({})).await.unwrap_err();
/// let tidings::EmitError::InvalidEventType { name } = err else { unreachable!() };
/// assert_eq!(name.as_str(), "forged\\nERROR line");
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    /// The most bytes of escaped text kept (an escape such as `\u{10ffff}`
    /// takes 10 bytes for one character), before the closing `…`.
    pub const MAX_LEN: usize = 160;

    pub(crate) fn new(raw: &str) -> Self {
        let mut out = String::new();
        for (i, c) in raw.chars().enumerate() {
            let escaped = c.escape_debug();
            if i == 64 || out.len() + escaped.len() > Self::MAX_LEN {
                out.push('…');
                break;
            }
            out.extend(escaped);
        }
        Shown(out)
    }

    /// The escaped, shortened text.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
    /// let Err(tidings::EmitError::InvalidEventType { name }) = bus.try_emit("a b", serde_json::json!({})) else { unreachable!() };
    /// assert_eq!(name.as_str(), "a b");
    /// # }
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(Shown::new("a\nb").as_str(), "a\\nb");
        assert_eq!(Shown::new(&"x".repeat(100)).as_str().chars().count(), 65);
        // Each of these escapes to 10 bytes: the byte bound cuts first.
        let wide = Shown::new(&"\u{100000}".repeat(64));
        assert!(wide.as_str().len() <= Shown::MAX_LEN + '…'.len_utf8());
        assert!(wide.as_str().ends_with('…'));
    }

    #[test]
    fn payload_limit_is_exact() {
        let v = serde_json::json!({"a": "bc"}); // {"a":"bc"} is 10 bytes
        let at = SystemTime::now();
        assert!(encode(&v, "t", at, 10).is_ok());
        assert!(matches!(
            encode(&v, "t", at, 9),
            Err(EmitError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn encoding_appends_metadata_and_parses_back() {
        let at = SystemTime::now();
        for v in [
            serde_json::json!({}),
            serde_json::json!({"a": [1, {"b": null}], "_event_type": "spoof"}),
        ] {
            let text = encode(&v, "my.type", at, 1 << 20).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["_event_type"], "my.type");
            assert_eq!(back["_emitted_at"], crate::time::rfc3339(at));
            if let Some(a) = v.get("a") {
                assert_eq!(&back["a"], a);
            }
        }
        assert!(matches!(
            encode(&serde_json::json!([1]), "t", at, 100),
            Err(EmitError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn key_rules() {
        assert!(key("order-1").is_ok());
        assert!(key("").is_err());
        assert!(key("a\u{0}b").is_err());
        assert!(key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
