//! One client connection: socket I/O around the protocol core.
//!
//! Commands are answered in order; replies are collected and written when
//! the input holds no further complete line, which is what PIPELINING asks
//! (RFC 2920). The message text streams from the socket through the DATA
//! receiver and the header stamper into a spool file; the 250 goes out only
//! after the spool file is committed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use hedwig::envelope::Envelope;
use hedwig::message::{rfc5322_date, Stamper, Trace};
use hedwig::smtp::command::MailParams;
use hedwig::smtp::data::{DataReceiver, Limits};
use hedwig::smtp::reply::{replies, Reply};
use hedwig::smtp::session::{self, Action, Session, SessionConfig};
use hedwig::spool::Spool;
use smol::Timer;

use crate::shutdown::Shutdown;

/// Read size; also the most a pipelined burst adds to the input buffer at once.
const READ_CHUNK: usize = 16 * 1024;
/// Replies are written out once this many bytes are waiting.
const MAX_PENDING_REPLIES: usize = 64 * 1024;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The protocol core's settings.
    pub session: SessionConfig,
    /// Longest command or text line, CRLF included.
    pub max_line: usize,
    /// Header section held back to look for Date and Message-ID.
    pub max_header: usize,
    /// Idle time allowed while waiting for a command.
    pub timeout: Duration,
    /// Idle time allowed inside DATA.
    pub data_timeout: Duration,
    /// Where accepted messages go.
    pub spool: Spool,
    /// Tells the forwarder about each committed message.
    pub accepted: async_channel::Sender<String>,
    /// Fires on SIGTERM/SIGINT.
    pub shutdown: Shutdown,
    /// Rewrites a container's sender to a real domain.
    pub masquerade: Option<hedwig::masquerade::Rule>,
}

/// Why waiting for input ended.
enum Input {
    Bytes(usize),
    Closed,
    Timeout,
    Shutdown,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// Received bytes not yet used.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    /// Inside a command line longer than the limit: drop bytes up to its LF.
    discarding: bool,
}

/// Serves one allowed client until it quits, times out, or the server stops.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> io::Result<()> {
    let mut session = Session::new(shared.session.clone());
    let mut conn = Conn {
        stream,
        peer,
        shared,
        input: Vec::with_capacity(READ_CHUNK),
        output: Vec::new(),
        discarding: false,
    };
    conn.reply(&session.banner());
    loop {
        // Answer every complete command already received.
        while let Some(line) = conn.next_line() {
            let Some(line) = line else {
                conn.reply(&replies::line_too_long());
                session.refused();
                continue;
            };
            let (reply, action) = session.command(&line);
            conn.reply(&reply);
            match action {
                Action::Continue => {}
                Action::Close => return conn.flush().await,
                Action::Data(envelope, params) => {
                    conn.flush().await?;
                    let reply = conn.receive(&session, envelope, &params).await?;
                    session.reset();
                    if reply.code >= 500 {
                        session.refused();
                    }
                    conn.reply(&reply);
                }
            }
            if conn.output.len() > MAX_PENDING_REPLIES {
                conn.flush().await?;
            }
        }
        conn.flush().await?;
        let timeout = conn.shared.timeout;
        match conn.read(timeout, true).await? {
            Input::Bytes(_) => {}
            Input::Closed => return Ok(()),
            Input::Timeout => {
                return conn
                    .close_with(&replies::timeout(&conn.shared.session.hostname))
                    .await
            }
            Input::Shutdown => {
                return conn
                    .close_with(&replies::shutting_down(&conn.shared.session.hostname))
                    .await
            }
        }
    }
}

