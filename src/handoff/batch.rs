//! Several messages in one hand-off: what lets mailman pass a burst on in
//! one exchange instead of one request, one answer and one wake-up per
//! message on each side (postoffice then queues the burst in one commit).
//!
//! `POST {url}/v1/batch` with `Content-Type: application/x-hedwig-batch`
//! and the usual `Authorization`. The body is a series of parts, each
//!
//! ```text
//! KEY SP LENGTH SP QUERY CRLF
//! LENGTH bytes of message
//! CRLF
//! ```
//!
//! where KEY is the part's `Idempotency-Key` (required: a retried batch must
//! not queue twice), LENGTH the message's size in decimal and QUERY the
//! envelope as the single hand-off's query string ([`super::query`]). The
//! lengths, not a boundary, delimit the messages, so no message can be
//! mistaken for framing. The whole body is checked before anything is
//! queued: a body that does not parse is a 400 and queues nothing (each
//! part is written as it streams in and all are committed at the end).
//!
//! The answer is 200 with one result per part, in order, each the status
//! and body the single hand-off would have answered:
//! `{"results": [{"status": 202, "id": "..."}, {"status": 413, "error": "..."}]}`.
//! Any other status answers for the batch as a whole (401, 413 for the
//! whole body, 503, a proxy's 502, ...).

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;

/// The path batches are posted to.
pub const PATH: &str = "/v1/batch";
/// The content type of a batch body.
pub const CONTENT_TYPE: &str = "application/x-hedwig-batch";
/// Most parts in one batch: bounds the work one request starts.
pub const MAX_PARTS: usize = 1000;

/// Most bytes in a part line: a key (<= 200), a length and a query; more
/// than any envelope the single hand-off's URL could carry.
pub const MAX_LINE: usize = 64 << 10;

/// What a part line says.
#[derive(Debug, PartialEq, Eq)]
pub struct PartHead {
    /// The part's idempotency key.
    pub key: String,
    /// Bytes of message that follow the line (then CRLF).
    pub len: u64,
    /// The part's envelope.
    pub envelope: Envelope,
}

/// The line that starts a part of `len` message bytes; the message and
/// [`PART_END`] follow it.
///
/// # Examples
///
/// ```
/// use hedwig::{envelope::Envelope, handoff::batch, smtp::address::Address};
/// let env = Envelope { from: None, to: vec![Address::parse("a@b.org").unwrap()] };
/// let line = batch::part_line("K1", &env, 19);
/// assert_eq!(line, "K1 19 from=&to=a%40b.org\r\n");
/// let head = batch::parse_head(line.as_bytes()).unwrap();
/// assert_eq!((head.key.as_str(), head.len, head.envelope), ("K1", 19, env));
/// ```
pub fn part_line(key: &str, envelope: &Envelope, len: usize) -> String {
    format!("{key} {len} {}\r\n", super::query(envelope))
}

/// What ends a part, after its message.
pub const PART_END: &[u8] = b"\r\n";

/// Reads a part line, CRLF included; the error says what is wrong with it.
pub fn parse_head(line: &[u8]) -> Result<PartHead, String> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or("part line must end in CRLF")?;
    let line = std::str::from_utf8(line).map_err(|_| "part line is not ASCII")?;
    let mut fields = line.split(' ');
    let (Some(key), Some(len), Some(query), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("want \"KEY LENGTH QUERY\"".into());
    };
    super::check_key(key)?;
    // Digits only, no leading zero: `+5` and `007` parse as numbers too.
    let canonical = len.bytes().all(|b| b.is_ascii_digit()) && !len.starts_with('0');
    let len: u64 = match len.parse() {
        Ok(len) if canonical => len,
        _ => return Err("LENGTH must be a positive decimal number".into()),
    };
    let envelope = super::parse_query(query).map_err(|e| format!("envelope: {e}"))?;
    Ok(PartHead {
        key: key.to_string(),
        len,
        envelope,
    })
}

/// The body of a batch's 200.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// One per part, in order.
    pub results: Vec<PartAnswer>,
}

