//! The checks `postoffice doctor` runs, in the order a receiver judges a
//! message: can we connect, who are we (reverse DNS), may we send for the
//! domain (SPF), is it signed (DKIM), what does the domain ask (DMARC), and
//! can a bounce find its way back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use hedwig::config::{DkimKey, Postoffice};
use smol::Timer;

use super::spf::{self, Spf};
use super::{Args, Finding, Level, PROBE_DOMAIN};
use crate::dkim::Key;
use crate::dns::{reverse_name, Resolve, Resolver};

/// Bound on the port 25 connection and on its greeting.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn finding(level: Level, check: impl Into<String>, text: impl Into<String>) -> Finding {
    Finding {
        level,
        check: check.into(),
        text: text.into(),
    }
}

/// Every check, in order.
pub async fn run(config: &Postoffice, dns: &Resolver, args: &Args) -> Vec<Finding> {
    let mut out = Vec::new();
    let hostname = config.resolved_hostname().to_ascii_lowercase();
    let probe = args.probe.as_deref().unwrap_or(PROBE_DOMAIN);
    let sources = port25(config, dns, probe, &mut out).await;
    let ips = if args.ips.is_empty() {
        sending_addresses(&sources, &mut out)
    } else {
        args.ips.clone()
    };
    for ip in &ips {
        out.push(rdns(dns, *ip, &hostname).await);
    }
    let mut domains: Vec<String> = config.dkim.iter().map(|k| k.domain.clone()).collect();
    domains.extend(args.domains.iter().cloned());
    domains.sort();
    domains.dedup();
    if domains.is_empty() {
        out.push(finding(
            Level::Warn,
            "domains",
            "no sender domain to check: configure dkim keys, or name domains with --domain",
        ));
    }
    for domain in &domains {
        out.extend(spf_check(dns, domain, &ips).await);
        out.extend(dkim_check(dns, domain, &config.dkim).await);
        out.push(dmarc_check(dns, domain).await);
    }
    out.push(bounces(dns, &hostname, &ips).await);
    out
}

/// Connects to port 25 of `probe`'s MX once per address family allowed by
/// `delivery.ip`; returns the local addresses the connections came from.
async fn port25(
    config: &Postoffice,
    dns: &Resolver,
    probe: &str,
    out: &mut Vec<Finding>,
) -> Vec<IpAddr> {
    let port = config.delivery.port;
    let check = format!("port {port}");
    let targets = match dns.lookup_mx(probe).await {
        Ok(t) => t,
        Err(e) => {
            out.push(finding(
                Level::Fail,
                check,
                format!("cannot look up {probe}'s MX: {e}; check the dns setting"),
            ));
            return Vec::new();
        }
    };
    let Some(mx) = targets.first() else {
        out.push(finding(Level::Fail, check, format!("{probe} has no MX")));
        return Vec::new();
    };
    let ordered = config.delivery.ip.order(&mx.addrs);
    let mut sources = Vec::new();
    for family in [true, false] {
        let Some(ip) = ordered.iter().find(|a| a.is_ipv4() == family) else {
            continue;
        };
        let addr = SocketAddr::new(*ip, port);
        match probe_smtp(addr).await {
            Ok((local, greeting)) => {
                sources.push(local.ip());
                out.push(finding(
                    Level::Ok,
                    check.clone(),
                    format!(
                        "{}[{ip}]:{port}, {probe}'s MX, answered \"{greeting}\" (from {})",
                        mx.host,
                        local.ip()
                    ),
                ));
            }
            Err(e) => out.push(finding(
                Level::Fail,
                check.clone(),
                format!(
                    "cannot talk to {}[{ip}]:{port}, {probe}'s MX: {e}; many clouds block outbound \
                     port 25: ask the provider to open it{}",
                    mx.host,
                    if family { "" } else { ", or set delivery.ip: Ipv4" }
                ),
            )),
        }
    }
    if ordered.is_empty() {
        out.push(finding(
            Level::Fail,
            check,
            format!(
                "{}, {probe}'s MX, has no address delivery.ip allows",
                mx.host
            ),
        ));
    }
    sources
}

