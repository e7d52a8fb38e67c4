//! The server side of an SMTP session as a state machine without I/O: it takes
//! command lines and answers with a reply and what the connection should do.

use std::net::IpAddr;

use super::address::Address;
use super::command::{Command, MailParams};
use super::reply::{replies, Reply};
use crate::envelope::Envelope;

/// What a session needs to know about its server.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our name in the greeting and in EHLO.
    pub hostname: String,
    /// Advertised as SIZE and enforced.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Refused commands (4xx or 5xx) a session may send; the next command
    /// then gets 421 and the connection is closed.
    pub max_errors: usize,
}

/// What the connection does after sending the reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
    /// Receive the message text for this envelope, sent with these MAIL parameters.
    Data(Envelope, MailParams),
}

/// How the client greeted us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The name given in EHLO or HELO.
    pub name: String,
    /// EHLO rather than HELO.
    pub extended: bool,
}

/// One client's session.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::session::{Action, Session, SessionConfig};
/// let cfg = SessionConfig { hostname: "mx.test".into(), max_message_size: 1000, max_recipients: 10, max_errors: 20 };
/// let mut s = Session::new(cfg);
/// assert_eq!(s.command(b"HELO client").0.to_string(), "250 mx.test\r\n");
/// s.command(b"MAIL FROM:<a@b>");
/// s.command(b"RCPT TO:<c@d>");
/// let (reply, action) = s.command(b"DATA");
/// assert_eq!(reply.code, 354);
/// assert!(matches!(action, Action::Data(..)));
/// ```
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    greeting: Option<Greeting>,
    /// The transaction in progress: sender and its parameters, recipients.
    mail: Option<(Option<Address>, MailParams)>,
    recipients: Vec<Address>,
    /// Whether this transaction saw any RCPT, taken or refused: DATA without
    /// one is out of order (503), DATA after only refused ones has no valid
    /// recipients (554), as Postfix answers.
    rcpt_tried: bool,
    /// Commands refused so far.
    errors: usize,
}

