//! surf's HTTP client on hyper: TCP with `TCP_NODELAY`, TLS from one
//! connector built at start, and a keep-alive pool per origin.
//!
//! A connection goes back to the pool once its answer's body has been read
//! to the end; an answer dropped half-read closes it. A pooled connection
//! that fails before any answer (the server closed it while it sat idle) is
//! reported as [`Stale`], so that the caller can send again at once on a new
//! one instead of counting a failure.
//!
//! # Examples
//!
//! ```no_run
//! # smol::block_on(async {
//! use std::time::Duration;
//! let client = hedwig::http::Client::new(None, Duration::from_secs(10), 8).unwrap();
//! // surf::Client::with_http_client(client) gives surf's API on it.
//! let url: http_types::Url = "https://brandy:8025/healthz".parse().unwrap();
//! let req = http_types::Request::new(http_types::Method::Get, url);
//! let mut answer = client.send(req).await.unwrap();
//! println!("{}", answer.body_string().await.unwrap());
//! # });
//! ```

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};

use super::body::Outgoing;
use super::convert;
use super::io::{connect, HyperIo, Stream, Timed};
use super::tls::Connector;
use crate::timeout::timeout;

/// How long a connection may sit idle in the pool: below the 30 s after
/// which postoffice (and most servers) close idle keep-alive connections, so
/// that the server rarely closes one just as it is taken.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The error of a pooled connection that failed before any answer.
#[derive(Debug)]
pub struct Stale(pub String);

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reused connection failed before an answer: {}", self.0)
    }
}

impl std::error::Error for Stale {}

/// An HTTP/1.1 client with a keep-alive pool; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tls: Connector,
    timeout: Duration,
    max_idle: usize,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
}

/// Where a connection goes: connections are pooled per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Outgoing>,
    since: Instant,
}

impl Client {
    /// A client trusting the system's CAs and those in `ca_file`, bounding
    /// connecting and each read and write by `timeout`, keeping up to
    /// `max_idle` idle connections per origin.
    pub fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        max_idle: usize,
    ) -> Result<Client, String> {
        Ok(Client {
            inner: Arc::new(Inner {
                tls: Connector::new(ca_file)?,
                timeout,
                max_idle,
                idle: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sends `req` and waits for the head of the answer, whose body streams.
    pub async fn send(
        &self,
        req: http_types::Request,
    ) -> Result<http_types::Response, http_types::Error> {
        let url = req.url();
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(error(io::Error::other(format!(
                    "scheme {other} is not http or https"
                ))))
            }
        };
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        let origin = Origin { https, host, port };
        let request = convert::request_to_hyper(req).map_err(|e| error(io::Error::other(e.0)))?;
        let pooled = match self.inner.checkout(&origin) {
            // Back in the pool as soon as its last answer was read, it may
            // take hyper a moment more to be ready for the next request.
            Some(mut s) => match timeout(self.inner.timeout, "a pooled connection", async {
                s.ready().await.map_err(io::Error::other)
            })
            .await
            {
                Ok(()) => Some(s),
                Err(_) => None,
            },
            None => None,
        };
        let (mut sender, reused) = match pooled {
            Some(s) => (s, true),
            None => (self.inner.open(&origin).await.map_err(error)?, false),
        };
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) if reused && stale(&e) => {
                return Err(http_types::Error::new(502, Stale(e.to_string())))
            }
            Err(e) => return Err(error(io::Error::other(e))),
        };
        let inner = self.inner.clone();
        let on_end: super::body::OnEnd = Box::new(move || inner.checkin(origin, sender));
        convert::response_from_hyper(response, Some(on_end))
            .map_err(|e| error(io::Error::other(e.0)))
    }

    /// Idle connections in the pool, all origins together.
    pub fn idle(&self) -> usize {
        self.inner.lock().values().map(Vec::len).sum()
    }
}

/// Whether `e` says the connection was gone rather than slow or refused.
fn stale(e: &hyper::Error) -> bool {
    let io_kind = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    e.is_incomplete_message()
        || e.is_canceled()
        || e.is_closed()
        || matches!(
            io_kind,
            Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
        )
}

fn error(e: io::Error) -> http_types::Error {
    http_types::Error::new(502, e)
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live idle connection to `origin`.
    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Outgoing>> {
        let mut idle = self.lock();
        let list = idle.get_mut(origin)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    /// Puts a connection whose exchange is over back in the pool.
    fn checkin(&self, origin: Origin, sender: SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(origin).or_default();
        list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
        if list.len() < self.max_idle {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, its hyper task spawned on the executor.
    async fn open(&self, origin: &Origin) -> io::Result<SendRequest<Outgoing>> {
        let tcp = connect(&origin.host, origin.port, self.timeout).await?;
        let stream = match origin.https {
            true => self.tls.connect(&origin.host, tcp, self.timeout).await?,
            false => Stream::Plain(tcp),
        };
        let io = HyperIo(Timed::new(stream, self.timeout, self.timeout));
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(io::Error::other)?;
        let host = format!("{}:{}", origin.host, origin.port);
        smol::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("http connection to {host}: {e}");
            }
        })
        .detach();
        Ok(sender)
    }
}

#[async_trait::async_trait]
impl http_client::HttpClient for Client {
    async fn send(
        &self,
        req: http_client::Request,
    ) -> Result<http_client::Response, http_types::Error> {
        Client::send(self, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A keep-alive HTTP/1.1 server on a thread that answers `ok` to each
    /// request head, every other one chunked; returns its address and the
    /// count of connections.
    fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    let mut chunked = false;
                    while let Ok(n) = conn.read(&mut chunk) {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer: &[u8] = match chunked {
                                true => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                                false => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                            };
                            chunked = !chunked;
                            if conn.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[test]
    fn answers_read_to_the_end_leave_the_connection_for_the_next_request() {
        let (addr, accepted) = server();
        smol::block_on(async {
            let client = Client::new(None, Duration::from_secs(5), 4).unwrap();
            for _ in 0..3 {
                let url: http_types::Url = format!("http://{addr}/x").parse().unwrap();
                let req = http_types::Request::new(http_types::Method::Get, url);
                let mut answer = client.send(req).await.unwrap();
                assert_eq!(answer.body_string().await.unwrap(), "ok");
            }
            assert_eq!(client.idle(), 1);
            // An answer dropped unread closes its connection.
            let url: http_types::Url = format!("http://{addr}/x").parse().unwrap();
            let answer = client
                .send(http_types::Request::new(http_types::Method::Get, url))
                .await;
            drop(answer);
            assert_eq!(client.idle(), 0);
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
