//! The hand-off contract between mailman and postoffice, in one place so the
//! client and the server cannot drift:
//!
//! `POST {url}/v1/messages?from=ADDR&to=ADDR&to=ADDR` with
//! `Authorization: Bearer TOKEN`, `Idempotency-Key: ID` (the sender's id; a
//! repeat is answered without queuing twice), `Content-Type: message/rfc822`
//! and the message bytes as the body. The answer is 202 `{"id": "..."}` once
//! the message is durably queued; [`outcome`] says what every other status
//! means to the sender. A message of up to `max_message_size` bytes plus
//! [`HOP_ALLOWANCE`] is taken: the allowance covers what the previous hop
//! added (its `Received:`, and `Date:`/`Message-ID:` where missing), so what
//! mailman admits under the same limit is never refused for its size.
//!
//! Several messages go in one request by [`batch`]'s contract.

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::smtp::address::Address;

pub mod batch;

/// The path messages are posted to.
pub const PATH: &str = "/v1/messages";
/// The header carrying the sender's message id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The content type of a raw message.
pub const CONTENT_TYPE: &str = "message/rfc822";

/// The header carrying the bearer token.
pub const AUTHORIZATION: &str = "Authorization";
/// The challenge of a 401 (RFC 6750 section 3).
pub const CHALLENGE: &str = "Bearer realm=\"postoffice\"";

/// Bytes a hop may add to a message on top of its sender's size limit:
/// mailman's `Received:` is at most ~1 KiB (HELO name cut at 255, host
/// names at 253, one recipient at 256, an id and a date) and `Date:` plus
/// `Message-ID:` ~400 bytes; the test below writes the largest.
pub const HOP_ALLOWANCE: u64 = 4096;

/// The `Authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token of a `Bearer` credential; the scheme is case-insensitive
/// (RFC 9110 section 11.1).
///
/// # Examples
///
/// ```
/// use hedwig::handoff::bearer_token;
/// assert_eq!(bearer_token("Bearer abc"), Some("abc"));
/// assert_eq!(bearer_token("bearer  abc "), Some("abc"));
/// assert_eq!(bearer_token("Basic YWJj"), None);
/// assert_eq!(bearer_token("Bearer"), None);
/// ```
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks an `Idempotency-Key`: 1 to 200 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be 1 to 200 visible ASCII characters");
    }
    Ok(())
}

/// Whether a message of `len` bytes fits a hop limited to `max` (see
/// [`HOP_ALLOWANCE`]).
pub fn fits(len: u64, max: u64) -> bool {
    len <= max.saturating_add(HOP_ALLOWANCE)
}

/// What an answer means to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: postoffice has the message durably; remove it.
    Accepted,
    /// Down, slow, overloaded, or not accepting our token: keep it and try
    /// again later (another postoffice first, when there are several).
    Retry(String),
    /// The message itself is refused: retrying cannot help.
    Refused(String),
}

/// The table from status to [`Outcome`]; `body` is the answer, for the reason.
///
/// 401 and 403 are retried: a wrong or revoked token is the operator's to
/// fix and the mail is not at fault (Postfix defers on an authentication
/// failure too, `smtp_sasl_auth_soft_bounce`).
///
/// # Examples
///
/// ```
/// use hedwig::handoff::{outcome, Outcome};
/// assert_eq!(outcome(202, ""), Outcome::Accepted);
/// assert_eq!(outcome(503, "busy"), Outcome::Retry("HTTP 503: busy".into()));
/// assert_eq!(outcome(401, "no"), Outcome::Retry("HTTP 401: no".into()));
/// assert_eq!(outcome(400, "bad"), Outcome::Refused("HTTP 400: bad".into()));
/// ```
pub fn outcome(status: u16, body: &str) -> Outcome {
    let why = format!("HTTP {status}: {}", body.trim());
    match status {
        200..=299 => Outcome::Accepted,
        401 | 403 | 408 | 425 | 429 | 500..=599 => Outcome::Retry(why),
        400..=499 => Outcome::Refused(why),
        // Redirects and the like: nothing to follow; keep the message.
        _ => Outcome::Retry(format!("unexpected {why}")),
    }
}

/// The JSON body of a 202.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    /// postoffice's id for the message.
    pub id: String,
}

/// The JSON body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// Writes the envelope as the query string (without `?`).
///
/// # Examples
///
/// ```
/// use hedwig::{envelope::Envelope, handoff, smtp::address::Address};
/// let env = Envelope { from: None, to: vec![Address::parse("a+b@c.org").unwrap()] };
/// assert_eq!(handoff::query(&env), "from=&to=a%2Bb%40c.org");
/// assert_eq!(handoff::parse_query(&handoff::query(&env)).unwrap(), env);
/// ```
pub fn query(envelope: &Envelope) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("from", envelope.sender());
    for to in &envelope.to {
        q.append_pair("to", to.as_str());
    }
    q.finish()
}

/// Reads the envelope back from a query string; the error says why it is unusable.
pub fn parse_query(query: &str) -> Result<Envelope, String> {
    let mut from = None;
    let mut to = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "from" if from.is_some() => return Err("more than one from".into()),
            "from" if value.is_empty() => from = Some(None),
            "from" => {
                let a = Address::parse(&value).map_err(|e| format!("from: {e}: {value:?}"))?;
                from = Some(Some(a));
            }
            "to" => to.push(Address::parse(&value).map_err(|e| format!("to: {e}: {value:?}"))?),
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    let from = from.ok_or("missing from (empty for the null sender)")?;
    if to.is_empty() {
        return Err("missing to".into());
    }
    Ok(Envelope { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_trace_a_hop_adds_fits_the_allowance() {
        let long = |n: usize| "a".repeat(n);
        let rcpt = format!("{}@{}", long(64), long(190));
        let trace = crate::message::Trace {
            helo: &long(4000),
            client_ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            by: &long(253),
            software: "hedwig mailman",
            protocol: "UTF8SMTPSA",
            id: &long(40),
            for_rcpt: Some(&rcpt),
            time: std::time::SystemTime::now(),
        };
        let date = format!("Date: {}\r\n", crate::message::rfc5322_date(trace.time));
        let message_id = format!("Message-ID: <{}@{}>\r\n", long(40), long(253));
        let added = trace.received().len() + date.len() + message_id.len();
        assert!((added as u64) < HOP_ALLOWANCE, "{added} bytes");
        assert!(fits(100 + HOP_ALLOWANCE, 100));
        assert!(!fits(101 + HOP_ALLOWANCE, 100));
        assert!(fits(u64::MAX, u64::MAX));
    }

    #[test]
    fn keys() {
        assert!(check_key("20240101-abc").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a b").is_err());
        assert!(check_key(&"k".repeat(201)).is_err());
        assert!(check_key("caf\u{e9}").is_err());
    }

    #[test]
    fn refuses_bad_queries() {
        assert!(parse_query("to=a@b").is_err());
        assert!(parse_query("from=").is_err());
        assert!(parse_query("from=&to=bad").is_err());
        assert!(parse_query("from=&from=&to=a@b").is_err());
        assert!(parse_query("from=&to=a@b&x=1").is_err());
        let env = parse_query("from=x%40y&to=a@b&to=c@d").unwrap();
        assert_eq!(env.sender(), "x@y");
        assert_eq!(env.to.len(), 2);
    }
}