impl Session {
    /// A session before the client's EHLO.
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            greeting: None,
            mail: None,
            recipients: Vec::new(),
            rcpt_tried: false,
            errors: 0,
        }
    }

    /// The 220 banner.
    pub fn banner(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP hedwig", self.config.hostname)])
    }

    /// How the client greeted us, once it has.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Answers one command line (without its CRLF).
    pub fn command(&mut self, line: &[u8]) -> (Reply, Action) {
        // A client that keeps getting refusals is a broken program or a
        // probe: it gets a bounded number of them, not a whole idle timeout.
        if self.errors >= self.config.max_errors {
            return (
                replies::too_many_errors(&self.config.hostname),
                Action::Close,
            );
        }
        let (reply, action) = self.answer(line);
        if reply.code >= 400 {
            self.errors += 1;
        }
        (reply, action)
    }

    /// Counts a refusal the connection made itself (a line too long, a
    /// message refused after DATA) toward `max_errors`.
    pub fn refused(&mut self) {
        self.errors += 1;
    }

    fn answer(&mut self, line: &[u8]) -> (Reply, Action) {
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                // A refused RCPT still counts as one for what DATA answers.
                if self.mail.is_some()
                    && line
                        .get(..4)
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"RCPT"))
                {
                    self.rcpt_tried = true;
                }
                return (e.0, Action::Continue);
            }
        };
        let reply = match cmd {
            Command::Ehlo(name) => {
                self.reset();
                self.greeting = Some(Greeting {
                    name,
                    extended: true,
                });
                self.ehlo_reply()
            }
            Command::Helo(name) => {
                self.reset();
                self.greeting = Some(Greeting {
                    name,
                    extended: false,
                });
                Reply::plain(250, vec![self.config.hostname.clone()])
            }
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to) => self.rcpt(to),
            Command::Data => return self.data(),
            Command::Rset => {
                self.reset();
                replies::ok()
            }
            Command::Noop => replies::ok(),
            Command::Quit => return (replies::bye(), Action::Close),
            Command::Vrfy(_) => replies::cannot_verify(),
            Command::Help => replies::help(),
            Command::StartTls | Command::NotImplemented(_) => replies::not_implemented(),
        };
        (reply, Action::Continue)
    }

    /// Ends the transaction, after DATA or RSET.
    pub fn reset(&mut self) {
        self.mail = None;
        self.recipients.clear();
        self.rcpt_tried = false;
    }

    fn ehlo_reply(&self) -> Reply {
        let lines = [
            self.config.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "HELP".into(),
        ];
        Reply::plain(250, lines.to_vec())
    }

    fn extended(&self) -> bool {
        self.greeting.as_ref().is_some_and(|g| g.extended)
    }

    fn mail(&mut self, from: Option<Address>, params: MailParams) -> Reply {
        if self.greeting.is_none() {
            return replies::bad_sequence("send HELO/EHLO first");
        }
        if self.mail.is_some() {
            return replies::bad_sequence("nested MAIL command");
        }
        let esmtp_only = params.size.is_some() || params.body.is_some() || params.smtputf8;
        if esmtp_only && !self.extended() {
            return replies::bad_parameter("parameters need EHLO");
        }
        if params
            .size
            .is_some_and(|n| n > self.config.max_message_size)
        {
            return replies::too_big(self.config.max_message_size);
        }
        if from.as_ref().is_some_and(|a| !a.is_ascii()) && !params.smtputf8 {
            return replies::needs_smtputf8();
        }
        self.mail = Some((from, params));
        replies::sender_ok()
    }

    fn rcpt(&mut self, to: Address) -> Reply {
        let Some((_, params)) = &self.mail else {
            return replies::bad_sequence("need MAIL before RCPT");
        };
        self.rcpt_tried = true;
        if !to.is_ascii() && !params.smtputf8 {
            return replies::needs_smtputf8();
        }
        if self.recipients.len() >= self.config.max_recipients {
            return replies::too_many_recipients();
        }
        self.recipients.push(to);
        replies::recipient_ok()
    }

    fn data(&mut self) -> (Reply, Action) {
        let Some((from, params)) = &self.mail else {
            return (replies::bad_sequence("need MAIL command"), Action::Continue);
        };
        if !self.rcpt_tried {
            return (replies::bad_sequence("need RCPT command"), Action::Continue);
        }
        if self.recipients.is_empty() {
            return (replies::no_recipients(), Action::Continue);
        }
        let envelope = Envelope {
            from: from.clone(),
            to: std::mem::take(&mut self.recipients),
        };
        let params = params.clone();
        self.reset();
        (replies::start_data(), Action::Data(envelope, params))
    }
}

/// The `with` protocol name for a Received header (RFC 3848, RFC 6531).
pub fn protocol(greeting: Option<&Greeting>, smtputf8: bool) -> &'static str {
    match (greeting.is_some_and(|g| g.extended), smtputf8) {
        (true, true) => "UTF8SMTP",
        (true, false) => "ESMTP",
        (false, _) => "SMTP",
    }
}

