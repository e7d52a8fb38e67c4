//! One way to bound a network wait, used for every socket read, write,
//! connect and handshake in both binaries: a peer that stops reading or
//! writing costs its session a timeout, never a slot forever.

use std::future::Future;
use std::io;
use std::time::Duration;

use futures_lite::FutureExt;

/// Runs `fut`, failing with [`io::ErrorKind::TimedOut`] ("timed out after
/// 5s waiting for a reply") when it takes longer than `t`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let slow = async {
///     smol::Timer::after(Duration::from_secs(5)).await;
///     Ok(())
/// };
/// let e = smol::block_on(hedwig::timeout::timeout(Duration::from_millis(10), "a reply", slow))
///     .unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(e.to_string(), "timed out after 10ms waiting for a reply");
/// ```
pub async fn timeout<T>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    fut.or(async {
        smol::Timer::after(t).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {t:?} waiting for {what}"),
        ))
    })
    .await
}

/// A reader that fails with [`io::ErrorKind::TimedOut`] once `deadline`
/// has passed: bounds the whole of a body that is streamed somewhere, a
/// slow client costing its request a timeout, never a slot forever.
///
/// # Examples
///
/// ```
/// use futures_lite::AsyncReadExt;
/// use std::time::{Duration, Instant};
/// let mut r = hedwig::timeout::Deadline::new(&b"abc"[..], Instant::now() + Duration::from_secs(5));
/// let mut s = String::new();
/// smol::block_on(r.read_to_string(&mut s)).unwrap();
/// assert_eq!(s, "abc");
/// ```
#[derive(Debug)]
pub struct Deadline<R> {
    inner: R,
    timer: smol::Timer,
    deadline: std::time::Instant,
}

impl<R> Deadline<R> {
    /// `inner`, readable until `deadline`.
    pub fn new(inner: R, deadline: std::time::Instant) -> Deadline<R> {
        Deadline {
            inner,
            timer: smol::Timer::at(deadline),
            deadline,
        }
    }
}

impl<R: futures_lite::AsyncRead + Unpin> futures_lite::AsyncRead for Deadline<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::future::Future;
        use std::task::Poll;
        if let Poll::Ready(result) = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            return Poll::Ready(result);
        }
        if std::pin::Pin::new(&mut self.timer).poll(cx).is_ready() {
            let late = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("body not complete by its deadline ({:?})", self.deadline),
            );
            return Poll::Ready(Err(late));
        }
        Poll::Pending
    }
}
