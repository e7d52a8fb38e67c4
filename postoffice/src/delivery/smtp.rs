//! The SMTP client's protocol core (RFC 5321, STARTTLS per RFC 3207,
//! PIPELINING per RFC 2920), with no I/O: the socket layer
//! ([`super::client`]) feeds it the bytes the server sent and does what it
//! says (write these bytes, read on, start TLS, send the message). Every
//! decision of the conversation is here, tested with byte literals.
//!
//! Commands and replies are the shared wire types of `hedwig::smtp`, the
//! same ones mailman's server parses and prints.

use std::collections::VecDeque;

use hedwig::envelope::Envelope;
use hedwig::smtp::command::{Body, Command, MailParams};
use hedwig::smtp::reply::Reply;

/// Longest reply line we read, and most lines in one reply.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 100;

/// Why a session or a transaction failed, short of the network itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server's greeting or EHLO/HELO was not 2xx.
    Greeting(Reply),
    /// STARTTLS was refused, or required and not offered.
    Tls(String),
    /// The server broke the protocol.
    Protocol(String),
    /// MAIL FROM (or DATA) was refused for the whole transaction.
    Rejected(Reply),
    /// We will not send it here: too big, needs SMTPUTF8, bare newlines.
    Local(String),
}

/// Splits the server's bytes into replies.
#[derive(Debug, Default)]
pub struct Replies {
    input: Vec<u8>,
    lines: Vec<String>,
}

impl Replies {
    /// Takes bytes as they came from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next whole reply, if the bytes so far hold one.
    pub fn next(&mut self) -> Option<Result<Reply, Error>> {
        loop {
            let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                if self.input.len() > MAX_LINE {
                    return Some(Err(Error::Protocol("reply line too long".into())));
                }
                return None;
            };
            let line: Vec<u8> = self.input.drain(..=lf).collect();
            let Some((code, last, text)) = Reply::parse_line(&line) else {
                let shown = String::from_utf8_lossy(&line).into_owned();
                return Some(Err(Error::Protocol(format!("not a reply line: {shown:?}"))));
            };
            self.lines.push(text.to_string());
            if self.lines.len() > MAX_LINES {
                return Some(Err(Error::Protocol("reply has too many lines".into())));
            }
            if last {
                let lines = std::mem::take(&mut self.lines);
                let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
                return Some(Ok(Reply::from_lines(code, &texts)));
            }
        }
    }

    /// Forgets what was read: after STARTTLS nothing sent before the
    /// handshake may be trusted (RFC 3207 section 4.2).
    pub fn clear(&mut self) {
        self.input.clear();
        self.lines.clear();
    }
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING.
    pub pipelining: bool,
    /// SIZE, with its limit (0: no limit given).
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eight_bit: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// STARTTLS.
    pub starttls: bool,
}

impl Extensions {
    /// Reads the keywords of an EHLO reply (its first line is the greeting).
    pub fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                _ => {}
            }
        }
        ext
    }
}

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Plain text always.
    Never,
    /// When offered, without checking the certificate (Postfix's `may`).
    Opportunistic,
    /// Always, with a verified certificate, or not at all.
    Required,
}

/// What the socket layer does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<T> {
    /// Write these bytes, then read replies.
    Write(Vec<u8>),
    /// Read another reply.
    Read,
    /// Run the TLS handshake, then call [`Hello::tls_started`].
    StartTls,
    /// Write the message, dot-stuffed and ended with `.` (or, when `empty`,
    /// just the ending `.`), then read the final reply.
    WriteMessage {
        /// No recipient was accepted though the server said 354.
        empty: bool,
    },
    /// Finished.
    Done(T),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloState {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
}

/// The session's start: greeting, EHLO (HELO if refused), STARTTLS per
/// policy, EHLO again. Done with the server's extensions.
#[derive(Debug)]
pub struct Hello {
    name: String,
    policy: TlsPolicy,
    state: HelloState,
    tls: bool,
}

impl Hello {
    /// A session start that says EHLO as `name`; first read the greeting.
    pub fn new(name: &str, policy: TlsPolicy) -> Hello {
        Hello {
            name: name.to_string(),
            policy,
            state: HelloState::Greeting,
            tls: false,
        }
    }

