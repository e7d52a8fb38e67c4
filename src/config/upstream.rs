//! mailman's `postoffice: (...)` sub-section: where and how it hands messages off.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use super::de::{self, Checked, Secret};
use super::token::Token;

/// How mailman reaches postoffice.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URLs, `http://` or `https://`, tried in this order (failover).
    pub urls: Vec<String>,
    /// Bearer token sent with each hand-off.
    pub token: Token,
    /// Delay between failed hand-offs of one message.
    pub retry: Retry,
    /// Hand-offs in flight at once.
    pub concurrency: usize,
    /// Most messages in one hand-off (`POST /v1/batch`); 1 sends each alone.
    pub batch: usize,
    /// Most bytes of messages in one hand-off; a larger message goes alone.
    pub batch_size: usize,
    /// Bound on the whole HTTP exchange of one hand-off.
    pub timeout: Duration,
    /// Extra CA certificate to trust for postoffice's HTTPS.
    pub ca_file: Option<PathBuf>,
}

impl Upstream {
    /// The bearer token, read from `token_file` (trimmed) when that is the form.
    pub fn token(&self) -> io::Result<String> {
        self.token.read()
    }
}

// The raw form lets one check see token and token_file together; the error
// then points at the end of the `postoffice: (...)` it concerns.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename = "Upstream")]
struct RawUpstream {
    #[serde(rename = "url", deserialize_with = "http_urls")]
    urls: Vec<String>,
    #[serde(default)]
    token: Option<Checked<Secret>>,
    #[serde(default, deserialize_with = "de::opt_path")]
    token_file: Option<PathBuf>,
    #[serde(default = "default_retry")]
    retry: Retry,
    #[serde(default = "default_concurrency", deserialize_with = "de::count")]
    concurrency: usize,
    #[serde(default = "default_batch", deserialize_with = "batch")]
    batch: usize,
    #[serde(default = "default_batch_size", deserialize_with = "de::size_usize")]
    batch_size: usize,
    #[serde(
        default = "default_upstream_timeout",
        deserialize_with = "de::positive_duration"
    )]
    timeout: Duration,
    #[serde(default, deserialize_with = "de::opt_path")]
    ca_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawUpstream::deserialize(d)?;
        let token = match (raw.token, raw.token_file) {
            (Some(token), None) => Token::Inline(token.0),
            (None, Some(path)) => Token::File(path),
            (Some(_), Some(_)) => {
                return Err(D::Error::custom("set token or token_file, not both"))
            }
            (None, None) => {
                return Err(D::Error::custom("missing token (set token or token_file)"))
            }
        };
        Ok(Upstream {
            urls: raw.urls,
            token,
            retry: raw.retry,
            concurrency: raw.concurrency,
            batch: raw.batch,
            batch_size: raw.batch_size,
            timeout: raw.timeout,
            ca_file: raw.ca_file,
        })
    }
}

/// Hand-off retry delays: doubling from `first`, never more than `max`.
pub type Retry = crate::retry::Backoff;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename = "Retry")]
struct RawRetry {
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
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let RawRetry { first, max } = RawRetry::deserialize(d)?;
        de::check_backoff(first, max)?;
        Ok(Retry { first, max })
    }
}

/// One URL, or a list of them tried in order.
fn http_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Urls;
    impl<'de> serde::de::Visitor<'de> for Urls {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a URL or a list of URLs")
        }
        fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
            check_url(url).map(|u| vec![u]).map_err(E::custom)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut urls: Vec<String> = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                let url = check_url(&url).map_err(A::Error::custom)?;
                if urls.contains(&url) {
                    return Err(A::Error::custom(format!("{url:?} is listed twice")));
                }
                urls.push(url);
            }
            if urls.is_empty() {
                return Err(A::Error::custom("must list at least one URL"));
            }
            Ok(urls)
        }
    }
    d.deserialize_any(Urls)
}

fn check_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(url.to_string())
        }
        _ => Err(format!(
            "invalid url {url:?} (expected http://host:port or https://host:port)"
        )),
    }
}

fn default_retry() -> Retry {
    Retry {
        first: default_retry_first(),
        max: default_retry_max(),
    }
}

fn default_retry_first() -> Duration {
    Duration::from_secs(1)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

// postoffice answers each hand-off after a group commit, so what bounds a
// drain is how many wait for one: 8 drained a 20,000-message spool at 855
// msg/s here, 32 at 1,702 (hand-offs without keep-alive then). With
// keep-alive and syncs side by side, 16 drain 30,000 at 3,350-3,610 msg/s
// (32: 3,830-3,880) and take 9 MiB less at peak with 100 KiB messages
// (scripts/bench: each hand-off in flight holds its message on both sides).
fn default_concurrency() -> usize {
    16
}

/// A batch's size in messages: at least 1, at most what postoffice takes.
fn batch<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = de::count(d)?;
    let max = crate::handoff::batch::MAX_PARTS;
    if n > max {
        return Err(D::Error::custom(format!("must be at most {max}")));
    }
    Ok(n)
}

