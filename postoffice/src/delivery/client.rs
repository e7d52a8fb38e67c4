//! The SMTP client's socket layer: one connection to one mail server. It
//! moves bytes for the protocol core ([`super::smtp`]), runs the TLS
//! handshake when the core says so, and bounds every wait with
//! [`hedwig::timeout::timeout`]. It makes no protocol decision of its own.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hedwig::envelope::Envelope;
use hedwig::smtp::command::Command;
use hedwig::smtp::reply::Reply;
use hedwig::timeout::timeout;

use super::smtp::{self, Action, Extensions, Hello, Replies, TlsPolicy, Transaction};
use super::stream::Stream;

/// How long a closing QUIT waits for the server's 221.
const QUIT_WAIT: Duration = Duration::from_secs(5);

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

/// Why a connection or transaction failed.
#[derive(Debug)]
pub enum Error {
    /// Connect, read or write failed or timed out.
    Io(io::Error),
    /// The conversation went wrong (see [`smtp::Error`]).
    Smtp(smtp::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let one_line = |r: &Reply| r.to_lines().replace('\n', " ");
        match self {
            Error::Io(e) => write!(f, "connection: {e}"),
            Error::Smtp(smtp::Error::Greeting(r)) => {
                write!(f, "server refused the session: {}", one_line(r))
            }
            Error::Smtp(smtp::Error::Tls(e)) => write!(f, "tls: {e}"),
            Error::Smtp(smtp::Error::Protocol(e)) => write!(f, "protocol error: {e}"),
            Error::Smtp(smtp::Error::Rejected(r)) => {
                write!(f, "server refused the message: {}", one_line(r))
            }
            Error::Smtp(smtp::Error::Local(e)) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<smtp::Error> for Error {
    fn from(e: smtp::Error) -> Error {
        Error::Smtp(e)
    }
}

/// One connection to one mail server.
pub struct Client {
    stream: Stream,
    replies: Replies,
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
            Err(Error::Smtp(smtp::Error::Tls(e))) if policy == TlsPolicy::Opportunistic => {
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
        let tcp = timeout(timeouts.connect, "connect", TcpStream::connect(addr)).await?;
        // Each command (or pipelined group) and each message is written
        // whole, the terminator last: none of it should wait for an ACK.
        tcp.set_nodelay(true)?;
        let mut c = Client {
            stream: Stream::Plain(tcp),
            replies: Replies::default(),
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

    /// Greeting, EHLO, and STARTTLS as `policy` asks, as the core says.
    async fn open(&mut self, host: &str, ehlo_name: &str, policy: TlsPolicy) -> Result<(), Error> {
        let command = self.timeouts.command;
        let mut hello = Hello::new(ehlo_name, policy);
        let mut action = Action::Read;
        loop {
            action = match action {
                Action::Write(bytes) => {
                    self.write(&bytes, command).await?;
                    Action::Read
                }
                Action::Read => hello.reply(self.read_reply(command).await?),
                Action::StartTls => {
                    self.start_tls(host, policy).await?;
                    hello.tls_started()
                }
                Action::WriteMessage { .. } => {
                    return Err(smtp::Error::Protocol("no message during EHLO".into()).into())
                }
                Action::Done(ext) => {
                    self.ext = ext?;
                    return Ok(());
                }
            };
        }
    }

    async fn start_tls(&mut self, host: &str, policy: TlsPolicy) -> Result<(), Error> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(smtp::Error::Protocol("STARTTLS twice".into()).into());
        };
        let mut connector = async_native_tls::TlsConnector::new();
        if policy == TlsPolicy::Opportunistic {
            connector = connector
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let handshake = async {
            connector
                .connect(host, tcp)
                .await
                .map_err(|e| io::Error::other(tls_reason(&e.to_string())))
        };
        let tls = timeout(self.timeouts.command, "the TLS handshake", handshake)
            .await
            .map_err(|e| smtp::Error::Tls(format!("the TLS handshake failed: {e}")))?;
        self.stream = Stream::Tls(Box::new(tls));
        self.replies.clear();
        Ok(())
    }

    /// Whether the connection is encrypted.
    pub fn tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    async fn write(&mut self, bytes: &[u8], t: Duration) -> Result<(), Error> {
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        Ok(timeout(t, "the server to take our data", write).await?)
    }

    /// Reads one whole (possibly multi-line) reply.
    async fn read_reply(&mut self, t: Duration) -> Result<Reply, Error> {
        let (stream, replies) = (&mut self.stream, &mut self.replies);
        let read = async {
            loop {
                if let Some(reply) = replies.next() {
                    return Ok(reply);
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ));
                }
                replies.feed(&chunk[..n]);
            }
        };
        Ok(timeout(t, "a reply", read).await??)
    }

    /// One transaction: one reply per envelope recipient, in order: the RCPT
    /// reply where it failed, else the reply to the message.
    pub async fn send(&mut self, envelope: &Envelope, message: &[u8]) -> Result<Vec<Reply>, Error> {
        let mut t = Transaction::new(&self.ext, envelope, message)?;
        let command = self.timeouts.command;
        let mut action = t.start();
        let result = loop {
            action = match action {
                Action::Write(bytes) => {
                    self.write(&bytes, command).await?;
                    Action::Read
                }
                Action::Read => t.reply(self.read_reply(command).await?),
                Action::WriteMessage { empty } => {
                    let end = self.timeouts.data_end;
                    // No recipient accepted: only the terminator.
                    let message = if empty { &b""[..] } else { message };
                    match hedwig::smtp::data::unstuffed_tail(message) {
                        // Most messages have no line that starts with a dot:
                        // they go out as they are, not as a second copy.
                        Some(tail) => {
                            if !message.is_empty() {
                                self.write(message, end).await?;
                            }
                            self.write(tail, end).await?;
                        }
                        None => {
                            let mut wire =
                                Vec::with_capacity(message.len() + message.len() / 50 + 8);
                            hedwig::smtp::data::stuff(message, &mut wire);
                            self.write(&wire, end).await?;
                        }
                    }
                    t.reply(self.read_reply(end).await?)
                }
                Action::StartTls => {
                    break Err(smtp::Error::Protocol("STARTTLS mid-transaction".into()))
                }
                Action::Done(result) => break result,
            };
        };
        if t.needs_reset() {
            self.reset().await;
        }
        Ok(result?)
    }

    /// RSET, to leave the connection clean; errors only make it unusable.
    pub async fn reset(&mut self) {
        let t = self.timeouts.command;
        if self
            .write(Command::Rset.to_string().as_bytes(), t)
            .await
            .is_ok()
        {
            let _ = self.read_reply(t).await;
        }
    }

    /// Ends the session as RFC 5321 section 4.1.1.10 asks: QUIT, then the
    /// server's 221 (or a few seconds), then the close.
    pub async fn quit(mut self) {
        self.say_quit().await;
    }

    /// QUIT and the 221 (or a few seconds); the connection closes when the
    /// client is dropped.
    async fn say_quit(&mut self) {
        let t = self.timeouts.command.min(QUIT_WAIT);
        let quit = Command::Quit.to_string();
        if self.write(quit.as_bytes(), t).await.is_ok() {
            let _ = self.read_reply(t).await;
        }
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

#[cfg(test)]
mod tests {
    use super::tls_reason;

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
}
