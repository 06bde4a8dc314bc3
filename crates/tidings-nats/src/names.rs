//! Names on the server: the stream, its subjects, consumers and bucket keys,
//! all derived from names that were validated first, so that nothing a
//! caller sends can add a subject token, a wildcard or a path.

use tidings::store::StoreError;
use uuid::Uuid;

/// Longest bus name, in bytes.
pub const MAX_BUS_NAME_LEN: usize = 64;

/// Checks a bus name: 1 to 64 characters of `A-Za-z0-9_-`.
///
/// ```
/// assert!(tidings_nats::is_valid_bus_name("orders-eu_1"));
/// assert!(!tidings_nats::is_valid_bus_name("a.b"));
/// assert!(!tidings_nats::is_valid_bus_name("orders.>"));
/// assert!(!tidings_nats::is_valid_bus_name(""));
/// ```
pub fn is_valid_bus_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BUS_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The server-side names of one bus.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    bus: String,
    /// `tidings.<bus>.ev.`: what every event subject of the bus starts with.
    events: String,
}

/// An event type's character as its subject holds it: `.` would split
/// the subject, so it becomes `~`, which event types never hold.
fn in_subject(c: char) -> char {
    if c == '.' {
        '~'
    } else {
        c
    }
}

impl Names {
    pub(crate) fn new(bus: &str) -> Result<Self, StoreError> {
        if is_valid_bus_name(bus) {
            Ok(Self {
                bus: bus.into(),
                events: format!("tidings.{bus}.ev."),
            })
        } else {
            Err(StoreError::InvalidConfig(format!(
                "bus name {:?}: expected 1 to {MAX_BUS_NAME_LEN} characters of A-Za-z0-9_-",
                bus.chars().take(80).collect::<String>()
            )))
        }
    }

    /// The stream holding the bus's events.
    pub(crate) fn stream(&self) -> String {
        format!("TIDINGS_{}", self.bus)
    }

    /// The stream holding the bus's keyed events, when they have one of
    /// their own (`TIDINGSK_`: no bus name's stream, `TIDINGS_<bus>`, can
    /// take it).
    pub(crate) fn keyed_stream(&self) -> String {
        format!("TIDINGSK_{}", self.bus)
    }

    /// The subjects of events without a key, `ev.<type>` (a type never
    /// holds `.`). (A bus made before keyed events had a stream of their
    /// own has one stream on `ev.>`, holding both.)
    pub(crate) fn unkeyed_events(&self) -> String {
        format!("tidings.{}.ev.*", self.bus)
    }

    /// The subjects of keyed events, `ev.<type>.k<n>` (whose key falls in
    /// partition `n`): one token more than a type's.
    pub(crate) fn keyed_events(&self) -> String {
        format!("tidings.{}.ev.*.*", self.bus)
    }

    /// The subject an event is published on: its type's, or with a key and
    /// `partitions` > 0, its key's partition of its type.
    pub(crate) fn subject(&self, event_type: &str, key: Option<&str>, partitions: u32) -> String {
        match key {
            Some(key) if partitions > 0 => {
                self.keyed_subject(event_type, partition(key, partitions))
            }
            _ => self.event_subject(event_type),
        }
    }

    /// The subject of one partition of an event type's keyed events.
    pub(crate) fn keyed_subject(&self, event_type: &str, partition: u32) -> String {
        use std::fmt::Write;
        let mut s = self.event_subject(event_type);
        let _ = write!(s, ".k{partition}");
        s
    }

    /// The subject of one (validated) event type. Event types may hold `.`,
    /// which would split the subject; it becomes `~`, which they never hold,
    /// so that different types never share a subject. (Built in one
    /// allocation: every emit and every delivery checked makes one.)
    pub(crate) fn event_subject(&self, event_type: &str) -> String {
        let mut s = String::with_capacity(self.events.len() + event_type.len() + 5);
        s.push_str(&self.events);
        s.extend(event_type.chars().map(in_subject));
        s
    }

    /// Whether a message on `subject` may carry an event of `event_type`
    /// with `key` on a bus of `partitions` key partitions: its type's
    /// subject, or the subject of the key's partition of its type (a keyed
    /// event published by a version before key partitions is on its type's
    /// subject). Read from the subject, without building one: it is asked
    /// of every delivery.
    pub(crate) fn subject_fits(
        &self,
        subject: &str,
        event_type: &str,
        key: Option<&str>,
        partitions: u32,
    ) -> bool {
        let Some(rest) = subject.strip_prefix(self.events.as_str()) else {
            return false;
        };
        let (token, part) = match rest.split_once('.') {
            Some((token, part)) => (token, Some(part)),
            None => (rest, None),
        };
        if !token.chars().eq(event_type.chars().map(in_subject)) {
            return false;
        }
        match (part, key) {
            (None, _) => true,
            (Some(part), Some(key)) if partitions > 0 => {
                let want = partition(key, partitions);
                // `k<n>` exactly as published: no sign, no leading zero.
                part.strip_prefix('k').is_some_and(|n| {
                    n.parse::<u32>() == Ok(want)
                        && n.len() == want.checked_ilog10().unwrap_or(0) as usize + 1
                })
            }
            _ => false,
        }
    }

