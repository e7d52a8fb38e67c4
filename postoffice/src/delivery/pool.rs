//! Idle SMTP connections kept a moment for the next message to the same
//! server, as Postfix's connection cache does: a burst of mail to one domain
//! then costs one TCP and TLS handshake, not one per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::Client;

/// How long an idle connection is kept (Postfix's smtp_connection_cache_time_limit is 2s).
const IDLE: Duration = Duration::from_secs(2);
/// Idle connections kept per server.
const PER_SERVER: usize = 8;

/// A server: its address, and the name TLS checks.
type Server = (SocketAddr, String);

/// Idle connections by server, each with the time it went idle.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<HashMap<Server, Vec<(Client, Instant)>>>,
}

impl Pool {
    /// An idle connection to `addr` (named `host`), if a fresh one is kept.
    pub fn take(&self, addr: SocketAddr, host: &str, now: Instant) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&(addr, host.to_string()))?;
        // The newest is last; if it has idled too long, so have the rest,
        // which the next sweep closes.
        let (_, since) = list.last()?;
        if now.duration_since(*since) < IDLE {
            list.pop().map(|(client, _)| client)
        } else {
            None
        }
    }

    /// Keeps `client` for the next message; returns it when the server
    /// already has PER_SERVER idle ones, for the caller to close.
    pub fn put(
        &self,
        addr: SocketAddr,
        host: &str,
        client: Client,
        now: Instant,
    ) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry((addr, host.to_string())).or_default();
        if list.len() < PER_SERVER {
            list.push((client, now));
            None
        } else {
            Some(client)
        }
    }

    /// Takes out every connection idle for IDLE or longer, to be closed.
    pub fn sweep(&self, now: Instant) -> Vec<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale = Vec::new();
        idle.retain(|_, list| {
            let fresh = list.partition_point(|(_, since)| now.duration_since(*since) >= IDLE);
            stale.extend(list.drain(..fresh).map(|(client, _)| client));
            !list.is_empty()
        });
        stale
    }
}

impl Pool {
    /// Takes out every idle connection, to be closed at shutdown.
    pub fn drain(&self) -> Vec<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain()
            .flat_map(|(_, list)| list)
            .map(|(c, _)| c)
            .collect()
    }
}

/// Closes connections off the pool with QUIT, in the background.
pub fn close_all(clients: impl IntoIterator<Item = Client>) {
    for client in clients {
        smol::spawn(client.quit()).detach();
    }
}

/// Sweeps `pool` every IDLE, closing what idled too long, until the pool is
/// gone.
pub async fn sweeper(pool: std::sync::Weak<Pool>) {
    loop {
        smol::Timer::after(IDLE).await;
        let Some(pool) = pool.upgrade() else { return };
        close_all(pool.sweep(Instant::now()));
    }
}
