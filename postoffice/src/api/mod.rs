//! The HTTP API: tide routes ([`routes`], and the status page's
//! [`status`]), hyper speaks HTTP/1.0 and 1.1 on each connection ([`conn`],
//! through `hedwig::http`), all on smol's executor. This module accepts
//! connections, at most `max_connections` at once: the next get a 503 and
//! are closed. [`client`] is `postoffice queue`'s side of the API.

pub mod client;
mod conn;
mod routes;
mod status;

pub use routes::rfc3339;

use std::sync::Arc;
use std::time::Duration;

use async_lock::Semaphore;
use async_net::TcpListener;
use futures_lite::FutureExt;
use hedwig::http::tls::Acceptor;
use smol::Timer;

pub use conn::Limits;

use crate::metrics::Metrics;
use crate::queue::Queue;

/// Connections over `max_connections` being answered 503 at once; past
/// these, more are closed without a word (a flood must not cost more).
const REFUSING: usize = 64;

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct State {
    /// The queue.
    pub queue: Queue,
    /// Accepted bearer tokens.
    pub tokens: Arc<Vec<String>>,
    /// Largest message body in bytes (the previous hop's trace aside).
    pub max_message_size: u64,
    /// Most message bytes in one batch, in all.
    pub max_batch_size: u64,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Our hostname, for Message-IDs of composed messages.
    pub hostname: Arc<str>,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Whether the API is served over HTTPS (for the `Received:` header).
    pub https: bool,
}

/// Serves the API on `listener` until `stop` resolves, over TLS when `tls`
/// is given, at most `max_connections` connections at once.
pub async fn serve(
    listener: TcpListener,
    state: State,
    tls: Option<Acceptor>,
    limits: Limits,
    max_connections: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let shared = Arc::new(conn::Shared {
        app: routes::app(state),
        tls,
        limits,
    });
    let serving = Arc::new(Semaphore::new(max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    log::error!("accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            if let Some(permit) = serving.try_acquire_arc() {
                smol::spawn(async move {
                    if let Err(e) = conn::serve(stream, peer, shared).await {
                        log::debug!("http connection from {peer}: {e}");
                    }
                    drop(permit);
                })
                .detach();
            } else if let Some(permit) = refusing.try_acquire_arc() {
                log::warn!(
                    "http connection from {peer}: over max_connections ({max_connections}), 503"
                );
                smol::spawn(async move {
                    let _ = refuse_busy(stream, &shared).await;
                    drop(permit);
                })
                .detach();
            }
        }
    };
    accept.or(stop).await;
}

/// Answers a connection over the limit with 503 (through TLS when served).
async fn refuse_busy(stream: async_net::TcpStream, shared: &conn::Shared) -> std::io::Result<()> {
    let limit = shared.limits.header_timeout;
    let mut stream = match &shared.tls {
        Some(acceptor) => acceptor.accept(stream, limit).await?,
        None => hedwig::http::io::Stream::Plain(stream),
    };
    let why = "too many connections; retry";
    conn::refuse(
        &mut hedwig::http::io::Timed::new(&mut stream, limit, limit),
        503,
        why,
    )
    .await
}
