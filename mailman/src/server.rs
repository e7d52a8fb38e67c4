//! The accept loop: the allow list, the connection limit, and a graceful stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use futures_lite::{AsyncWriteExt, FutureExt};
use hedwig::smtp::reply::{replies, Reply};
use hedwig::smtp::session::allowed;
use hedwig::timeout::timeout;
use smol::Timer;

use crate::connection::{self, Shared};

/// Who may connect and how many at once.
#[derive(Debug)]
pub struct Limits {
    /// Client networks; others get 554.
    pub allow: Vec<ipnet::IpNet>,
    /// Sessions at once; more get 421.
    pub max_connections: usize,
}

/// Counts a live session for as long as it is held.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts on every listener until shutdown, then gives sessions in flight up
/// to `grace` to finish.
pub async fn run(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    grace: Duration,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            smol::spawn(accept_loop(
                l,
                shared.clone(),
                limits.clone(),
                active.clone(),
            ))
        })
        .collect();
    for l in loops {
        l.await;
    }
    // Sessions waiting for a command were told 421 already; wait for the rest.
    let deadline = Instant::now() + grace;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(20)).await;
    }
    let left = active.load(Ordering::SeqCst);
    if left > 0 {
        log::warn!("stopping with {left} sessions still open after {grace:?}");
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    active: Arc<AtomicUsize>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shared.shutdown.wait().await;
                None
            })
            .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                // Out of file descriptors and the like: wait, do not spin.
                log::error!("accept on {:?}: {e}", listener.local_addr());
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        if !allowed(peer.ip(), &limits.allow) {
            log::warn!("refused client {peer}: not in allow");
            smol::spawn(refuse(stream, replies::access_denied())).detach();
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "refused client {peer}: max_connections ({}) reached",
                limits.max_connections
            );
            smol::spawn(refuse(
                stream,
                replies::too_many_connections(&shared.session.hostname),
            ))
            .detach();
            continue;
        }
        let slot = Slot(active.clone());
        let shared = shared.clone();
        smol::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection::serve(stream, peer, shared).await {
                log::debug!("session with {peer} ended: {e}");
            }
        })
        .detach();
    }
}

/// Says why and closes, bounded so a client that does not read cannot hold us.
async fn refuse(mut stream: TcpStream, reply: Reply) {
    let bytes = reply.to_string();
    let write = stream.write_all(bytes.as_bytes());
    let _ = timeout(Duration::from_secs(10), "the refused client", write).await;
}

/// The address of a listener, for logs.
pub fn describe(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}
