//! The `postoffice: (...)` section: the HTTP intake and the outbound MX delivery.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use serde::de::{Deserialize, Deserializer, Error as _};

use super::de::{self, Checked, Secret};
use super::delivery::Delivery;
use super::dkim::{self, DkimKey};
use super::net;
use super::token::Token;
use crate::privilege::RunAs;

/// postoffice's settings.
#[derive(Debug, Clone)]
pub struct Postoffice {
    /// Address the HTTP(S) intake listens on.
    pub listen: SocketAddr,
    /// Certificate and key when postoffice serves HTTPS itself.
    pub tls: Option<Tls>,
    /// Accepted bearer tokens: `tokens` then `token_files`, never empty.
    pub tokens: Vec<Token>,
    /// EHLO name outbound and the domain of MAILER-DAEMON; `None` means the system's.
    pub hostname: Option<String>,
    /// Directory of the delivery queue; created at start.
    pub queue: PathBuf,
    /// Largest message accepted, in bytes, besides what the previous hop
    /// added (`hedwig::handoff::HOP_ALLOWANCE`).
    pub max_message_size: u64,
    /// Most message bytes in one batched hand-off (`POST /v1/batch`), in
    /// all: what one such request may hold in memory. A larger batch is
    /// answered 413 and mailman sends its messages one by one.
    pub max_batch_size: u64,
    /// Most HTTP connections at once; more get 503 and are closed.
    pub max_connections: usize,
    /// Largest request head (request line and header fields), in bytes.
    pub max_header_size: usize,
    /// How long a client may take to send a request head, and stay idle
    /// between requests on a keep-alive connection.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive, in all.
    pub body_timeout: Duration,
    /// How long one write of an answer may wait for a client not reading.
    pub write_timeout: Duration,
    /// How MX records are looked up.
    pub dns: Dns,
    /// Outbound SMTP delivery.
    pub delivery: Delivery,
    /// DKIM signing keys; mail whose From: domain none covers goes unsigned.
    pub dkim: Vec<DkimKey>,
    /// Most threads doing file work (the queue) at once.
    pub blocking_threads: usize,
    /// Finished messages whose Idempotency-Keys are remembered (besides
    /// every queued message's), so a repeated hand-off is not queued twice.
    pub remember_keys: usize,
    /// Log level; RUST_LOG, when set, overrides it.
    pub log_level: LevelFilter,
    /// Account to become once the listener, queue and TLS key are open.
    pub user: Option<RunAs>,
}

impl Postoffice {
    /// Every accepted token, reading the token files (trimmed).
    pub fn read_tokens(&self) -> io::Result<Vec<String>> {
        self.tokens.iter().map(Token::read).collect()
    }

    /// The configured hostname, else this machine's.
    pub fn resolved_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(net::system_hostname)
    }
}

// The raw form lets one check see tokens and token_files together.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename = "Postoffice")]
struct RawPostoffice {
    #[serde(default = "default_listen", deserialize_with = "de::socket_addr")]
    listen: SocketAddr,
    #[serde(default)]
    tls: Option<Tls>,
    #[serde(default)]
    tokens: Vec<Checked<Secret>>,
    #[serde(default, deserialize_with = "de::paths")]
    token_files: Vec<PathBuf>,
    #[serde(default, deserialize_with = "de::opt_hostname")]
    hostname: Option<String>,
    #[serde(default = "default_queue", deserialize_with = "de::path")]
    queue: PathBuf,
    #[serde(default = "default_max_message_size", deserialize_with = "de::size")]
    max_message_size: u64,
    #[serde(default = "default_max_batch_size", deserialize_with = "de::size")]
    max_batch_size: u64,
    #[serde(default = "default_max_connections", deserialize_with = "de::count")]
    max_connections: usize,
    #[serde(default = "default_max_header_size", deserialize_with = "header_size")]
    max_header_size: usize,
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "de::positive_duration"
    )]
    header_timeout: Duration,
    #[serde(
        default = "default_body_timeout",
        deserialize_with = "de::positive_duration"
    )]
    body_timeout: Duration,
    #[serde(
        default = "default_write_timeout",
        deserialize_with = "de::positive_duration"
    )]
    write_timeout: Duration,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    delivery: Delivery,
    #[serde(default, deserialize_with = "dkim::keys")]
    dkim: Vec<DkimKey>,
    #[serde(
        default = "de::default_blocking_threads",
        deserialize_with = "de::count"
    )]
    blocking_threads: usize,
    #[serde(default = "default_remember_keys", deserialize_with = "de::count")]
    remember_keys: usize,
    #[serde(default = "de::default_log_level", deserialize_with = "de::log_level")]
    log_level: LevelFilter,
    #[serde(default, deserialize_with = "de::opt_user")]
    user: Option<RunAs>,
}

