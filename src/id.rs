//! Message ids: unique, sortable by time of acceptance, safe as file names.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last microsecond handed out, so ids from one process never repeat even
/// when the clock stands still or steps back.
static LAST: Mutex<u64> = Mutex::new(0);

/// A new id for a message accepted at `now`: 13 hex digits of microseconds
/// since 1970 (sortable: oldest first), then 5 random hex digits so ids from
/// two processes (or before and after a restart) do not collide.
///
/// # Examples
///
/// ```
/// let a = hedwig::id::new(std::time::SystemTime::now());
/// let b = hedwig::id::new(std::time::SystemTime::now());
/// assert!(a < b && a.len() == 18 && hedwig::id::is_valid(&a));
/// ```
pub fn new(now: SystemTime) -> String {
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let micros = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        *last = micros.max(*last + 1);
        *last
    };
    format!("{micros:013X}{:05X}", fastrand::u32(..1 << 20))
}

/// When the message with id `id` was accepted, read from the id itself
/// (`None` for an id of another shape).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(hedwig::id::time(&hedwig::id::new(t)), Some(t));
/// ```
pub fn time(id: &str) -> Option<SystemTime> {
    let micros = u64::from_str_radix(id.get(..13)?, 16).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_micros(micros))
}

/// Whether `s` has the shape of an id (so a stray file in a spool directory,
/// or a hostile `Idempotency-Key`, is never taken for one).
pub fn is_valid(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The acceptance time encoded in an id made by [`new`], in microseconds.
pub fn micros(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..13)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered_even_with_a_stuck_clock() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let ids: Vec<String> = (0..1000).map(|_| new(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        assert!(micros(&ids[0]).unwrap() >= 1_800_000_000_000_000);
    }

    #[test]
    fn validity() {
        assert!(is_valid("0123456789ABCDEF01"));
        assert!(!is_valid("../../etc/passwd"));
        assert!(!is_valid("short"));
    }
}
