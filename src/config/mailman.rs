//! The `mailman: (...)` section: the SMTP relay and its hand-off to postoffice.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use log::LevelFilter;

use super::de;
use super::net::{self, Listen};
use super::upstream::Upstream;
use crate::privilege::RunAs;

/// mailman's settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mailman {
    /// Addresses to accept SMTP on; `docker0:25` style entries are resolved at start.
    #[serde(default = "default_listen", deserialize_with = "de::nonempty")]
    pub listen: Vec<Listen>,
    /// Name in the greeting and EHLO reply; `None` means [`super::system_hostname`].
    #[serde(default, deserialize_with = "de::opt_hostname")]
    pub hostname: Option<String>,
    /// Client networks allowed to connect; any other client gets 554 and is closed.
    #[serde(default = "default_allow", deserialize_with = "de::networks")]
    pub allow: Vec<IpNet>,
    /// Largest message accepted, in bytes; advertised as SIZE.
    #[serde(default = "default_max_message_size", deserialize_with = "de::size")]
    pub max_message_size: u64,
    /// Most RCPT TO per message.
    #[serde(default = "default_max_recipients", deserialize_with = "de::count")]
    pub max_recipients: usize,
    /// Refused commands per session before 421 and close (Postfix's
    /// smtpd_hard_error_limit).
    #[serde(default = "default_max_errors", deserialize_with = "de::count")]
    pub max_errors: usize,
    /// Most SMTP sessions at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections", deserialize_with = "de::count")]
    pub max_connections: usize,
    /// Directory of accepted messages not yet handed to postoffice; created at start.
    #[serde(default = "default_spool", deserialize_with = "de::path")]
    pub spool: PathBuf,
    /// Where and how to hand messages off.
    pub postoffice: Upstream,
    /// Longest command or message line in bytes, CRLF included.
    #[serde(
        default = "default_max_line_length",
        deserialize_with = "de::size_usize"
    )]
    pub max_line_length: usize,
    /// Most bytes of header section scanned for Date: and Message-ID:.
    #[serde(
        default = "default_max_header_size",
        deserialize_with = "de::size_usize"
    )]
    pub max_header_size: usize,
    /// Idle time waiting for a command before 421.
    #[serde(
        default = "default_timeout",
        deserialize_with = "de::positive_duration"
    )]
    pub timeout: Duration,
    /// Idle time inside DATA before 421.
    #[serde(
        default = "default_data_timeout",
        deserialize_with = "de::positive_duration"
    )]
    pub data_timeout: Duration,
    /// After SIGTERM, how long sessions in flight may finish.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "de::duration"
    )]
    pub shutdown_timeout: Duration,
    /// Rewrites a container's sender (`root@3f2a9c1b7e4d`) to `local@domain`.
    #[serde(default)]
    pub masquerade: Option<Masquerade>,
    /// Most threads doing file work (the spool) at once.
    #[serde(
        default = "de::default_blocking_threads",
        deserialize_with = "de::count"
    )]
    pub blocking_threads: usize,
    /// Log level; RUST_LOG, when set, overrides it.
    #[serde(default = "de::default_log_level", deserialize_with = "de::log_level")]
    pub log_level: LevelFilter,
    /// Account to become once the sockets and the spool are open; `None`
    /// keeps running as whoever started it.
    #[serde(default, deserialize_with = "de::opt_user")]
    pub user: Option<RunAs>,
}

/// Sender identity for containers: a sender whose domain is not a FQDN, or
/// is this host's name, becomes `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masquerade {
    /// The domain senders are rewritten to; it must have a dot.
    #[serde(deserialize_with = "fqdn")]
    pub domain: String,
    /// Also rewrite the From:, Sender: and Return-Path: fields.
    #[serde(default = "default_rewrite_from_header")]
    pub rewrite_from_header: bool,
}

fn default_rewrite_from_header() -> bool {
    true
}