/// Connects, reads the greeting, says QUIT: the local address and the greeting.
async fn probe_smtp(addr: SocketAddr) -> Result<(SocketAddr, String), String> {
    async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 512];
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        let greeting = String::from_utf8_lossy(&buf[..n]);
        let first = greeting.lines().next().unwrap_or("").trim().to_string();
        let _ = tcp.write_all(b"QUIT\r\n").await;
        let _ = tcp.read(&mut buf).await;
        if first.starts_with("220") {
            Ok((local, first))
        } else if first.is_empty() {
            Err("closed without a greeting".into())
        } else {
            Err(format!("greeted with \"{first}\""))
        }
    }
    .or(async {
        Timer::after(PROBE_TIMEOUT).await;
        Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))
    })
    .await
}

/// Whether receivers can see `ip` as a sender (not private, loopback, link-local or CGNAT).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The public ones among the addresses the probe left from; a warning for the rest.
fn sending_addresses(sources: &[IpAddr], out: &mut Vec<Finding>) -> Vec<IpAddr> {
    let mut public = Vec::new();
    for ip in sources {
        if is_public(*ip) {
            public.push(*ip);
        } else {
            out.push(finding(
                Level::Warn,
                format!("address {ip}"),
                "not a public address (NAT?): receivers see another; name it with --ip to check its records",
            ));
        }
    }
    if sources.is_empty() {
        out.push(finding(
            Level::Warn,
            "addresses",
            "unknown, as port 25 could not be reached; name them with --ip to check their records",
        ));
    }
    public
}

/// Forward-confirmed reverse DNS of `ip`, matching the hostname.
async fn rdns(dns: &Resolver, ip: IpAddr, hostname: &str) -> Finding {
    let check = format!("rdns {ip}");
    let reverse = reverse_name(ip);
    let names = match dns.ptr(ip).await {
        Ok(n) => n,
        Err(e) => return finding(Level::Warn, check, format!("cannot look up the PTR: {e}")),
    };
    if names.is_empty() {
        return finding(
            Level::Fail,
            check,
            format!(
                "no PTR record (Gmail refuses mail from such addresses); ask whoever owns the \
                 address (the hosting provider) for: {reverse}. PTR {hostname}."
            ),
        );
    }
    let mut confirmed = Vec::new();
    for name in &names {
        if dns.addresses(name).await.is_ok_and(|a| a.contains(&ip)) {
            confirmed.push(name.clone());
        }
    }
    if confirmed.is_empty() {
        return finding(
            Level::Fail,
            check,
            format!(
                "PTR {} does not resolve back to {ip} (no forward-confirmed reverse DNS); publish: {}. {} {ip}",
                names.join(", "),
                names[0],
                if ip.is_ipv4() { "A" } else { "AAAA" }
            ),
        );
    }
    if !confirmed.iter().any(|n| n == hostname) {
        return finding(
            Level::Warn,
            check,
            format!(
                "PTR {}, which resolves back, but hostname is {hostname}: set postoffice.hostname: \"{}\" \
                 (the EHLO name), or have the PTR changed to {hostname}",
                confirmed[0], confirmed[0]
            ),
        );
    }
    finding(
        Level::Ok,
        check,
        format!("PTR {hostname}, which resolves back to {ip}"),
    )
}

/// The mechanisms that permit `ips`: `ip4:A ip6:B`.
fn mechanisms(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "ip4:YOUR.PUBLIC.ADDRESS".into();
    }
    let m: Vec<String> = ips
        .iter()
        .map(|ip| format!("{}:{ip}", if ip.is_ipv4() { "ip4" } else { "ip6" }))
        .collect();
    m.join(" ")
}

