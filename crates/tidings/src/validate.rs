//! Checks on what callers hand the bus, before it reaches logs, SQL or subjects.

use crate::error::EmitError;
use serde_json::Value;

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

pub(crate) fn key(key: &str) -> Result<(), EmitError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        Err(EmitError::InvalidKey {
            key: Shown::new(key),
        })
    } else {
        Ok(())
    }
}

/// Checks that `data` is a JSON object and returns its encoded size, stopping
/// early once it passes `limit`.
pub(crate) fn payload(data: &Value, limit: usize) -> Result<(), EmitError> {
    if !data.is_object() {
        return Err(EmitError::InvalidPayload {
            reason: format!("expected a JSON object, got {}", kind(data)),
        });
    }
    let mut counter = Counter { n: 0, limit };
    if serde_json::to_writer(&mut counter, data).is_err() || counter.n > limit {
        return Err(EmitError::PayloadTooLarge { limit });
    }
    Ok(())
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

struct Counter {
    n: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n += buf.len();
        if self.n > self.limit {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A caller-supplied string made safe to print: escaped, and cut to 64 characters.
///
/// Errors carry this instead of the raw input, so that a hostile name cannot
/// forge log lines.
///
/// ```
/// let err = tidings::is_valid_event_type("a\nb");
/// assert!(!err);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    pub(crate) fn new(raw: &str) -> Self {
        let mut out = String::new();
        for (i, c) in raw.chars().enumerate() {
            if i == 64 {
                out.push('…');
                break;
            }
            out.extend(c.escape_debug());
        }
        Shown(out)
    }

    /// The escaped, shortened text.
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
    }

    #[test]
    fn payload_limit_is_exact() {
        let v = serde_json::json!({"a": "bc"}); // {"a":"bc"} is 10 bytes
        assert!(payload(&v, 10).is_ok());
        assert!(matches!(
            payload(&v, 9),
            Err(EmitError::PayloadTooLarge { .. })
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
