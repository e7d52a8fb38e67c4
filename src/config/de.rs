//! `deserialize_with` helpers shared by the sections: units, bounds, lists.
//!
//! Every check lives inside deserialization so ron reports it at the value's
//! line and column; a check made after parsing would have no position.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use log::LevelFilter;
use serde::de::{self, Deserialize, Deserializer, Error as _, Visitor};

use super::net;
use super::units::{parse_duration, parse_size};

/// A duration string such as "30s".
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"30s\"")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }

        // A bare number is the likeliest mistake; say what the unit-less value lacks.
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {n}: write it as a string with a unit, e.g. \"{n}s\""
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!("invalid duration {n}")))
        }
    }

    d.deserialize_any(DurationVisitor)
}

/// A duration that must not be zero: a zero timeout would fail at once and a
/// zero retry delay would never grow by doubling.
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value.is_zero() {
        return Err(D::Error::custom("must be longer than zero"));
    }
    Ok(value)
}

/// Checks that a doubling backoff does not start above its cap.
pub(crate) fn check_backoff<E: de::Error>(first: Duration, max: Duration) -> Result<(), E> {
    if first > max {
        return Err(E::custom(format!(
            "first ({first:?}) is longer than max ({max:?})"
        )));
    }
    Ok(())
}

/// A size in bytes: an integer or a string such as "25MiB"; never zero.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as 1000 or \"25MiB\"")
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("invalid size {n}")))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
            parse_size(s).map_err(E::custom)
        }
    }

    let value = d.deserialize_any(SizeVisitor)?;
    if value == 0 {
        return Err(D::Error::custom("must be at least 1 byte"));
    }
    Ok(value)
}

/// A size in bytes for an in-memory bound, so it must fit a `usize`.
pub(crate) fn size_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = size(d)?;
    usize::try_from(value).map_err(|_| D::Error::custom(format!("size {value} is too large")))
}

/// A count that must be at least one (a bound of zero would refuse everything).
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value == 0 {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(value)
}

/// A list that must not be empty.
pub(crate) fn nonempty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Vec::<T>::deserialize(d)?;
    if list.is_empty() {
        return Err(D::Error::custom("must list at least one entry"));
    }
    Ok(list)
}

/// A path that must not be empty (an empty spool path would mean the cwd).
pub(crate) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(Checked::<PathArg>::deserialize(d)?.0)
}

/// A list of paths, none empty.
pub(crate) fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(Vec::<Checked<PathArg>>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// An optional path, not empty when present.
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<Checked<PathArg>>::deserialize(d)?.map(|p| p.0))
}

/// The log level when the file names none.
/// Threads of the blocking pool (file work): enough to keep a disk busy,
/// few enough that the process stays well under 64 threads in all.
pub(crate) fn default_blocking_threads() -> usize {
    32
}

pub(crate) fn default_log_level() -> LevelFilter {
    LevelFilter::Info
}

/// A log level: error, warn, info, debug, trace or off.
pub(crate) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<LevelFilter, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!(
            "invalid log level {text:?} (use error, warn, info, debug, trace or off)"
        ))
    })
}

/// An optional host name (absent means the system's, resolved at start).
pub(crate) fn opt_hostname<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Checked<Hostname>>::deserialize(d)?.map(|h| h.0))
}

/// A non-empty list of client networks; a bare IP is a one-host network.
pub(crate) fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(nonempty::<D, Checked<Network>>(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

/// A socket address with hedwig's error text.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    Ok(Checked::<Addr>::deserialize(d)?.0)
}

/// A non-empty list of socket addresses.
pub(crate) fn socket_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Ok(nonempty::<D, Checked<Addr>>(d)?
        .into_iter()
        .map(|a| a.0)
        .collect())
}

/// One check applied to a string, so `Checked<K>` deserializes through it;
/// this lets list and option helpers reuse the single-value checks.
pub(crate) trait Check {
    type Output;
    fn check(s: String) -> Result<Self::Output, String>;
}

/// A value that passed the check `K`.
pub(crate) struct Checked<K: Check>(pub K::Output, PhantomData<K>);

impl<'de, K: Check> Deserialize<'de> for Checked<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = K::check(String::deserialize(d)?).map_err(D::Error::custom)?;
        Ok(Checked(value, PhantomData))
    }
}

pub(crate) struct Hostname;

impl Check for Hostname {
    type Output = String;
    fn check(s: String) -> Result<String, String> {
        if net::is_hostname(&s) {
            Ok(s)
        } else {
            Err(format!("invalid hostname {s:?}"))
        }
    }
}

pub(crate) struct Network;

impl Check for Network {
    type Output = IpNet;
    fn check(s: String) -> Result<IpNet, String> {
        net::network(&s).map_err(|e| e.to_string())
    }
}

pub(crate) struct Addr;

impl Check for Addr {
    type Output = SocketAddr;
    fn check(s: String) -> Result<SocketAddr, String> {
        net::socket_addr(&s).map_err(|e| e.to_string())
    }
}

pub(crate) struct PathArg;

impl Check for PathArg {
    type Output = PathBuf;
    fn check(s: String) -> Result<PathBuf, String> {
        if s.is_empty() {
            Err("path is empty".into())
        } else {
            Ok(PathBuf::from(s))
        }
    }
}

pub(crate) struct UserArg;

impl Check for UserArg {
    type Output = crate::privilege::RunAs;
    fn check(s: String) -> Result<crate::privilege::RunAs, String> {
        s.parse()
    }
}

/// An optional account to run as: a user name or `UID:GID`.
pub(crate) fn opt_user<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::privilege::RunAs>, D::Error> {
    Ok(Option::<Checked<UserArg>>::deserialize(d)?.map(|u| u.0))
}

/// A non-empty string (an empty secret would accept or send nothing useful).
pub(crate) struct Secret;

impl Check for Secret {
    type Output = String;
    fn check(s: String) -> Result<String, String> {
        if s.trim().is_empty() {
            Err("token is empty".into())
        } else {
            Ok(s)
        }
    }
}
