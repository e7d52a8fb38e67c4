//! Enough of SPF (RFC 7208) to tell whether a domain's record lets this
//! host send: the `all`, `include`, `a`, `mx`, `ip4`, `ip6` and `exists`
//! mechanisms, `redirect=`, qualifiers, and the limit of 10 lookups.
//! Macros and `ptr` (which RFC 7208 tells senders not to use) are not
//! expanded: a term with a macro never matches, so the answer errs toward
//! "not permitted", which is the safe side for a check.

use std::net::IpAddr;

use ipnet::IpNet;
use std::future::Future;
use std::pin::Pin;

use crate::dns::Resolver;

/// RFC 7208 section 4.6.4: at most 10 terms that cause DNS lookups.
const MAX_LOOKUPS: u32 = 10;

/// The result of an SPF check (RFC 7208 section 2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spf {
    /// The address is permitted.
    Pass,
    /// Explicitly not permitted (`-`).
    Fail,
    /// Probably not permitted (`~`).
    SoftFail,
    /// No statement (`?`, or no term matched).
    Neutral,
    /// The domain has no SPF record.
    None,
    /// The record is broken; why.
    PermError(String),
    /// DNS failed; why.
    TempError(String),
}

impl Spf {
    /// The result's name as RFC 7208 writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Spf::Pass => "pass",
            Spf::Fail => "fail",
            Spf::SoftFail => "softfail",
            Spf::Neutral => "neutral",
            Spf::None => "none",
            Spf::PermError(_) => "permerror",
            Spf::TempError(_) => "temperror",
        }
    }
}

/// The SPF record among `domain`'s TXT records, if exactly one.
pub async fn record(dns: &Resolver, domain: &str) -> Result<Option<String>, Spf> {
    let txt = dns
        .txt(domain)
        .await
        .map_err(|e| Spf::TempError(e.to_string()))?;
    let mut spf = txt.into_iter().filter(|t| is_spf(t));
    match (spf.next(), spf.next()) {
        (None, _) => Ok(None),
        (Some(one), None) => Ok(Some(one)),
        (Some(_), Some(_)) => Err(Spf::PermError(format!(
            "{domain} has more than one SPF record"
        ))),
    }
}

fn is_spf(txt: &str) -> bool {
    let lower = txt.to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

/// check_host(ip, domain) of RFC 7208 section 4.
pub async fn check(dns: &Resolver, domain: &str, ip: IpAddr) -> Spf {
    let mut lookups = 0;
    check_host(dns, domain.to_string(), ip, &mut lookups).await
}

fn check_host<'a>(
    dns: &'a Resolver,
    domain: String,
    ip: IpAddr,
    lookups: &'a mut u32,
) -> Pin<Box<dyn Future<Output = Spf> + Send + 'a>> {
    Box::pin(async move {
        let text = match record(dns, &domain).await {
            Ok(Some(text)) => text,
            Ok(None) => return Spf::None,
            Err(result) => return result,
        };
        let mut redirect = None;
        for term in text.split_whitespace().skip(1) {
            if let Some(target) = term.to_ascii_lowercase().strip_prefix("redirect=") {
                redirect = Some(target.to_string());
                continue;
            }
            if term.contains('=') {
                continue; // exp= and unknown modifiers
            }
            let (qualifier, mechanism) = match term.as_bytes()[0] {
                b'+' | b'-' | b'~' | b'?' => (term.as_bytes()[0], &term[1..]),
                _ => (b'+', term),
            };
            let matched = match mechanism_matches(dns, &domain, mechanism, ip, lookups).await {
                Ok(m) => m,
                Err(result) => return result,
            };
            if matched {
                return match qualifier {
                    b'-' => Spf::Fail,
                    b'~' => Spf::SoftFail,
                    b'?' => Spf::Neutral,
                    _ => Spf::Pass,
                };
            }
        }
        match redirect {
            Some(target) => {
                if let Err(e) = count(lookups) {
                    return e;
                }
                match check_host(dns, target.clone(), ip, lookups).await {
                    Spf::None => {
                        Spf::PermError(format!("redirect to {target}, which has no SPF record"))
                    }
                    other => other,
                }
            }
            None => Spf::Neutral,
        }
    })
}

