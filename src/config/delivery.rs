//! postoffice's `delivery: (...)` sub-section: outbound SMTP to each domain's MX.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use super::de;
use super::net::{self, Route};

/// Whether outbound SMTP upgrades to TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum StartTls {
    /// Never send STARTTLS.
    Never,
    /// Use STARTTLS when the server offers it; deliver in clear otherwise.
    #[default]
    Opportunistic,
    /// Defer delivery to servers that do not offer STARTTLS.
    Required,
}

/// Which address families outbound SMTP connects over, and in which order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum IpPreference {
    /// Both, in the order DNS gives them (IPv6 first).
    Both,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// IPv4 first, IPv6 when no IPv4 address answers. The default: Gmail
    /// refuses IPv6 senders without reverse DNS, and most hosts lack it.
    #[default]
    PreferIpv4,
    /// IPv6 first, IPv4 when no IPv6 address answers.
    PreferIpv6,
}

impl IpPreference {
    /// `addrs` filtered and ordered by this preference; the order within a
    /// family is kept.
    pub fn order(self, addrs: &[std::net::IpAddr]) -> Vec<std::net::IpAddr> {
        let (v4, v6): (Vec<_>, Vec<_>) = addrs.iter().copied().partition(|a| a.is_ipv4());
        match self {
            IpPreference::Both => addrs.to_vec(),
            IpPreference::Ipv4 => v4,
            IpPreference::Ipv6 => v6,
            IpPreference::PreferIpv4 => v4.into_iter().chain(v6).collect(),
            IpPreference::PreferIpv6 => v6.into_iter().chain(v4).collect(),
        }
    }
}

/// Outbound SMTP delivery.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Port of the receiving MX.
    #[serde(default = "default_port")]
    pub port: u16,
    /// STARTTLS policy.
    #[serde(default)]
    pub starttls: StartTls,
    /// Address families to deliver over, and their order.
    #[serde(default)]
    pub ip: IpPreference,
    /// Deliveries in flight at once.
    #[serde(default = "default_concurrency", deserialize_with = "de::count")]
    pub concurrency: usize,
    /// Deliveries in flight at once to one domain; a provider that
    /// throttles gets half as many, growing back with each success.
    #[serde(default = "default_per_domain", deserialize_with = "de::count")]
    pub per_domain: usize,
    /// First pause of new connections to a domain after it throttled us;
    /// doubles with each further throttling, up to `retry.max`.
    #[serde(
        default = "default_throttle_pause",
        deserialize_with = "de::positive_duration"
    )]
    pub throttle_pause: Duration,
    /// Bound on one TCP connect.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "de::positive_duration"
    )]
    pub connect_timeout: Duration,
    /// Bound on waiting for one SMTP reply.
    #[serde(
        default = "default_command_timeout",
        deserialize_with = "de::positive_duration"
    )]
    pub command_timeout: Duration,
    /// Delays between attempts, and when to give up.
    #[serde(default = "default_retry")]
    pub retry: DeliveryRetry,
    /// Whether to mail a bounce to the sender when delivery fails for good.
    #[serde(default = "default_bounces")]
    pub bounces: bool,
    /// How long the final status of a message stays queryable.
    #[serde(default = "default_keep_status", deserialize_with = "de::duration")]
    pub keep_status: Duration,
    /// Domain (lowercase) or "*" to the host that takes its mail instead of the MX.
    #[serde(default, deserialize_with = "routes")]
    pub routes: BTreeMap<String, Route>,
}

impl Delivery {
    /// The route for `domain`: its own entry, else the "*" entry, else `None` (use MX).
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        let domain = domain.to_ascii_lowercase();
        self.routes.get(&domain).or_else(|| self.routes.get("*"))
    }
}

/// Delivery retry: doubling from `first`, never more than `max`, bounced after `give_up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRetry {
    /// Delay after the first failed attempt.
    pub first: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
    /// Age at which a message fails for good.
    pub give_up: Duration,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename = "DeliveryRetry")]
