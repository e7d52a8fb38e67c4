//! The durable spool: one file per message, envelope on top, message below.
//!
//! A message is written to `tmp/ID`, synced, renamed into `queue/ID`, and the
//! `queue/` directory is synced; only then does it exist, and only then may it
//! be acknowledged. A crash before the rename leaves a file in `tmp/`, which
//! the next start removes: it was never acknowledged, so nothing is lost, and
//! a half-written file can never be forwarded. Messages the next hop refused
//! for good move to `failed/`, where an operator can look at them.
//!
//! The syncs and renames of concurrent messages are done together by one
//! committer ([`commit`]): a batch of messages costs one fsync each and one
//! fsync of `queue/` in all, and each is acknowledged only after that. A
//! removed message's file is kept in `free/` and written over by a later
//! message ([`free`]): ext4 makes creating files dear for a queue.
//!
//! File format (text up to the blank line, then the message bytes):
//!
//! ```text
//! hedwig-spool 1
//! from a@example.org      (empty after "from " for the null sender)
//! to b@example.org
//! to c@example.org
//! key 66159EB4A09C63F1A2  (optional: the sender's Idempotency-Key)
//!
//! Received: ...
//! ```

mod blocking;
pub mod buffers;
mod commit;
mod format;
mod free;
mod writer;

pub use blocking::BlockingWriter;
pub use commit::{sync_dir, Change, Committer};
pub use format::{read_head, Head};
pub use free::FreeFiles;
pub use writer::Writer;

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::envelope::Envelope;
use crate::id::Id;

/// Messages up to this size are read whole by [`Spool::open_message`]: one
/// trip to the blocking pool instead of one per read. (mailman reads at most
/// `postoffice.concurrency` at once.)
const READ_WHOLE: u64 = 1 << 20;

/// A message's bytes, as [`Spool::open_message`] gives them.
#[derive(Debug)]
pub enum Body {
    /// Read whole (a small message).
    Bytes(Vec<u8>),
    /// The file, positioned at the message (a large one).
    File(File),
}

/// Runs on the blocking thread before each write of message bytes; see
/// [`Spool::with_write_hook`].
pub type WriteHook = Arc<dyn Fn(Id) + Send + Sync>;

/// A spool directory. Every method that touches the disk is async and does
/// its file work on smol's blocking pool, never on the executor: one slow
/// disk then slows the sessions that wait for it, not every session.
#[derive(Clone)]
pub struct Spool {
    root: Arc<Path>,
    committer: Committer,
    hook: Option<WriteHook>,
    free: FreeFiles,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("root", &self.root).finish()
    }
}

impl Spool {
    /// Opens (creating) the spool at `root` and removes what a crash left in
    /// `tmp/`: those messages were never acknowledged. Blocking: call it
    /// before serving, or from the blocking pool.
    pub fn open(root: &Path) -> io::Result<Spool> {
        for dir in ["tmp", "queue", "failed"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let entry = entry?;
            log::info!("removing unfinished spool file {}", entry.path().display());
            fs::remove_file(entry.path())?;
        }
        Ok(Spool {
            root: root.into(),
            committer: Committer::start(),
            hook: None,
            free: FreeFiles::open(&root.join("free"))?,
        })
    }

    /// The spool at `root` as it is, for a command that looks at it beside
    /// the running daemon: nothing is created, nothing cleared.
    pub fn at(root: &Path) -> Spool {
        Spool {
            root: root.into(),
            committer: Committer::start(),
            hook: None,
            free: FreeFiles::none(&root.join("free")),
        }
    }

