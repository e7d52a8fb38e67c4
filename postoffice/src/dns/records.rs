//! The records `postoffice doctor` reads besides MX: TXT (SPF, DKIM, DMARC),
//! PTR (reverse DNS) and a name's addresses. "No such record" is an empty
//! answer here, not an error: doctor reports absence as a finding.

use std::net::IpAddr;

use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::resolver::{show, Answer, Resolver};
use super::DnsError;

fn name(domain: &str) -> Result<Name, DnsError> {
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    let mut name = Name::from_utf8(bare)
        .map_err(|_| DnsError::Permanent(format!("invalid domain name {domain:?}")))?;
    name.set_fqdn(true);
    Ok(name)
}

impl Resolver {
    /// The records of `rtype` at `domain`; none when it has none or does not exist.
    async fn found(&self, domain: &str, rtype: RecordType) -> Result<Vec<RData>, DnsError> {
        Ok(match self.query(&name(domain)?, rtype).await? {
            Answer::Found(records) => records,
            Answer::NoData | Answer::NxDomain => Vec::new(),
        })
    }

    /// The TXT records at `domain`, each one's strings joined (as SPF and
    /// DKIM read a record split into 255-byte strings).
    pub async fn txt(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .found(domain, RecordType::TXT)
            .await?
            .iter()
            .filter_map(|r| match r {
                RData::TXT(txt) => {
                    let bytes: Vec<u8> = txt
                        .txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect())
    }

    /// The names the PTR records of `ip` give (without the final dot).
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut reverse = Name::from(ip);
        reverse.set_fqdn(true);
        let found = match self.query(&reverse, RecordType::PTR).await? {
            Answer::Found(records) => records,
            Answer::NoData | Answer::NxDomain => return Ok(Vec::new()),
        };
        Ok(found
            .iter()
            .filter_map(|r| match r {
                RData::PTR(p) => Some(show(&p.0).to_ascii_lowercase()),
                _ => None,
            })
            .collect())
    }

    /// The A and AAAA addresses of `host`; empty when it has none. One
    /// family's failure is an error only if the other found nothing.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let host = name(host)?;
        let mut out = Vec::new();
        let mut failed = None;
        for rtype in [RecordType::A, RecordType::AAAA] {
            match self.query(&host, rtype).await {
                Ok(Answer::Found(records)) => out.extend(records.iter().filter_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The exchanges of `domain`'s MX records (without the final dot).
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .found(domain, RecordType::MX)
            .await?
            .iter()
            .filter_map(|r| match r {
                RData::MX(mx) => Some(show(&mx.exchange).to_ascii_lowercase()),
                _ => None,
            })
            .collect())
    }
}

/// The name a PTR record for `ip` is published at, e.g.
/// `5.2.0.192.in-addr.arpa` (without the final dot).
pub fn reverse_name(ip: IpAddr) -> String {
    show(&Name::from(ip))
}