// A domain without a dot is what masquerading rewrites away, so it cannot be the target.
fn fqdn<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::{Deserialize, Error as _};
    let domain = de::Checked::<de::Hostname>::deserialize(d)?.0;
    if !domain.trim_end_matches('.').contains('.') {
        return Err(D::Error::custom(format!(
            "{domain:?} is not a fully qualified domain (e.g. \"example.org\")"
        )));
    }
    Ok(domain.trim_end_matches('.').to_ascii_lowercase())
}

impl Mailman {
    /// The configured hostname, else this machine's.
    pub fn resolved_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(net::system_hostname)
    }
}

fn default_listen() -> Vec<Listen> {
    vec![Listen::Addr(([172, 17, 0, 1], 25).into())]
}

fn default_allow() -> Vec<IpNet> {
    ["127.0.0.0/8", "172.16.0.0/12"]
        .iter()
        .map(|net| net.parse().expect("default networks parse"))
        .collect()
}

fn default_max_message_size() -> u64 {
    25 << 20
}

fn default_max_recipients() -> usize {
    100
}

fn default_max_errors() -> usize {
    20
}

fn default_max_connections() -> usize {
    512
}

fn default_spool() -> PathBuf {
    "/var/spool/hedwig/mailman".into()
}

fn default_max_line_length() -> usize {
    4096
}

fn default_max_header_size() -> usize {
    256 << 10
}

