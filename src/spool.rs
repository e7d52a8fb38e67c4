//! The durable spool: one file per message, envelope on top, message below.
//!
//! A message is written to `tmp/ID`, synced, renamed into `queue/ID`, and the
//! `queue/` directory is synced; only then does it exist, and only then may it
//! be acknowledged. A crash before the rename leaves a file in `tmp/`, which
//! the next start removes: it was never acknowledged, so nothing is lost, and
//! a half-written file can never be forwarded. [`Spool::create_in`] writes the
//! same way within one directory (`sendmail`'s drop directory). Messages the next hop refused
//! for good move to `failed/`, where an operator can look at them.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::envelope::Envelope;
use crate::smtp::address::Address;

const MAGIC: &str = "hedwig-spool 1";

/// A spool directory.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool at `root` and removes what a crash left in
    /// `tmp/`: those messages were never acknowledged.
    pub fn open(root: &Path) -> io::Result<Spool> {
        let spool = Spool {
            root: root.to_path_buf(),
        };
        for dir in ["tmp", "queue", "failed"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(spool.dir("tmp"))? {
            let entry = entry?;
            log::info!("removing unfinished spool file {}", entry.path().display());
            fs::remove_file(entry.path())?;
        }
        Ok(spool)
    }

    /// The spool at `root` as it is, for a command that looks at it beside
    /// the running daemon: nothing is created, nothing cleared.
    pub fn at(root: &Path) -> Spool {
        Spool {
            root: root.to_path_buf(),
        }
    }

    /// The spool's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Starts writing message `id`; nothing is visible until [`Writer::commit`].
    /// `key` is the idempotency key it arrived with, if any.
    pub fn create(&self, id: &str, envelope: &Envelope, key: Option<&str>) -> io::Result<Writer> {
        let (tmp, queue) = (self.dir("tmp").join(id), self.dir("queue"));
        Writer::start(tmp, queue.join(id), queue, envelope, key, None)
    }

    /// Starts writing a spool file `dir/ID` through `dir/.ID.tmp` (the same
    /// directory, for writers that may use no other: the drop directory),
    /// with exactly `mode` whatever the umask; committed like a message.
    pub fn create_in(dir: &Path, id: &str, envelope: &Envelope, mode: u32) -> io::Result<Writer> {
        let tmp = dir.join(format!(".{id}.tmp"));
        Writer::start(
            tmp,
            dir.join(id),
            dir.to_path_buf(),
            envelope,
            None,
            Some(mode),
        )
    }

    /// Ids of the queued messages, oldest first.
    pub fn list(&self) -> io::Result<Vec<String>> {
        self.list_in("queue")
    }

    /// Ids of the messages in `failed/`, oldest first.
    pub fn list_failed(&self) -> io::Result<Vec<String>> {
        self.list_in("failed")
    }

    /// The file of message `id` in `queue/` or, when `failed`, in `failed/`.
    pub fn path(&self, id: &str, failed: bool) -> PathBuf {
        self.dir(if failed { "failed" } else { "queue" }).join(id)
    }

    fn list_in(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.dir(dir))? {
            let name = entry?.file_name();
            match name.to_str() {
                Some(id) if crate::id::is_valid(id) => ids.push(id.to_string()),
                _ => log::warn!(
                    "ignoring stray file {:?} in {}",
                    name,
                    self.dir(dir).display()
                ),
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Opens message `id`: its head, and the file positioned at the message
    /// bytes, with their length.
    pub fn open_message(&self, id: &str) -> io::Result<(Head, File, u64)> {
        let mut file = File::open(self.dir("queue").join(id))?;
        let (head, offset) = read_head(BufReader::new(&mut file))?;
        let len = file.metadata()?.len() - offset;
        file.seek(SeekFrom::Start(offset))?;
        Ok((head, file, len))
    }

    /// Reads message `id` whole.
    pub fn read(&self, id: &str) -> io::Result<(Head, Vec<u8>)> {
        let (head, mut file, len) = self.open_message(id)?;
        let mut body = Vec::with_capacity(len as usize);
        file.read_to_end(&mut body)?;
        Ok((head, body))
    }

    /// Reads only the head of message `id` (for a start-up scan).
    pub fn read_head(&self, id: &str) -> io::Result<(Head, u64)> {
        let file = File::open(self.dir("queue").join(id))?;
        let len = file.metadata()?.len();
        let (head, offset) = read_head(BufReader::with_capacity(4096, file))?;
        Ok((head, len - offset))
    }

    /// Removes message `id` after the next hop took it.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        fs::remove_file(self.dir("queue").join(id))
    }

    /// Puts message `id` from `failed/` back into `queue/`, durably.
    pub fn requeue(&self, id: &str) -> io::Result<()> {
        fs::rename(self.dir("failed").join(id), self.dir("queue").join(id))?;
        sync_dir(&self.dir("queue"))
    }

    /// Moves message `id` to `failed/`, keeping it for the operator.
    pub fn fail(&self, id: &str) -> io::Result<PathBuf> {
        let to = self.dir("failed").join(id);
        fs::rename(self.dir("queue").join(id), &to)?;
        sync_dir(&self.dir("failed"))?;
        Ok(to)
    }
}

/// What a spool file says about its message, above the message bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Sender and recipients.
    pub envelope: Envelope,
    /// The idempotency key the message arrived with.
    pub key: Option<String>,
}