    /// The same spool with `hook` run before each write of message bytes,
    /// on the blocking thread that does it: tests slow the disk down with
    /// it, to show that a slow write holds up only its own session.
    pub fn with_write_hook(mut self, hook: WriteHook) -> Spool {
        self.hook = Some(hook);
        self
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where message `id` lives once committed.
    pub fn queued(&self, id: Id) -> PathBuf {
        self.dir("queue").join(id.to_string())
    }

    /// The committer this spool's changes go through, for other files that
    /// must be durable with them (postoffice's delivery records).
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Starts writing message `id`; nothing touches the disk until enough
    /// bytes are written, and nothing is visible until [`Writer::commit`].
    /// `key` is the idempotency key it arrived with, if any.
    pub fn create(&self, id: Id, envelope: &Envelope, key: Option<&str>) -> Writer {
        let head = format::write_head(envelope, key);
        let tmp = self.dir("tmp").join(id.to_string());
        Writer::new(id, head, tmp, self.queued(id), self.clone())
    }

    pub(crate) fn hook(&self) -> Option<&WriteHook> {
        self.hook.as_ref()
    }

    pub(crate) fn free(&self) -> &FreeFiles {
        &self.free
    }

    /// The change that removes message `id` (for callers that commit it
    /// together with others): its file goes to `free/` for reuse.
    pub fn removal(&self, id: Id) -> Change {
        let name = id.to_string();
        Change::Recycle {
            from: self.queued(id),
            to: self.free.path(&name),
            free: self.free.clone(),
        }
    }

    /// Ids of the queued messages, oldest first.
    pub async fn list(&self) -> io::Result<Vec<Id>> {
        let queue = self.dir("queue");
        smol::unblock(move || list(&queue)).await
    }

    /// The heads of messages `ids` and their message sizes, in one trip to
    /// the blocking pool (a start-up scan reads thousands).
    pub async fn read_heads(&self, ids: Vec<Id>) -> Vec<(Id, io::Result<(Head, u64)>)> {
        let this = self.clone();
        smol::unblock(move || ids.into_iter().map(|id| (id, this.read_head(id))).collect()).await
    }

    /// Opens message `id`: its head, the message bytes (read whole when
    /// small, else the file positioned at them) and their length, in one trip
    /// to the blocking pool.
    pub async fn open_message(&self, id: Id) -> io::Result<(Head, Body, u64)> {
        let path = self.queued(id);
        smol::unblock(move || open_blocking(&path)).await
    }

    /// Reads several messages whole, in one trip to the blocking pool (a
    /// batched hand-off), as long as their files fit in `budget` bytes in
    /// all: one that does not is not read (None), and goes alone.
    pub async fn read_batch(
        &self,
        ids: Vec<Id>,
        budget: u64,
    ) -> Vec<(Id, io::Result<Option<(Head, Vec<u8>)>>)> {
        let this = self.clone();
        smol::unblock(move || {
            let mut left = budget;
            let mut read = |id| {
                let mut file = File::open(this.queued(id))?;
                let size = file.metadata()?.len();
                if size > left {
                    return Ok(None);
                }
                left -= size;
                read_whole(&mut file, size).map(Some)
            };
            ids.into_iter().map(|id| (id, read(id))).collect()
        })
        .await
    }

    /// Reads message `id` whole.
    pub async fn read(&self, id: Id) -> io::Result<(Head, Vec<u8>)> {
        let this = self.clone();
        smol::unblock(move || this.read_blocking(id)).await
    }

    /// [`Spool::read`] for callers already on the blocking pool.
    pub fn read_blocking(&self, id: Id) -> io::Result<(Head, Vec<u8>)> {
        let mut file = File::open(self.queued(id))?;
        let size = file.metadata()?.len();
        read_whole(&mut file, size)
    }

    /// Reads only the head of message `id`, and the message's size
    /// (blocking: for callers already on the blocking pool).
    pub fn read_head(&self, id: Id) -> io::Result<(Head, u64)> {
        let file = File::open(self.queued(id))?;
        let len = file.metadata()?.len();
        let (head, offset) = read_head(BufReader::with_capacity(4096, file))?;
        Ok((head, len - offset))
    }

    /// Removes message `id` after the next hop took it, durably (with
    /// whatever else the committer has waiting). Gone already is fine.
    pub async fn remove(&self, id: Id) -> io::Result<()> {
        self.committer.commit(self.removal(id)).await
    }

    /// Moves message `id` to `failed/`, keeping it for the operator.
    pub async fn fail(&self, id: Id) -> io::Result<PathBuf> {
        let to = self.dir("failed").join(id.to_string());
        let from = self.queued(id);
        self.committer
            .commit(Change::Rename {
                from,
                to: to.clone(),
            })
            .await?;
        Ok(to)
    }
}

/// The ids in `queue/`, sorted; other names are logged and left alone.
fn list(queue: &Path) -> io::Result<Vec<Id>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(queue)? {
        let name = entry?.file_name();
        match name.to_str().and_then(|n| n.parse::<Id>().ok()) {
            Some(id) => ids.push(id),
            None => log::warn!("ignoring stray file {:?} in {}", name, queue.display()),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The head of the spool file `file` and the file positioned at the message,
/// with its length.
fn at_message(mut file: File) -> io::Result<(Head, File, u64)> {
    let (head, offset) = read_head(BufReader::new(&mut file))?;
    let len = file.metadata()?.len() - offset;
    file.seek(SeekFrom::Start(offset))?;
    Ok((head, file, len))
}

/// The head and the message bytes of the spool file `file`, `size` bytes
/// long. The message is read to its known end, not to end of file: that
/// would cost a stat, a seek and a read that finds nothing, per message.
/// Opens a spooled message: read whole when small, else positioned at its
/// message bytes.
fn open_blocking(path: &Path) -> io::Result<(Head, Body, u64)> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    if size <= READ_WHOLE {
        let (head, bytes) = read_whole(&mut file, size)?;
        let len = bytes.len() as u64;
        return Ok((head, Body::Bytes(bytes), len));
    }
    let (head, file, len) = at_message(file)?;
    Ok((head, Body::File(file), len))
}

fn read_whole(file: &mut File, size: u64) -> io::Result<(Head, Vec<u8>)> {
    let mut reader = BufReader::with_capacity(4096, file);
    let (head, offset) = read_head(&mut reader)?;
    let len = size.saturating_sub(offset);
    // The message into a kept buffer (see [`buffers`]), after the head.
    let mut message = buffers::take(len as usize);
    reader.take(len).read_to_end(&mut message)?;
    if (message.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("spool file: {} of {len} message bytes", message.len()),
        ));
    }
    Ok((head, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Address;

    fn envelope() -> Envelope {
        Envelope {
            from: None,
            to: vec![
                Address::parse("a@b").unwrap(),
                Address::parse("c@d").unwrap(),
            ],
        }
    }

    fn id(s: &str) -> Id {
        s.parse().unwrap()
    }

    #[test]
    fn write_commit_list_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (a, b) = (id("00000000000000000A"), id("00000000000000000B"));
        smol::block_on(async {
            let mut w = spool.create(b, &envelope(), Some("k1"));
            w.write(b"Subject: x\r\n\r\nhi\r\n").await.unwrap();
            // Not visible before commit.
            assert!(spool.list().await.unwrap().is_empty());
            w.commit().await.unwrap();
            spool.create(a, &envelope(), None).commit().await.unwrap();
            assert_eq!(spool.list().await.unwrap(), [a, b]);
            let (head, body) = spool.read(b).await.unwrap();
            assert_eq!(
                head,
                Head {
                    envelope: envelope(),
                    key: Some("k1".into())
                }
            );
            let heads = spool.read_heads(vec![b]).await;
            assert_eq!(heads[0].1.as_ref().unwrap().1, body.len() as u64);
            assert_eq!(body, b"Subject: x\r\n\r\nhi\r\n");
            spool.remove(b).await.unwrap();
            spool.remove(b).await.unwrap();
            let failed = spool.fail(a).await.unwrap();
            assert!(failed.exists());
            assert!(spool.list().await.unwrap().is_empty());
        });
    }

    #[test]
    fn big_messages_are_written_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let a = id("00000000000000001A");
        smol::block_on(async {
            let mut w = spool.create(a, &envelope(), None);
            for chunk in body.chunks(10_000) {
                w.write(chunk).await.unwrap();
            }
            assert_eq!(w.size(), body.len() as u64);
            w.commit().await.unwrap();
            assert_eq!(spool.read(a).await.unwrap().1, body);
        });
    }

