//! The SMTP client for one connection to one mail server (RFC 5321), with
//! STARTTLS (RFC 3207) and PIPELINING (RFC 2920). Commands and replies are
//! the shared wire types of `hedwig::smtp`, the same ones mailman's server
//! parses and prints. Every wait is bounded.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use hedwig::envelope::Envelope;
use hedwig::smtp::command::{Body, Command, MailParams};
use hedwig::smtp::reply::Reply;
use smol::Timer;

use super::stream::Stream;

/// How long a closing QUIT waits for the server's 221.
const QUIT_WAIT: Duration = Duration::from_secs(5);
/// Longest reply line we read, and most lines in one reply.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 100;

/// How long each step may take (RFC 5321 section 4.5.3.2).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each command's reply, and the greeting.
    pub command: Duration,
    /// Sending the message and its final reply.
    pub data_end: Duration,
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

/// Why a connection or transaction failed.
#[derive(Debug)]
pub enum Error {
    /// Connect, read or write failed or timed out.
    Io(String),
    /// The server's greeting or EHLO was not 2xx.
    Greeting(Reply),
    /// STARTTLS failed, or was required and not offered.
    Tls(String),
    /// The server broke the protocol.
    Protocol(String),
    /// MAIL FROM (or DATA) was refused for the whole transaction.
    Rejected(Reply),
    /// We will not send it here: too big, needs SMTPUTF8, bare newlines.
    Local(String),
}