async fn spf_check(dns: &Resolver, domain: &str, ips: &[IpAddr]) -> Vec<Finding> {
    let check = format!("spf {domain}");
    let text = match spf::record(dns, domain).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return vec![finding(
                Level::Fail,
                check,
                format!(
                    "no SPF record; publish: {domain}. TXT \"v=spf1 {} -all\"",
                    mechanisms(ips)
                ),
            )]
        }
        Err(Spf::TempError(e)) => {
            return vec![finding(
                Level::Warn,
                check,
                format!("cannot look it up: {e}"),
            )]
        }
        Err(e) => return vec![finding(Level::Fail, check, format!("{}: {e:?}", e.name()))],
    };
    if ips.is_empty() {
        let text =
            format!("\"{text}\": no sending address known to check it against (name it with --ip)");
        return vec![finding(Level::Warn, check, text)];
    }
    let mut out = Vec::new();
    for ip in ips {
        let result = spf::check(dns, domain, *ip).await;
        out.push(match result {
            Spf::Pass => finding(Level::Ok, check.clone(), format!("\"{text}\" permits {ip}")),
            Spf::TempError(e) => finding(
                Level::Warn,
                check.clone(),
                format!("cannot evaluate \"{text}\": {e}"),
            ),
            other => {
                let mut terms: Vec<&str> = text.split_whitespace().collect();
                let at = terms
                    .iter()
                    .position(|t| {
                        t.trim_start_matches(['+', '-', '~', '?'])
                            .eq_ignore_ascii_case("all")
                            || t.starts_with("redirect=")
                    })
                    .unwrap_or(terms.len());
                let add = mechanisms(&[*ip]);
                terms.insert(at, &add);
                let why = match &other {
                    Spf::PermError(e) => format!("permerror ({e})"),
                    r => r.name().to_string(),
                };
                finding(
                    Level::Fail,
                    check.clone(),
                    format!(
                        "\"{text}\" does not permit {ip} ({why}); publish: {domain}. TXT \"{}\"",
                        terms.join(" ")
                    ),
                )
            }
        });
    }
    out
}

