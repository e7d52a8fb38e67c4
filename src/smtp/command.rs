//! SMTP commands (RFC 5321 section 4.1): parsed by mailman's server, printed
//! by postoffice's client. `Display` writes the exact wire bytes.

use std::fmt;

use super::address::{Address, AddressError};
use super::reply::{replies, Reply};

/// The body type a client declares with `BODY=` (RFC 6152).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Body {
    /// `BODY=7BIT`, or no parameter.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Parameters of `MAIL FROM`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152); `None` when the client did not say.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// One SMTP command.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::command::Command;
/// let cmd = Command::parse(b"MAIL FROM:<>").unwrap();
/// assert_eq!(cmd.to_string(), "MAIL FROM:<>\r\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> params`; `None` is the null sender `<>`.
    Mail(Option<Address>, MailParams),
    /// `RCPT TO:<path>`.
    Rcpt(Address),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `HELP [topic]`.
    Help,
    /// `STARTTLS` (client side; mailman does not offer it).
    StartTls,
    /// Commands we know but do not implement: EXPN, AUTH, BDAT, TURN, ETRN.
    NotImplemented(String),
}

/// Why a command line was refused, and the reply that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub Reply);

impl Command {
    /// Parses one command line without its CRLF.
    pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
        let line = std::str::from_utf8(line)
            .map_err(|_| ParseError(replies::syntax("command is not valid UTF-8")))?;
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        let verb = verb.to_ascii_uppercase();
        let no_args = |cmd: Command| {
            if rest.is_empty() {
                Ok(cmd)
            } else {
                Err(ParseError(replies::syntax(
                    "this command takes no arguments",
                )))
            }
        };
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let domain = rest.split_whitespace().next().unwrap_or("");
                if domain.is_empty() {
                    return Err(ParseError(replies::syntax("hostname required")));
                }
                Ok(if verb == "EHLO" {
                    Command::Ehlo(domain.to_string())
                } else {
                    Command::Helo(domain.to_string())
                })
            }
            "MAIL" => parse_mail(rest),
            "RCPT" => parse_rcpt(rest),
            "DATA" => no_args(Command::Data),
            "RSET" => no_args(Command::Rset),
            "QUIT" => no_args(Command::Quit),
            "STARTTLS" => no_args(Command::StartTls),
            // NOOP and HELP may carry an argument, which is ignored (RFC 5321 4.1.1.9).
            "NOOP" => Ok(Command::Noop),
            "HELP" => Ok(Command::Help),
            "VRFY" if rest.is_empty() => Err(ParseError(replies::syntax("VRFY needs an argument"))),
            "VRFY" => Ok(Command::Vrfy(rest.to_string())),
            "EXPN" | "AUTH" | "BDAT" | "TURN" | "ETRN" | "ATRN" => {
                Ok(Command::NotImplemented(verb))
            }
            _ => Err(ParseError(replies::unknown_command())),
        }
    }
}

/// Strips a case-insensitive `prefix` (such as `FROM:`) off `s`.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let head = s.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| s[keyword.len()..].trim_start())
}

/// Splits `<path> params` (or a bare path, as lenient as Postfix) into the
/// path's inside and the parameter text.
fn split_path(s: &str) -> Result<(&str, &str), ParseError> {
    if let Some(inner) = s.strip_prefix('<') {
        let end = closing_bracket(inner)
            .ok_or_else(|| ParseError(replies::syntax("missing '>' after address")))?;
        Ok((&inner[..end], inner[end + 1..].trim_start()))
    } else {
        let end = s.find(' ').unwrap_or(s.len());
        Ok((&s[..end], s[end..].trim_start()))
    }
}

/// Where the `>` that ends a path is: a quoted local part may hold its own
/// `>` (RFC 5321 4.1.2, qtextSMTP), as `Display` prints it.
fn closing_bracket(path: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in path.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Drops an obsolete source route `@a,@b:` (RFC 5321 appendix C).
fn strip_route(path: &str) -> &str {
    if path.starts_with('@') {
        path.split_once(':').map_or(path, |(_, addr)| addr)
    } else {
        path
    }
}

fn address_error(e: AddressError) -> ParseError {
    ParseError(replies::syntax(&e.to_string()))
}

fn parse_mail(rest: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(rest, "FROM:")
        .ok_or_else(|| ParseError(replies::syntax("expected MAIL FROM:<address>")))?;
    // Only `<>` is the null sender; nothing at all is a syntax error.
    if rest.is_empty() {
        return Err(ParseError(replies::syntax("expected MAIL FROM:<address>")));
    }
    let (path, params) = split_path(rest)?;
    let path = strip_route(path);
    let from = if path.is_empty() {
        None
    } else {
        Some(Address::parse(path).map_err(address_error)?)
    };
    let mut p = MailParams::default();
    for param in params.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let n = value
                    .parse()
                    .map_err(|_| ParseError(replies::syntax("SIZE needs a number")))?;
                p.size = Some(n);
            }
            "BODY" => {
                p.body = Some(match value.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    _ => return Err(ParseError(replies::bad_parameter(param))),
                })
            }
            "SMTPUTF8" if value.is_empty() => p.smtputf8 = true,
            _ => return Err(ParseError(replies::bad_parameter(param))),
        }
    }
    Ok(Command::Mail(from, p))
}