    #[test]
    fn dropped_writer_and_leftover_tmp_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        smol::block_on(async {
            let mut w = spool.create(id("00000000000000000C"), &envelope(), None);
            // More than a writer buffers: the file exists.
            w.write(&vec![b'x'; writer::FLUSH_AT + 10_000])
                .await
                .unwrap();
            assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 1);
            drop(w);
        });
        let tmp_empty = || fs::read_dir(dir.path().join("tmp")).unwrap().count() == 0;
        for _ in 0..100 {
            if tmp_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(tmp_empty());
        // A crash leaves a temp file; the next open clears it.
        fs::write(dir.path().join("tmp/00000000000000000D"), b"partial").unwrap();
        Spool::open(dir.path()).unwrap();
        assert!(tmp_empty());
    }

    #[test]
    fn removed_files_are_reused_and_cut_to_length() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (a, b, c) = (
            id("00000000000000002A"),
            id("00000000000000002B"),
            id("00000000000000002C"),
        );
        let count = |sub: &str| fs::read_dir(dir.path().join(sub)).unwrap().count();
        smol::block_on(async {
            let mut w = spool.create(a, &envelope(), None);
            w.write(&[b'a'; 5000]).await.unwrap();
            w.commit().await.unwrap();
            spool.remove(a).await.unwrap();
            assert_eq!((count("queue"), count("free")), (0, 1), "kept for reuse");
            // B reuses A's file: shorter, so cut to its own length.
            let mut w = spool.create(b, &envelope(), None);
            w.write(b"short\r\n").await.unwrap();
            w.commit().await.unwrap();
            assert_eq!((count("queue"), count("free")), (1, 0));
            assert_eq!(spool.read(b).await.unwrap().1, b"short\r\n");
            spool.remove(b).await.unwrap();
            // A writer dropped before its commit gives the file back.
            let mut w = spool.create(c, &envelope(), None);
            let big = writer::FLUSH_AT + 10_000;
            w.write(&vec![b'c'; big]).await.unwrap();
            assert!(spool.free().take().is_none(), "taken by the writer");
            drop(w);
            let back = spool.free().take().expect("given back");
            assert!(spool.free().put(&back, big as u64));
            assert_eq!(count("free"), 1);
        });
        // Kept across a restart.
        let spool = Spool::open(dir.path()).unwrap();
        smol::block_on(async {
            let mut w = spool.create(c, &envelope(), Some("k"));
            w.write(b"again\r\n").await.unwrap();
            w.commit().await.unwrap();
            assert_eq!(spool.read(c).await.unwrap().1, b"again\r\n");
        });
        assert_eq!(count("free"), 0);
    }

    #[test]
    fn big_messages_are_streamed_and_huge_files_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = id("00000000000000003A");
        let huge = free::MAX_BYTES as usize + 1;
        smol::block_on(async {
            let mut w = spool.create(a, &envelope(), None);
            w.write(&vec![b'x'; huge]).await.unwrap();
            w.commit().await.unwrap();
            let (_, body, len) = spool.open_message(a).await.unwrap();
            assert!(matches!(body, Body::File(_)) && len == huge as u64);
            spool.remove(a).await.unwrap();
        });
        assert_eq!(fs::read_dir(dir.path().join("free")).unwrap().count(), 0);
    }

    #[test]
    fn stray_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::write(dir.path().join("queue/README"), b"x").unwrap();
        assert!(smol::block_on(spool.list()).unwrap().is_empty());
    }
}