fn default_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_data_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Token};

    fn mailman(body: &str) -> Mailman {
        let text = format!("(mailman: ({body}))");
        parse("hedwig.ron", &text).unwrap().mailman.unwrap()
    }

    fn error(body: &str) -> String {
        let text = format!("(mailman: ({body}))");
        parse("hedwig.ron", &text).unwrap_err().to_string()
    }

    const UPSTREAM: &str = r#"postoffice: (url: "https://brandy.example.org:8025", token: "t")"#;

    #[test]
    fn every_default() {
        let m = mailman(UPSTREAM);
        assert_eq!(m.listen, vec!["172.17.0.1:25".parse().unwrap()]);
        assert_eq!(m.hostname, None);
        let allow: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
        ];
        assert_eq!(m.allow, allow);
        assert_eq!(m.max_message_size, 25 * 1024 * 1024);
        assert_eq!(m.max_recipients, 100);
        assert_eq!(m.max_connections, 512);
        assert_eq!(m.spool, PathBuf::from("/var/spool/hedwig/mailman"));
        assert_eq!(m.max_line_length, 4096);
        assert_eq!(m.max_header_size, 256 * 1024);
        assert_eq!(m.timeout, Duration::from_secs(300));
        assert_eq!(m.data_timeout, Duration::from_secs(600));
        assert_eq!(m.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(m.blocking_threads, 32);
        assert_eq!(m.log_level, LevelFilter::Info);
        assert_eq!(m.masquerade, None);
        assert_eq!(m.user, None);
        // The postoffice sub-section's defaults are tested in upstream.rs.
    }

    #[test]
    fn every_field_set() {
        let m = mailman(
            r#"
            listen: ["docker0:25", "[::1]:2525"],
            hostname: "less.example.org",
            allow: ["10.0.0.1", "fd00::/8"],
            max_message_size: 1000,
            max_recipients: 5,
            max_connections: 6,
            spool: "/tmp/spool",
            postoffice: (
                url: "http://127.0.0.1:8025",
                token_file: "/etc/hedwig/token",
                retry: (first: "250ms", max: "1h"),
                concurrency: 2,
                batch: 8,
                batch_size: "256KiB",
                timeout: "5s",
                ca_file: Some("/etc/hedwig/ca.pem"),
            ),
            max_line_length: "1KiB",
            max_header_size: 2048,
            timeout: "1m",
            data_timeout: "1h30m",
            shutdown_timeout: "0s",
            masquerade: Some((domain: "Example.org", rewrite_from_header: false)),
            log_level: "debug",
            user: Some("hedwig"),
            "#,
        );
        let masquerade = Masquerade {
            domain: "example.org".into(),
            rewrite_from_header: false,
        };
        assert_eq!(m.masquerade, Some(masquerade));
        assert_eq!(
            m.listen[0],
            Listen::Interface {
                name: "docker0".into(),
                port: 25
            }
        );
        assert_eq!(m.listen[1].to_string(), "[::1]:2525");
        assert_eq!(m.hostname.as_deref(), Some("less.example.org"));
        assert_eq!(m.allow[0], "10.0.0.1/32".parse::<IpNet>().unwrap());
        assert_eq!(m.max_message_size, 1000);
        assert_eq!((m.max_recipients, m.max_connections), (5, 6));
        assert_eq!(m.max_line_length, 1024);
        assert_eq!(m.max_header_size, 2048);
        assert_eq!(m.data_timeout, Duration::from_secs(5400));
        assert_eq!(m.shutdown_timeout, Duration::ZERO);
        assert_eq!(m.log_level, LevelFilter::Debug);
        assert_eq!(m.user, Some(RunAs::Name("hedwig".into())));
        assert_eq!(m.postoffice.token, Token::File("/etc/hedwig/token".into()));
        assert_eq!(m.postoffice.retry.first, Duration::from_millis(250));
        assert_eq!(m.postoffice.ca_file, Some("/etc/hedwig/ca.pem".into()));
        assert_eq!(
            (m.postoffice.batch, m.postoffice.batch_size),
            (8, 256 << 10)
        );
    }

    #[test]
    fn implicit_some_for_options() {
        let m = mailman(&format!(r#"hostname: "x.org", {UPSTREAM}"#));
        assert_eq!(m.hostname.as_deref(), Some("x.org"));
        let m = mailman(&format!(r#"hostname: None, {UPSTREAM}"#));
        assert_eq!(m.hostname, None);
    }

    #[test]
    fn masquerade_forms() {
        let m = mailman(&format!(
            r#"masquerade: (domain: "example.org"), {UPSTREAM}"#
        ));
        assert!(m.masquerade.unwrap().rewrite_from_header);
        let e = error(&format!(r#"masquerade: (domain: "web1"), {UPSTREAM}"#));
        assert_eq!(
            e,
            "hedwig.ron:1:34: mailman.masquerade.domain: \"web1\" is not a fully qualified domain (e.g. \"example.org\")"
        );
        let e = error(&format!(
            r#"masquerade: (domain: "a.org", from: true), {UPSTREAM}"#
        ));
        assert!(
            e.contains("mailman.masquerade: unknown field `from`"),
            "{e}"
        );
    }

    #[test]
    fn bound_errors() {
        let e = |body: &str| error(&format!("{UPSTREAM}, {body}"));
        assert!(e("max_recipients: 0").ends_with("mailman.max_recipients: must be at least 1"));
        assert!(e("listen: []").ends_with("mailman.listen: must list at least one entry"));
        assert!(e("allow: []").ends_with("mailman.allow: must list at least one entry"));
        assert!(e(r#"allow: ["10.0.0.0/33"]"#)
            .ends_with("mailman.allow: invalid network \"10.0.0.0/33\""));
        assert!(e(r#"hostname: "a b""#).ends_with("mailman.hostname: invalid hostname \"a b\""));
        assert!(e(r#"user: "Root""#)
            .ends_with("mailman.user: invalid user \"Root\": write a name or UID:GID"));
        assert!(e(r#"spool: """#).ends_with("mailman.spool: path is empty"));
        assert!(e(r#"timeout: "0s""#).ends_with("mailman.timeout: must be longer than zero"));
        assert!(
            e("max_message_size: 0").ends_with("mailman.max_message_size: must be at least 1 byte")
        );
        assert!(e(r#"log_level: "loud""#).ends_with(
            "mailman.log_level: invalid log level \"loud\" (use error, warn, info, debug, trace or off)"
        ));
        assert!(e("timeout: 30").ends_with(
            "mailman.timeout: invalid duration 30: write it as a string with a unit, e.g. \"30s\""
        ));
    }
}