    /// The plain-NATS subject on which appends ring, so that every process's
    /// relay looks for new deliveries at once instead of at its next tick.
    pub(crate) fn bell(&self) -> String {
        format!("tidings.{}.bell", self.bus)
    }

    /// The bucket of dead letters.
    pub(crate) fn dead_bucket(&self) -> String {
        format!("TIDINGS_{}_dead", self.bus)
    }

    /// The bucket of attempt counts of deliveries waiting to retry.
    pub(crate) fn attempts_bucket(&self) -> String {
        format!("TIDINGS_{}_attempts", self.bus)
    }

    /// The bucket where each process says, every minute, which handlers it
    /// has (key: the handler's consumer name; value: when).
    pub(crate) fn handlers_bucket(&self) -> String {
        format!("TIDINGS_{}_handlers", self.bus)
    }
}

/// The durable consumer of one handler: its name made of safe characters,
/// then a digest of the whole name, so that two handler names never share
/// a consumer and the same name always finds its own.
pub(crate) fn consumer(handler: &str) -> String {
    let readable: String = handler
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, handler.as_bytes()).simple();
    format!("{readable}_{}", &digest.to_string()[..16])
}

/// The consumer of one partition of a handler's keyed events.
pub(crate) fn partition_consumer(handler: &str, partition: u32) -> String {
    format!("{}_k{partition}", consumer(handler))
}

/// The partition of `key` among `partitions` (> 0): the same in every
/// process and every version (a digest fixed by RFC 9562, not a hasher that
/// may change), so that all emits of a key meet in one partition.
pub(crate) fn partition(key: &str, partitions: u32) -> u32 {
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).as_u128();
    (digest % u128::from(partitions.max(1))) as u32
}

/// The bucket key of one delivery (an event for a handler).
pub(crate) fn delivery_key(event: Uuid, handler: &str) -> String {
    format!("{}.{}", event.simple(), consumer(handler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_with_dots_get_one_token() {
        let n = Names::new("b").unwrap();
        assert_eq!(
            n.event_subject("billing.invoice:v2"),
            "tidings.b.ev.billing~invoice:v2"
        );
        assert_ne!(n.event_subject("a.b"), n.event_subject("a_b"));
    }

    #[test]
    fn consumers_are_safe_distinct_and_stable() {
        for h in ["notify", "a b", "a_b", "x.y>*", "ünïcode", ""] {
            let c = consumer(h);
            assert!(c
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(c, consumer(h));
        }
        assert_ne!(consumer("a b"), consumer("a_b"));
        // Pinned: a new version must find the consumers an older one made.
        assert_eq!(consumer("notify"), "notify_c0a3842391e851a2");
    }

    #[test]
    fn keys_fall_in_fixed_partitions() {
        let n = Names::new("b").unwrap();
        assert_eq!(n.subject("a.b", None, 16), "tidings.b.ev.a~b");
        assert_eq!(n.subject("a.b", Some("k"), 0), "tidings.b.ev.a~b");
        let p = partition("order-1", 16);
        assert_eq!(
            n.subject("a.b", Some("order-1"), 16),
            format!("tidings.b.ev.a~b.k{p}")
        );
        // Pinned: processes of different versions must agree.
        assert_eq!(partition("order-1", 16), 15);
        assert_eq!(partition("order-2", 16), 2);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[partition(&format!("key-{i}"), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "spread: {seen:?}");
        assert_eq!(
            partition_consumer("notify", 3),
            "notify_c0a3842391e851a2_k3"
        );
    }

    #[test]
    fn a_subject_fits_its_type_and_its_key_s_partition_only() {
        let n = Names::new("b").unwrap();
        let p = partition("order-1", 16);
        for (key, partitions) in [(None, 16), (Some("order-1"), 16), (Some("order-1"), 0)] {
            let made = n.subject("a.b", key, partitions);
            assert!(n.subject_fits(&made, "a.b", key, partitions), "{made}");
            // A keyed event on its type's subject (a version before partitions).
            assert!(n.subject_fits("tidings.b.ev.a~b", "a.b", key, partitions));
        }
        for bad in [
            format!("tidings.b.ev.a~b.k{}", (p + 1) % 16),
            format!("tidings.b.ev.a~b.k0{p}"),
            format!("tidings.b.ev.a~b.k+{p}"),
            format!("tidings.b.ev.a~b.{p}"),
            format!("tidings.b.ev.a~b.k{p}.x"),
            format!("tidings.b.ev.a~c.k{p}"),
            format!("tidings.c.ev.a~b.k{p}"),
            "tidings.b.ev.a.b".into(),
            "tidings.b.ev.a~bc".into(),
            "tidings.b.ev.".into(),
            "tidings.b.ev.a~".into(),
        ] {
            assert!(!n.subject_fits(&bad, "a.b", Some("order-1"), 16), "{bad}");
        }
        // A partition's subject for an event without a key, or on a bus
        // without partitions, does not fit.
        let keyed = format!("tidings.b.ev.a~b.k{p}");
        assert!(!n.subject_fits(&keyed, "a.b", None, 16));
        assert!(!n.subject_fits(&keyed, "a.b", Some("order-1"), 0));
    }

    #[test]
    fn hostile_bus_names_are_refused() {
        for bad in ["", "a.b", "a>", "a*", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(Names::new(bad), Err(StoreError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        assert!(Names::new("orders-eu_1").is_ok());
    }
}