/// Whether `ip` may use the server, given the allowed networks.
pub fn allowed(ip: IpAddr, allow: &[ipnet::IpNet]) -> bool {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allow.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(SessionConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 100,
        })
    }

    fn say(s: &mut Session, line: &[u8]) -> String {
        s.command(line).0.to_string()
    }

    #[test]
    fn ehlo_advertises_extensions() {
        let mut s = session();
        assert_eq!(s.banner().to_string(), "220 mx.test ESMTP hedwig\r\n");
        assert_eq!(
            say(&mut s, b"EHLO client.test"),
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"
        );
    }

    #[test]
    fn full_transaction() {
        let mut s = session();
        say(&mut s, b"EHLO c");
        assert_eq!(say(&mut s, b"MAIL FROM:<a@b> SIZE=10"), "250 2.1.0 Ok\r\n");
        assert_eq!(say(&mut s, b"RCPT TO:<c@d>"), "250 2.1.5 Ok\r\n");
        assert_eq!(say(&mut s, b"RCPT TO:<e@f>"), "250 2.1.5 Ok\r\n");
        assert_eq!(
            say(&mut s, b"RCPT TO:<g@h>"),
            "452 4.5.3 Error: too many recipients\r\n"
        );
        let (reply, action) = s.command(b"DATA");
        assert_eq!(reply.code, 354);
        let Action::Data(env, _) = action else {
            panic!()
        };
        assert_eq!(env.from.unwrap().as_str(), "a@b");
        assert_eq!(env.to.len(), 2);
        // The transaction is over: a new MAIL is not nested.
        assert_eq!(say(&mut s, b"MAIL FROM:<>"), "250 2.1.0 Ok\r\n");
        assert_eq!(s.command(b"QUIT"), (replies::bye(), Action::Close));
    }

    #[test]
    fn bad_sequences() {
        let mut s = session();
        assert!(say(&mut s, b"MAIL FROM:<a@b>").starts_with("503 5.5.1"));
        say(&mut s, b"HELO c");
        assert!(say(&mut s, b"RCPT TO:<a@b>").starts_with("503 5.5.1"));
        assert!(say(&mut s, b"DATA").starts_with("503 5.5.1"));
        say(&mut s, b"MAIL FROM:<a@b>");
        assert!(say(&mut s, b"MAIL FROM:<a@b>").starts_with("503 5.5.1"));
        assert!(say(&mut s, b"DATA").starts_with("503 5.5.1"));
        assert!(say(&mut s, b"RCPT TO:<bad>").starts_with("501 5.5.4"));
        assert!(say(&mut s, b"DATA").starts_with("554 5.5.1"));
        assert_eq!(say(&mut s, b"RSET"), "250 2.0.0 Ok\r\n");
        assert!(say(&mut s, b"RCPT TO:<a@b>").starts_with("503 5.5.1"));
    }

    #[test]
    fn size_utf8_and_helo_limits() {
        let mut s = session();
        say(&mut s, b"HELO c");
        assert!(say(&mut s, b"MAIL FROM:<a@b> SIZE=5").starts_with("555 5.5.4"));
        say(&mut s, b"EHLO c");
        assert!(say(&mut s, b"MAIL FROM:<a@b> SIZE=1001").starts_with("552 5.3.4"));
        assert!(say(&mut s, "MAIL FROM:<jö@b>".as_bytes()).starts_with("553 5.6.7"));
        assert!(say(&mut s, "MAIL FROM:<jö@b> SMTPUTF8".as_bytes()).starts_with("250"));
        assert!(say(&mut s, "RCPT TO:<ü@b>".as_bytes()).starts_with("250"));
    }

    #[test]
    fn misc_commands() {
        let mut s = session();
        assert!(say(&mut s, b"VRFY root").starts_with("252 2.5.0"));
        assert!(say(&mut s, b"HELP").starts_with("214 2.0.0"));
        assert!(say(&mut s, b"NOOP").starts_with("250 2.0.0"));
        assert!(say(&mut s, b"EXPN list").starts_with("502 5.5.1"));
        assert!(say(&mut s, b"STARTTLS").starts_with("502 5.5.1"));
        assert!(say(&mut s, b"GARBAGE").starts_with("500 5.5.2"));
    }

    #[test]
    fn allow_list_and_mapped_v4() {
        let allow: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(allowed("127.0.0.9".parse().unwrap(), &allow));
        assert!(allowed("::ffff:127.0.0.1".parse().unwrap(), &allow));
        assert!(!allowed("10.0.0.1".parse().unwrap(), &allow));
        assert!(!allowed("::1".parse().unwrap(), &allow));
    }

    #[test]
    fn too_many_errors_end_the_session() {
        let mut s = Session::new(SessionConfig {
            max_errors: 5,
            ..session().config
        });
        for _ in 0..4 {
            assert!(say(&mut s, b"BOGUS").starts_with("500 5.5.2"));
        }
        // Successes do not count; refusals of any kind do.
        assert!(say(&mut s, b"NOOP").starts_with("250"));
        assert!(say(&mut s, b"RCPT TO:<a@b>").starts_with("503"));
        assert_eq!(
            s.command(b"NOOP"),
            (replies::too_many_errors("mx.test"), Action::Close)
        );
        assert_eq!(
            replies::too_many_errors("mx.test").to_string(),
            "421 4.7.0 mx.test Error: too many errors\r\n"
        );
    }
}
