//! RFC 5321 §5.1: from a recipient domain to an ordered list of mail servers and addresses.
//!
//! MX hosts are sorted by preference with ties shuffled (spreading load, as §5.1 asks); a
//! domain without MX records but with a name is its own mail server (implicit MX); a lone
//! MX of "." (RFC 7505 null MX) says the domain takes no mail. Each host is looked up for
//! AAAA and A. Hosts without addresses are skipped; if none has one, the result is
//! temporary when any lookup failed for a temporary reason (a retry may find addresses) and
//! permanent only when DNS answered, for every host, that there is no such name or no
//! address (what Postfix and Exim do: waiting will not fix a broken MX set soon).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use futures_lite::future::{self, FutureExt};
use futures_util::future::join_all;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use smol::Timer;

use super::resolver::{show, Answer, Resolver};
use super::{DnsError, Resolve, Target};

/// At most this many MX hosts are looked up: more only delays delivery behind bad hosts.
pub const MAX_HOSTS: usize = 16;
/// Bound on one whole lookup; hickory bounds each query, this bounds their sum.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(60);

impl Resolve for Resolver {
    async fn lookup_mx(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        if let Some(literal) = ip_literal(domain) {
            return literal.map(|ip| vec![literal_target(domain, ip)]);
        }
        let name = fqdn(domain)?;
        walk(self, &name)
            .or(async {
                Timer::after(LOOKUP_DEADLINE).await;
                Err(DnsError::Temporary(format!(
                    "mx lookup for {domain} timed out"
                )))
            })
            .await
    }

    async fn lookup_host(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        host_addresses(self, host)
            .or(async {
                Timer::after(LOOKUP_DEADLINE).await;
                Err(DnsError::Temporary(format!(
                    "address lookup for {host} timed out"
                )))
            })
            .await
    }
}

/// Addresses of a route's host: an IP address as it is, a name by AAAA and A.
pub(super) async fn host_addresses(
    resolver: &Resolver,
    host: &str,
) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(vec![ip]);
    }
    match addresses(resolver, &fqdn(host)?).await {
        Addrs::Found(addrs) => Ok(addrs),
        Addrs::Failed(e) => Err(e),
        Addrs::Missing => Err(DnsError::Permanent(format!(
            "route host {host} has no address"
        ))),
    }
}

/// The address in an RFC 5321 address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), or
/// `None` when `domain` is not bracketed and so is a name to look up.
pub fn ip_literal(domain: &str) -> Option<Result<IpAddr, DnsError>> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']');
    let bad = || DnsError::Permanent(format!("invalid address literal {domain}"));
    let Some(inner) = inner else {
        return Some(Err(bad()));
    };
    let parsed = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().map(IpAddr::V6)
        }
        _ => inner.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
    };
    Some(parsed.map_err(|_| bad()))
}

/// The single target an address literal names.
pub(super) fn literal_target(domain: &str, ip: IpAddr) -> Target {
    Target {
        host: domain.to_string(),
        preference: 0,
        addrs: vec![ip],
    }
}

