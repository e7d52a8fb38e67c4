//! The queue on disk, behind one async face (every file operation runs on
//! the blocking pool, most through the spool's group committer):
//!
//! - `queue/ID`, `tmp/`: the messages, in the spool format mailman uses.
//! - `state/ID.json`: the delivery record of a message that is still
//!   queued after an attempt (deferred, or partly delivered), replaced
//!   crash-safe (temp, fsync, rename, fsync directory). A message delivered
//!   at its first attempt never has one: its record is its spool head.
//! - `done/`: finished records ([`super::done`]), kept for status queries.
//!
//! A message finishes in this order: its record is appended to `done/` (and
//! synced), then its message and state files are unlinked (and their
//! directories synced). A crash in between leaves a message whose record
//! says finished; the start scan sees that and removes it (never sends it
//! again).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use hedwig::envelope::Envelope;
use hedwig::id::Id;
use hedwig::spool::{Change, Head, Spool, Writer};

use super::done::{Done, Shares};
use super::record::Record;

/// The queue directory.
#[derive(Clone, Debug)]
pub struct Store {
    spool: Spool,
    state: PathBuf,
    done: Done,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Store {
    /// Opens (creating) the queue at `root`, clearing unfinished messages
    /// from `tmp/` (blocking; call before serving). Unfinished records in
    /// `state/` (which may hold a file per deferred message) are cleared by
    /// the start scan, in the background.
    pub fn open(root: &Path) -> io::Result<Store> {
        let spool = Spool::open(root)?;
        let state = root.join("state");
        fs::create_dir_all(&state)?;
        let done = Done::open(&root.join("done"), spool.committer().clone())?;
        Ok(Store { spool, state, done })
    }

    /// The finished records.
    pub fn done(&self) -> &Done {
        &self.done
    }

    /// Starts writing new message `id`; see [`Writer::commit`].
    pub fn writer(&self, id: Id, envelope: &Envelope, key: Option<&str>) -> Writer {
        self.spool.create(id, envelope, key)
    }

    /// Ids of the queued messages, oldest first.
    pub async fn list(&self) -> io::Result<Vec<Id>> {
        self.spool.list().await
    }

    /// Ids of the delivery records in `state/`.
    pub async fn list_records(&self) -> io::Result<Vec<Id>> {
        let dir = self.state.clone();
        smol::unblock(move || {
            let mut ids = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let name = entry?.file_name();
                let id = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json")?.parse().ok());
                match id {
                    Some(id) => ids.push(id),
                    None => log::warn!("ignoring stray file {name:?} in {}", dir.display()),
                }
            }
            Ok(ids)
        })
        .await
    }

    fn state_path(&self, id: Id) -> PathBuf {
        self.state.join(format!("{id}.json"))
    }

    /// The records of queued messages `ids`, in one trip to the blocking
    /// pool: the saved record, checked against the message's envelope, or a
    /// fresh one (every recipient due since acceptance) when there is none.
    /// NotFound: the message is gone; InvalidData: a record or head that
    /// does not parse, or does not match.
    pub async fn load(&self, ids: Vec<Id>) -> Vec<(Id, io::Result<Record>)> {
        let this = self.clone();
        smol::unblock(move || {
            ids.into_iter()
                .map(|id| {
                    let head = this.spool.read_head(id);
                    (id, head.and_then(|(h, size)| this.record(id, h, size)))
                })
                .collect()
        })
        .await
    }

    /// The record of queued message `id` and its bytes, in one trip to the
    /// blocking pool (for a delivery that has its connection already).
    pub async fn load_with_message(
        &self,
        id: Id,
        then: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) -> io::Result<(Record, Vec<u8>)> {
        let this = self.clone();
        smol::unblock(move || {
            let (head, bytes) = this.spool.read_blocking(id)?;
            let record = this.record(id, head, bytes.len() as u64)?;
            Ok((record, then(bytes)))
        })
        .await
    }

