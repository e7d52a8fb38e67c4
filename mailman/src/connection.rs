//! One client connection: socket I/O around the protocol core.
//!
//! Commands are answered in order; replies are collected and written when
//! the input holds no further complete line, which is what PIPELINING asks
//! (RFC 2920). The message text streams from the socket through the DATA
//! receiver and the header stamper into a spool file; the 250 goes out only
//! after the spool file is committed. Every read and every write is bounded
//! by `timeout`: a client that pipelines and never reads our replies loses
//! its session, never holds a slot forever. The spool's file work runs on
//! the blocking pool, so a slow disk delays only the sessions waiting on it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use hedwig::envelope::Envelope;
use hedwig::id::Id;
use hedwig::message::{rfc5322_date, Stamper, Trace};
use hedwig::smtp::command::MailParams;
use hedwig::smtp::data::{DataReceiver, Limits};
use hedwig::smtp::reply::{replies, Reply};
use hedwig::smtp::session::{self, Action, Session, SessionConfig};
use hedwig::spool::Spool;
use hedwig::timeout::timeout;

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
    pub accepted: async_channel::Sender<Id>,
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
    /// What each read fills, zeroed once for the session rather than at
    /// every read.
    chunk: Box<[u8]>,
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
        chunk: vec![0; READ_CHUNK].into_boxed_slice(),
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
        let idle = conn.shared.timeout;
        match conn.read(idle, true).await? {
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

    /// Writes the replies out, bounded like a read: a client that does not
    /// read them loses the session.
    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            let (stream, output) = (&mut self.stream, &self.output);
            let t = self.shared.timeout;
            timeout(
                t,
                "the client to read our replies",
                stream.write_all(output),
            )
            .await?;
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
    async fn read(&mut self, limit: Duration, stoppable: bool) -> io::Result<Input> {
        let shutdown = self.shared.shutdown.clone();
        let read = self.stream.read(&mut self.chunk);
        let result = async {
            match timeout(limit, "the client", read).await {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(Input::Timeout),
                other => other.map(Input::Bytes),
            }
        }
        .or(async {
            if stoppable {
                shutdown.wait().await;
                Ok(Input::Shutdown)
            } else {
                std::future::pending().await
            }
        })
        .await;
        if let Ok(Input::Bytes(n)) = &result {
            self.input.extend_from_slice(&self.chunk[..*n]);
        }
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
        let id = Id::new(now);
        let id_text = id.to_string();
        let trace = Trace {
            helo: session.greeting().map_or("unknown", |g| &g.name),
            client_ip: self.peer.ip(),
            by: &shared.session.hostname,
            software: "hedwig mailman",
            protocol: session::protocol(session.greeting(), params.smtputf8),
            id: &id_text,
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
        let envelope = masquerade(shared.masquerade.as_ref(), envelope, &id_text);
        let limits = Limits {
            max_size: shared.session.max_message_size,
            max_line: shared.max_line,
        };
        let mut receiver = DataReceiver::new(limits);
        let mut writer = Some(shared.spool.create(id, &envelope, None));
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
                // Past the header section the text goes to the file as it is.
                let bytes = if stamper.passes_through() {
                    &text
                } else {
                    stamper.push(&text, &mut stamped);
                    if end.is_some() {
                        stamper.finish(&mut stamped);
                    }
                    &stamped
                };
                if let Err(e) = w.write(bytes).await {
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
        match writer.commit().await {
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
                let _ = shared.accepted.try_send(id);
                Ok(replies::queued(&id_text))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// swaks (a real SMTP client) talks to `addr` (`extra`: e.g. stop after
    /// RCPT); returns what it printed and how long the session took.
    fn swaks(addr: SocketAddr, to: &str, extra: &[&str]) -> (String, Duration) {
        let started = Instant::now();
        let out = Command::new("swaks")
            .args(["--server", &addr.to_string(), "--from", "a@src.test"])
            .args(["--to", to, "--helo", "client.test", "--timeout", "30"])
            .args(["--body", "hello"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("swaks (Debian package swaks) is installed by scripts/test");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text, started.elapsed())
    }

    const QUEUED: &str = "<-  250 2.0.0 Ok: queued";

    #[test]
    fn a_session_whose_spool_write_is_slow_stalls_no_other() {
        let dir = tempfile::tempdir().unwrap();
        // The disk takes 3 s for the first message's bytes, on the blocking
        // thread that writes them, as a slow or failing disk would.
        let first = Arc::new(AtomicBool::new(true));
        let slow = first.clone();
        let hook: hedwig::spool::WriteHook = Arc::new(move |_| {
            if slow.swap(false, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        let spool = Spool::open(dir.path()).unwrap().with_write_hook(hook);
        let (accepted, _forwarder) = async_channel::unbounded();
        let (_trigger, shutdown) = crate::shutdown::new();
        let shared = Arc::new(Shared {
            session: SessionConfig {
                hostname: "mailman.test".into(),
                max_message_size: 1 << 20,
                max_recipients: 10,
                max_errors: 10,
            },
            max_line: 4096,
            max_header: 64 << 10,
            timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(30),
            spool,
            accepted,
            shutdown,
            masquerade: None,
        });
        let listener = smol::block_on(async_net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        smol::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                smol::spawn(serve(stream, peer, shared.clone())).detach();
            }
        })
        .detach();
        let slow_one = std::thread::spawn(move || swaks(addr, "slow@dst.test", &[]));
        // The slow session has reached its write.
        while first.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Another session is served meanwhile: greeting, EHLO, MAIL, RCPT.
        let (text, took) = swaks(addr, "other@dst.test", &["--quit-after", "RCPT"]);
        assert!(text.contains("<-  250 2.1.5 Ok"), "{text}");
        assert!(
            took < Duration::from_millis(1500),
            "the other session took {took:?} while one spool write was stuck:\n{text}"
        );
        assert!(
            !slow_one.is_finished(),
            "the slow one still waits on its disk"
        );
        // A message that comes to its commit now shares the disk with the
        // slow one: it is answered once its own data is on disk too.
        let (text, _) = swaks(addr, "third@dst.test", &[]);
        assert!(text.contains(QUEUED), "{text}");
        let (text, took) = slow_one.join().unwrap();
        assert!(text.contains(QUEUED), "{text}");
        assert!(took >= Duration::from_secs(3), "{took:?}");
        let queued = std::fs::read_dir(dir.path().join("queue")).unwrap().count();
        assert_eq!(queued, 2);
    }
}
