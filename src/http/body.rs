//! Bodies between hyper and http-types, streamed chunk by chunk both ways:
//! [`Incoming`] reads what hyper receives as the `AsyncBufRead` that
//! http-types (and so tide and surf) expects, [`Outgoing`] gives hyper what
//! http-types holds. Neither collects a body in memory.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::{AsyncBufRead, AsyncRead};
use http_body::{Body, Frame, SizeHint};

/// Called once when a body has been read to its end (the client puts its
/// connection back in the pool).
pub type OnEnd = Box<dyn FnOnce() + Send + Sync>;

/// A received body as `AsyncBufRead`.
pub struct Incoming {
    // hyper's body is Send but not Sync, which http-types asks for; the
    // lock is never contended (one reader).
    body: std::sync::Mutex<hyper::body::Incoming>,
    chunk: Bytes,
    done: bool,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("done", &self.done)
            .finish()
    }
}

impl Incoming {
    /// Reads `body`; `on_end` runs once its end has been read.
    pub fn new(body: hyper::body::Incoming, on_end: Option<OnEnd>) -> Incoming {
        Incoming {
            body: std::sync::Mutex::new(body),
            chunk: Bytes::new(),
            done: false,
            on_end,
        }
    }
}

impl Incoming {
    fn lock(&self) -> std::sync::MutexGuard<'_, hyper::body::Incoming> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl AsyncBufRead for Incoming {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.chunk.is_empty() && !this.done {
            let frame = ready!(Pin::new(&mut *this.lock()).poll_frame(cx));
            match frame {
                // Trailers carry nothing hedwig uses.
                Some(Ok(frame)) => this.chunk = frame.into_data().unwrap_or_default(),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => this.finish(),
            }
        }
        Poll::Ready(Ok(&this.chunk))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.chunk.advance(amt);
        // A reader that knows the length (http-types does) stops at it and
        // never polls for the end: the last byte taken is the end.
        if this.chunk.is_empty() && !this.done && this.lock().is_end_stream() {
            this.finish();
        }
    }
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let chunk = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// A body to send: nothing, bytes in hand, or an http-types body read as it goes.
pub enum Outgoing {
    /// Bytes in hand (an answer); taken when sent.
    Full(Option<Bytes>),
    /// Read chunk by chunk; `len` is the length when known (Content-Length,
    /// else hyper sends it chunked).
    Stream {
        /// The body.
        body: http_types::Body,
        /// Its length when known.
        len: Option<u64>,
    },
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Full(b) => write!(f, "Full({:?} bytes)", b.as_ref().map(Bytes::len)),
            Outgoing::Stream { len, .. } => write!(f, "Stream({len:?} bytes)"),
        }
    }
}

impl Outgoing {
    /// `bytes`, sent with their length.
    pub fn full(bytes: impl Into<Bytes>) -> Outgoing {
        Outgoing::Full(Some(bytes.into()))
    }

    /// An http-types body, streamed.
    pub fn stream(body: http_types::Body) -> Outgoing {
        let len = body.len().map(|n| n as u64);
        Outgoing::Stream { body, len }
    }
}

/// Largest frame of a streamed body.
const FRAME: usize = 16 * 1024;

impl Body for Outgoing {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Outgoing::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Outgoing::Stream { body, .. } => {
                let mut body = Pin::new(body);
                let chunk = ready!(body.as_mut().poll_fill_buf(cx))?;
                if chunk.is_empty() {
                    return Poll::Ready(None);
                }
                // In frames of at most 16 KiB: what hyper writes out at once
                // anyway, and an allocation malloc reuses while it is warm
                // (a whole 100 KiB message in one is faulted in afresh).
                let data = Bytes::copy_from_slice(&chunk[..chunk.len().min(FRAME)]);
                body.consume(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Outgoing::Stream { len, .. } => *len == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Outgoing::Stream { len: Some(n), .. } => SizeHint::with_exact(*n),
            Outgoing::Stream { len: None, .. } => SizeHint::default(),
        }
    }
}