impl Error {
    /// Whether trying again (or elsewhere) cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Rejected(r) => r.is_permanent(),
            Error::Local(_) => true,
            _ => false,
        }
    }

    /// The server's reply behind the error, if any.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Greeting(r) | Error::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let one_line = |r: &Reply| r.to_string().trim_end().replace("\r\n", " ");
        match self {
            Error::Io(e) => write!(f, "connection: {e}"),
            Error::Greeting(r) => write!(f, "server refused the session: {}", one_line(r)),
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Rejected(r) => write!(f, "server refused the message: {}", one_line(r)),
            Error::Local(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

fn io_error(e: io::Error) -> Error {
    Error::Io(e.to_string())
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

/// One connection to one mail server.
pub struct Client {
    stream: Stream,
    input: Vec<u8>,
    ext: Extensions,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.tls())
            .field("ext", &self.ext)
            .finish()
    }
}

/// Runs `fut`, failing with a timeout error after `t`.
async fn bounded<T>(
    t: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    fut.or(async {
        Timer::after(t).await;
        Err(Error::Io(format!(
            "timed out after {t:?} waiting for {what}"
        )))
    })
    .await
}

impl Client {
    /// Connects to `addr` (the mail server `host`), reads the greeting, says
    /// EHLO as `ehlo_name` (HELO if EHLO is refused) and starts TLS per `policy`.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        ehlo_name: &str,
        policy: TlsPolicy,
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        match Self::connect_once(addr, host, ehlo_name, policy, timeouts).await {
            // Like Postfix's `may`: a failed handshake falls back to plain text.
            Err(Error::Tls(e)) if policy == TlsPolicy::Opportunistic => {
                log::info!(
                    "{host}[{}]: {e}; delivering without TLS on a new connection, as starttls: Opportunistic allows",
                    addr.ip()
                );
                Self::connect_once(addr, host, ehlo_name, TlsPolicy::Never, timeouts).await
            }
            other => other,
        }
    }

    async fn connect_once(
        addr: SocketAddr,
        host: &str,
        ehlo_name: &str,
        policy: TlsPolicy,
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        let tcp = bounded(timeouts.connect, "connect", async {
            TcpStream::connect(addr).await.map_err(io_error)
        })
        .await?;
        let mut c = Client {
            stream: Stream::Plain(tcp),
            input: Vec::new(),
            ext: Extensions::default(),
            timeouts,
        };
        match c.open(host, ehlo_name, policy).await {
            Ok(()) => Ok(c),
            // Whatever went wrong, a server still listening hears QUIT
            // (RFC 5321 section 4.1.1.10); a broken connection cannot.
            Err(e) => {
                if !matches!(e, Error::Io(_)) {
                    c.say_quit().await;
                }
                Err(e)
            }
        }
    }

    /// Greeting, EHLO, and STARTTLS as `policy` asks.
    async fn open(&mut self, host: &str, ehlo_name: &str, policy: TlsPolicy) -> Result<(), Error> {
        let greeting = self.read_reply(self.timeouts.command).await?;
        if !greeting.is_positive() {
            return Err(Error::Greeting(greeting));
        }
        self.hello(ehlo_name).await?;
        match policy {
            TlsPolicy::Never => {}
            TlsPolicy::Opportunistic if !self.ext.starttls => {}
            TlsPolicy::Required if !self.ext.starttls => {
                return Err(Error::Tls(
                    "the server does not offer STARTTLS, and delivery.starttls is Required".into(),
                ))
            }
            _ => {
                self.starttls(host, policy).await?;
                self.hello(ehlo_name).await?;
            }
        }
        Ok(())
    }

    /// EHLO, or HELO when the server refuses EHLO.
    async fn hello(&mut self, name: &str) -> Result<(), Error> {
        let reply = self.command(&Command::Ehlo(name.into())).await?;
        if reply.is_positive() {
            self.ext = Extensions::parse(&reply);
            return Ok(());
        }
        let reply = self.command(&Command::Helo(name.into())).await?;
        if !reply.is_positive() {
            return Err(Error::Greeting(reply));
        }
        self.ext = Extensions::default();
        Ok(())
    }

    async fn starttls(&mut self, host: &str, policy: TlsPolicy) -> Result<(), Error> {
        let reply = self.command(&Command::StartTls).await?;
        if reply.code != 220 {
            return Err(Error::Tls(format!(
                "the server refused STARTTLS: {} {}",
                reply.code,
                reply.text()
            )));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(Error::Protocol("STARTTLS twice".into()));
        };
        let mut connector = async_native_tls::TlsConnector::new();
        if policy == TlsPolicy::Opportunistic {
            connector = connector
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let tls = bounded(self.timeouts.command, "TLS handshake", async {
            connector.connect(host, tcp).await.map_err(|e| {
                Error::Tls(format!(
                    "the TLS handshake failed: {}",
                    tls_reason(&e.to_string())
                ))
            })
        })
        .await?;
        self.stream = Stream::Tls(Box::new(tls));
        // Anything read before the handshake is not trustworthy (RFC 3207 section 4.2).
        self.input.clear();
        Ok(())
    }

    /// Whether the connection is encrypted.
    pub fn tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    async fn write(&mut self, bytes: &[u8], t: Duration) -> Result<(), Error> {
        let stream = &mut self.stream;
        bounded(t, "the server to take our data", async {
            stream.write_all(bytes).await.map_err(io_error)?;
            stream.flush().await.map_err(io_error)
        })
        .await
    }

    async fn command(&mut self, cmd: &Command) -> Result<Reply, Error> {
        let t = self.timeouts.command;
        self.write(cmd.to_string().as_bytes(), t).await?;
        self.read_reply(t).await
    }

    /// Reads one whole (possibly multi-line) reply.
    async fn read_reply(&mut self, t: Duration) -> Result<Reply, Error> {
        bounded(t, "a reply", async {
            let mut lines: Vec<String> = Vec::new();
            loop {
                let line = self.read_line().await?;
                let (code, last, text) = Reply::parse_line(&line).ok_or_else(|| {
                    Error::Protocol(format!(
                        "not a reply line: {:?}",
                        String::from_utf8_lossy(&line)
                    ))
                })?;
                lines.push(text.to_string());
                if lines.len() > MAX_LINES {
                    return Err(Error::Protocol("reply has too many lines".into()));
                }
                if last {
                    let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
                    return Ok(Reply::from_lines(code, &texts));
                }
            }
        })
        .await
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(lf) = self.input.iter().position(|&b| b == b'\n') {
                return Ok(self.input.drain(..=lf).collect());
            }
            if self.input.len() > MAX_LINE {
                return Err(Error::Protocol("reply line too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.map_err(io_error)?;
            if n == 0 {
                return Err(Error::Io("connection closed by the server".into()));
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// One transaction: returns one reply per envelope recipient, in order:
    /// the RCPT reply where it failed, else the reply to the message.
    pub async fn send(&mut self, envelope: &Envelope, message: &[u8]) -> Result<Vec<Reply>, Error> {
        let params = self.params(envelope, message)?;
        let mut commands = vec![Command::Mail(envelope.from.clone(), params)];
        commands.extend(envelope.to.iter().cloned().map(Command::Rcpt));
        let mut replies = Vec::with_capacity(commands.len());
        if self.ext.pipelining {
            // MAIL, every RCPT and DATA in one write; replies come back in order.
            commands.push(Command::Data);
            let batch: String = commands.iter().map(Command::to_string).collect();
            self.write(batch.as_bytes(), self.timeouts.command).await?;
            for _ in &commands {
                replies.push(self.read_reply(self.timeouts.command).await?);
            }
        } else {
            for cmd in &commands {
                let reply = self.command(cmd).await?;
                let refused = !reply.is_positive();
                replies.push(reply);
                if refused && matches!(cmd, Command::Mail(..)) {
                    break;
                }
            }
            let any_rcpt = replies.iter().skip(1).any(Reply::is_positive);
            if replies[0].is_positive() && any_rcpt {
                replies.push(self.command(&Command::Data).await?);
            }
        }
        let mail = replies[0].clone();
        if !mail.is_positive() {
            self.reset().await;
            return Err(Error::Rejected(mail));
        }
        let rcpt: Vec<Reply> = replies[1..=envelope.to.len()].to_vec();
        let data = replies.get(envelope.to.len() + 1).cloned();
        let accepted = rcpt.iter().any(Reply::is_positive);
        let final_reply = match data {
            Some(d) if d.code == 354 => {
                let mut wire = Vec::with_capacity(message.len() + message.len() / 50 + 8);
                if accepted {
                    hedwig::smtp::data::stuff(message, &mut wire);
                } else {
                    // The server said 354 though no recipient was taken: end the empty message.
                    wire.extend_from_slice(b".\r\n");
                }
                self.write(&wire, self.timeouts.data_end).await?;
                self.read_reply(self.timeouts.data_end).await?
            }
            Some(d) if accepted => return Err(Error::Rejected(d)),
            _ => {
                self.reset().await;
                return Ok(rcpt);
            }
        };
        Ok(rcpt
            .into_iter()
            .map(|r| {
                if r.is_positive() {
                    final_reply.clone()
                } else {
                    r
                }
            })
            .collect())
    }

    /// MAIL FROM parameters for this message; refuses what this server cannot take.
    fn params(&self, envelope: &Envelope, message: &[u8]) -> Result<MailParams, Error> {
        if has_bare_newline(message) {
            return Err(Error::Local(
                "message holds a bare CR or LF; refusing to send it".into(),
            ));
        }
        let len = message.len() as u64;
        if let Some(limit) = self.ext.size.filter(|&n| n > 0) {
            if len > limit {
                return Err(Error::Local(format!(
                    "5.3.4 message of {len} bytes exceeds the server's SIZE limit of {limit}"
                )));
            }
        }
        let eight_bit = message.iter().any(|&b| b >= 0x80);
        let addresses_ascii = envelope
            .from
            .iter()
            .chain(&envelope.to)
            .all(|a| a.is_ascii());
        let headers_ascii = header_section(message).is_ascii();
        let needs_utf8 = !addresses_ascii || !headers_ascii;
        if !addresses_ascii && !self.ext.smtputf8 {
            return Err(Error::Local(
                "5.6.7 non-ASCII address, and the server does not offer SMTPUTF8".into(),
            ));
        }
        Ok(MailParams {
            size: self.ext.size.map(|_| len),
            body: (eight_bit && self.ext.eight_bit).then_some(Body::EightBitMime),
            smtputf8: needs_utf8 && self.ext.smtputf8,
        })
    }

    /// RSET, to leave the connection clean; errors only make it unusable.
    pub async fn reset(&mut self) {
        let _ = self.command(&Command::Rset).await;
    }

    /// Ends the session as RFC 5321 section 4.1.1.10 asks: QUIT, then the
    /// server's 221 (or a few seconds), then the close.
    pub async fn quit(mut self) {
        self.say_quit().await;
    }

    /// QUIT and the 221 (or a few seconds); the connection closes when
    /// the client is dropped.
    async fn say_quit(&mut self) {
        self.timeouts.command = self.timeouts.command.min(QUIT_WAIT);
        let _ = self.command(&Command::Quit).await;
    }
}

/// The reason in an OpenSSL error, without its codes and source paths: from
/// `error:0A000086:SSL routines:tls_post_process_server_certificate:certificate
/// verify failed:../ssl/statem/statem_clnt.c:1889:` just `certificate verify
/// failed`. Text that is not in that form stays as it is.
fn tls_reason(text: &str) -> String {
    let reasons: Vec<&str> = text
        .split("error:")
        .skip(1)
        .filter_map(|e| e.split(':').nth(3))
        .filter(|r| !r.is_empty())
        .collect();
    let verify = text
        .rsplit_once('(')
        .and_then(|(_, v)| v.strip_suffix(')'))
        .filter(|v| !v.contains(".c:"));
    match (reasons.is_empty(), verify) {
        (true, _) => text.to_string(),
        (false, Some(v)) => format!("{} ({v})", reasons.join(", ")),
        (false, None) => reasons.join(", "),
    }
}

/// The header section of a message: up to the first empty line.
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Whether a CR or LF stands anywhere but in a CRLF pair.
fn has_bare_newline(message: &[u8]) -> bool {
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' | b'\n' => return true,
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ehlo_keywords() {
        let lines = [
            "mx.test hello",
            "PIPELINING",
            "SIZE 1000",
            "8BITMIME",
            "smtputf8",
            "STARTTLS",
            "AUTH PLAIN",
        ];
        let ext = Extensions::parse(&Reply::from_lines(250, &lines));
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                size: Some(1000),
                eight_bit: true,
                smtputf8: true,
                starttls: true
            }
        );
        let ext = Extensions::parse(&Reply::from_lines(250, &["mx.test", "SIZE"]));
        assert_eq!(ext.size, Some(0));
    }

    #[test]
    fn tls_errors_read_as_sentences() {
        let e = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (unable to get local issuer certificate)";
        assert_eq!(
            tls_reason(e),
            "certificate verify failed (unable to get local issuer certificate)"
        );
        let e = "error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../ssl/record/ssl3_record.c:354:";
        assert_eq!(tls_reason(e), "wrong version number");
        assert_eq!(tls_reason("connection reset"), "connection reset");
    }

    #[test]
    fn bare_newlines_are_found() {
        assert!(!has_bare_newline(b"a\r\nb\r\n"));
        assert!(has_bare_newline(b"a\nb\r\n"));
        assert!(has_bare_newline(b"a\rb\r\n"));
        assert!(has_bare_newline(b"a\r"));
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b");
    }
}