fn count(lookups: &mut u32) -> Result<(), Spf> {
    *lookups += 1;
    if *lookups > MAX_LOOKUPS {
        return Err(Spf::PermError(format!(
            "more than {MAX_LOOKUPS} DNS lookups"
        )));
    }
    Ok(())
}

/// `domain/cidr4//cidr6` after a mechanism's colon (or just `/cidr`).
fn target_and_cidr<'a>(rest: &'a str, default: &'a str) -> (&'a str, Option<u8>, Option<u8>) {
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let (target, cidrs) = rest.split_once('/').map_or((rest, ""), |(t, c)| (t, c));
    let target = if target.is_empty() { default } else { target };
    let (v4, v6) = match cidrs.split_once("//") {
        Some((a, b)) => (a, b),
        None if cidrs.starts_with('/') => ("", &cidrs[1..]),
        None => (cidrs, ""),
    };
    (target, v4.parse().ok(), v6.parse().ok())
}

fn within(ip: IpAddr, addr: IpAddr, v4: Option<u8>, v6: Option<u8>) -> bool {
    let prefix = if addr.is_ipv4() {
        v4.unwrap_or(32)
    } else {
        v6.unwrap_or(128)
    };
    IpNet::new(addr, prefix).is_ok_and(|net| net.contains(&ip))
}

async fn mechanism_matches(
    dns: &Resolver,
    domain: &str,
    mechanism: &str,
    ip: IpAddr,
    lookups: &mut u32,
) -> Result<bool, Spf> {
    let lower = mechanism.to_ascii_lowercase();
    let (name, rest) = lower
        .find([':', '/'])
        .map_or((lower.as_str(), ""), |i| lower.split_at(i));
    let temp = |e: crate::dns::DnsError| Spf::TempError(e.to_string());
    match name {
        "all" => Ok(true),
        "ip4" | "ip6" => {
            let value = rest.strip_prefix(':').unwrap_or("");
            let net: IpNet = value
                .parse()
                .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Spf::PermError(format!("bad {name} value {value:?}")))?;
            Ok(net.contains(&ip))
        }
        _ if rest.contains('%') => Ok(false),
        "include" => {
            count(lookups)?;
            let target = rest.strip_prefix(':').unwrap_or("").to_string();
            match check_host(dns, target.clone(), ip, lookups).await {
                Spf::Pass => Ok(true),
                Spf::Fail | Spf::SoftFail | Spf::Neutral => Ok(false),
                Spf::None => Err(Spf::PermError(format!(
                    "include:{target} has no SPF record"
                ))),
                other => Err(other),
            }
        }
        "a" => {
            count(lookups)?;
            let (target, v4, v6) = target_and_cidr(rest, domain);
            let addrs = dns.addresses(target).await.map_err(temp)?;
            Ok(addrs.iter().any(|a| within(ip, *a, v4, v6)))
        }
        "mx" => {
            count(lookups)?;
            let (target, v4, v6) = target_and_cidr(rest, domain);
            for host in dns.mx_hosts(target).await.map_err(temp)?.iter().take(10) {
                let addrs = dns.addresses(host).await.map_err(temp)?;
                if addrs.iter().any(|a| within(ip, *a, v4, v6)) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        "exists" => {
            count(lookups)?;
            let target = rest.strip_prefix(':').unwrap_or("");
            Ok(!dns.addresses(target).await.map_err(temp)?.is_empty())
        }
        "ptr" => {
            count(lookups)?;
            Ok(false)
        }
        _ => Err(Spf::PermError(format!("unknown mechanism {mechanism:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_records_are_told_apart() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=x"));
    }

    #[test]
    fn targets_and_prefixes() {
        assert_eq!(target_and_cidr("", "d.test"), ("d.test", None, None));
        assert_eq!(target_and_cidr(":m.test", "d.test"), ("m.test", None, None));
        assert_eq!(target_and_cidr("/24", "d.test"), ("d.test", Some(24), None));
        assert_eq!(
            target_and_cidr(":m.test/24//64", "d.test"),
            ("m.test", Some(24), Some(64))
        );
        assert_eq!(
            target_and_cidr("//64", "d.test"),
            ("d.test", None, Some(64))
        );
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(within(ip, "192.0.2.1".parse().unwrap(), Some(24), None));
        assert!(!within(ip, "192.0.2.1".parse().unwrap(), None, None));
    }
}