impl<'de> Deserialize<'de> for Postoffice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPostoffice::deserialize(d)?;
        let inline = raw.tokens.into_iter().map(|t| Token::Inline(t.0));
        let files = raw.token_files.into_iter().map(Token::File);
        let tokens: Vec<Token> = inline.chain(files).collect();
        if tokens.is_empty() {
            return Err(D::Error::custom(
                "no token accepted (set tokens or token_files)",
            ));
        }
        Ok(Postoffice {
            listen: raw.listen,
            tls: raw.tls,
            tokens,
            hostname: raw.hostname,
            queue: raw.queue,
            max_message_size: raw.max_message_size,
            max_batch_size: raw.max_batch_size,
            max_connections: raw.max_connections,
            max_header_size: raw.max_header_size,
            header_timeout: raw.header_timeout,
            body_timeout: raw.body_timeout,
            write_timeout: raw.write_timeout,
            dns: raw.dns,
            delivery: raw.delivery,
            dkim: raw.dkim,
            blocking_threads: raw.blocking_threads,
            remember_keys: raw.remember_keys,
            log_level: raw.log_level,
            user: raw.user,
        })
    }
}

/// Certificate chain and private key (PEM) for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain file.
    #[serde(deserialize_with = "de::path")]
    pub cert: PathBuf,
    /// Private key file.
    #[serde(deserialize_with = "de::path")]
    pub key: PathBuf,
}

/// Where MX and address lookups go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Dns {
    /// The system resolver configuration (/etc/resolv.conf).
    #[default]
    System,
    /// These name servers, e.g. a local test server on `127.0.0.1:5353`.
    Nameservers(#[serde(deserialize_with = "de::socket_addrs")] Vec<SocketAddr>),
}

fn default_listen() -> SocketAddr {
    ([0, 0, 0, 0], 8025).into()
}

fn default_remember_keys() -> usize {
    100_000
}

fn default_queue() -> PathBuf {
    "/var/spool/hedwig/postoffice".into()
}

fn default_max_message_size() -> u64 {
    25 << 20
}

// mailman's `batch_size` default: what it sends, postoffice takes.
fn default_max_batch_size() -> u64 {
    1 << 20
}

fn default_max_connections() -> usize {
    1024
}

/// Room for the hand-off's query string: 100 recipients of long addresses
/// take ~30 KiB.
fn default_max_header_size() -> usize {
    64 << 10
}