struct RawDeliveryRetry {
    #[serde(
        default = "default_retry_first",
        deserialize_with = "de::positive_duration"
    )]
    first: Duration,
    #[serde(
        default = "default_retry_max",
        deserialize_with = "de::positive_duration"
    )]
    max: Duration,
    #[serde(
        default = "default_give_up",
        deserialize_with = "de::positive_duration"
    )]
    give_up: Duration,
}

impl DeliveryRetry {
    /// The doubling between attempts.
    pub fn backoff(&self) -> crate::retry::Backoff {
        crate::retry::Backoff {
            first: self.first,
            max: self.max,
        }
    }
}

impl<'de> Deserialize<'de> for DeliveryRetry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let RawDeliveryRetry {
            first,
            max,
            give_up,
        } = RawDeliveryRetry::deserialize(d)?;
        de::check_backoff(first, max)?;
        Ok(DeliveryRetry {
            first,
            max,
            give_up,
        })
    }
}

// Domain keys are lowercased so lookups need not care how the file spelled them.
fn routes<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Route>, D::Error> {
    let raw = BTreeMap::<String, Route>::deserialize(d)?;
    let mut routes = BTreeMap::new();
    for (domain, route) in raw {
        if domain != "*" && !net::is_hostname(&domain) {
            return Err(D::Error::custom(format!(
                "invalid route domain {domain:?} (expected a domain or \"*\")"
            )));
        }
        // Two spellings of one domain would silently drop one route.
        if routes.insert(domain.to_ascii_lowercase(), route).is_some() {
            return Err(D::Error::custom(format!(
                "route domain {domain:?} given twice"
            )));
        }
    }
    Ok(routes)
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            port: default_port(),
            starttls: StartTls::default(),
            ip: IpPreference::default(),
            concurrency: default_concurrency(),
            per_domain: default_per_domain(),
            throttle_pause: default_throttle_pause(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            retry: default_retry(),
            bounces: default_bounces(),
            keep_status: default_keep_status(),
            routes: BTreeMap::new(),
        }
    }
}

fn default_port() -> u16 {
    25
}

fn default_concurrency() -> usize {
    100
}

fn default_per_domain() -> usize {
    10
}

fn default_throttle_pause() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_retry() -> DeliveryRetry {
    DeliveryRetry {
        first: default_retry_first(),
        max: default_retry_max(),
        give_up: default_give_up(),
    }
}

fn default_retry_first() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}

fn default_give_up() -> Duration {
    Duration::from_secs(5 * 86_400)
}

fn default_bounces() -> bool {
    true
}

