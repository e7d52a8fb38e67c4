//! SMTP replies: one type that prints the exact wire bytes (mailman's server)
//! and parses them back (postoffice's client), so the two halves cannot drift.

use std::fmt;

/// An RFC 3463 enhanced status code such as `5.5.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced status and one or more text lines.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::reply::{Reply, Status};
/// let r = Reply::new(250, Status(2, 1, 0), "Ok");
/// assert_eq!(r.to_string(), "250 2.1.0 Ok\r\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, printed on every line (RFC 2034).
    pub status: Option<Status>,
    /// Text lines; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: Status, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status (greeting, EHLO, HELO).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of all lines joined by spaces, for logs and status records.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Parses one reply line: its code, whether it is the last line, and the
    /// text after the separator. `None` when it is not a reply line.
    pub fn parse_line(line: &[u8]) -> Option<(u16, bool, &str)> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).ok()?;
        let code: u16 = text.get(..3)?.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        match text.as_bytes().get(3) {
            None => Some((code, true, "")),
            Some(b' ') => Some((code, true, &text[4..])),
            Some(b'-') => Some((code, false, &text[4..])),
            _ => None,
        }
    }

    /// Builds a reply from parsed lines, lifting a leading enhanced status
    /// code off each line when the first one has one.
    pub fn from_lines(code: u16, texts: &[&str]) -> Reply {
        let status = texts.first().and_then(|t| parse_status(t).map(|(s, _)| s));
        let lines = texts
            .iter()
            .map(|t| match (status, parse_status(t)) {
                (Some(_), Some((_, rest))) => rest.to_string(),
                _ => t.to_string(),
            })
            .collect();
        Reply {
            code,
            status,
            lines,
        }
    }
}

/// Splits `"5.1.1 rest"` into the status and the rest.
fn parse_status(text: &str) -> Option<(Status, &str)> {
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = head.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some((Status(class, subject, detail), rest))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            match self.status {
                Some(s) => write!(f, "{}{sep}{s} {line}\r\n", self.code)?,
                None => write!(f, "{}{sep}{line}\r\n", self.code)?,
            }
        }
        Ok(())
    }
}

impl Reply {
    /// The reply as one line per wire line, without CRs: `250 2.0.0 Ok`, or
    /// `250-first\n250 last`. What a delivery record stores and shows.
    pub fn to_lines(&self) -> String {
        let wire = self.to_string();
        wire.trim_end().replace("\r\n", "\n")
    }

    /// Reads [`Reply::to_lines`] (or the wire form) back with the same
    /// parser the SMTP client uses; `None` when it is not a reply.
    pub fn from_text(text: &str) -> Option<Reply> {
        let mut code = None;
        let mut texts = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let (c, last, t) = Reply::parse_line(line.as_bytes())?;
            if code.is_some_and(|first| first != c) || last != lines.peek().is_none() {
                return None;
            }
            code = Some(c);
            texts.push(t);
        }
        Some(Reply::from_lines(code?, &texts))
    }
}

// Stored as its readable lines, parsed back by the wire parser.
impl serde::Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_lines())
    }
}

impl<'de> serde::Deserialize<'de> for Reply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reply, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Reply::from_text(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an SMTP reply: {s:?}")))
    }
}

/// The replies mailman sends, named so the session reads like the RFC.
pub mod replies {
    use super::{Reply, Status};

