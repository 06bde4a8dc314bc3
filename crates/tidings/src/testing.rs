//! Helpers for testing handlers without a bus.

use crate::envelope::{add_metadata, Envelope, NoPayload, Shared, TypeName, Typed};
use crate::Event;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// An envelope of a dynamic event, as a handler would receive it (attempt 1).
///
/// ```
/// let e = tidings::testing::envelope("my_event", serde_json::json!({"user_id": 1}));
/// assert_eq!(e.data()["user_id"], 1);
/// ```
pub fn envelope(event_type: &str, mut data: Value) -> Envelope {
    let at = chrono::Utc::now();
    add_metadata(&mut data, event_type, at);
    let json = OnceLock::new();
    let _ = json.set(data);
    Envelope {
        shared: Arc::new(Shared {
            id: uuid::Uuid::now_v7(),
            event_type: TypeName::Shared(event_type.into()),
            emitted_at: at,
            key: None,
            span: tracing::Span::none(),
            ticket: None,
            json,
            payload: NoPayload,
        }),
        attempt: 1,
    }
}

/// An envelope of a typed event, as a typed handler would receive it.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
/// # #[event(type = "ping")]
/// # struct Ping { n: u8 }
/// let e = tidings::testing::typed_envelope(Ping { n: 1 });
/// assert_eq!(e.event_type(), "ping");
/// ```
pub fn typed_envelope<T: Event>(event: T) -> Envelope {
    Envelope {
        shared: Arc::new(Shared {
            id: uuid::Uuid::now_v7(),
            event_type: TypeName::Static(T::TYPE),
            emitted_at: chrono::Utc::now(),
            key: None,
            span: tracing::Span::none(),
            ticket: None,
            json: OnceLock::new(),
            payload: Typed(event),
        }),
        attempt: 1,
    }
}