fn default_keep_status() -> Duration {
    Duration::from_secs(7 * 86_400)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn delivery(body: &str) -> Delivery {
        let text = format!("(postoffice: (tokens: [\"t\"], delivery: ({body})))");
        parse("hedwig.ron", &text)
            .unwrap()
            .postoffice
            .unwrap()
            .delivery
    }

    fn error(body: &str) -> String {
        let text = format!("(postoffice: (tokens: [\"t\"], delivery: ({body})))");
        parse("hedwig.ron", &text).unwrap_err().to_string()
    }

    #[test]
    fn every_default() {
        let d = delivery("");
        assert_eq!(d.port, 25);
        assert_eq!(d.starttls, StartTls::Opportunistic);
        assert_eq!(d.ip, IpPreference::PreferIpv4);
        assert_eq!((d.concurrency, d.per_domain), (100, 10));
        assert_eq!(d.throttle_pause, Duration::from_secs(30));
        assert_eq!(d.connect_timeout, Duration::from_secs(30));
        assert_eq!(d.command_timeout, Duration::from_secs(300));
        let retry = DeliveryRetry {
            first: Duration::from_secs(300),
            max: Duration::from_secs(3600),
            give_up: Duration::from_secs(5 * 86_400),
        };
        assert_eq!(d.retry, retry);
        assert!(d.bounces);
        assert_eq!(d.keep_status, Duration::from_secs(7 * 86_400));
        assert!(d.routes.is_empty());
        // Leaving out the whole section gives the same values.
        let text = "(postoffice: (tokens: [\"t\"]))";
        let whole = parse("hedwig.ron", text)
            .unwrap()
            .postoffice
            .unwrap()
            .delivery;
        assert_eq!(whole.retry, retry);
        assert_eq!(format!("{whole:?}"), format!("{d:?}"));
    }

    #[test]
    fn every_field_set() {
        let d = delivery(
            r#"
            port: 2525,
            starttls: Required,
            concurrency: 3,
            per_domain: 1,
            throttle_pause: "2s",
            connect_timeout: "1s",
            command_timeout: "2s",
            retry: (first: "1s", max: "4s", give_up: "1m"),
            bounces: false,
            keep_status: "1h",
            routes: {"Example.org": "smtp.example.org:2525", "*": "relay:25"},
            "#,
        );
        assert_eq!(
            (d.port, d.starttls, d.bounces),
            (2525, StartTls::Required, false)
        );
        assert_eq!((d.concurrency, d.per_domain), (3, 1));
        assert_eq!(d.throttle_pause, Duration::from_secs(2));
        assert_eq!(d.connect_timeout, Duration::from_secs(1));
        assert_eq!(d.command_timeout, Duration::from_secs(2));
        assert_eq!(d.retry.first, Duration::from_secs(1));
        assert_eq!(d.retry.max, Duration::from_secs(4));
        assert_eq!(d.retry.give_up, Duration::from_secs(60));
        assert_eq!(d.keep_status, Duration::from_secs(3600));
        assert_eq!(
            d.route_for("EXAMPLE.org").unwrap().to_string(),
            "smtp.example.org:2525"
        );
        assert_eq!(d.route_for("other.net").unwrap().to_string(), "relay:25");
        assert_eq!(delivery("starttls: Never").starttls, StartTls::Never);
        assert_eq!(delivery("ip: Ipv6").ip, IpPreference::Ipv6);
        assert_eq!(delivery("").route_for("example.org"), None);
    }

    #[test]
    fn ip_preference_orders_addresses() {
        let addrs: Vec<std::net::IpAddr> = ["::1", "10.0.0.1", "::2", "10.0.0.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let order = |p: IpPreference| {
            p.order(&addrs)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order(IpPreference::Both),
            ["::1", "10.0.0.1", "::2", "10.0.0.2"]
        );
        assert_eq!(order(IpPreference::Ipv4), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(order(IpPreference::Ipv6), ["::1", "::2"]);
        assert_eq!(
            order(IpPreference::PreferIpv4),
            ["10.0.0.1", "10.0.0.2", "::1", "::2"]
        );
        assert_eq!(
            order(IpPreference::PreferIpv6),
            ["::1", "::2", "10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(
            error("ip: V4"),
            "hedwig.ron:1:45: postoffice.delivery.ip: unknown variant `V4`, expected one of `Both`, `Ipv4`, `Ipv6`, `PreferIpv4`, `PreferIpv6`"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            error(r#"routes: {"example.org": "relay"}"#),
            "hedwig.ron:1:66: postoffice.delivery.routes.example.org: invalid route \"relay\" (expected host:port)"
        );
        assert_eq!(
            error(r#"routes: {"a b": "relay:25"}"#),
            "hedwig.ron:1:67: postoffice.delivery.routes: invalid route domain \"a b\" (expected a domain or \"*\")"
        );
        assert_eq!(
            error("starttls: Always"),
            "hedwig.ron:1:51: postoffice.delivery.starttls: unknown variant `Always`, expected one of `Never`, `Opportunistic`, `Required`"
        );
        assert_eq!(
            error(r#"retry: (first: "2h")"#),
            "hedwig.ron:1:60: postoffice.delivery.retry: first (7200s) is longer than max (3600s)"
        );
        assert_eq!(
            error(r#"retry: (give_up: "0s")"#),
            "hedwig.ron:1:59: postoffice.delivery.retry.give_up: must be longer than zero"
        );
        assert_eq!(
            error(r#"routes: {"a.org": "x:1", "A.org": "y:2"}"#),
            "hedwig.ron:1:80: postoffice.delivery.routes: route domain \"a.org\" given twice"
        );
        assert_eq!(
            error("port: 70000"),
            "hedwig.ron:1:47: postoffice.delivery.port: integer is out of bounds"
        );
        assert_eq!(
            error("per_domain: 0"),
            "hedwig.ron:1:53: postoffice.delivery.per_domain: must be at least 1"
        );
    }
}
