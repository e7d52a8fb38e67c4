//! The hand-off contract between mailman and postoffice, in one place so the
//! client and the server cannot drift:
//!
//! `POST {url}/v1/messages?from=ADDR&to=ADDR&to=ADDR` with
//! `Authorization: Bearer TOKEN`, `Idempotency-Key: ID` (the sender's id; a
//! repeat is answered without queuing twice), `Content-Type: message/rfc822`
//! and the message bytes as the body. The answer is 202 `{"id": "..."}` once
//! the message is durably queued.

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::smtp::address::Address;

/// The path messages are posted to.
pub const PATH: &str = "/v1/messages";
/// The header carrying the sender's message id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The content type of a raw message.
pub const CONTENT_TYPE: &str = "message/rfc822";

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
