//! Durations ("250ms", "1h30m") and sizes ("25MiB", 1000) as hedwig.ron writes them.
//!
//! Both are parsed by hand rather than pulled from a crate: the grammar is
//! tiny, and owning it keeps the error text in hedwig's style.

use std::fmt;
use std::time::Duration;

/// A duration or size string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    what: &'static str,
    input: String,
    reason: String,
}

impl UnitError {
    fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        UnitError {
            what,
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.input, self.reason)
    }
}

impl std::error::Error for UnitError {}

/// Parses a duration: one or more `<integer><unit>` parts with unit `ms`, `s`,
/// `m`, `h` or `d`, summed, e.g. `"250ms"`, `"30s"`, `"1h30m"`, `"5d"`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// assert_eq!(hedwig::config::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(hedwig::config::parse_duration("30").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let err = |reason: String| UnitError::new("duration", input, reason);
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(err("empty (use e.g. \"30s\")".into()));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        // Each part is a number directly followed by its unit.
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(err(format!("expected a number at {rest:?}")));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large".into()))?;
        rest = &rest[digits..];
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..letters];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(err("missing unit (use ms, s, m, h or d)".into())),
            _ => return Err(err(format!("unknown unit {unit:?} (use ms, s, m, h or d)"))),
        };
        let part = number
            .checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .ok_or_else(|| err("too large".into()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err("too large".into()))?;
        // Allow "1h 30m" as well as "1h30m".
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

/// Parses a size in bytes: a plain integer, optionally followed by a unit
/// `B`, `kB`/`KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`,
/// `TiB` (powers of 1024), e.g. `"25MiB"`, `"100kB"`, `"1000"`.
///
/// # Examples
///
/// ```
/// assert_eq!(hedwig::config::parse_size("25MiB").unwrap(), 25 * 1024 * 1024);
/// assert_eq!(hedwig::config::parse_size("100kB").unwrap(), 100_000);
/// ```
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = |reason: String| UnitError::new("size", input, reason);
    let text = input.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(err("expected a number of bytes, e.g. \"25MiB\"".into()));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| err("number too large".into()))?;
    // "25 MiB" reads naturally, so a space before the unit is fine.
    let unit = text[digits..].trim_start();
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(err(format!(
                "unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| err("too large".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_combine() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m1s500ms"),
            Ok(Duration::from_millis(61_500))
        );
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn bad_durations() {
        let text = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert_eq!(
            text("30"),
            "invalid duration \"30\": missing unit (use ms, s, m, h or d)"
        );
        assert_eq!(
            text("5x"),
            "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h or d)"
        );
        assert_eq!(
            text("1.5s"),
            "invalid duration \"1.5s\": missing unit (use ms, s, m, h or d)"
        );
        assert_eq!(
            text("s"),
            "invalid duration \"s\": expected a number at \"s\""
        );
        assert_eq!(text(""), "invalid duration \"\": empty (use e.g. \"30s\")");
        assert_eq!(
            text("-1s"),
            "invalid duration \"-1s\": expected a number at \"-1s\""
        );
        assert_eq!(
            text("99999999999999999999d"),
            "invalid duration \"99999999999999999999d\": number too large"
        );
        assert_eq!(
            text("999999999999999d"),
            "invalid duration \"999999999999999d\": too large"
        );
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("5S").is_err());
    }

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1000B"), Ok(1000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("25MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("100kB"), Ok(100_000));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("25 MiB"), Ok(25 << 20));
    }

    #[test]
    fn bad_sizes() {
        let text = |s: &str| parse_size(s).unwrap_err().to_string();
        assert_eq!(
            text("25Mb"),
            "invalid size \"25Mb\": unknown unit \"Mb\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
        );
        assert_eq!(
            text("MiB"),
            "invalid size \"MiB\": expected a number of bytes, e.g. \"25MiB\""
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(
            text("99999999TiB"),
            "invalid size \"99999999TiB\": too large"
        );
    }
}
