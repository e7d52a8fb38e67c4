//! Message ids: unique, sortable by time of acceptance, safe as file names,
//! and 16 bytes in memory ([`Id`]) so that a queue of a million messages
//! keeps no strings.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last microsecond handed out, so ids from one process never repeat even
/// when the clock stands still or steps back.
static LAST: Mutex<u64> = Mutex::new(0);

/// Microseconds fit 13 hex digits (until the year 2112), the random part 5.
const MICROS_DIGITS: usize = 13;
const RANDOM_BITS: u32 = 20;

/// A message id: the microsecond of acceptance and 20 random bits, printed
/// as 18 hex digits (13 of time, sortable: oldest first; 5 random, so ids
/// from two processes, or before and after a restart, do not collide).
///
/// # Examples
///
/// ```
/// use hedwig::id::Id;
/// let a = Id::new(std::time::SystemTime::now());
/// let b = Id::new(std::time::SystemTime::now());
/// assert!(a < b && a.to_string() < b.to_string());
/// assert_eq!(a.to_string().parse::<Id>(), Ok(a));
/// assert!("../etc".parse::<Id>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    micros: u64,
    random: u32,
}

impl Id {
    /// The smallest id (for ranges).
    pub const MIN: Id = Id {
        micros: 0,
        random: 0,
    };

    /// A new id for a message accepted at `now`.
    pub fn new(now: SystemTime) -> Id {
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let micros = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            *last = micros.max(*last + 1);
            *last
        };
        Id {
            micros: micros & ((1 << (4 * MICROS_DIGITS)) - 1),
            random: fastrand::u32(..1 << RANDOM_BITS),
        }
    }

    /// When the message was accepted, in microseconds since 1970.
    pub fn micros(&self) -> u64 {
        self.micros
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:013X}{:05X}", self.micros, self.random)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

/// Why a string is not an [`Id`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadId;

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a message id (18 hex digits)")
    }
}

impl std::error::Error for BadId {}

impl FromStr for Id {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Id, BadId> {
        // Uppercase only: the text is a file name, and must print back the same.
        let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
        if s.len() != MICROS_DIGITS + 5 || !s.bytes().all(hex) {
            return Err(BadId);
        }
        let (micros, random) = s.split_at(MICROS_DIGITS);
        Ok(Id {
            micros: u64::from_str_radix(micros, 16).map_err(|_| BadId)?,
            random: u32::from_str_radix(random, 16).map_err(|_| BadId)?,
        })
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A new id for a message accepted at `now`, as text (for `Message-ID:`
/// and the like); see [`Id`].
///
/// # Examples
///
/// ```
/// let a = hedwig::id::new(std::time::SystemTime::now());
/// let b = hedwig::id::new(std::time::SystemTime::now());
/// assert!(a < b && a.len() == 18 && hedwig::id::is_valid(&a));
/// ```
pub fn new(now: SystemTime) -> String {
    Id::new(now).to_string()
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

    #[test]
    fn compact_ids_round_trip_and_order_like_their_text() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let a = Id::new(t);
        let b = Id::new(t);
        assert_eq!(std::mem::size_of::<Id>(), 16);
        assert_eq!(a.to_string().parse::<Id>(), Ok(a));
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(a.micros(), micros(&a.to_string()).unwrap());
        for bad in [
            "",
            "0123456789ABCDEF0",
            "0123456789ABCDEF012",
            "0123456789ABCDEFG1",
            "0123456789abcdef01",
        ] {
            assert_eq!(bad.parse::<Id>(), Err(BadId), "{bad:?}");
        }
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), a);
    }
}