/// Parses the head lines of a spool file; returns them and the message's offset.
pub fn read_head(mut r: impl BufRead) -> io::Result<(Head, u64)> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool file: {what}"));
    let mut offset = 0u64;
    let mut line = String::new();
    let mut next = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = r.read_line(line)?;
        offset += n as u64;
        if !line.ends_with('\n') {
            return Err(bad("truncated header"));
        }
        line.pop();
        Ok(())
    };
    next(&mut line)?;
    if line != MAGIC {
        return Err(bad("not a hedwig spool file"));
    }
    let mut envelope = Envelope {
        from: None,
        to: Vec::new(),
    };
    let mut key = None;
    loop {
        next(&mut line)?;
        if line.is_empty() {
            break;
        }
        let parse = |s: &str| Address::parse(s).map_err(|e| bad(&e.to_string()));
        match line.split_once(' ') {
            Some(("from", "")) => envelope.from = None,
            Some(("from", a)) => envelope.from = Some(parse(a)?),
            Some(("to", a)) => envelope.to.push(parse(a)?),
            Some(("key", k)) => key = Some(k.to_string()),
            _ => return Err(bad("unknown header line")),
        }
    }
    Ok((Head { envelope, key }, offset))
}

/// A message being written; dropped without [`commit`](Writer::commit), it
/// is removed.
#[derive(Debug)]
pub struct Writer {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    done: PathBuf,
    queue: PathBuf,
}

impl Writer {
    /// Creates `tmp` (with exactly `mode` when given) and writes the head;
    /// the commit renames it to `done` and syncs `dir`.
    fn start(
        tmp: PathBuf,
        done: PathBuf,
        dir: PathBuf,
        envelope: &Envelope,
        key: Option<&str>,
        mode: Option<u32>,
    ) -> io::Result<Writer> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.unwrap_or(0o666))
            .open(&tmp)?;
        if let Some(mode) = mode {
            // The umask took bits away at create; the file must have them all.
            if let Err(e) = file.set_permissions(fs::Permissions::from_mode(mode)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let mut file = BufWriter::with_capacity(64 * 1024, file);
        let mut head = format!("{MAGIC}\nfrom {}\n", envelope.sender());
        for to in &envelope.to {
            head.push_str(&format!("to {to}\n"));
        }
        if let Some(key) = key {
            head.push_str(&format!("key {key}\n"));
        }
        head.push('\n');
        if let Err(e) = file.write_all(head.as_bytes()) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Writer {
            file: Some(file),
            tmp,
            done,
            queue: dir,
        })
    }

    /// Appends message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("spool file already closed")),
        }
    }

    /// Makes the message durable: flush, fsync, rename into `queue/`, fsync
    /// the directory. After `Ok`, and only then, the message may be acknowledged.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already closed"))?;
        let result = (|| {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&self.tmp, &self.done)?;
            sync_dir(&self.queue)
        })();
        if result.is_err() {
            // Whatever happened, the message was not acknowledged: leave no trace.
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// fsyncs a directory, so a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            from: None,
            to: vec![
                Address::parse("a@b").unwrap(),
                Address::parse("c@d").unwrap(),
            ],
        }
    }

    #[test]
    fn write_commit_list_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut w = spool
            .create("00000000000000000B", &envelope(), Some("k1"))
            .unwrap();
        w.write(b"Subject: x\r\n\r\nhi\r\n").unwrap();
        // Not visible before commit.
        assert!(spool.list().unwrap().is_empty());
        w.commit().unwrap();
        spool
            .create("00000000000000000A", &envelope(), None)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(
            spool.list().unwrap(),
            ["00000000000000000A", "00000000000000000B"]
        );
        let (head, body) = spool.read("00000000000000000B").unwrap();
        assert_eq!(
            head,
            Head {
                envelope: envelope(),
                key: Some("k1".into())
            }
        );
        assert_eq!(
            spool.read_head("00000000000000000B").unwrap().1,
            body.len() as u64
        );
        assert_eq!(body, b"Subject: x\r\n\r\nhi\r\n");
        spool.remove("00000000000000000B").unwrap();
        let failed = spool.fail("00000000000000000A").unwrap();
        assert!(failed.exists());
        assert!(spool.list().unwrap().is_empty());
    }

    #[test]
    fn create_in_one_directory_with_an_exact_mode_and_requeue() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        fs::create_dir(&drop).unwrap();
        let mut w = Spool::create_in(&drop, "00000000000000000E", &envelope(), 0o640).unwrap();
        w.write(b"x\r\n").unwrap();
        assert!(drop.join(".00000000000000000E.tmp").exists());
        w.commit().unwrap();
        let file = drop.join("00000000000000000E");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let (head, offset) = read_head(BufReader::new(File::open(&file).unwrap())).unwrap();
        assert_eq!(head.envelope, envelope());
        assert_eq!(fs::metadata(&file).unwrap().len() - offset, 3);

        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spool
            .create("00000000000000000F", &envelope(), None)
            .unwrap()
            .commit()
            .unwrap();
        spool.fail("00000000000000000F").unwrap();
        assert_eq!(spool.list_failed().unwrap(), ["00000000000000000F"]);
        assert!(spool.list().unwrap().is_empty());
        spool.requeue("00000000000000000F").unwrap();
        assert_eq!(spool.list().unwrap(), ["00000000000000000F"]);
        assert!(spool.requeue("00000000000000000F").is_err());
        assert!(Spool::at(dir.path()).path("X", true).ends_with("failed/X"));
    }

    #[test]
    fn dropped_writer_and_leftover_tmp_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut w = spool
            .create("00000000000000000C", &envelope(), None)
            .unwrap();
        w.write(b"half").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // A crash leaves a temp file; the next open clears it.
        fs::write(dir.path().join("tmp/00000000000000000D"), b"partial").unwrap();
        Spool::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"hedwig-spool 1\nfrom",
            b"nope\n\n",
            b"hedwig-spool 1\nto @@\n\n",
        ] {
            assert!(read_head(bad).is_err());
        }
    }
}