    /// The handshake succeeded: say EHLO again.
    pub fn tls_started(&mut self) -> Action<Result<Extensions, Error>> {
        self.tls = true;
        self.state = HelloState::Ehlo;
        Action::Write(Command::Ehlo(self.name.clone()).to_string().into_bytes())
    }

    /// The server's next reply.
    pub fn reply(&mut self, reply: Reply) -> Action<Result<Extensions, Error>> {
        let write = |c: Command| Action::Write(c.to_string().into_bytes());
        match self.state {
            HelloState::Greeting if reply.is_positive() => {
                self.state = HelloState::Ehlo;
                write(Command::Ehlo(self.name.clone()))
            }
            HelloState::Greeting => Action::Done(Err(Error::Greeting(reply))),
            HelloState::Ehlo if reply.is_positive() => {
                let ext = Extensions::parse(&reply);
                match self.policy {
                    _ if self.tls => Action::Done(Ok(ext)),
                    TlsPolicy::Never => Action::Done(Ok(ext)),
                    TlsPolicy::Opportunistic if !ext.starttls => Action::Done(Ok(ext)),
                    TlsPolicy::Required if !ext.starttls => Action::Done(Err(Error::Tls(
                        "the server does not offer STARTTLS, and delivery.starttls is Required"
                            .into(),
                    ))),
                    _ => {
                        self.state = HelloState::StartTls;
                        write(Command::StartTls)
                    }
                }
            }
            HelloState::Ehlo => {
                self.state = HelloState::Helo;
                write(Command::Helo(self.name.clone()))
            }
            HelloState::Helo if reply.is_positive() => Action::Done(Ok(Extensions::default())),
            HelloState::Helo => Action::Done(Err(Error::Greeting(reply))),
            HelloState::StartTls if reply.code == 220 => Action::StartTls,
            HelloState::StartTls => Action::Done(Err(Error::Tls(format!(
                "the server refused STARTTLS: {} {}",
                reply.code,
                reply.text()
            )))),
        }
    }
}

/// A command whose reply is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Mail,
    Rcpt(usize),
    Data,
    Message,
}

/// One mail transaction: done with one reply per envelope recipient (the
/// RCPT reply where it failed, else the reply to the message), or an error
/// for the whole transaction. After it, [`Transaction::needs_reset`] says
/// whether RSET must clean the connection before it is reused.
#[derive(Debug)]
pub struct Transaction {
    commands: Vec<Command>,
    pipelining: bool,
    awaiting: VecDeque<Sent>,
    mail: Option<Reply>,
    rcpt: Vec<Option<Reply>>,
    data: Option<Reply>,
    reset: bool,
}

