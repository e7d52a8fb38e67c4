//! A [`Resolve`] that answers from a fixed table, so delivery tests run without DNS.
//!
//! Delivery code cares what `lookup_mx` returns, not how DNS got there: this lets its tests
//! say "example.test goes to 127.0.0.1 and 127.0.0.2" or "example.test fails temporarily"
//! in one line. Address literals work as with the real resolver.

use std::collections::HashMap;
use std::net::IpAddr;

use super::mx::{ip_literal, literal_target};
use super::{DnsError, Resolve, Target};

/// Answers `lookup_mx` from a table; unknown domains do not exist (permanent error).
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    table: HashMap<String, Result<Vec<Target>, DnsError>>,
}

impl StaticResolver {
    /// An empty table: every name is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// `domain` is served by `hosts`, given as (host, preference, addresses), in this order.
    pub fn mx(mut self, domain: &str, hosts: &[(&str, u16, &[IpAddr])]) -> Self {
        let targets = hosts
            .iter()
            .map(|(host, preference, addrs)| Target {
                host: host.to_string(),
                preference: *preference,
                addrs: addrs.to_vec(),
            })
            .collect();
        self.table.insert(key(domain), Ok(targets));
        self
    }

    /// Looking up `domain` fails with `error`.
    pub fn fail(mut self, domain: &str, error: DnsError) -> Self {
        self.table.insert(key(domain), Err(error));
        self
    }
}

/// Domains compare without case or final dot, as DNS names do.
fn key(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

impl Resolve for StaticResolver {
    async fn lookup_mx(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        if let Some(literal) = ip_literal(domain) {
            return literal.map(|ip| vec![literal_target(domain, ip)]);
        }
        self.table
            .get(&key(domain))
            .cloned()
            .unwrap_or_else(|| Err(DnsError::Permanent(format!("{domain} does not exist"))))
    }

    async fn lookup_host(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let targets = self.lookup_mx(host).await?;
        Ok(targets.into_iter().flat_map(|t| t.addrs).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_table() {
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let dns = StaticResolver::new()
            .mx("Example.TEST", &[("mx.example.test", 10, &[ip])])
            .fail("down.test", DnsError::Temporary("servfail".into()));
        smol::block_on(async {
            let targets = dns.lookup_mx("example.test.").await.unwrap();
            assert_eq!(targets[0].host, "mx.example.test");
            assert_eq!(targets[0].addrs, [ip]);
            assert!(!dns.lookup_mx("down.test").await.unwrap_err().is_permanent());
            assert!(dns
                .lookup_mx("other.test")
                .await
                .unwrap_err()
                .is_permanent());
            let literal = dns.lookup_mx("[127.0.0.9]").await.unwrap();
            assert_eq!(literal[0].addrs, ["127.0.0.9".parse::<IpAddr>().unwrap()]);
        });
    }
}
