//! Mailbox addresses as they travel in SMTP paths and hand-off queries.

use std::fmt;

/// Longest path RFC 5321 section 4.5.3.1.3 allows, in octets.
const MAX_PATH: usize = 256;

/// A mailbox `local@domain` (or the special `postmaster`), checked for the
/// shape RFC 5321 section 4.1.2 gives, leniently where real clients differ.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::address::Address;
/// let a = Address::parse("Jo.Doe@Example.org").unwrap();
/// assert_eq!(a.domain(), Some("Example.org"));
/// assert!(Address::parse("a@@b").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Longer than 256 octets.
    TooLong,
    /// No `@`, and not `postmaster`.
    NoDomain,
    /// The local part is empty or holds characters that need quoting.
    BadLocalPart,
    /// The domain is not a hostname or an address literal.
    BadDomain,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::TooLong => "address too long",
            AddressError::NoDomain => "address needs a domain",
            AddressError::BadLocalPart => "bad local part in address",
            AddressError::BadDomain => "bad domain in address",
        })
    }
}

impl std::error::Error for AddressError {}

impl Address {
    /// Checks and wraps an address given without angle brackets.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        if s.len() > MAX_PATH {
            return Err(AddressError::TooLong);
        }
        if s.eq_ignore_ascii_case("postmaster") {
            return Ok(Address(s.to_string()));
        }
        let (local, domain) = split_local(s).ok_or(AddressError::NoDomain)?;
        if !valid_local(local) {
            return Err(AddressError::BadLocalPart);
        }
        if !valid_domain(domain) {
            return Err(AddressError::BadDomain);
        }
        Ok(Address(s.to_string()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the last `@`; `None` for a bare `postmaster`.
    pub fn domain(&self) -> Option<&str> {
        self.0.rsplit_once('@').map(|(_, d)| d)
    }

    /// Whether delivering it needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        Address::parse(s)
    }
}

// Stored as its text, checked again when read back.
impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::parse(&s).map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}")))
    }
}

/// Splits at the `@` that ends the local part, honouring a quoted local part.
fn split_local(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('"') {
        let mut escaped = false;
        for (i, c) in s.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return s[i + 1..].strip_prefix('@').map(|d| (&s[..=i], d)),
                _ => {}
            }
        }
        None
    } else {
        s.split_once('@')
    }
}

fn valid_local(local: &str) -> bool {
    if local.starts_with('"') {
        return local.len() >= 2 && !local.chars().any(|c| c.is_ascii_control());
    }
    // A dot-atom, leniently: RFC 5322 atext plus dots, and any non-ASCII (SMTPUTF8).
    !local.is_empty()
        && local.chars().all(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        })
}

fn valid_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        return literal.strip_suffix(']').is_some_and(|l| {
            l.parse::<std::net::Ipv4Addr>().is_ok()
                || l.strip_prefix("IPv6:")
                    .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
        });
    }
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_addresses() {
        for ok in [
            "a@b",
            "first.last+tag@sub.example.org",
            "\"odd @ person\"@example.org",
            "user@[127.0.0.1]",
            "user@[IPv6:::1]",
            "jörg@bücher.de",
            "PostMaster",
        ] {
            assert!(Address::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(Address::parse("a@@b"), Err(AddressError::BadDomain));
        assert_eq!(Address::parse("nobody"), Err(AddressError::NoDomain));
        assert_eq!(Address::parse("@b"), Err(AddressError::BadLocalPart));
        assert_eq!(Address::parse("a b@c"), Err(AddressError::BadLocalPart));
        assert_eq!(Address::parse("a@b..c"), Err(AddressError::BadDomain));
        assert_eq!(Address::parse("a@-b"), Err(AddressError::BadDomain));
        assert_eq!(Address::parse("a@[1.2.3]"), Err(AddressError::BadDomain));
        assert_eq!(
            Address::parse(&format!("a@{}", "b".repeat(300))),
            Err(AddressError::TooLong)
        );
    }
}
