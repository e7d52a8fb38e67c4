//! hickory's [`RuntimeProvider`] over smol, so DNS runs on the same runtime as everything else.
//!
//! hickory-resolver 0.26 ships only a tokio provider. hedwig runs every task on smol, and a
//! second runtime would mean a second reactor and thread pool, so this module supplies
//! hickory's four needs from smol: spawning (`smol::spawn`), timers (`smol::Timer`),
//! UDP (`smol::Async<std::net::UdpSocket>`) and TCP (`smol::net::TcpStream`).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use hickory_resolver::net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};
use smol::net::TcpStream;
use smol::{Async, Timer};

/// Used when hickory asks for a TCP connection without a timeout of its own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs hickory's sockets, timers and background tasks on smol.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

/// Spawns hickory's background tasks (one per name server connection) on smol.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolHandle;

impl Spawn for SmolHandle {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        // hickory owns the connection's lifetime through its handle; the task ends with it.
        smol::spawn(future).detach();
    }
}

/// hickory's timer, backed by `smol::Timer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolTime;

#[async_trait::async_trait]
impl Time for SmolTime {
    async fn delay_for(duration: Duration) {
        Timer::after(duration).await;
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        async { Ok(future.await) }
            .or(async {
                Timer::after(duration).await;
                Err(io::Error::new(io::ErrorKind::TimedOut, "dns timed out"))
            })
            .await
    }
}

/// A non-blocking UDP socket registered with smol's reactor.
#[derive(Debug)]
pub struct SmolUdp(Async<UdpSocket>);

impl DnsUdpSocket for SmolUdp {
    type Time = SmolTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        // Try the socket first; wait for readiness only when it would block.
        loop {
            match self.0.get_ref().recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_readable(cx))?
                }
                res => return Poll::Ready(res),
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().send_to(buf, target) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_writable(cx))?
                }
                res => return Poll::Ready(res),
            }
        }
    }
}

/// A TCP stream to a name server; a newtype because hickory's trait and smol's type are both
/// foreign to this crate.
#[derive(Debug)]
pub struct SmolTcp(TcpStream);

impl DnsTcpStream for SmolTcp {
    type Time = SmolTime;
}

impl AsyncRead for SmolTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SmolTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl RuntimeProvider for SmolRuntime {
    type Handle = SmolHandle;
    type Timer = SmolTime;
    type Udp = SmolUdp;
    type Tcp = SmolTcp;

    fn create_handle(&self) -> Self::Handle {
        SmolHandle
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        Box::pin(async move {
            // async-net cannot bind before connecting, and hedwig never configures a source
            // address, so refuse loudly rather than silently ignore it.
            if bind_addr.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "dns over tcp from a fixed source address is not supported",
                ));
            }
            let wait = timeout.unwrap_or(CONNECT_TIMEOUT);
            let stream = TcpStream::connect(server_addr)
                .or(async {
                    Timer::after(wait).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "dns tcp connect timed out",
                    ))
                })
                .await?;
            // Queries are small and latency-bound; don't let Nagle hold them back.
            stream.set_nodelay(true)?;
            Ok(SmolTcp(stream))
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        // Binding never blocks, so the future is ready at once, as hickory asks.
        Box::pin(async move { Async::<UdpSocket>::bind(local_addr).map(SmolUdp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_returns_output_or_timed_out() {
        smol::block_on(async {
            let fast = SmolTime::timeout(Duration::from_secs(5), async { 7 }).await;
            assert_eq!(fast.unwrap(), 7);
            let slow = SmolTime::timeout(
                Duration::from_millis(10),
                futures_lite::future::pending::<()>(),
            )
            .await;
            assert_eq!(slow.unwrap_err().kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn udp_round_trip_on_loopback() {
        smol::block_on(async {
            let peer = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
            let peer_addr = peer.get_ref().local_addr().unwrap();
            let local = SmolRuntime
                .bind_udp("127.0.0.1:0".parse().unwrap(), peer_addr)
                .await
                .unwrap();
            local.send_to(b"ping", peer_addr).await.unwrap();
            let mut buf = [0; 16];
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            peer.send_to(b"pong", from).await.unwrap();
            let (n, _) = local.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"pong");
        });
    }

    #[test]
    fn tcp_connect_reaches_listener_and_refuses_bind_addr() {
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let connect = SmolRuntime.connect_tcp(addr, None, None);
            let (stream, accepted) = futures_lite::future::zip(connect, listener.accept()).await;
            assert!(stream.is_ok() && accepted.is_ok());
            let bound = SmolRuntime.connect_tcp(addr, Some(addr), None).await;
            assert_eq!(bound.unwrap_err().kind(), io::ErrorKind::Unsupported);
        });
    }
}