/// `domain` as a fully qualified name, so no search list from resolv.conf is applied.
fn fqdn(domain: &str) -> Result<Name, DnsError> {
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    let invalid = || DnsError::Permanent(format!("invalid domain name {domain:?}"));
    if bare.is_empty() {
        return Err(invalid());
    }
    let mut name = Name::from_utf8(bare).map_err(|_| invalid())?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// The §5.1 walk for one fully qualified domain.
async fn walk(resolver: &Resolver, domain: &Name) -> Result<Vec<Target>, DnsError> {
    let hosts = match resolver.query(domain, RecordType::MX).await? {
        Answer::NxDomain => {
            return Err(DnsError::Permanent(format!(
                "{} does not exist",
                show(domain)
            )))
        }
        Answer::NoData => vec![(0, domain.clone())],
        Answer::Found(records) => {
            let mx = records.into_iter().filter_map(|r| match r {
                RData::MX(mx) => Some((mx.preference, mx.exchange)),
                _ => None,
            });
            order(domain, mx.collect())?
        }
    };
    let lookups = hosts.iter().map(|(_, host)| addresses(resolver, host));
    let found = join_all(lookups).await;
    assemble(domain, hosts, found)
}

/// Preference order with ties shuffled, capped at [`MAX_HOSTS`]; a lone "." is null MX.
fn order(domain: &Name, mut mx: Vec<(u16, Name)>) -> Result<Vec<(u16, Name)>, DnsError> {
    if mx.len() == 1 && mx[0].1.is_root() {
        return Err(DnsError::Permanent(format!(
            "{} accepts no mail (null mx)",
            show(domain)
        )));
    }
    // A "." among real hosts is a misconfiguration; the real hosts can still take mail.
    mx.retain(|(_, host)| !host.is_root());
    fastrand::shuffle(&mut mx);
    // Stable sort keeps the shuffled order within each preference.
    mx.sort_by_key(|(preference, _)| *preference);
    mx.truncate(MAX_HOSTS);
    Ok(mx
        .into_iter()
        .map(|(p, host)| (p, host.to_lowercase()))
        .collect())
}

/// What the address lookups for one host found.
#[derive(Clone, Debug, PartialEq)]
enum Addrs {
    /// IPv6 first, then IPv4; never empty.
    Found(Vec<IpAddr>),
    /// DNS said there is no such name, or no address for it.
    Missing,
    /// No addresses, and at least one lookup failed for a reason that may pass.
    Failed(DnsError),
}

/// AAAA and A for one host, asked at the same time.
async fn addresses(resolver: &Resolver, host: &Name) -> Addrs {
    let (v6, v4) = future::zip(
        resolver.query(host, RecordType::AAAA),
        resolver.query(host, RecordType::A),
    )
    .await;
    let mut addrs = Vec::new();
    let mut failure = None;
    for answer in [v6, v4] {
        match answer {
            Ok(Answer::Found(records)) => {
                addrs.extend(records.into_iter().filter_map(|r| match r {
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                }))
            }
            Ok(Answer::NoData | Answer::NxDomain) => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match (addrs.is_empty(), failure) {
        (false, _) => Addrs::Found(addrs),
        (true, Some(e)) => Addrs::Failed(e),
        (true, None) => Addrs::Missing,
    }
}

/// Targets for the hosts that have addresses, or the error that explains why none has.
fn assemble(
    domain: &Name,
    hosts: Vec<(u16, Name)>,
    found: Vec<Addrs>,
) -> Result<Vec<Target>, DnsError> {
    let mut targets = Vec::new();
    let mut failure = None;
    for ((preference, host), addrs) in hosts.into_iter().zip(found) {
        match addrs {
            Addrs::Found(addrs) => targets.push(Target {
                host: show(&host),
                preference,
                addrs,
            }),
            Addrs::Missing => {
                log::debug!("mx host {} of {} has no address", show(&host), show(domain))
            }
            Addrs::Failed(e) => failure = failure.or(Some(e)),
        }
    }
    match (targets.is_empty(), failure) {
        (false, _) => Ok(targets),
        (true, Some(e)) => Err(e),
        (true, None) => Err(DnsError::Permanent(format!(
            "no mail server for {} has an address",
            show(domain)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hosts(list: &[(u16, &str)]) -> Vec<(u16, Name)> {
        list.iter().map(|(p, h)| (*p, name(h))).collect()
    }

    #[test]
    fn ip_literals_parse_per_rfc_5321() {
        let v4 = ip_literal("[127.0.0.1]").unwrap().unwrap();
        assert_eq!(v4, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let v6 = ip_literal("[IPv6:::1]").unwrap().unwrap();
        assert_eq!(v6, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(ip_literal("[ipv6:::1]").unwrap().is_ok());
        assert!(ip_literal("example.test").is_none());
        for bad in ["[::1]", "[127.0.0.1", "[300.1.1.1]", "[]"] {
            assert!(
                ip_literal(bad).unwrap().unwrap_err().is_permanent(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fqdn_lowercases_and_rejects_empty() {
        assert_eq!(fqdn("Example.TEST").unwrap(), name("example.test."));
        assert_eq!(fqdn("example.test.").unwrap(), name("example.test."));
        assert!(fqdn("").unwrap_err().is_permanent());
        assert!(fqdn(".").unwrap_err().is_permanent());
    }

    #[test]
    fn order_sorts_by_preference_and_shuffles_ties() {
        let domain = name("d.test.");
        let input = hosts(&[(20, "c."), (10, "a."), (10, "b."), (5, "first.")]);
        let mut b_first = 0;
        for _ in 0..200 {
            let out = order(&domain, input.clone()).unwrap();
            let prefs: Vec<u16> = out.iter().map(|(p, _)| *p).collect();
            assert_eq!(prefs, [5, 10, 10, 20]);
            b_first += usize::from(out[1].1 == name("b."));
        }
        // 200 fair coin flips: both orders show up (failure odds ~1e-60).
        assert!(b_first > 0 && b_first < 200, "b first {b_first} of 200");
    }

    #[test]
    fn null_mx_is_permanent_but_a_stray_dot_is_skipped() {
        let domain = name("d.test.");
        let err = order(&domain, hosts(&[(0, ".")])).unwrap_err();
        assert_eq!(
            err,
            DnsError::Permanent("d.test accepts no mail (null mx)".into())
        );
        let out = order(&domain, hosts(&[(0, "."), (10, "mx.d.test.")])).unwrap();
        assert_eq!(out, hosts(&[(10, "mx.d.test.")]));
    }

    #[test]
    fn order_caps_host_count() {
        let many: Vec<(u16, Name)> = (0..40)
            .map(|i| (i, name(&format!("mx{i}.test."))))
            .collect();
        assert_eq!(order(&name("d.test."), many).unwrap().len(), MAX_HOSTS);
    }

    #[test]
    fn assemble_skips_hosts_without_addresses() {
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let out = assemble(
            &name("d.test."),
            hosts(&[(10, "gone.test."), (20, "ok.test.")]),
            vec![Addrs::Missing, Addrs::Found(vec![ip])],
        );
        let expected = Target {
            host: "ok.test".into(),
            preference: 20,
            addrs: vec![ip],
        };
        assert_eq!(out, Ok(vec![expected]));
    }

    #[test]
    fn assemble_without_addresses_is_temporary_only_for_temporary_causes() {
        let two = hosts(&[(10, "a.test."), (20, "b.test.")]);
        let temp = DnsError::Temporary("A a.test: servfail".into());
        let out = assemble(
            &name("d.test."),
            two.clone(),
            vec![Addrs::Failed(temp.clone()), Addrs::Missing],
        );
        assert_eq!(out, Err(temp));
        let out = assemble(&name("d.test."), two, vec![Addrs::Missing, Addrs::Missing]);
        assert_eq!(
            out,
            Err(DnsError::Permanent(
                "no mail server for d.test has an address".into()
            ))
        );
    }
}
