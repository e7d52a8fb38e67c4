//! Byte streams under hyper: plain TCP or TLS behind one [`Stream`] type,
//! with `TCP_NODELAY` (a keep-alive request must not wait out Nagle and the
//! peer's delayed ACK, ~40 ms each), and [`Timed`], which bounds every read
//! and every write that makes no progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncRead, AsyncWrite};
use smol::Timer;

use crate::timeout::timeout;

/// Connects to `host:port` within `limit`, with `TCP_NODELAY` set.
pub async fn connect(host: &str, port: u16, limit: Duration) -> io::Result<TcpStream> {
    let what = format!("a connection to {host}:{port}");
    let stream = timeout(limit, &what, TcpStream::connect((host, port))).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TLS stream over TCP, as tokio-native-tls makes it.
type TlsStream = tokio_native_tls::TlsStream<Compat<ReadAhead<TcpStream>>>;

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<Compat<TlsStream>>),
}

impl Stream {
    /// Wraps a finished TLS handshake.
    pub fn tls(stream: TlsStream) -> Stream {
        Stream::Tls(Box::new(Compat(stream)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// TCP under TLS, read ahead: OpenSSL reads each record's 5-byte header,
/// then its body, two reads of the socket per record (its own read-ahead
/// is not reachable through native-tls); from this buffer, which holds a
/// whole record, it is one. Writes go straight through.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    buf: Box<[u8]>,
    /// Bytes of `buf` not yet read: `start..end`.
    start: usize,
    end: usize,
}

/// A TLS record at its largest (16 KiB of text, its overhead, the header).
const RECORD: usize = 16 * 1024 + 256 + 5;

impl<T> ReadAhead<T> {
    /// `inner`, read ahead.
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buf: vec![0; RECORD].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start == this.end {
            if out.len() >= this.buf.len() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.buf))?;
            (this.start, this.end) = (0, n);
        }
        let n = (this.end - this.start).min(out.len());
        out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
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

/// One stream seen through the other family of I/O traits: futures-io
/// (smol) as tokio-io (tokio-native-tls) and back.
#[derive(Debug)]
pub struct Compat<T>(pub T);

impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> tokio::io::AsyncWrite for Compat<T> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl<T: tokio::io::AsyncRead + Unpin> AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

/// A stream whose reads and writes fail with `TimedOut` when one waits
/// longer than its limit without progress; it also remembers whether the
/// peer sent anything since our last write (a request under way, not an
/// idle keep-alive connection).
#[derive(Debug)]
pub struct Timed<S> {
    inner: S,
    read_limit: Duration,
    write_limit: Duration,
    read_timer: Option<Timer>,
    write_timer: Option<Timer>,
    read_since_write: bool,
}

impl<S> Timed<S> {
    /// `inner` with a limit on each read and on each write.
    pub fn new(inner: S, read_limit: Duration, write_limit: Duration) -> Timed<S> {
        Timed {
            inner,
            read_limit,
            write_limit,
            read_timer: None,
            write_timer: None,
            read_since_write: false,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether bytes arrived since the last write (or since the start).
    pub fn read_since_write(&self) -> bool {
        self.read_since_write
    }
}

/// Polls `timer` (armed at `limit` from now if unarmed): a timeout error
/// once it fires, `Pending` before.
fn expired(
    timer: &mut Option<Timer>,
    limit: Duration,
    what: &str,
    cx: &mut Context<'_>,
) -> Poll<io::Error> {
    let t = timer.get_or_insert_with(|| Timer::after(limit));
    ready!(Pin::new(t).poll(cx));
    *timer = None;
    Poll::Ready(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} made no progress for {limit:?}"),
    ))
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.read_timer = None;
            if matches!(r, Ok(n) if n > 0) {
                this.read_since_write = true;
            }
            return Poll::Ready(r);
        }
        expired(&mut this.read_timer, this.read_limit, "read", cx).map(Err)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_write(cx, buf) {
            this.write_timer = None;
            this.read_since_write = false;
            return Poll::Ready(r);
        }
        expired(&mut this.write_timer, this.write_limit, "write", cx).map(Err)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_flush(cx) {
            this.write_timer = None;
            return Poll::Ready(r);
        }
        expired(&mut this.write_timer, this.write_limit, "flush", cx).map(Err)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_close(cx) {
            this.write_timer = None;
            return Poll::Ready(r);
        }
        expired(&mut this.write_timer, this.write_limit, "close", cx).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_silent_peer_times_out_a_read_and_a_talking_one_does_not() {
        smol::block_on(async {
            let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = connect("127.0.0.1", addr.port(), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(client.nodelay().unwrap());
            let (mut server, _) = listener.accept().await.unwrap();
            let limit = Duration::from_millis(50);
            let mut timed = Timed::new(Stream::Plain(client), limit, limit);
            assert!(!timed.read_since_write());
            server.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 4];
            assert_eq!(timed.read(&mut buf).await.unwrap(), 1);
            assert!(timed.read_since_write());
            timed.write_all(b"y").await.unwrap();
            assert!(!timed.read_since_write());
            let e = timed.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(e.to_string(), "read made no progress for 50ms");
        });
    }

    #[test]
    fn read_ahead_hands_over_every_byte_in_order_whatever_the_read_sizes() {
        smol::block_on(async {
            let data: Vec<u8> = (0..3 * RECORD + 17).map(|i| (i % 251) as u8).collect();
            let mut ahead = ReadAhead::new(futures_lite::io::Cursor::new(data.clone()));
            let mut got = Vec::new();
            // TLS-like: a 5-byte header, then a body; now and then a read
            // bigger than the buffer, which goes straight to the stream.
            for size in [5, 16_384, 5, 1, 2 * RECORD, 7, 100_000].iter().cycle() {
                let mut buf = vec![0; *size];
                let n = ahead.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, data);
        });
    }
}

/// Most bytes one read asks of a stream under hyper.
const READ_CHUNK: usize = 64 << 10;

thread_local! {
    /// Where [`HyperIo`] reads before hyper's buffer: zeroed once per thread.
    static BOUNCE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}

/// hyper's I/O traits over a futures-io stream, as smol-hyper's `FuturesIo`
/// but for its reads: futures-io reads into initialized memory, and
/// `FuturesIo` zeroes all of hyper's spare read buffer (up to hundreds of
/// KiB) on every poll, also the polls that find nothing to read: 5% of
/// postoffice's CPU at 100 KiB messages. Here a read goes into a buffer of
/// the thread's, zeroed once, and what came is copied into hyper's: the
/// copy is of the bytes read, not of the buffer's size, and a poll that
/// finds nothing costs nothing. (Without `unsafe`, which the crate denies.)
#[derive(Debug)]
pub struct HyperIo<T>(pub T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_CHUNK);
        BOUNCE.with(|bounce| {
            // Not re-entered: the stream's own read never reaches a HyperIo.
            let mut bounce = bounce.borrow_mut();
            let n = ready!(Pin::new(&mut self.0).poll_read(cx, &mut bounce[..want]))?;
            buf.put_slice(&bounce[..n]);
            Poll::Ready(Ok(()))
        })
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