impl Conn {
    fn reply(&mut self, reply: &Reply) {
        self.output.extend_from_slice(reply.to_string().as_bytes());
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    async fn close_with(&mut self, reply: &Reply) -> io::Result<()> {
        self.reply(reply);
        self.flush().await
    }

    /// Takes the next command line off the input, without its line ending.
    /// `Some(None)` stands for a line that was over the limit.
    fn next_line(&mut self) -> Option<Option<Vec<u8>>> {
        let max = self.shared.max_line;
        match self.input.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let mut line: Vec<u8> = self.input.drain(..=lf).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.discarding) || line.len() + 2 > max {
                    return Some(None);
                }
                Some(Some(line))
            }
            None if self.input.len() >= max => {
                // Keep no more than the limit of a line that has not ended.
                self.input.clear();
                self.discarding = true;
                None
            }
            None => None,
        }
    }

    /// Reads more input, bounded by `timeout`; waits for shutdown too when
    /// `stoppable` (between commands, never inside DATA).
    async fn read(&mut self, timeout: Duration, stoppable: bool) -> io::Result<Input> {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK, 0);
        let shutdown = self.shared.shutdown.clone();
        let result = async {
            self.stream
                .read(&mut self.input[start..])
                .await
                .map(Input::Bytes)
        }
        .or(async {
            Timer::after(timeout).await;
            Ok(Input::Timeout)
        })
        .or(async {
            if stoppable {
                shutdown.wait().await;
                Ok(Input::Shutdown)
            } else {
                std::future::pending().await
            }
        })
        .await;
        let got = match &result {
            Ok(Input::Bytes(n)) => *n,
            _ => 0,
        };
        self.input.truncate(start + got);
        match result? {
            Input::Bytes(0) => Ok(Input::Closed),
            other => Ok(other),
        }
    }

    /// Receives the message text after 354 and answers it: 250 only once the
    /// message is committed to the spool.
    async fn receive(
        &mut self,
        session: &Session,
        envelope: Envelope,
        params: &MailParams,
    ) -> io::Result<Reply> {
        let shared = self.shared.clone();
        let now = SystemTime::now();
        let id = hedwig::id::new(now);
        let trace = Trace {
            helo: session.greeting().map_or("unknown", |g| &g.name),
            client_ip: self.peer.ip(),
            by: &shared.session.hostname,
            software: "hedwig mailman",
            protocol: session::protocol(session.greeting(), params.smtputf8),
            id: &id,
            for_rcpt: envelope.sole_recipient(),
            time: now,
        };
        let message_id = format!("{id}@{}", shared.session.hostname);
        let mut stamper = Stamper::new(
            trace.received(),
            rfc5322_date(now),
            message_id,
            shared.max_header,
        )
        .masquerade(shared.masquerade.clone());
        let envelope = masquerade(shared.masquerade.as_ref(), envelope, &id);
        let limits = Limits {
            max_size: shared.session.max_message_size,
            max_line: shared.max_line,
        };
        let mut receiver = DataReceiver::new(limits);
        let mut writer = match shared.spool.create(&id, &envelope, None) {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!("{id}: cannot create spool file: {e}");
                None
            }
        };
        let mut text = Vec::with_capacity(READ_CHUNK);
        let mut stamped = Vec::with_capacity(READ_CHUNK);
        loop {
            let end = receiver.feed(&self.input, &mut text);
            self.input.drain(..end.unwrap_or(self.input.len()));
            if receiver.is_refused() {
                // No use writing what will be refused; the file goes with the writer.
                writer = None;
            }
            if let Some(w) = &mut writer {
                if end.is_some() {
                    stamper.push(&text, &mut stamped);
                    stamper.finish(&mut stamped);
                } else {
                    stamper.push(&text, &mut stamped);
                }
                if let Err(e) = w.write(&stamped) {
                    log::error!("{id}: cannot write spool file: {e}");
                    writer = None;
                }
            }
            text.clear();
            stamped.clear();
            if end.is_some() {
                break;
            }
            match self.read(shared.data_timeout, false).await? {
                Input::Bytes(_) => {}
                // The client vanished mid-DATA: the writer's drop removes the file.
                Input::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    self.close_with(&replies::timeout(&shared.session.hostname))
                        .await?;
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
        if let Err(reply) = receiver.verdict() {
            log::info!("{id}: refused from {}: {}", self.peer, reply.text());
            return Ok(reply);
        }
        let Some(writer) = writer else {
            return Ok(replies::spool_full());
        };
        match smol::unblock(move || writer.commit()).await {
            Ok(()) => {
                if stamper.rewrote() {
                    log::info!("{id}: masquerade: sender fields of the header rewritten");
                }
                let to: Vec<&str> = envelope.to.iter().map(|a| a.as_str()).collect();
                log::info!(
                    "{id}: accepted client={} from=<{}> to=<{}> size={}",
                    self.peer,
                    envelope.sender(),
                    to.join(">,<"),
                    receiver.size()
                );
                // The forwarder also finds it on the next start if it is gone now.
                let _ = shared.accepted.try_send(id.clone());
                Ok(replies::queued(&id))
            }
            Err(e) => {
                log::error!("{id}: cannot commit spool file: {e}");
                Ok(replies::spool_full())
            }
        }
    }
}

/// The envelope with its sender masqueraded, when `rule` says so; logged.
fn masquerade(
    rule: Option<&hedwig::masquerade::Rule>,
    mut envelope: Envelope,
    id: &str,
) -> Envelope {
    let new = rule
        .zip(envelope.from.as_ref())
        .and_then(|(r, from)| r.address(from));
    if let Some(new) = new {
        log::info!(
            "{id}: masquerade: from=<{}> becomes <{new}>",
            envelope.sender()
        );
        envelope.from = Some(new);
    }
    envelope
}
