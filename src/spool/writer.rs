//! A message being written into the spool, from an async task: bytes gather
//! in a bounded buffer and go to the temp file on the blocking pool, so a
//! session never waits on the disk on the executor's thread, and a small
//! message reaches the disk in one write.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use super::commit::{Change, HookCall};
use super::Spool;
use crate::id::Id;

/// Buffered bytes are written out once this many are waiting: the most a
/// writer holds in memory beyond one caller's chunk. A message that fits
/// (with its head) is written by the committer with its batch, not in a
/// trip to the blocking pool of its own: at 100 KiB that took a tenth off the CPU per
/// message of both binaries (scripts/bench, against 64 KiB), for up to 64
/// KiB more per session and per hand-off in flight.
pub(super) const FLUSH_AT: usize = 128 * 1024;

/// A message being written; dropped without [`commit`](Writer::commit), its
/// file is removed, or kept for reuse (on the blocking pool).
#[derive(Debug)]
pub struct Writer {
    id: Id,
    spool: Spool,
    /// Bytes not yet written; the head comes first.
    buf: Vec<u8>,
    /// The file, once the first bytes went out.
    file: Option<File>,
    /// Where it is written: `tmp/ID`, or a reused file in `free/`.
    at: PathBuf,
    /// It is a reused file (longer than what we write, perhaps).
    reused: bool,
    to: PathBuf,
    /// The file may exist: it must go if the message is not committed.
    touched: bool,
    /// Bytes in the file: head and message.
    written: u64,
    /// Message bytes taken so far (the head not counted).
    size: u64,
}

impl Writer {
    pub(super) fn new(id: Id, head: Vec<u8>, tmp: PathBuf, to: PathBuf, spool: Spool) -> Writer {
        let mut buf = super::buffers::take(FLUSH_AT.min(head.len() + 8192));
        buf.extend_from_slice(&head);
        Writer {
            id,
            spool,
            buf,
            file: None,
            at: tmp,
            reused: false,
            to,
            touched: false,
            written: 0,
            size: 0,
        }
    }

    /// The message's id.
    pub fn id(&self) -> Id {
        self.id
    }

    /// Message bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.size += bytes.len() as u64;
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            // Doubling, but not past what a flush needs: a 100 KiB message
            // would otherwise hold 136 KiB.
            let grown = (self.buf.capacity() * 2).min(FLUSH_AT).max(needed);
            self.buf.reserve_exact(grown - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out what is buffered; the first time, into a file kept for
    /// reuse if there is one, else a new `tmp/ID`.
    async fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let file = self.file.take();
        let (at, reused) = (self.at.clone(), self.reused);
        let (id, hook, free) = (
            self.id,
            self.spool.hook().cloned(),
            self.spool.free().clone(),
        );
        self.touched = true;
        let (result, at, reused) = smol::unblock(move || {
            if let Some(hook) = hook {
                hook(id);
            }
            let (file, at, reused) = match file {
                Some(f) => (Ok(f), at, reused),
                None => free.open_for_write(&at),
            };
            let result = file.and_then(|mut f| f.write_all(&buf).map(|()| (f, buf)));
            (result, at, reused)
        })
        .await;
        self.at = at;
        self.reused = reused;
        let (file, mut buf) = result?;
        self.written += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }

    /// Makes the message durable: written, fsync'd, renamed into `queue/`,
    /// `queue/` fsync'd (with whatever other messages are committing now).
    /// After `Ok`, and only then, the message may be acknowledged. A
    /// message small enough to be buffered whole is written by the
    /// committer itself, with the rest of its batch.
    pub async fn commit(mut self) -> io::Result<()> {
        let change = if self.file.is_none() && !self.touched {
            Change::Write {
                bytes: std::mem::take(&mut self.buf),
                tmp: self.at.clone(),
                to: self.to.clone(),
                free: self.spool.free().clone(),
                hook: self.spool.hook().cloned().map(|h| HookCall(h, self.id)),
            }
        } else {
            if self.file.is_none() {
                // A flush failed: its error again, or a file to place.
                self.flush().await?;
            }
            let file = self.file.take().expect("the file is open");
            let rest = std::mem::take(&mut self.buf);
            // From here the committer owns the file: it renames it or removes it.
            self.touched = false;
            let len = self.reused.then_some(self.written + rest.len() as u64);
            Change::Place {
                file,
                rest,
                tmp: self.at.clone(),
                to: self.to.clone(),
                len,
            }
        };
        self.spool.committer().commit(change).await
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        super::buffers::give(std::mem::take(&mut self.buf));
        if self.touched {
            let at = std::mem::take(&mut self.at);
            drop(self.file.take());
            // A reused file goes back to `free/`: its content was junk anyway.
            if self.reused && self.spool.free().put(&at, self.written) {
                return;
            }
            smol::unblock(move || {
                let _ = std::fs::remove_file(at);
            })
            .detach();
        }
    }
}