impl Transaction {
    /// A transaction for `envelope` and `message` on a server offering
    /// `ext`; refused before a byte is sent when this server cannot take it.
    pub fn new(
        ext: &Extensions,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Transaction, Error> {
        let params = params(ext, envelope, message)?;
        let mut commands = vec![Command::Mail(envelope.from.clone(), params)];
        commands.extend(envelope.to.iter().cloned().map(Command::Rcpt));
        Ok(Transaction {
            commands,
            pipelining: ext.pipelining,
            awaiting: VecDeque::new(),
            mail: None,
            rcpt: vec![None; envelope.to.len()],
            data: None,
            reset: false,
        })
    }

    /// The first bytes to write: MAIL, every RCPT and DATA in one go when
    /// the server pipelines, else MAIL alone.
    pub fn start(&mut self) -> Action<Result<Vec<Reply>, Error>> {
        if self.pipelining {
            let mut batch = String::new();
            for (i, c) in self.commands.iter().enumerate() {
                batch.push_str(&c.to_string());
                self.awaiting.push_back(if i == 0 {
                    Sent::Mail
                } else {
                    Sent::Rcpt(i - 1)
                });
            }
            batch.push_str(&Command::Data.to_string());
            self.awaiting.push_back(Sent::Data);
            Action::Write(batch.into_bytes())
        } else {
            self.send(0)
        }
    }

    fn send(&mut self, i: usize) -> Action<Result<Vec<Reply>, Error>> {
        self.awaiting.push_back(if i == 0 {
            Sent::Mail
        } else {
            Sent::Rcpt(i - 1)
        });
        Action::Write(self.commands[i].to_string().into_bytes())
    }

    /// Whether the connection needs RSET before another transaction.
    pub fn needs_reset(&self) -> bool {
        self.reset
    }

    fn accepted(&self) -> bool {
        self.rcpt.iter().flatten().any(Reply::is_positive)
    }

    fn fail(&mut self, e: Error) -> Action<Result<Vec<Reply>, Error>> {
        self.reset = true;
        Action::Done(Err(e))
    }

    /// The recipients' replies as they stand, with `final_reply` for the
    /// accepted ones.
    fn outcome(&mut self, final_reply: Option<Reply>) -> Action<Result<Vec<Reply>, Error>> {
        let replies = self
            .rcpt
            .iter()
            .map(|r| {
                let r = r.clone().expect("every RCPT answered");
                match &final_reply {
                    Some(f) if r.is_positive() => f.clone(),
                    _ => r,
                }
            })
            .collect();
        Action::Done(Ok(replies))
    }

    /// The server's next reply.
    pub fn reply(&mut self, reply: Reply) -> Action<Result<Vec<Reply>, Error>> {
        let Some(sent) = self.awaiting.pop_front() else {
            return self.fail(Error::Protocol("reply to nothing".into()));
        };
        match sent {
            Sent::Mail => self.mail = Some(reply),
            Sent::Rcpt(i) => self.rcpt[i] = Some(reply),
            Sent::Data => self.data = Some(reply),
            // Every accepted recipient gets the reply to the message, be it
            // 250 or a refusal of the message itself.
            Sent::Message => return self.outcome(Some(reply)),
        }
        if !self.awaiting.is_empty() {
            return Action::Read;
        }
        // Everything sent so far is answered: decide what comes next.
        let mail = self.mail.clone().expect("MAIL answered first");
        if !mail.is_positive() {
            return self.fail(Error::Rejected(mail));
        }
        let answered = self.rcpt.iter().take_while(|r| r.is_some()).count();
        if answered < self.rcpt.len() {
            // Not pipelining: the next RCPT.
            return self.send(answered + 1);
        }
        match self.data.clone() {
            None if self.accepted() => {
                self.awaiting.push_back(Sent::Data);
                Action::Write(Command::Data.to_string().into_bytes())
            }
            None => {
                self.reset = true;
                self.outcome(None)
            }
            Some(d) if d.code == 354 => {
                self.awaiting.push_back(Sent::Message);
                Action::WriteMessage {
                    empty: !self.accepted(),
                }
            }
            Some(d) if self.accepted() => self.fail(Error::Rejected(d)),
            Some(_) => {
                self.reset = true;
                self.outcome(None)
            }
        }
    }
}

/// MAIL FROM parameters for this message; refuses what this server cannot take.
pub fn params(ext: &Extensions, envelope: &Envelope, message: &[u8]) -> Result<MailParams, Error> {
    if hedwig::message::has_bare_newline(message) {
        return Err(Error::Local(
            "message holds a bare CR or LF; refusing to send it".into(),
        ));
    }
    let len = message.len() as u64;
    if let Some(limit) = ext.size.filter(|&n| n > 0) {
        if len > limit {
            return Err(Error::Local(format!(
                "5.3.4 message of {len} bytes exceeds the server's SIZE limit of {limit}"
            )));
        }
    }
    let eight_bit = !message.is_ascii();
    let addresses_ascii = envelope
        .from
        .iter()
        .chain(&envelope.to)
        .all(|a| a.is_ascii());
    let headers_ascii = header_section(message).is_ascii();
    if !addresses_ascii && !ext.smtputf8 {
        return Err(Error::Local(
            "5.6.7 non-ASCII address, and the server does not offer SMTPUTF8".into(),
        ));
    }
    Ok(MailParams {
        size: ext.size.map(|_| len),
        body: (eight_bit && ext.eight_bit).then_some(Body::EightBitMime),
        smtputf8: (!addresses_ascii || !headers_ascii) && ext.smtputf8,
    })
}

/// The header section of a message: up to the first empty line.
fn header_section(message: &[u8]) -> &[u8] {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests;