// A burst (a group commit's worth of sessions) goes in one exchange: one
// request, one commit and one removal per side instead of one per message.
// The forwarder only batches what is waiting already, so a lone message is
// not held back. scripts/bench, 20 sessions: 4 KiB acceptance 2.41x ->
// 3.00x Postfix, CPU per message 0.53 -> 0.42 ms.
fn default_batch() -> usize {
    32
}

// Each hand-off in flight holds its batch: at 1 MiB, 16 in flight took
// mailman's peak from 18 to 34 MiB at 100 KiB messages (scripts/bench) for
// no gain there (the copies, not the exchanges, cost at that size); 256 KiB
// still carries 32 messages of 4 KiB.
fn default_batch_size() -> usize {
    256 << 10
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn upstream(body: &str) -> Upstream {
        let text = format!("(mailman: (postoffice: ({body})))");
        parse("hedwig.ron", &text)
            .unwrap()
            .mailman
            .unwrap()
            .postoffice
    }

    fn error(body: &str) -> String {
        let text = format!("(mailman: ({body}))");
        parse("hedwig.ron", &text).unwrap_err().to_string()
    }

    #[test]
    fn every_default() {
        let up = upstream(r#"url: "https://brandy.example.org:8025", token: "t""#);
        assert_eq!(up.urls, ["https://brandy.example.org:8025"]);
        assert_eq!(up.token, Token::Inline("t".into()));
        let retry = Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(up.retry, retry);
        assert_eq!(up.concurrency, 16);
        assert_eq!((up.batch, up.batch_size), (32, 256 << 10));
        assert_eq!(up.timeout, Duration::from_secs(60));
        assert_eq!(up.ca_file, None);
        // A partial retry keeps the other default.
        let up = upstream(r#"url: "http://x:1", token: "t", retry: (max: "5m")"#);
        assert_eq!(up.retry.first, Duration::from_secs(1));
        assert_eq!(up.retry.max, Duration::from_secs(300));
    }

    #[test]
    fn a_list_of_urls_for_failover() {
        let up = upstream(r#"url: ["https://brandy:8025", "http://backup:8025"], token: "t""#);
        assert_eq!(up.urls, ["https://brandy:8025", "http://backup:8025"]);
        assert_eq!(
            error(r#"postoffice: (url: [], token: "t")"#),
            "hedwig.ron:1:31: mailman.postoffice.url: must list at least one URL"
        );
        assert_eq!(
            error(r#"postoffice: (url: ["http://a:1", "http://a:1"], token: "t")"#),
            "hedwig.ron:1:57: mailman.postoffice.url: \"http://a:1\" is listed twice"
        );
        assert_eq!(
            error(r#"postoffice: (url: ["http://a:1", "a:1"], token: "t")"#),
            "hedwig.ron:1:50: mailman.postoffice.url: invalid url \"a:1\" (expected http://host:port or https://host:port)"
        );
    }

    #[test]
    fn token_file_is_read_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let up = upstream(&format!(
            r#"url: "http://x:1", token_file: {:?}"#,
            path.to_str().unwrap()
        ));
        assert_eq!(up.token().unwrap(), "from-file");
        assert_eq!(
            upstream(r#"url: "http://x:1", token: "t""#)
                .token()
                .unwrap(),
            "t"
        );
    }

    #[test]
    fn debug_redacts_token() {
        let debug = format!("{:?}", upstream(r#"url: "http://x:1", token: "hunter2""#));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn upstream_errors() {
        assert_eq!(
            error(r#"postoffice: (url: "http://x:1")"#),
            "hedwig.ron:1:42: mailman.postoffice: missing token (set token or token_file)"
        );
        assert_eq!(
            error(r#"postoffice: (url: "ftp://x", token: "t")"#),
            "hedwig.ron:1:31: mailman.postoffice.url: invalid url \"ftp://x\" (expected http://host:port or https://host:port)"
        );
        assert_eq!(
            error(r#"postoffice: (token: "t")"#),
            "hedwig.ron:1:35: mailman.postoffice: missing field `url`"
        );
        assert_eq!(
            error(r#"postoffice: (url: "http://x:1", token: "")"#),
            "hedwig.ron:1:52: mailman.postoffice.token: token is empty"
        );
        assert_eq!(
            error(
                r#"postoffice: (url: "http://x:1", token: "t", retry: (first: "2m", max: "1m"))"#
            ),
            "hedwig.ron:1:86: mailman.postoffice.retry: first (120s) is longer than max (60s)"
        );
        assert_eq!(
            error(r#"postoffice: (url: "http://x:1", token: "t", concurrency: 0)"#),
            "hedwig.ron:1:69: mailman.postoffice.concurrency: must be at least 1"
        );
        assert_eq!(
            error(r#"postoffice: (url: "http://x:1", token: "t", batch: 1001)"#),
            "hedwig.ron:1:63: mailman.postoffice.batch: must be at most 1000"
        );
        let up = upstream(r#"url: "http://x:1", token: "t", batch: 1, batch_size: "64KiB""#);
        assert_eq!((up.batch, up.batch_size), (1, 64 << 10));
        assert!(error(r#""#).ends_with("mailman: missing field `postoffice`"));
    }
}
