//! The [`Dns`] setting turned into a hickory resolver on smol, and one query, classified.
//!
//! hickory reports both NXDOMAIN and "the name exists but has no such record" as one
//! `NoRecordsFound` error; RFC 5321 treats them differently (bounce vs. implicit MX), so
//! [`Resolver::query`] splits them apart by the response code.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::runtime::SmolRuntime;
use super::DnsError;

/// How long one query waits for one name server before trying again.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a query is sent before giving up (the first try included).
pub const DEFAULT_TRIES: usize = 2;

pub use hedwig::config::Dns;

/// A caching DNS resolver (hickory's, honouring record TTLs) whose I/O runs on smol.
#[derive(Clone)]
pub struct Resolver {
    /// hickory does the querying, retrying and caching.
    inner: hickory_resolver::Resolver<SmolRuntime>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What one query found, when the server gave a definite answer.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Answer {
    /// Records of the asked type (CNAMEs already followed and dropped); never empty.
    Found(Vec<RData>),
    /// The name exists but has no record of this type (NOERROR, empty answer).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

impl Resolver {
    /// A resolver with [`DEFAULT_TIMEOUT`] and [`DEFAULT_TRIES`].
    pub fn new(dns: &Dns) -> Result<Self, DnsError> {
        Self::with_limits(dns, DEFAULT_TIMEOUT, DEFAULT_TRIES)
    }

    /// A resolver whose queries wait `timeout` per try, sent at most `tries` times.
    ///
    /// A setup failure (unreadable `/etc/resolv.conf`, empty server list) is `Permanent`:
    /// the configuration must change before anything can work.
    pub fn with_limits(dns: &Dns, timeout: Duration, tries: usize) -> Result<Self, DnsError> {
        let mut builder = match dns {
            Dns::System => hickory_resolver::Resolver::builder(SmolRuntime)
                .map_err(|e| DnsError::Permanent(format!("reading system dns config: {e}")))?,
            Dns::Nameservers(addrs) if addrs.is_empty() => {
                return Err(DnsError::Permanent("no dns name servers configured".into()))
            }
            Dns::Nameservers(addrs) => {
                let servers = addrs.iter().map(|addr| udp_and_tcp(*addr)).collect();
                hickory_resolver::Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    SmolRuntime,
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        // hickory counts retries after the first try, not tries.
        opts.attempts = tries.saturating_sub(1);
        // Mail routing comes from DNS alone; /etc/hosts entries must not redirect mail.
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Permanent(format!("building dns resolver: {e}")))?;
        Ok(Self { inner })
    }

    /// Asks for `rtype` records of the fully qualified `name`, answered from cache while the
    /// records' TTL lasts.
    pub(super) async fn query(&self, name: &Name, rtype: RecordType) -> Result<Answer, DnsError> {
        match self.inner.lookup(name.clone(), rtype).await {
            Ok(lookup) => {
                let found: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                Ok(if found.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Found(found)
                })
            }
            Err(e) => classify(name, rtype, &e),
        }
    }
}

/// A name server at `addr`, over UDP first and TCP when an answer is truncated.
fn udp_and_tcp(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Sorts a hickory error: definite negative answers become [`Answer`]s, the rest is temporary.
fn classify(name: &Name, rtype: RecordType, err: &NetError) -> Result<Answer, DnsError> {
    let what = format!("{rtype} {}", show(name));
    match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NXDomain => Ok(Answer::NxDomain),
            ResponseCode::NoError => Ok(Answer::NoData),
            code => Err(DnsError::Temporary(format!("{what}: {}", code_name(code)))),
        },
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Err(DnsError::Temporary(format!("{what}: {}", code_name(*code))))
        }
        NetError::Timeout => Err(DnsError::Temporary(format!("{what}: timed out"))),
        other => Err(DnsError::Temporary(format!(
            "{what}: {}",
            other.to_string().to_lowercase()
        ))),
    }
}

/// "servfail", "refused": the short lowercase name of a response code, for messages.
fn code_name(code: ResponseCode) -> String {
    format!("{code:?}").to_lowercase()
}

/// A name as people write it: no final dot.
pub(super) fn show(name: &Name) -> String {
    let ascii = name.to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;

    fn no_records(code: ResponseCode) -> NetError {
        let query = Query::query(Name::from_ascii("x.test.").unwrap(), RecordType::MX);
        NoRecords::new(query, code).into()
    }

    #[test]
    fn classify_splits_nxdomain_from_nodata() {
        let name = Name::from_ascii("x.test.").unwrap();
        let nx = classify(&name, RecordType::MX, &no_records(ResponseCode::NXDomain));
        assert_eq!(nx, Ok(Answer::NxDomain));
        let nodata = classify(&name, RecordType::MX, &no_records(ResponseCode::NoError));
        assert_eq!(nodata, Ok(Answer::NoData));
    }

    #[test]
    fn classify_makes_server_trouble_temporary() {
        let name = Name::from_ascii("x.test.").unwrap();
        let servfail = NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(
            classify(&name, RecordType::A, &servfail),
            Err(DnsError::Temporary("A x.test: servfail".into()))
        );
        assert_eq!(
            classify(&name, RecordType::AAAA, &NetError::Timeout),
            Err(DnsError::Temporary("AAAA x.test: timed out".into()))
        );
    }

    #[test]
    fn empty_server_list_is_a_setup_error() {
        let err = Resolver::new(&Dns::Nameservers(vec![])).unwrap_err();
        assert!(err.is_permanent());
    }

    #[test]
    fn system_config_is_read_without_sending() {
        // Building reads /etc/resolv.conf; no query is sent, so no traffic leaves loopback.
        if std::path::Path::new("/etc/resolv.conf").exists() {
            Resolver::new(&Dns::System).unwrap();
        }
    }

    #[test]
    fn builds_from_loopback_servers_without_sending() {
        let dns = Dns::Nameservers(vec!["127.0.0.52:5353".parse().unwrap()]);
        assert!(Resolver::new(&dns).is_ok());
    }
}
