//! The HTTP API. This module (with [`routes`]) is the only place that knows
//! tide, async-h1 and http-types (unmaintained, pinned): replacing them
//! touches nothing else.
//!
//! Connections are accepted by async-net and served by async-h1 on smol's
//! executor; tide only routes. HTTPS, when configured, wraps each connection
//! in async-native-tls before async-h1 sees it.

mod routes;

use std::sync::Arc;
use std::time::Duration;

use async_net::TcpListener;
use futures_lite::FutureExt;
use smol::Timer;

use crate::metrics::Metrics;
use crate::queue::Queue;

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct State {
    /// The queue.
    pub queue: Queue,
    /// Accepted bearer tokens.
    pub tokens: Arc<Vec<String>>,
    /// Largest message body in bytes.
    pub max_message_size: u64,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Our hostname, for Message-IDs of composed messages.
    pub hostname: Arc<str>,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Whether the API is served over HTTPS (for the `Received:` header).
    pub https: bool,
}

/// The TLS acceptor when postoffice serves HTTPS itself.
pub type Tls = Option<Arc<async_native_tls::TlsAcceptor>>;

/// Builds a TLS acceptor from PEM files.
pub async fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<async_native_tls::TlsAcceptor, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("tls cert {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("tls key {}: {e}", key.display()))?;
    let identity = async_native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
        format!(
            "tls identity from {} and {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(async_native_tls::TlsAcceptor::from(
        native_tls::TlsAcceptor::new(identity).map_err(|e| format!("tls: {e}"))?,
    ))
}

/// Serves the API on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    state: State,
    tls: Tls,
    stop: impl std::future::Future<Output = ()>,
) {
    let app = Arc::new(routes::app(state));
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
            let app = app.clone();
            let tls = tls.clone();
            smol::spawn(async move {
                let result = match tls {
                    None => serve_one(stream, peer, &app).await,
                    Some(acceptor) => {
                        let handshake =
                            async { acceptor.accept(stream).await.map_err(|e| e.to_string()) }
                                .or(async {
                                    Timer::after(Duration::from_secs(30)).await;
                                    Err("tls handshake timed out".to_string())
                                })
                                .await;
                        match handshake {
                            Ok(tls_stream) => {
                                serve_one(
                                    async_dup::Arc::new(async_dup::Mutex::new(tls_stream)),
                                    peer,
                                    &app,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                if let Err(e) = result {
                    log::debug!("http connection from {peer}: {e}");
                }
            })
            .detach();
        }
    };
    accept.or(stop).await;
}

/// Serves HTTP/1.1 requests on one connection until it closes.
async fn serve_one<RW>(
    io: RW,
    peer: std::net::SocketAddr,
    app: &Arc<tide::Server<State>>,
) -> Result<(), String>
where
    RW: futures_lite::AsyncRead + futures_lite::AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    let app = app.clone();
    async_h1::accept(io, move |mut req| {
        let app = app.clone();
        // The client's address, for the Received: header of what it posts.
        req.set_peer_addr(Some(peer));
        async move { app.respond(req).await }
    })
    .await
    .map_err(|e| e.to_string())
}
