//! `GET /api/tail`: the bus's tail ([`tidings::EventBus::tail`]) as
//! Server-Sent Events: one `data:` line of JSON per tiding (its `kind` is
//! `emitted` or `settled`), metadata only. A client that falls behind gets
//! an `event: lagged` with how many it missed, then the newest; a comment
//! every 15 s keeps proxies from closing a quiet stream.

use crate::Admin;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::time::Duration;
use tidings::TailError;

/// `GET /api/tail`.
pub(crate) async fn tail(
    State(admin): State<Admin>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let tail = admin.bus.tail();
    let events = stream::unfold(tail, |mut tail| async move {
        let event = match tail.recv().await {
            Ok(t) => Event::default()
                .json_data(&t)
                .unwrap_or_else(|_| Event::default().comment("unencodable")),
            Err(TailError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(_) => return None,
        };
        Some((Ok(event), tail))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
