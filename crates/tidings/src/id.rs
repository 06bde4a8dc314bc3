//! Event ids: UUIDv7, made without a lock.
//!
//! `uuid::Uuid::now_v7()` keeps its monotonic counter behind a process-wide
//! mutex and, without its `fast-rng` feature, asks the kernel for randomness
//! on every call; both showed up on the emit path's profile. Here one atomic
//! word holds the last (milliseconds << 12 | counter) handed out, so ids are
//! unique and strictly increasing across the process, and the random tail
//! comes from a fast per-thread generator seeded from the OS (the tail only
//! keeps ids of different processes apart; nothing relies on it being
//! unpredictable). More than 4 096 ids in one millisecond borrow from the
//! next millisecond, as RFC 9562 (method 1) allows.

use rand::{rngs::SmallRng, RngCore, SeedableRng};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use uuid::Uuid;

static LAST: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TAIL: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A fresh id and the time it was made (one clock read for both).
pub(crate) fn next() -> (Uuid, SystemTime) {
    let nanos = crate::clock::wall_nanos();
    let ms = (nanos / 1_000_000) & ((1 << 48) - 1);
    let candidate = ms << 12;
    let mut last = LAST.load(Ordering::Relaxed);
    let stamp = loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let tail = TAIL.with(|rng| rng.borrow_mut().next_u64());
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(stamp >> 12).to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&(0x7000 | (stamp & 0x0fff) as u16).to_be_bytes());
    bytes[8..].copy_from_slice(&tail.to_be_bytes());
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    (
        Uuid::from_bytes(bytes),
        crate::clock::from_unix_nanos(nanos),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_v7_strictly_increasing_and_carry_the_time() {
        let (mut last, _) = super::next();
        for _ in 0..10_000 {
            let (id, at) = super::next();
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(id > last);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
            // Never behind the clock; ahead only by borrowed milliseconds.
            let at = crate::time::to_chrono(at).timestamp_millis();
            assert!(ms >= at && ms <= at + 10);
            last = id;
        }
    }
}
