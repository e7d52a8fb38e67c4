//! One HTTP connection: TLS when configured, the first request head checked
//! by us, then hyper's HTTP/1 server until the connection ends.
//!
//! hyper answers what it cannot parse with an empty 400 or 431, closes on a
//! header timeout without a word, and answers 400 to another HTTP version.
//! The first head of each connection (where a wrong version, an oversize
//! head or a stalled client shows up) is therefore read and checked here,
//! with httparse (hyper's parser), and refused with a JSON answer: 505 for
//! another version, 431 for a head over `max_header_size`, 408 for a client
//! that started a head and stalled, 400 for what does not parse. A later
//! head that stalls on a keep-alive connection gets the same 408 after
//! hyper gives up; one that is idle is closed silently. (Idle means nothing
//! arrived since our last answer: a stalled head that came along with the
//! previous request, in one packet, is closed without the 408.)

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hedwig::http::body::Outgoing;
use hedwig::http::convert::{self, error_bytes, error_response};
use hedwig::http::io::{HyperIo, Stream, Timed};
use hedwig::http::tls::Acceptor;
use hedwig::timeout::timeout;
use http::StatusCode;
use smol_hyper::rt::SmolTimer;

use super::State;

/// The bounds of one connection (hedwig.ron's postoffice fields).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head.
    pub max_header_size: usize,
    /// Time to send a head; also the most a keep-alive connection idles.
    pub header_timeout: Duration,
    /// Time for a request body in all.
    pub body_timeout: Duration,
    /// Time one write may wait for a client that does not read.
    pub write_timeout: Duration,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The router.
    pub app: tide::Server<State>,
    /// TLS, when postoffice serves HTTPS itself.
    pub tls: Option<Acceptor>,
    /// The bounds.
    pub limits: Limits,
}

/// The stream hyper serves, shared so that a 408 can still be written on it
/// after hyper has given the connection up.
type Conn = async_dup::Arc<async_dup::Mutex<Prefixed<Timed<Stream>>>>;

/// Serves `tcp` from `peer` until it closes.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let limits = shared.limits.clone();
    let stream = match &shared.tls {
        Some(acceptor) => acceptor.accept(tcp, limits.header_timeout).await?,
        None => Stream::Plain(tcp),
    };
    let read_limit = limits.header_timeout.max(limits.body_timeout);
    let mut timed = Timed::new(stream, read_limit, limits.write_timeout);
    let head = match first_head(&mut timed, &limits).await {
        Ok(head) => head,
        Err(Some((status, why))) => return refuse(&mut timed, status, &why).await,
        Err(None) => return Ok(()),
    };
    let conn: Conn = async_dup::Arc::new(async_dup::Mutex::new(Prefixed {
        head,
        at: 0,
        inner: timed,
    }));
    let https = shared.tls.is_some();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(answer(req, peer, local, https, &shared).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_size)
        // The read buffer holds a whole head, and a little more.
        .max_buf_size(limits.max_header_size + 8192)
        .writev(false)
        .serve_connection(HyperIo(conn.clone()), service)
        .await;
    match served {
        Ok(()) => Ok(()),
        // A head begun and not finished in time: say so. An idle keep-alive
        // connection is just closed (a 408 there could be read as the answer
        // to a request the client sends at that moment).
        Err(e) if e.is_timeout() && conn.lock().inner.read_since_write() => {
            let mut io = conn.lock();
            refuse(&mut io.inner, 408, "request head not received in time").await
        }
        Err(e) => Err(io::Error::other(e)),
    }
}

/// Reads the connection's first request head. `Ok` has the bytes read (the
/// head and whatever followed), `Err` the answer to refuse it with, or
/// `None` to close without one (nothing was sent at all).
async fn first_head(
    io: &mut Timed<Stream>,
    limits: &Limits,
) -> Result<Vec<u8>, Option<(u16, String)>> {
    let deadline = Instant::now() + limits.header_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) if n <= limits.max_header_size => return Ok(buf),
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::Version) => {
                let line =
                    String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or(&[]));
                let version = line.trim().rsplit(' ').next().unwrap_or("").to_string();
                return Err(Some((
                    505,
                    format!("{version} is not supported: speak HTTP/1.1 or HTTP/1.0"),
                )));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Some((431, "more than 100 header fields".into())))
            }
            Err(e) => return Err(Some((400, format!("malformed request head: {e}")))),
        }
        if buf.len() > limits.max_header_size {
            let why = format!("request head larger than {} bytes", limits.max_header_size);
            return Err(Some((431, why)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, "the request head", io.read(&mut chunk)).await {
            Ok(0) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut && !buf.is_empty() => {
                return Err(Some((408, "request head not received in time".into())))
            }
            Err(_) => return Err(None),
        }
    }
}

/// Writes a JSON error answer, ends our side, and reads what the client
/// still sends for a moment, so that closing with unread bytes does not
/// reset the connection before the client has read the answer.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    status: u16,
    why: &str,
) -> io::Result<()> {
    io.write_all(&error_bytes(status, why)).await?;
    io.close().await?;
    let mut sink = [0u8; 4096];
    let mut left = 64 << 10;
    let drain = async {
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok(())
    };
    let _ = timeout(
        Duration::from_secs(1),
        "the rest of a refused request",
        drain,
    )
    .await;
    Ok(())
}

/// Answers one request that hyper read.
async fn answer(
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    https: bool,
    shared: &Shared,
) -> http::Response<Outgoing> {
    // RFC 9112 section 3.2: a 1.1 request has exactly one Host.
    let hosts = req.headers().get_all(http::header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == http::Version::HTTP_11) {
        let mut r = error_response(
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs one Host header field",
        );
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return r;
    }
    let req = match convert::request_from_hyper(req, peer, local, https) {
        Ok(r) => r,
        Err(e) if e.0.starts_with("method") => {
            return error_response(StatusCode::NOT_IMPLEMENTED, &e.0)
        }
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.0),
    };
    let res: http_types::Response = match shared.app.respond(req).await {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match convert::response_to_hyper(res).await {
        Ok(r) => r,
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.0),
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.head.len() {
            let n = (self.head.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