/// What became of one part: the single hand-off's status and body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartAnswer {
    /// 202 when queued (or queued before, by its key), else the error's status.
    pub status: u16,
    /// postoffice's id, with a 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why not, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Address;

    fn env(to: &str) -> Envelope {
        Envelope {
            from: Some(Address::parse("s@x.org").unwrap()),
            to: vec![Address::parse(to).unwrap()],
        }
    }

    /// The parts of a whole body, as postoffice reads them from a stream.
    fn parse(mut body: &[u8]) -> Result<Vec<(PartHead, &[u8])>, String> {
        let mut parts = Vec::new();
        while !body.is_empty() {
            let n = parts.len() + 1;
            let end = body
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(format!("part {n}: no line"))?;
            let head = parse_head(&body[..=end]).map_err(|e| format!("part {n}: {e}"))?;
            let rest = &body[end + 1..];
            let len = head.len as usize;
            if rest.len() < len + 2 || &rest[len..len + 2] != b"\r\n" {
                return Err(format!("part {n}: not {len} bytes and CRLF"));
            }
            parts.push((head, &rest[..len]));
            body = &rest[len + 2..];
        }
        Ok(parts)
    }

    fn push(body: &mut Vec<u8>, key: &str, envelope: &Envelope, message: &[u8]) {
        body.extend_from_slice(part_line(key, envelope, message.len()).as_bytes());
        body.extend_from_slice(message);
        body.extend_from_slice(PART_END);
    }

    #[test]
    fn parts_round_trip_whatever_the_message_holds() {
        let mut body = Vec::new();
        // A message that looks like framing is only bytes inside its length.
        let tricky = b"K2 5 from=&to=a%40b\r\nhello\r\n\r\n";
        push(&mut body, "K1", &env("a@b.org"), b"one\r\n");
        push(&mut body, "K2", &env("c+d@e.org"), tricky);
        let parts = parse(&body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.key, "K1");
        assert_eq!(parts[0].1, b"one\r\n");
        assert_eq!(parts[1].0.envelope, env("c+d@e.org"));
        assert_eq!(parts[1].0.len, tricky.len() as u64);
        assert_eq!(parts[1].1, tricky);
    }

    #[test]
    fn broken_part_lines_say_what_is_wrong() {
        let err = |b: &[u8]| parse_head(b).unwrap_err();
        assert_eq!(err(b"K1 3 from=&to=a%40b\n"), "part line must end in CRLF");
        assert_eq!(err(b"K1 3 from=&to=a%40b"), "part line must end in CRLF");
        let bad_len = "LENGTH must be a positive decimal number";
        for len in ["+3", "03", "0", "", "-1", "3x", "99999999999999999999999"] {
            assert_eq!(
                err(format!("K1 {len} from=&to=a%40b\r\n").as_bytes()),
                bad_len
            );
        }
        assert_eq!(err(b"K1 3\r\n"), "want \"KEY LENGTH QUERY\"");
        assert_eq!(
            err(b"K1  3 from=&to=a%40b\r\n"),
            "want \"KEY LENGTH QUERY\""
        );
        assert_eq!(
            err(b"K1 3 from=&to=a%40b x\r\n"),
            "want \"KEY LENGTH QUERY\""
        );
        assert_eq!(err(b"\xff 3 from=&to=a%40b\r\n"), "part line is not ASCII");
        assert!(err(b"K1 3 from=&to=nope\r\n").starts_with("envelope: to:"));
        assert!(err(b"K1 3 from=&\r\n").starts_with("envelope: missing to"));
        assert!(
            err(format!("{} 3 from=&to=a%40b\r\n", "k".repeat(201)).as_bytes())
                .starts_with("Idempotency-Key must be")
        );
        let ok = parse_head(b"K1 18446744073709551615 from=&to=a%40b\r\n").unwrap();
        assert_eq!(ok.len, u64::MAX);
    }

    #[test]
    fn answers_read_as_written() {
        let a: Answer = serde_json::from_str(
            r#"{"results":[{"status":202,"id":"X1"},{"status":413,"error":"too big"}]}"#,
        )
        .unwrap();
        assert_eq!(a.results[0].id.as_deref(), Some("X1"));
        assert_eq!(a.results[1].error.as_deref(), Some("too big"));
        let json = serde_json::to_string(&a.results[0]).unwrap();
        assert_eq!(json, r#"{"status":202,"id":"X1"}"#);
    }
}
