//! The spool's blocking side, for what is not on the executor: commands
//! that look at a spool beside the running daemon (`mailman queue`),
//! `sendmail` writing into the drop directory, and pickup moving drops into
//! the spool from the blocking pool. The same file format, the same order
//! (temp file, fsync, rename, fsync directory), one message at a time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::write_head;
use super::{sync_dir, Spool};
use crate::envelope::Envelope;

impl Spool {
    /// The spool's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids of the queued messages, oldest first (blocking; any file name of
    /// an id's shape, for commands).
    pub fn list_blocking(&self) -> io::Result<Vec<String>> {
        self.list_in("queue")
    }

    /// Ids of the messages in `failed/`, oldest first (blocking).
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

    /// Puts message `id` from `failed/` back into `queue/`, durably (blocking).
    pub fn requeue(&self, id: &str) -> io::Result<()> {
        fs::rename(self.dir("failed").join(id), self.dir("queue").join(id))?;
        sync_dir(&self.dir("queue"))
    }

    /// Starts writing message `id` from a blocking thread; nothing is
    /// visible until [`BlockingWriter::commit`].
    pub fn create_blocking(
        &self,
        id: &str,
        envelope: &Envelope,
        key: Option<&str>,
    ) -> io::Result<BlockingWriter> {
        let (tmp, queue) = (self.dir("tmp").join(id), self.dir("queue"));
        BlockingWriter::start(tmp, queue.join(id), queue, envelope, key, None)
    }

    /// Starts writing a spool file `dir/ID` through `dir/.ID.tmp` (the same
    /// directory, for writers that may use no other: the drop directory),
    /// with exactly `mode` whatever the umask; committed like a message.
    pub fn create_in(
        dir: &Path,
        id: &str,
        envelope: &Envelope,
        mode: u32,
    ) -> io::Result<BlockingWriter> {
        let tmp = dir.join(format!(".{id}.tmp"));
        let (to, dir) = (dir.join(id), dir.to_path_buf());
        BlockingWriter::start(tmp, to, dir, envelope, None, Some(mode))
    }
}

/// A message being written by a blocking thread; dropped without
/// [`commit`](BlockingWriter::commit), it is removed.
#[derive(Debug)]
pub struct BlockingWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    done: PathBuf,
    dir: PathBuf,
}

impl BlockingWriter {
    /// Creates `tmp` (with exactly `mode` when given) and writes the head;
    /// the commit renames it to `done` and syncs `dir`.
    fn start(
        tmp: PathBuf,
        done: PathBuf,
        dir: PathBuf,
        envelope: &Envelope,
        key: Option<&str>,
        mode: Option<u32>,
    ) -> io::Result<BlockingWriter> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.unwrap_or(0o666))
            .open(&tmp)?;
        let mut w = BlockingWriter {
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            tmp,
            done,
            dir,
        };
        if let Some(mode) = mode {
            // The umask took bits away at create; the file must have them all.
            let file = w.file.as_ref().expect("just made").get_ref();
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        w.write(&write_head(envelope, key))?;
        Ok(w)
    }

    /// Appends message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("spool file already closed")),
        }
    }

    /// Makes the message durable: flush, fsync, rename, fsync the directory.
    /// After `Ok`, and only then, the message may be acknowledged.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already closed"))?;
        let result = (|| {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&self.tmp, &self.done)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            // Whatever happened, the message was not acknowledged: leave no trace.
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Drop for BlockingWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::read_head;
    use super::*;
    use crate::smtp::address::Address;
    use std::io::BufReader;

    fn envelope() -> Envelope {
        Envelope {
            from: None,
            to: vec![Address::parse("a@b").unwrap()],
        }
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
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let (head, offset) = read_head(BufReader::new(File::open(&file).unwrap())).unwrap();
        assert_eq!(head.envelope, envelope());
        assert_eq!(fs::metadata(&file).unwrap().len() - offset, 3);

        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let w = spool
            .create_blocking("00000000000000000F", &envelope(), None)
            .unwrap();
        w.commit().unwrap();
        let id = "00000000000000000F".parse().unwrap();
        smol::block_on(spool.fail(id)).unwrap();
        assert_eq!(spool.list_failed().unwrap(), ["00000000000000000F"]);
        assert!(spool.list_blocking().unwrap().is_empty());
        spool.requeue("00000000000000000F").unwrap();
        assert_eq!(spool.list_blocking().unwrap(), ["00000000000000000F"]);
        assert!(spool.requeue("00000000000000000F").is_err());
        assert!(Spool::at(dir.path()).path("X", true).ends_with("failed/X"));
    }
}
