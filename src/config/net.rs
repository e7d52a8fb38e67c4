//! Addresses as hedwig.ron writes them: listen addresses, routes, networks, host names.
//!
//! Each type parses from one string, so a mistake is reported at the string
//! that holds it; resolving names (interfaces, hosts) waits for start-up, so
//! `--check` judges the file and not the machine it runs on.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{Deserialize, Deserializer, Error as _};

/// Where mailman listens: an address, or an interface whose IPv4 address is
/// looked up at start (docker0's address is only known on the docker host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A socket address such as `172.17.0.1:25` or `[::1]:25`.
    Addr(SocketAddr),
    /// An interface name and port such as `docker0:25`.
    Interface {
        /// The interface name, e.g. `docker0`.
        name: String,
        /// The TCP port.
        port: u16,
    },
}

/// A string that is not a socket address nor `interface:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    what: &'static str,
    input: String,
    hint: &'static str,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}{}", self.what, self.input, self.hint)
    }
}

impl std::error::Error for AddrError {}

fn addr_error(what: &'static str, input: &str) -> AddrError {
    AddrError {
        what,
        input: input.to_string(),
        hint: "",
    }
}

impl FromStr for Listen {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Listen::Addr(addr));
        }
        let err = || addr_error("socket address", s);
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        // An IP with a bad port is a bad address, not an interface name.
        if is_ip(host) || !is_interface_name(host) {
            return Err(err());
        }
        let port = port.parse().map_err(|_| err())?;
        Ok(Listen::Interface {
            name: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Addr(addr) => addr.fmt(f),
            Listen::Interface { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Where postoffice sends mail for a domain instead of its MX: `host:port`,
/// with a host name, an IPv4 address or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host name or IP address (IPv6 without brackets), resolved at delivery.
    pub host: String,
    /// The SMTP port.
    pub port: u16,
}

impl FromStr for Route {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let err = || AddrError {
            hint: " (expected host:port)",
            ..addr_error("route", s)
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        let port = port.parse().map_err(|_| err())?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(err()),
            None if is_hostname(host) => host,
            None => return Err(err()),
        };
        Ok(Route {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Parses a socket address, naming the string when it is not one.
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, AddrError> {
    s.parse().map_err(|_| addr_error("socket address", s))
}

/// Parses a network in CIDR form; a bare IP is a network of one host.
pub(crate) fn network(s: &str) -> Result<IpNet, AddrError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| addr_error("network", s))
}

/// Whether `s` may stand in DNS or SMTP as a host name: dot-separated labels
/// of letters, digits, '-' and '_' (the last appears in real internal names).
pub(crate) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_ip(s: &str) -> bool {
    let unbracketed = s.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    s.parse::<IpAddr>().is_ok() || unbracketed.is_some_and(|h| h.parse::<IpAddr>().is_ok())
}

// Linux limits interface names to 15 bytes (IFNAMSIZ less the NUL).
fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// This machine's host name from /proc/sys/kernel/hostname, or "localhost"
/// when it cannot be read; the default for both binaries' `hostname`.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let addr = |s: &str| Listen::Addr(s.parse().unwrap());
        assert_eq!("172.17.0.1:25".parse(), Ok(addr("172.17.0.1:25")));
        assert_eq!("[::1]:25".parse(), Ok(addr("[::1]:25")));
        assert_eq!("127.0.0.1:0".parse(), Ok(addr("127.0.0.1:0")));
    }

    #[test]
    fn listen_interfaces() {
        let docker0 = Listen::Interface {
            name: "docker0".into(),
            port: 25,
        };
        assert_eq!("docker0:25".parse(), Ok(docker0));
        assert!("br-1a2b3c4d5e6f:2525".parse::<Listen>().is_ok());
        assert!("eth0.100:25".parse::<Listen>().is_ok());
    }

    #[test]
    fn bad_listen() {
        for bad in [
            "172.17.0.1:2x",
            "172.17.0.1",
            "172.17.0.1:65536",
            "::1:25x",
            "[::1]:x",
            "docker0",
            "docker0:",
            "docker0:99999",
            "a-very-long-interface-name:25",
            "dock er0:25",
            ":25",
            "",
        ] {
            let err = bad.parse::<Listen>().unwrap_err();
            assert_eq!(err.to_string(), format!("invalid socket address {bad:?}"));
        }
    }

    #[test]
    fn listen_prints_back() {
        for s in ["172.17.0.1:25", "[::1]:25", "docker0:25"] {
            assert_eq!(s.parse::<Listen>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn routes() {
        let route = |s: &str| s.parse::<Route>();
        assert_eq!(
            route("smtp.example.org:2525"),
            Ok(Route {
                host: "smtp.example.org".into(),
                port: 2525
            })
        );
        assert_eq!(route("relay:25").unwrap().to_string(), "relay:25");
        assert_eq!(route("10.0.0.1:25").unwrap().host, "10.0.0.1");
        assert_eq!(route("[::1]:25").unwrap().host, "::1");
        assert_eq!(route("[::1]:25").unwrap().to_string(), "[::1]:25");
        for bad in [
            "relay",
            "relay:",
            "relay:x",
            ":25",
            "re lay:25",
            "[nope]:25",
            "a..b:25",
        ] {
            assert_eq!(
                route(bad).unwrap_err().to_string(),
                format!("invalid route {bad:?} (expected host:port)")
            );
        }
    }

    #[test]
    fn networks() {
        assert_eq!(network("127.0.0.0/8"), Ok("127.0.0.0/8".parse().unwrap()));
        assert_eq!(network("10.1.2.3"), Ok("10.1.2.3/32".parse().unwrap()));
        assert_eq!(network("::1"), Ok("::1/128".parse().unwrap()));
        assert_eq!(
            network("10.0.0.0/33").unwrap_err().to_string(),
            "invalid network \"10.0.0.0/33\""
        );
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("less.example.org"));
        assert!(is_hostname("localhost"));
        assert!(!is_hostname(""));
        assert!(!is_hostname("a b"));
        assert!(!is_hostname("example..org"));
    }

    #[test]
    fn system_hostname_is_never_empty() {
        assert!(!system_hostname().is_empty());
    }
}
