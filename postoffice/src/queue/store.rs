//! The queue on disk. Message files live in a shared-format spool
//! (`queue/ID`, written temp, fsync, rename, fsync directory); each message's
//! delivery record is `state/ID.json`, replaced the same crash-safe way on
//! every change. A message file with no record is all queued; a record with
//! no message file is finished and kept only to answer status queries.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hedwig::envelope::Envelope;
use hedwig::spool::{sync_dir, Spool};

use super::record::Record;

/// The queue directory.
#[derive(Clone, Debug)]
pub struct Store {
    spool: Spool,
    state: PathBuf,
}

impl Store {
    /// Opens (creating) the queue at `root`, clearing unfinished temp files.
    pub fn open(root: &Path) -> io::Result<Store> {
        let spool = Spool::open(root)?;
        let state = root.join("state");
        fs::create_dir_all(&state)?;
        for entry in fs::read_dir(&state)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(Store { spool, state })
    }

    /// Writes a new message durably. Only after `Ok` may it be acknowledged.
    pub fn add(
        &self,
        id: &str,
        envelope: &Envelope,
        key: Option<&str>,
        parts: &[&[u8]],
    ) -> io::Result<()> {
        let mut w = self.spool.create(id, envelope, key)?;
        for part in parts {
            w.write(part)?;
        }
        w.commit()
    }

    /// The message bytes of `id`.
    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        Ok(self.spool.read(id)?.1)
    }

    /// Replaces `id`'s delivery record, crash-safe.
    pub fn save(&self, record: &Record) -> io::Result<()> {
        let path = self.state.join(format!("{}.json", record.id));
        let tmp = self.state.join(format!("{}.json.tmp", record.id));
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&self.state)
    }

    /// Removes the message file once every recipient is final.
    pub fn remove_message(&self, id: &str) -> io::Result<()> {
        match self.spool.remove(id) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Forgets `id` entirely: the message first, so a crash in between leaves
    /// a record without a message, never a message without its record.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.remove_message(id)?;
        match fs::remove_file(self.state.join(format!("{id}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, read once at start: message files without a record get
    /// a fresh one (all due at `now`); records without a message are kept if
    /// finished and dropped (with a log line) if not.
    pub fn load(&self, now: u64) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut with_message = std::collections::HashSet::new();
        for id in self.spool.list()? {
            let record = match self.read_record(&id) {
                Some(r) => r,
                None => match self.spool.read_head(&id) {
                    Ok((head, size)) => {
                        let to: Vec<String> =
                            head.envelope.to.iter().map(|a| a.to_string()).collect();
                        let received = hedwig::id::micros(&id).map_or(now, |us| us / 1000);
                        let mut r = Record::new(
                            id.clone(),
                            head.envelope.sender().into(),
                            &to,
                            size,
                            head.key,
                            now,
                        );
                        r.received_at = received;
                        r
                    }
                    Err(e) => {
                        log::error!("{id}: unreadable queue file, left in place: {e}");
                        continue;
                    }
                },
            };
            with_message.insert(id);
            records.push(record);
        }
        for entry in fs::read_dir(&self.state)? {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if with_message.contains(id) {
                continue;
            }
            match self.read_record(id) {
                Some(r) if r.finished_at().is_some() => records.push(r),
                _ => {
                    log::warn!("{id}: delivery record without message, removed");
                    let _ = fs::remove_file(self.state.join(&name));
                }
            }
        }
        Ok(records)
    }

    fn read_record(&self, id: &str) -> Option<Record> {
        let bytes = fs::read(self.state.join(format!("{id}.json"))).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!("{id}: unreadable delivery record, starting over: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Outcome, Policy};
    use super::*;
    use hedwig::smtp::address::Address;
    use std::time::Duration;

    fn envelope() -> Envelope {
        Envelope {
            from: None,
            to: vec![Address::parse("a@b").unwrap()],
        }
    }

    #[test]
    fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = hedwig::id::new(std::time::SystemTime::now());
        store
            .add(&id, &envelope(), Some("k"), &[b"Subject: x\r\n\r\n"])
            .unwrap();
        let loaded = Store::open(dir.path()).unwrap().load(5).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].key.as_deref(), Some("k"));
        assert_eq!(loaded[0].size, 14);
        let mut r = loaded[0].clone();
        let policy = Policy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
            give_up: Duration::MAX,
        };
        r.apply(
            0,
            Outcome::Delivered {
                relay: "x".into(),
                reply: "250".into(),
            },
            9,
            &policy,
        );
        store.save(&r).unwrap();
        store.remove_message(&id).unwrap();
        // Finished records stay for status queries.
        let loaded = store.load(10).unwrap();
        assert_eq!(loaded, vec![r]);
        store.remove(&id).unwrap();
        assert!(store.load(11).unwrap().is_empty());
    }
}