/// The `p=` (and `k=`) tags of a DKIM key record.
fn key_tags(record: &str) -> (Option<String>, String) {
    let mut p = None;
    let mut k = "rsa".to_string();
    for tag in record.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name.trim() {
            "p" => p = Some(value),
            "k" => k = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    (p, k)
}

async fn dkim_check(dns: &Resolver, domain: &str, keys: &[DkimKey]) -> Vec<Finding> {
    let own: Vec<&DkimKey> = keys.iter().filter(|k| k.domain == domain).collect();
    if own.is_empty() {
        let check = format!("dkim {domain}");
        return vec![match keys.iter().find(|k| k.covers(domain)) {
            Some(parent) => finding(
                Level::Ok,
                check,
                format!("signed as d={} (aligned with {domain} under DMARC's relaxed rule)", parent.domain),
            ),
            None => finding(
                Level::Fail,
                check,
                format!(
                    "no key configured, so its mail goes unsigned; make one (openssl genrsa -out \
                     /etc/hedwig/dkim/{domain}.pem 2048) and add (domain: \"{domain}\", selector: \"hedwig1\", \
                     key: \"/etc/hedwig/dkim/{domain}.pem\") to postoffice.dkim"
                ),
            ),
        }];
    }
    let mut out = Vec::new();
    for key in &own {
        let name = key.record_name();
        let check = format!("dkim {name}");
        let ours = match Key::load(&key.key) {
            Ok(k) => k,
            Err(e) => {
                out.push(finding(
                    Level::Fail,
                    check,
                    format!("{}: {e}", key.key.display()),
                ));
                continue;
            }
        };
        let record = ours.record();
        let publish = format!("publish: {name}. TXT \"{record}\"");
        let (our_p, _) = key_tags(&record);
        let found = match dns.txt(&name).await {
            Ok(t) => t,
            Err(e) => {
                out.push(finding(
                    Level::Warn,
                    check,
                    format!("cannot look it up: {e}"),
                ));
                continue;
            }
        };
        let published: Vec<(Option<String>, String)> = found
            .iter()
            .filter(|t| t.contains("p="))
            .map(|t| key_tags(t))
            .collect();
        out.push(if published.is_empty() {
            finding(
                Level::Fail,
                check,
                format!("no key record, so no receiver can verify the signature; {publish}"),
            )
        } else if published.iter().any(|(p, _)| p == &our_p) {
            finding(
                Level::Ok,
                check,
                format!(
                    "the published key is {}'s ({})",
                    key.key.display(),
                    ours.algorithm()
                ),
            )
        } else if published.iter().any(|(p, _)| p.as_deref() == Some("")) {
            finding(
                Level::Fail,
                check,
                format!("the key is revoked (empty p=); {publish}"),
            )
        } else {
            finding(
                Level::Fail,
                check,
                format!(
                    "the published key is not {}'s, so signatures fail; {publish}",
                    key.key.display()
                ),
            )
        });
    }
    let rsa = own
        .iter()
        .any(|k| Key::load(&k.key).is_ok_and(|k| k.algorithm() == "rsa-sha256"));
    if !rsa {
        out.push(finding(
            Level::Warn,
            format!("dkim {domain}"),
            "only Ed25519 keys: many receivers (Gmail, Outlook) verify only RSA; add an RSA key of 2048 bits beside it",
        ));
    }
    out
}

async fn dmarc_check(dns: &Resolver, domain: &str) -> Finding {
    let check = format!("dmarc {domain}");
    // A subdomain without its own record falls under its parent's (RFC 7489 section 6.6.3).
    let mut at = domain.to_string();
    loop {
        let name = format!("_dmarc.{at}");
        match dns.txt(&name).await {
            Ok(t) => {
                if let Some(r) = t
                    .iter()
                    .find(|r| r.to_ascii_lowercase().starts_with("v=dmarc1"))
                {
                    let whose = if at == domain {
                        String::new()
                    } else {
                        format!(" (from _dmarc.{at})")
                    };
                    return finding(Level::Ok, check, format!("\"{r}\"{whose}"));
                }
            }
            Err(e) => return finding(Level::Warn, check, format!("cannot look it up: {e}")),
        }
        match at.split_once('.') {
            Some((_, parent)) if parent.contains('.') => at = parent.to_string(),
            _ => break,
        }
    }
    finding(
        Level::Warn,
        check,
        format!(
            "no DMARC record (Gmail and Yahoo require one from bulk senders); publish: _dmarc.{domain}. \
             TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\""
        ),
    )
}

/// The hostname (EHLO name, MAILER-DAEMON's domain) must resolve.
async fn bounces(dns: &Resolver, hostname: &str, ips: &[IpAddr]) -> Finding {
    let check = format!("hostname {hostname}");
    if let Ok(mx) = dns.mx_hosts(hostname).await {
        if !mx.is_empty() {
            return finding(
                Level::Ok,
                check,
                format!("MX {}: replies to bounces can come back", mx.join(", ")),
            );
        }
    }
    match dns.addresses(hostname).await {
        Ok(a) if !a.is_empty() => {
            let a: Vec<String> = a.iter().map(ToString::to_string).collect();
            finding(
                Level::Ok,
                check,
                format!("address {} (no MX: mail to it goes there)", a.join(", ")),
            )
        }
        Ok(_) => {
            let ip = ips
                .first()
                .map_or("YOUR.PUBLIC.ADDRESS".to_string(), ToString::to_string);
            let kind = if ips.first().is_some_and(|i| i.is_ipv6()) {
                "AAAA"
            } else {
                "A"
            };
            finding(
                Level::Fail,
                check,
                format!(
                    "no MX or address, so receivers cannot check the EHLO name and replies to bounces \
                     go nowhere; publish: {hostname}. {kind} {ip}"
                ),
            )
        }
        Err(e) => finding(Level::Warn, check, format!("cannot look it up: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for private in [
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["203.0.113.5", "8.8.8.8", "2001:db8::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn dkim_tags() {
        assert_eq!(
            key_tags("v=DKIM1; k=ed25519; p=ab cd"),
            (Some("abcd".into()), "ed25519".into())
        );
        assert_eq!(key_tags("v=DKIM1; p="), (Some(String::new()), "rsa".into()));
        assert_eq!(
            mechanisms(&["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]),
            "ip4:192.0.2.1 ip6:2001:db8::1"
        );
    }
}