/// hyper's read buffer, which bounds the head, cannot be under 8 KiB.
fn header_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = de::size_usize(d)?;
    if n < 8192 {
        return Err(D::Error::custom(format!(
            "{n} bytes is under the least, 8KiB"
        )));
    }
    Ok(n)
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn postoffice(body: &str) -> Postoffice {
        let text = format!("(postoffice: ({body}))");
        parse("hedwig.ron", &text).unwrap().postoffice.unwrap()
    }

    fn error(body: &str) -> String {
        let text = format!("(postoffice: ({body}))");
        parse("hedwig.ron", &text).unwrap_err().to_string()
    }

    #[test]
    fn every_default() {
        let p = postoffice(r#"tokens: ["t"]"#);
        assert_eq!(p.listen, "0.0.0.0:8025".parse().unwrap());
        assert_eq!(p.tls, None);
        assert_eq!(p.tokens, vec![Token::Inline("t".into())]);
        assert_eq!(p.hostname, None);
        assert_eq!(p.queue, PathBuf::from("/var/spool/hedwig/postoffice"));
        assert_eq!(p.max_message_size, 25 << 20);
        assert_eq!(p.max_batch_size, 1 << 20);
        assert_eq!(p.max_connections, 1024);
        assert_eq!(p.max_header_size, 64 << 10);
        assert_eq!(p.header_timeout, Duration::from_secs(30));
        assert_eq!(p.body_timeout, Duration::from_secs(300));
        assert_eq!(p.write_timeout, Duration::from_secs(60));
        assert_eq!(p.dns, Dns::System);
        assert_eq!(p.log_level, LevelFilter::Info);
        assert!(p.dkim.is_empty());
        assert_eq!(p.user, None);
        assert_eq!((p.blocking_threads, p.remember_keys), (32, 100_000));
        // The delivery sub-section's defaults are tested in delivery.rs.
    }

    #[test]
    fn every_field_set() {
        let p = postoffice(
            r#"
            listen: "127.0.0.1:0",
            tls: Some((cert: "/c.pem", key: "/k.pem")),
            tokens: ["a", "b"],
            token_files: ["/etc/hedwig/t"],
            hostname: "brandy.example.org",
            queue: "/tmp/q",
            max_message_size: "10MB",
            max_batch_size: "4MiB",
            max_connections: 10,
            max_header_size: "16KiB",
            header_timeout: "5s",
            body_timeout: "1m",
            write_timeout: "10s",
            dns: Nameservers(["127.0.0.1:5353", "[::1]:53"]),
            delivery: (port: 2525),
            dkim: [
                (domain: "Example.org", selector: "hedwig2026", key: "/etc/hedwig/dkim/example.org.pem"),
                (domain: "example.org", selector: "ed2026", key: "/etc/hedwig/dkim/example.org.ed25519.pem"),
            ],
            log_level: "trace",
            user: "998:997",
            "#,
        );
        assert_eq!(p.dkim.len(), 2);
        assert_eq!(p.dkim[0].domain, "example.org");
        assert_eq!(p.dkim[1].record_name(), "ed2026._domainkey.example.org");
        assert_eq!(
            p.dkim[1].key,
            PathBuf::from("/etc/hedwig/dkim/example.org.ed25519.pem")
        );
        assert_eq!(p.listen, "127.0.0.1:0".parse().unwrap());
        let tls = Tls {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        assert_eq!(p.tls, Some(tls));
        let tokens = vec![
            Token::Inline("a".into()),
            Token::Inline("b".into()),
            Token::File("/etc/hedwig/t".into()),
        ];
        assert_eq!(p.tokens, tokens);
        assert_eq!(p.resolved_hostname(), "brandy.example.org");
        assert_eq!(p.queue, PathBuf::from("/tmp/q"));
        assert_eq!(p.max_message_size, 10_000_000);
        assert_eq!(p.max_batch_size, 4 << 20);
        assert_eq!(p.max_connections, 10);
        assert_eq!(p.max_header_size, 16 << 10);
        assert_eq!(p.header_timeout, Duration::from_secs(5));
        assert_eq!(p.body_timeout, Duration::from_secs(60));
        assert_eq!(p.write_timeout, Duration::from_secs(10));
        let servers = vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ];
        assert_eq!(p.dns, Dns::Nameservers(servers));
        assert_eq!(p.delivery.port, 2525);
        assert_eq!(p.log_level, LevelFilter::Trace);
        assert_eq!(p.user, Some(RunAs::Ids { uid: 998, gid: 997 }));
    }

    #[test]
    fn tls_forms() {
        let p = postoffice(r#"tokens: ["t"], tls: None"#);
        assert_eq!(p.tls, None);
        // With implicit Some (on by default) the parentheses alone are enough.
        let p = postoffice(r#"tokens: ["t"], tls: (cert: "/c", key: "/k")"#);
        assert_eq!(p.tls.unwrap().key, PathBuf::from("/k"));
        let text = "#![enable(implicit_some)]\n(postoffice: (tokens: [\"t\"], tls: (cert: \"/c\", key: \"/k\")))";
        let config = parse("hedwig.ron", text).unwrap();
        assert!(config.postoffice.unwrap().tls.is_some());
    }

    #[test]
    fn read_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let body = format!(
            r#"tokens: ["a"], token_files: [{:?}]"#,
            path.to_str().unwrap()
        );
        assert_eq!(postoffice(&body).read_tokens().unwrap(), ["a", "from-file"]);
        // token_files alone is enough.
        let body = format!(r#"token_files: [{:?}]"#, path.to_str().unwrap());
        assert_eq!(postoffice(&body).read_tokens().unwrap(), ["from-file"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            error(""),
            "hedwig.ron:1:15: postoffice: no token accepted (set tokens or token_files)"
        );
        assert_eq!(
            error(r#"tokens: [], token_files: []"#),
            "hedwig.ron:1:42: postoffice: no token accepted (set tokens or token_files)"
        );
        assert_eq!(
            error(r#"tokens: [" "]"#),
            "hedwig.ron:1:25: postoffice.tokens: token is empty"
        );
        assert_eq!(
            error(r#"tokens: ["t"], dns: Nameservers([])"#),
            "hedwig.ron:1:48: postoffice.dns: must list at least one entry"
        );
        assert_eq!(
            error(r#"tokens: ["t"], dns: Nameservers(["x"])"#),
            "hedwig.ron:1:49: postoffice.dns: invalid socket address \"x\""
        );
        assert_eq!(
            error(r#"tokens: ["t"], dns: Google"#),
            "hedwig.ron:1:35: postoffice.dns: unknown variant `Google`, expected one of `System`, `Nameservers`"
        );
        assert_eq!(
            error(r#"tokens: ["t"], listen: "0.0.0.0""#),
            "hedwig.ron:1:39: postoffice.listen: invalid socket address \"0.0.0.0\""
        );
        assert_eq!(
            error(r#"tokens: ["t"], max_header_size: "4KiB""#),
            "hedwig.ron:1:48: postoffice.max_header_size: 4096 bytes is under the least, 8KiB"
        );
        assert_eq!(
            error(r#"tokens: ["t"], max_connections: 0"#),
            "hedwig.ron:1:47: postoffice.max_connections: must be at least 1"
        );
        assert_eq!(
            error(r#"tokens: ["t"], tls: (cert: "/c")"#),
            "hedwig.ron:1:46: postoffice.tls: missing field `key`"
        );
        assert_eq!(
            error(r#"tokens: ["t"], dkim: [(domain: "a b", selector: "s", key: "/k")]"#),
            "hedwig.ron:1:47: postoffice.dkim.domain: invalid hostname \"a b\""
        );
        assert_eq!(
            error(r#"tokens: ["t"], dkim: [(domain: "a.org", selector: "s", key: "")]"#),
            "hedwig.ron:1:76: postoffice.dkim.key: path is empty"
        );
        assert_eq!(
            error(r#"tokens: ["t"], dkim: [(domain: "a.org", selector: "s")]"#),
            "hedwig.ron:1:68: postoffice.dkim: missing field `key`"
        );
        let twice = r#"tokens: ["t"], dkim: [(domain: "a.org", selector: "s", key: "/1"), (domain: "A.org", selector: "s", key: "/2")]"#;
        assert_eq!(
            error(twice),
            "hedwig.ron:1:125: postoffice.dkim: selector \"s\" of domain \"a.org\" given twice"
        );
    }
}
