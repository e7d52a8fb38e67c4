//! Where to deliver: a recipient domain turned into mail servers to try, per RFC 5321 §5.1.
//!
//! Delivery asks one question of DNS, "which hosts take mail for this domain, in which order,
//! at which addresses", and needs to know whether a failure is worth retrying. The answer
//! comes through the [`Resolve`] trait so delivery tests can swap real DNS for a table.
//!
//! # Layout
//!
//! - `runtime`: hickory's runtime provider over smol (no tokio).
//! - `resolver`: the [`Dns`] setting turned into a hickory resolver; one query, classified.
//! - `mx`: the RFC 5321 §5.1 walk (MX, null MX, implicit MX, addresses) and IP literals.
//! - `records`: TXT, PTR, addresses and MX exchanges, for `postoffice doctor`.
//! - `table`: a [`Resolve`] built from a static table, for tests.
//! - `test_server`, `peer_tests`, `dnsmasq_tests`: tests against real DNS servers on loopback.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;

mod mx;
mod records;
mod resolver;
mod runtime;
#[cfg(test)]
pub mod table;

#[cfg(test)]
mod dnsmasq_tests;
#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod test_server;

pub use records::reverse_name;
pub use resolver::Resolver;

/// One mail server for a domain, with every address it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The MX exchange (or the domain itself for an implicit MX), in ASCII, without the final dot.
    pub host: String,
    /// MX preference: lower is tried first; 0 for implicit MX and IP literals.
    pub preference: u16,
    /// IPv6 addresses first, then IPv4; never empty.
    pub addrs: Vec<IpAddr>,
}

/// Why no target list could be had, sorted for the queue: retry or bounce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// DNS said for certain that mail cannot be delivered (NXDOMAIN, null MX, no addresses).
    Permanent(String),
    /// DNS could not answer now (SERVFAIL, REFUSED, timeout); a later try may succeed.
    Temporary(String),
}

impl DnsError {
    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::Permanent(_))
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::Permanent(why) => write!(f, "permanent dns failure: {why}"),
            DnsError::Temporary(why) => write!(f, "temporary dns failure: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// Finds the mail servers for a domain: real DNS in production, a table in tests.
pub trait Resolve {
    /// Mail servers for `domain` (a name, or an IP literal such as `[127.0.0.1]`), most
    /// preferred first, equal preferences in random order.
    fn lookup_mx(&self, domain: &str)
        -> impl Future<Output = Result<Vec<Target>, DnsError>> + Send;

    /// Addresses of one host (a name or an IP address), for a configured
    /// route: no MX lookup, as Postfix's transport maps with `[host]`.
    fn lookup_host(&self, host: &str)
        -> impl Future<Output = Result<Vec<IpAddr>, DnsError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_short_and_lowercase() {
        let e = DnsError::Temporary("servfail for example.test".into());
        assert_eq!(
            e.to_string(),
            "temporary dns failure: servfail for example.test"
        );
        let e = DnsError::Permanent("example.test does not exist".into());
        assert_eq!(
            e.to_string(),
            "permanent dns failure: example.test does not exist"
        );
        assert!(e.is_permanent());
    }
}
