//! The store's link to the server: what happens when it breaks and comes back.
//!
//! `async-nats` reconnects by itself (here with a backoff from 0 to 1 s),
//! resubscribes, and sends what was published meanwhile once it is back.
//! What it cannot do, this does, on its `Connected` event:
//!
//! - **Acknowledgements sent again.** An ack written to a connection just
//!   before it broke may never have reached the server; a key partition
//!   (one delivery out at a time) would then wait out `ack_wait` (30 s by
//!   default) before it moves on. The store keeps the acks and terms of the
//!   last [`RESEND_WINDOW`] (at most [`RESEND_CAP`]) and sends them again:
//!   the server ignores an ack of what is no longer pending.
//! - **Pulls made again at once.** The server forgets pull requests when it
//!   restarts; the key partitions' pollers drop theirs and ask again, and
//!   the relay claims at once, instead of waiting for their timeouts.
//! - **Health.** `tidings::store::Health` says whether the store is connected, since when
//!   and how many times it reconnected (`bus.stats().store`).
//!
//! Heartbeats (`AckKind::Progress`) are confirmed by a round trip to the
//! server (a flush); a keyed delivery whose last confirmed heartbeat is
//! older than `ack_wait` may have been handed to another process (this one
//! was paused, or cut off, for that long), and its settle is dropped rather
//! than sent: JetStream accepts an ack from any holder, and a stale one
//! would let the key's next event start while the new holder still runs the
//! first.

use async_nats::Subject;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How far back acknowledgements are sent again after a reconnect.
pub(crate) const RESEND_WINDOW: Duration = Duration::from_secs(30);

/// The most acknowledgements kept for sending again.
pub(crate) const RESEND_CAP: usize = 65_536;

/// The client's reconnect backoff: 0 for the first attempt, then doubling
/// from 50 ms up to 1 s.
pub(crate) fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(5);
    (Duration::from_millis(50) * 2u32.pow(exp)).min(Duration::from_secs(1))
}

/// Acknowledgements recently sent, to send again after a reconnect.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    acks: Mutex<VecDeque<(Instant, Subject, Bytes)>>,
}

impl Sent {
    /// Keeps an ack (or term) sent to `to`.
    pub(crate) fn keep(&self, to: Subject, body: Bytes) {
        let now = Instant::now();
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        while acks
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > RESEND_WINDOW)
            || acks.len() >= RESEND_CAP
        {
            acks.pop_front();
        }
        acks.push_back((now, to, body));
    }

    /// Whether this process acknowledged (or terminated) a delivery of the
    /// message `reply` is for (same stream, consumer and stream sequence)
    /// within [`RESEND_WINDOW`]: a later delivery of it is a duplicate.
    pub(crate) fn settled(&self, reply: &str) -> bool {
        let Some(message) = message_of(reply) else {
            return false;
        };
        let now = Instant::now();
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .take_while(|(at, ..)| now.duration_since(*at) <= RESEND_WINDOW)
            .any(|(_, to, _)| message_of(to.as_str()) == Some(message))
    }

    /// What to send again now.
    pub(crate) fn recent(&self) -> Vec<(Subject, Bytes)> {
        let now = Instant::now();
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(at, ..)| now.duration_since(*at) <= RESEND_WINDOW)
            .map(|(_, to, body)| (to.clone(), body.clone()))
            .collect()
    }
}

/// The stream, consumer and stream sequence of the message an ack subject
/// is for: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...` (9
/// tokens), or with a domain and an account hash before the stream (12 or
/// more).
fn message_of(reply: &str) -> Option<(&str, &str, &str)> {
    let t: Vec<&str> = reply.split('.').collect();
    match t.len() {
        9 => Some((t[2], t[3], t[5])),
        n if n >= 11 => Some((t[4], t[5], t[7])),
        _ => None,
    }
}

/// What the connection's events tell the store.
pub(crate) enum Change {
    Lost,
    Back,
}

/// Forwards the client's connection events; made before the client, read
/// by the store's task once the store exists.
pub(crate) fn events() -> (
    impl Fn(async_nats::Event) -> futures_util::future::Ready<()> + Send + Sync + 'static,
    tokio::sync::mpsc::UnboundedReceiver<Change>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = move |event: async_nats::Event| {
        let change = match event {
            async_nats::Event::Disconnected => Some(Change::Lost),
            async_nats::Event::Connected => Some(Change::Back),
            _ => None,
        };
        if let Some(change) = change {
            let _ = tx.send(change);
        }
        futures_util::future::ready(())
    };
    (forward, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_delivery_of_an_acknowledged_message_is_known() {
        let sent = Sent::default();
        sent.keep("$JS.ACK.S.c.1.1492.47.1700000000.3".into(), "+ACK".into());
        assert!(sent.settled("$JS.ACK.S.c.2.1492.51.1700000009.0"));
        assert!(!sent.settled("$JS.ACK.S.c.2.1493.52.1700000009.0"));
        assert!(!sent.settled("$JS.ACK.S.other.2.1492.52.1700000009.0"));
        assert!(sent.settled("$JS.ACK.dom.acchash.S.c.3.1492.60.1700000010.0.tok"));
        assert!(!sent.settled("garbage"));
    }

    #[test]
    fn reconnects_back_off_from_nothing_to_a_second() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(20), Duration::from_secs(1));
    }

    #[test]
    fn only_recent_acks_are_sent_again() {
        let sent = Sent::default();
        sent.keep(Subject::from("a"), Bytes::from_static(b"+ACK"));
        assert_eq!(sent.recent().len(), 1);
    }
}

/// Connect options for `url`, and the server list to connect to without
/// its credentials: a user and password (or a token) in the URL are moved
/// into the options. `async-nats` logs each server address it dials (at
/// DEBUG) with whatever its URL holds, password included; the stores
/// connect this way, and so can an application's own clients.
///
/// ```
/// let (options, servers) = tidings_nats::connect_options("nats://app:s3cret@nats:4222");
/// assert_eq!(servers, "nats://nats:4222");
/// # drop(options); // then: options.connect(servers.as_str()).await
/// ```
pub fn credentials(url: &str) -> (async_nats::ConnectOptions, String) {
    let mut found: Option<String> = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let server = server.trim();
            let parts = tidings::redact::ServerUrl::parse(server);
            let Some(userinfo) = parts.userinfo else {
                return server.to_owned();
            };
            found.get_or_insert_with(|| userinfo.to_owned());
            parts.without_userinfo()
        })
        .collect();
    let options = async_nats::ConnectOptions::new();
    let options = match found.as_deref().map(|u| u.split_once(':')) {
        Some(Some((user, password))) => options.user_and_password(user.into(), password.into()),
        Some(None) => options.token(found.unwrap_or_default()),
        None => options,
    };
    (options, servers.join(","))
}

/// Connects to `url` (its credentials moved out of it, see [`credentials`]).
pub(crate) async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (options, servers) = credentials(url);
    options.connect(servers.as_str()).await
}

#[cfg(test)]
mod credential_tests {
    use super::credentials;

    #[test]
    fn credentials_leave_the_url() {
        assert_eq!(credentials("nats://u:p@h:4222").1, "nats://h:4222");
        assert_eq!(
            credentials("nats://tok@h:4222,nats://h2:1").1,
            "nats://h:4222,nats://h2:1"
        );
        assert_eq!(credentials("h:4222").1, "h:4222");
        assert_eq!(credentials("u:p@h").1, "h");
    }
}