    /// 250 2.0.0 Ok
    pub fn ok() -> Reply {
        Reply::new(250, Status(2, 0, 0), "Ok")
    }
    /// 250 2.1.0 Ok (MAIL)
    pub fn sender_ok() -> Reply {
        Reply::new(250, Status(2, 1, 0), "Ok")
    }
    /// 250 2.1.5 Ok (RCPT)
    pub fn recipient_ok() -> Reply {
        Reply::new(250, Status(2, 1, 5), "Ok")
    }
    /// 354 after DATA.
    pub fn start_data() -> Reply {
        Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
    }
    /// 250 after the message is on disk.
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}"))
    }
    /// 221 after QUIT.
    pub fn bye() -> Reply {
        Reply::new(221, Status(2, 0, 0), "Bye")
    }
    /// 252 for VRFY: we relay, we do not verify.
    pub fn cannot_verify() -> Reply {
        Reply::new(
            252,
            Status(2, 5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    /// 214 for HELP.
    pub fn help() -> Reply {
        Reply::new(
            214,
            Status(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        )
    }
    /// 500 5.5.2 for an unknown command.
    pub fn unknown_command() -> Reply {
        Reply::new(500, Status(5, 5, 2), "Error: command not recognized")
    }
    /// 500 5.5.2 for a line over the limit.
    pub fn line_too_long() -> Reply {
        Reply::new(500, Status(5, 5, 2), "Error: line too long")
    }
    /// 501 5.5.4 with a reason.
    pub fn syntax(why: &str) -> Reply {
        Reply::new(501, Status(5, 5, 4), format!("Syntax error: {why}"))
    }
    /// 502 5.5.1 for commands we know but do not offer.
    pub fn not_implemented() -> Reply {
        Reply::new(502, Status(5, 5, 1), "Error: command not implemented")
    }
    /// 503 5.5.1 bad sequence.
    pub fn bad_sequence(why: &str) -> Reply {
        Reply::new(503, Status(5, 5, 1), format!("Error: {why}"))
    }
    /// 554 5.5.1 DATA without a recipient.
    pub fn no_recipients() -> Reply {
        Reply::new(554, Status(5, 5, 1), "Error: no valid recipients")
    }
    /// 555 5.5.4 unknown MAIL/RCPT parameter.
    pub fn bad_parameter(p: &str) -> Reply {
        Reply::new(555, Status(5, 5, 4), format!("Unsupported parameter: {p}"))
    }
    /// 552 5.3.4 message too big.
    pub fn too_big(max: u64) -> Reply {
        Reply::new(
            552,
            Status(5, 3, 4),
            format!("Message size exceeds fixed limit of {max} bytes"),
        )
    }
    /// 452 4.5.3 too many recipients.
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, Status(4, 5, 3), "Error: too many recipients")
    }
    /// 553 5.6.7 non-ASCII address without SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8() -> Reply {
        Reply::new(553, Status(5, 6, 7), "Non-ASCII address requires SMTPUTF8")
    }
    /// 554 5.6.0 bare CR or LF inside DATA (SMTP smuggling).
    pub fn bare_newline() -> Reply {
        Reply::new(
            554,
            Status(5, 6, 0),
            "Error: bare <CR> or <LF> in message text",
        )
    }
    /// 554 5.6.0 a message line over the limit.
    pub fn text_line_too_long(max: usize) -> Reply {
        Reply::new(
            554,
            Status(5, 6, 0),
            format!("Error: message line longer than {max} bytes"),
        )
    }
    /// 452 4.3.1 the spool could not take the message.
    pub fn spool_full() -> Reply {
        Reply::new(452, Status(4, 3, 1), "Insufficient system storage")
    }
    /// 554 5.7.1 client outside `allow`.
    pub fn access_denied() -> Reply {
        Reply::new(554, Status(5, 7, 1), "Access denied")
    }
    /// 421 4.7.0 over max_connections.
    pub fn too_many_connections(host: &str) -> Reply {
        Reply::new(
            421,
            Status(4, 7, 0),
            format!("{host} Too many connections, try again later"),
        )
    }
    /// 421 4.4.2 idle timeout.
    pub fn timeout(host: &str) -> Reply {
        Reply::new(
            421,
            Status(4, 4, 2),
            format!("{host} Error: timeout exceeded"),
        )
    }
    /// 421 4.7.0 after `max_errors` refused commands, as Postfix's
    /// smtpd_hard_error_limit answers.
    pub fn too_many_errors(host: &str) -> Reply {
        Reply::new(
            421,
            Status(4, 7, 0),
            format!("{host} Error: too many errors"),
        )
    }
    /// 421 4.3.2 shutting down.
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(
            421,
            Status(4, 3, 2),
            format!("{host} Service shutting down"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_through_their_lines() {
        for r in [
            Reply::new(250, Status(2, 0, 0), "Ok: queued as X"),
            Reply::plain(250, vec!["mx hello".into(), "PIPELINING".into()]),
            Reply::plain(421, vec!["".into()]),
        ] {
            let text = r.to_lines();
            assert_eq!(Reply::from_text(&text), Some(r.clone()), "{text:?}");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), r);
        }
        assert_eq!(
            Reply::new(550, Status(5, 1, 1), "no").to_lines(),
            "550 5.1.1 no"
        );
        for bad in ["", "hello", "250-a", "250-a\n251 b", "250 a\n250 b"] {
            assert_eq!(Reply::from_text(bad), None, "{bad:?}");
        }
        assert!(serde_json::from_str::<Reply>("\"nope\"").is_err());
    }

    #[test]
    fn prints_multiline_with_status_on_every_line() {
        let r = Reply {
            code: 250,
            status: Some(Status(2, 0, 0)),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_string(), "250-2.0.0 a\r\n250 2.0.0 b\r\n");
        assert_eq!(
            Reply::plain(220, vec!["h ESMTP".into()]).to_string(),
            "220 h ESMTP\r\n"
        );
    }

    #[test]
    fn parses_lines() {
        assert_eq!(
            Reply::parse_line(b"250-PIPELINING\r\n"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(Reply::parse_line(b"250 ok\r\n"), Some((250, true, "ok")));
        assert_eq!(Reply::parse_line(b"354\r\n"), Some((354, true, "")));
        assert_eq!(Reply::parse_line(b"hello\r\n"), None);
        assert_eq!(Reply::parse_line(b"999 x\r\n"), None);
        assert_eq!(Reply::parse_line(b"250x\r\n"), None);
    }

    #[test]
    fn round_trips_through_parse() {
        let r = replies::too_many_recipients();
        let wire = r.to_string();
        let (code, last, text) = Reply::parse_line(wire.as_bytes()).unwrap();
        assert!(last);
        assert_eq!(Reply::from_lines(code, &[text]), r);
        assert!(r.is_transient() && !r.is_permanent() && !r.is_positive());
    }
}
