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
        while let Some((client, since)) = list.pop() {
            if now.duration_since(since) < IDLE {
                return Some(client);
            }
        }
        None
    }

    /// Keeps `client` for the next message; drops what has idled too long.
    pub fn put(&self, addr: SocketAddr, host: &str, client: Client, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping a connection closes it; the server sees EOF instead of QUIT, which is allowed.
        idle.retain(|_, list| {
            list.retain(|(_, since)| now.duration_since(*since) < IDLE);
            !list.is_empty()
        });
        let list = idle.entry((addr, host.to_string())).or_default();
        if list.len() < PER_SERVER {
            list.push((client, now));
        }
    }
}
