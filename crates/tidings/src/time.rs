//! Emit timestamps: read once per event as `SystemTime`, turned into a
//! calendar date only when someone asks.
//!
//! The RFC 3339 text of `_emitted_at` is written by hand because it is on the
//! emit path of every dynamic event, where chrono's general formatter cost
//! several times more (measured in the benches).

use chrono::{DateTime, Utc};
use std::time::{SystemTime, UNIX_EPOCH};

/// The calendar time of `at`.
pub(crate) fn to_chrono(at: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(at)
}

/// Microseconds since the Unix epoch (negative before it).
fn unix_micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// `2026-11-27T11:24:21.312135Z`: RFC 3339, UTC, microseconds, as chrono's
/// `to_rfc3339_opts(SecondsFormat::Micros, true)` writes it for years 0 to 9999.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let mut out = Vec::with_capacity(RFC3339_LEN);
    write_rfc3339(at, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Length of the text `rfc3339` writes (years 0 to 9999).
pub(crate) const RFC3339_LEN: usize = 27;

/// Appends the RFC 3339 text of `at` to `buf`.
pub(crate) fn write_rfc3339(at: SystemTime, buf: &mut Vec<u8>) {
    let micros = unix_micros(at);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        let text = to_chrono(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    let mut out = [0u8; RFC3339_LEN];
    put(&mut out[0..4], y as u64);
    out[4] = b'-';
    put(&mut out[5..7], m as u64);
    out[7] = b'-';
    put(&mut out[8..10], d as u64);
    out[10] = b'T';
    put(&mut out[11..13], (sod / 3600) as u64);
    out[13] = b':';
    put(&mut out[14..16], (sod / 60 % 60) as u64);
    out[16] = b':';
    put(&mut out[17..19], (sod % 60) as u64);
    out[19] = b'.';
    put(&mut out[20..26], frac as u64);
    out[26] = b'Z';
    buf.extend_from_slice(&out);
}

/// Writes `n` in decimal, zero-padded to the slice's width.
fn put(slot: &mut [u8], mut n: u64) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn matches_chrono(micros in 0i64..253_402_300_799_999_999) {
            let at = UNIX_EPOCH + Duration::from_micros(micros as u64);
            prop_assert_eq!(
                rfc3339(at),
                to_chrono(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400) + Duration::from_micros(7);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000007Z");
    }
}