fn parse_rcpt(rest: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(rest, "TO:")
        .ok_or_else(|| ParseError(replies::syntax("expected RCPT TO:<address>")))?;
    let (path, params) = split_path(rest)?;
    if let Some(param) = params.split_whitespace().next() {
        return Err(ParseError(replies::bad_parameter(param)));
    }
    let path = strip_route(path);
    if path.is_empty() {
        return Err(ParseError(replies::syntax("empty recipient")));
    }
    Ok(Command::Rcpt(Address::parse(path).map_err(address_error)?))
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(d) => write!(f, "EHLO {d}\r\n"),
            Command::Helo(d) => write!(f, "HELO {d}\r\n"),
            Command::Mail(from, p) => {
                match from {
                    Some(a) => write!(f, "MAIL FROM:<{a}>")?,
                    None => f.write_str("MAIL FROM:<>")?,
                }
                if let Some(n) = p.size {
                    write!(f, " SIZE={n}")?;
                }
                match p.body {
                    Some(Body::EightBitMime) => f.write_str(" BODY=8BITMIME")?,
                    Some(Body::SevenBit) => f.write_str(" BODY=7BIT")?,
                    None => {}
                }
                if p.smtputf8 {
                    f.write_str(" SMTPUTF8")?;
                }
                f.write_str("\r\n")
            }
            Command::Rcpt(a) => write!(f, "RCPT TO:<{a}>\r\n"),
            Command::Data => f.write_str("DATA\r\n"),
            Command::Rset => f.write_str("RSET\r\n"),
            Command::Noop => f.write_str("NOOP\r\n"),
            Command::Quit => f.write_str("QUIT\r\n"),
            Command::Vrfy(s) => write!(f, "VRFY {s}\r\n"),
            Command::Help => f.write_str("HELP\r\n"),
            Command::StartTls => f.write_str("STARTTLS\r\n"),
            Command::NotImplemented(v) => write!(f, "{v}\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &[u8]) -> u16 {
        Command::parse(line).unwrap_err().0.code
    }

    #[test]
    fn parses_mail_with_params() {
        let cmd = Command::parse(b"mail from:<a@b.org> SIZE=100 BODY=8BITMIME SMTPUTF8").unwrap();
        let Command::Mail(Some(a), p) = &cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(a.as_str(), "a@b.org");
        assert_eq!(
            p,
            &MailParams {
                size: Some(100),
                body: Some(Body::EightBitMime),
                smtputf8: true
            }
        );
        assert_eq!(
            cmd.to_string(),
            "MAIL FROM:<a@b.org> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n"
        );
    }

    #[test]
    fn lenient_like_postfix() {
        assert!(matches!(
            Command::parse(b"MAIL FROM: <a@b>"),
            Ok(Command::Mail(Some(_), _))
        ));
        assert!(matches!(
            Command::parse(b"MAIL FROM:a@b"),
            Ok(Command::Mail(Some(_), _))
        ));
        assert!(
            matches!(Command::parse(b"RCPT TO:<@x,@y:c@d>"), Ok(Command::Rcpt(a)) if a.as_str() == "c@d")
        );
        assert!(matches!(
            Command::parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt(_))
        ));
        assert_eq!(
            Command::parse(b"MAIL FROM:<>").unwrap(),
            Command::Mail(None, MailParams::default())
        );
    }

    #[test]
    fn quoted_local_part_may_hold_angle_brackets() {
        // Found by fuzz/fuzz_targets/smtp_command.rs: `Display` printed
        // `<">\"b"@2>`, which the parser cut at the first `>`.
        for line in [
            r#"MAIL FROM:<">\"b"@2>"#,
            r#"MAIL FROM:<"a>b"@example.org> SIZE=10"#,
            r#"RCPT TO:<@relay:"<x>"@example.org>"#,
        ] {
            let cmd = Command::parse(line.as_bytes()).unwrap();
            let wire = cmd.to_string();
            assert_eq!(
                Command::parse(wire.trim_end().as_bytes()),
                Ok(cmd),
                "{wire:?}"
            );
        }
        let Ok(Command::Mail(Some(a), p)) = Command::parse(br#"MAIL FROM:<"a>b"@x.org> SIZE=10"#)
        else {
            panic!()
        };
        assert_eq!((a.as_str(), p.size), (r#""a>b"@x.org"#, Some(10)));
        assert_eq!(code(br#"MAIL FROM:<"a>b@x.org>"#), 501);
    }

    #[test]
    fn refuses_bad_lines_with_the_right_code() {
        assert_eq!(code(b"FOO bar"), 500);
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"MAIL TO:<a@b>"), 501);
        assert_eq!(code(b"MAIL FROM:"), 501);
        assert_eq!(code(b"MAIL FROM: "), 501);
        assert_eq!(code(b"MAIL FROM:<a@@b>"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=x"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> RET=HDRS"), 555);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<nobody>"), 501);
        assert_eq!(code(b"RCPT TO:<a@b> NOTIFY=NEVER"), 555);
        assert_eq!(code(b"EHLO"), 501);
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"\xff\xfe"), 501);
    }

    #[test]
    fn prints_exact_wire_bytes() {
        assert_eq!(Command::Ehlo("h".into()).to_string(), "EHLO h\r\n");
        let a = Address::parse("x@y").unwrap();
        assert_eq!(Command::Rcpt(a).to_string(), "RCPT TO:<x@y>\r\n");
        assert_eq!(Command::Data.to_string(), "DATA\r\n");
    }
}
