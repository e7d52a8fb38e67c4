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
/// A server: its address, and the name TLS checks.
type Server = (SocketAddr, String);

/// Idle connections by server, each with the time it went idle.
/// Generic over the connection only so that its bounds can be tested
/// without servers.
#[derive(Debug)]
pub struct Pool<C = Client> {
    idle: Mutex<HashMap<Server, Vec<(C, Instant)>>>,
    /// Idle connections kept per server: as many as deliveries may run to
    /// one domain (`per_domain`), so a burst at full concurrency finds a
    /// connection for each of its messages. With fewer (8 before), 20
    /// deliveries to one server closed 12 connections after each round
    /// and opened 12 new ones: smtp-sink saw 604 sessions in a bench run
    /// of 4,000 messages, 18 to 21 now.
    per_server: usize,
    /// Idle connections kept in all (`concurrency`).
    total: usize,
}

impl<C> Pool<C> {
    /// A pool keeping at most `per_server` idle connections to one server
    /// and `total` in all.
    pub fn new(per_server: usize, total: usize) -> Pool<C> {
        Pool {
            idle: Mutex::new(HashMap::new()),
            per_server,
            total,
        }
    }

    /// An idle connection to `addr` (named `host`), if a fresh one is kept.
    pub fn take(&self, addr: SocketAddr, host: &str, now: Instant) -> Option<C> {
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

    /// Keeps `client` for the next message; returns it when the server has
    /// its `per_server` idle ones already, or the pool its `total`, for the
    /// caller to close.
    pub fn put(&self, addr: SocketAddr, host: &str, client: C, now: Instant) -> Option<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.values().map(Vec::len).sum::<usize>() >= self.total {
            return Some(client);
        }
        let list = idle.entry((addr, host.to_string())).or_default();
        if list.len() < self.per_server {
            list.push((client, now));
            None
        } else {
            Some(client)
        }
    }

    /// Takes out every connection idle for IDLE or longer, to be closed.
    pub fn sweep(&self, now: Instant) -> Vec<C> {
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

impl<C> Pool<C> {
    /// Takes out every idle connection, to be closed at shutdown.
    pub fn drain(&self) -> Vec<C> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_per_server_and_in_all_at_most_its_bounds() {
        let pool: Pool<u32> = Pool::new(3, 5);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:25".parse().unwrap(),
            "127.0.0.2:25".parse().unwrap(),
        );
        let now = Instant::now();
        // Three kept for a; the fourth comes back to be closed.
        for n in 0..3 {
            assert_eq!(pool.put(a, "a", n, now), None);
        }
        assert_eq!(pool.put(a, "a", 3, now), Some(3));
        // Two more for b fill the pool; the sixth comes back.
        assert_eq!(pool.put(b, "b", 10, now), None);
        assert_eq!(pool.put(b, "b", 11, now), None);
        assert_eq!(pool.put(b, "b", 12, now), Some(12));
        // Taken newest first, and only for the same server name.
        assert_eq!(pool.take(a, "a", now), Some(2));
        assert_eq!(pool.take(a, "other", now), None);
        assert_eq!(pool.put(b, "b", 12, now), None, "room again after a take");
        // Idle too long: not taken, swept.
        let later = now + IDLE;
        assert_eq!(pool.take(b, "b", later), None);
        let mut swept = pool.sweep(later);
        swept.sort_unstable();
        assert_eq!(swept, vec![0, 1, 10, 11, 12]);
        assert!(pool.drain().is_empty());
    }
}