    /// The record of `id` given its spool head (blocking).
    fn record(&self, id: Id, head: Head, size: u64) -> io::Result<Record> {
        let text = match fs::read(self.state_path(id)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let received = id.micros() / 1000;
                let Head { envelope, key } = head;
                return Ok(Record::new(
                    id,
                    envelope.from,
                    &envelope.to,
                    size,
                    key,
                    received,
                ));
            }
            Err(e) => return Err(e),
        };
        let record: Record = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("delivery record {id}.json: {e}")))?;
        record
            .matches(id, &head.envelope.to)
            .map_err(|e| invalid(format!("delivery record {id}.json: {e}")))?;
        Ok(record)
    }

    /// The finished-looking record left in `state/` by an older version, if
    /// its message is gone (blocking read on the pool).
    pub async fn orphan_record(&self, id: Id) -> io::Result<Record> {
        let path = self.state_path(id);
        smol::unblock(move || {
            let mut text = Vec::new();
            fs::File::open(&path)?.read_to_end(&mut text)?;
            serde_json::from_slice(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
        })
        .await
    }

    /// The message bytes of `id` through `then`.
    pub async fn message(
        &self,
        id: Id,
        then: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) -> io::Result<Vec<u8>> {
        let spool = self.spool.clone();
        smol::unblock(move || Ok(then(spool.read_blocking(id)?.1))).await
    }

    /// Saves the record of a message that stays queued, crash-safe.
    pub async fn save(&self, record: &Record) -> io::Result<()> {
        let to = self.state_path(record.id);
        let tmp = self.state.join(format!("{}.json.tmp", record.id));
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let file = {
            let tmp = tmp.clone();
            smol::unblock(move || -> io::Result<fs::File> {
                use std::io::Write;
                let mut f = fs::File::create(&tmp)?;
                f.write_all(&json)?;
                Ok(f)
            })
            .await?
        };
        self.spool
            .committer()
            .commit(Change::Place {
                file,
                rest: Vec::new(),
                tmp,
                to,
                len: None,
            })
            .await
    }

    /// Finishes `records`: appended to `done/` and synced, then their files
    /// removed, in one trip through the committer (which makes the appends
    /// durable before it unlinks anything). Returns each record's file and
    /// share of the counts.
    pub async fn finish(&self, records: &[Record]) -> io::Result<Shares> {
        let (mut changes, tallies) = self.done.appends(records)?;
        for r in records {
            changes.push(self.spool.removal(r.id));
            changes.push(Change::Unlink(self.state_path(r.id)));
        }
        self.spool.committer().commit_all(changes).await?;
        Ok(tallies)
    }

    /// Removes the message and state files of `id` (gone already is fine).
    pub async fn unlink(&self, id: Id) -> io::Result<()> {
        // The message first: a crash in between leaves a record without a
        // message, which the start scan clears, never a message without its record.
        self.spool.remove(id).await?;
        let committer = self.spool.committer();
        committer.commit(Change::Unlink(self.state_path(id))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::{Outcome, Policy, State};
    use hedwig::retry::Backoff;
    use hedwig::smtp::address::Address;
    use std::time::Duration;

    fn envelope() -> Envelope {
        Envelope {
            from: None,
            to: vec![
                Address::parse("a@b").unwrap(),
                Address::parse("c@d").unwrap(),
            ],
        }
    }

    const POLICY: Policy = Policy {
        backoff: Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
        },
        give_up: Duration::MAX,
    };

    #[test]
    fn records_survive_a_restart_and_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = Id::new(std::time::SystemTime::now());
        smol::block_on(async {
            let mut w = store.writer(id, &envelope(), Some("k"));
            w.write(b"Subject: x\r\n\r\n").await.unwrap();
            w.commit().await.unwrap();
            let store = Store::open(dir.path()).unwrap();
            let loaded = store.load(vec![id]).await.pop().unwrap().1.unwrap();
            assert_eq!(loaded.key.as_deref(), Some("k"));
            assert_eq!(loaded.size, 14);
            assert_eq!(loaded.due(loaded.received_at, false), [0, 1]);
            let mut r = loaded.clone();
            let deferred = Outcome::Deferred {
                relay: None,
                error: "x".into(),
                reply: None,
            };
            r.apply(0, deferred, 9, &POLICY);
            store.save(&r).await.unwrap();
            assert_eq!(store.load(vec![id]).await.pop().unwrap().1.unwrap(), r);
            assert_eq!(store.list_records().await.unwrap(), [id]);
            // A record that does not match its message is an error, not a guess.
            let mut wrong = r.clone();
            wrong.recipients.pop();
            store.save(&wrong).await.unwrap();
            let e = store.load(vec![id]).await.pop().unwrap().1.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            fs::write(store.state_path(id), b"{\"id\":").unwrap();
            let e = store.load(vec![id]).await.pop().unwrap().1.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            // Finished: into done/, files gone.
            for i in 0..2 {
                r.recipients[i].state = State::Delivered;
            }
            let tallies = store.finish(std::slice::from_ref(&r)).await.unwrap();
            assert_eq!(tallies[0].1.states, [0, 0, 2, 0]);
            assert!(store.list().await.unwrap().is_empty());
            assert!(store.list_records().await.unwrap().is_empty());
            assert_eq!(store.done().get(id).await.unwrap(), Some(r));
            let gone = store.load(vec![id]).await.pop().unwrap().1.unwrap_err();
            assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        });
    }
}
