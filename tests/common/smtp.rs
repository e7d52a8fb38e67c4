//! A raw SMTP client for the tests: exact bytes out, parsed replies in.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long any single read from mailman may take before the test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(20);

/// One SMTP reply: its code and the text of each line (after `NNN-` / `NNN `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Each line's text.
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line's text (where single-line replies keep everything).
    pub fn text(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// Whether the code is `code` and the last line starts with `enhanced` (e.g. "5.5.1").
    pub fn is(&self, code: u16, enhanced: &str) -> bool {
        self.code == code && self.text().starts_with(enhanced)
    }

    /// The ID from `250 2.0.0 Ok: queued as ID`; panics unless the reply is that and
    /// the ID is alphanumeric.
    pub fn queued_id(&self) -> String {
        assert!(
            self.is(250, "2.0.0"),
            "expected `250 2.0.0 Ok: queued as ID`, got {self}"
        );
        queued_id(self.text()).unwrap_or_else(|| panic!("no `queued as ID` in {self}"))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            if i > 0 {
                f.write_str("\\r\\n")?;
            }
            write!(f, "{}{}{}", self.code, sep, line)?;
        }
        Ok(())
    }
}

/// The ID in a line containing `queued as ID` (alphanumeric, else None).
pub fn queued_id(text: &str) -> Option<String> {
    let rest = &text[text.find("queued as ")? + "queued as ".len()..];
    let id: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\'')
        .collect();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some(id)
}

/// An SMTP session on a plain TcpStream.
#[derive(Debug)]
pub struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Smtp {
    /// Connects (bounded) without reading the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<Smtp> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_LIMIT))?;
        stream.set_write_timeout(Some(READ_LIMIT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Smtp { stream, reader })
    }

    /// Connects and asserts the greeting is 220.
    pub fn open(addr: SocketAddr) -> Smtp {
        let mut smtp = Smtp::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let greeting = smtp.reply();
        assert_eq!(greeting.code, 220, "greeting from {addr}: {greeting}");
        smtp
    }

    /// Connects, checks the greeting and says EHLO.
    pub fn ehlo(addr: SocketAddr) -> Smtp {
        let mut smtp = Smtp::open(addr);
        smtp.expect("EHLO client.test", 250, "");
        smtp
    }

    /// Changes the read timeout.
    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set read timeout");
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.reader.read_until(b'\n', &mut raw)?;
            if n == 0 {
                let e = if lines.is_empty() {
                    "connection closed"
                } else {
                    "connection closed mid-reply"
                };
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
            }
            let line = String::from_utf8_lossy(&raw).into_owned();
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed reply line {line:?}"),
                )
            };
            if !line.ends_with("\r\n") || line.len() < 5 {
                return Err(bad());
            }
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let sep = line.as_bytes()[3];
            lines.push(line[4..line.len() - 2].to_string());
            match sep {
                b' ' => return Ok(Reply { code, lines }),
                b'-' => continue,
                _ => return Err(bad()),
            }
        }
    }

    /// Reads one reply, panicking on I/O errors.
    pub fn reply(&mut self) -> Reply {
        self.read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("sending {line:?}: {e}"));
        self.read_reply()
            .unwrap_or_else(|e| panic!("reply to {line:?}: {e}"))
    }

    /// Sends `line` and asserts the reply's code and enhanced-code prefix.
    pub fn expect(&mut self, line: &str, code: u16, enhanced: &str) -> Reply {
        let reply = self.cmd(line);
        let shown: String = line.chars().take(80).collect();
        assert!(
            reply.is(code, enhanced),
            "sent {shown:?}: expected `{code} {enhanced}...`, got `{reply}`"
        );
        reply
    }

    /// Like [`Smtp::expect`], but a mismatch is added to `failures` instead of
    /// panicking, so one run reports every reply that differs from the spec.
    pub fn check(
        &mut self,
        line: &str,
        code: u16,
        enhanced: &str,
        failures: &mut Vec<String>,
    ) -> Reply {
        let reply = self.cmd(line);
        if !reply.is(code, enhanced) {
            let shown: String = line.chars().take(80).collect();
            failures.push(format!(
                "sent {shown:?}: expected `{code} {enhanced}...`, got `{reply}`"
            ));
        }
        reply
    }

    /// One whole transaction (MAIL, RCPT for each of `to`, DATA, the dot-stuffed
    /// `message`) with every reply checked; returns the queued-as ID.
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &[u8]) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), 250, "2.1.0");
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250, "2.1.5");
        }
        self.expect("DATA", 354, "");
        self.send(&super::message::data_section(message))
            .expect("send message");
        self.reply().queued_id()
    }

    /// Like [`Smtp::send_mail`] but returning errors instead of panicking, for
    /// clients that expect mailman to die under them.
    pub fn try_send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> io::Result<Result<String, Reply>> {
        let mut script = format!("MAIL FROM:<{from}>\r\n").into_bytes();
        for rcpt in to {
            script.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        }
        script.extend_from_slice(b"DATA\r\n");
        self.send(&script)?;
        for _ in 0..=to.len() {
            let r = self.read_reply()?;
            if r.code != 250 {
                return Ok(Err(r));
            }
        }
        let r = self.read_reply()?;
        if r.code != 354 {
            return Ok(Err(r));
        }
        self.send(&super::message::data_section(message))?;
        let r = self.read_reply()?;
        if r.code != 250 {
            return Ok(Err(r));
        }
        Ok(Ok(r.queued_id()))
    }

    /// Whether mailman closes the connection within `limit` without saying more
    /// (anything it does say is returned as the error).
    pub fn closed_within(&mut self, limit: Duration) -> Result<(), String> {
        self.set_read_timeout(limit);
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(_) => Err(format!(
                "mailman sent {:?} before closing",
                String::from_utf8_lossy(&rest)
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && rest.is_empty() => Ok(()),
            Err(e) => Err(format!(
                "connection still open after {limit:?} ({e}); received {:?}",
                String::from_utf8_lossy(&rest)
            )),
        }
    }

    /// Ok if mailman says nothing for `quiet` (the read timeout is restored after).
    pub fn silent_for(&mut self, quiet: Duration) -> Result<(), String> {
        self.set_read_timeout(quiet);
        let result = match self.reader.fill_buf() {
            Ok([]) => Err("mailman closed the connection".to_string()),
            Ok(bytes) => Err(format!("mailman sent {:?}", String::from_utf8_lossy(bytes))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("reading: {e}")),
        };
        self.set_read_timeout(READ_LIMIT);
        result
    }

    /// Drops the connection abruptly.
    pub fn abort(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
