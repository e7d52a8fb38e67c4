//! Finished records: what the status API answers for `keep_status` after a
//! message's last recipient ended, without a file or a heap entry per
//! message.
//!
//! Records are JSON lines appended to one file per minute of *acceptance*
//! (`done/2024-05-01/1342.jsonl`), so a lookup by id reads one small file
//! (the id holds its acceptance time). Appends go through the group
//! committer: the records finished together share one fdatasync per file.
//! A deletion appends a tombstone (`{"deleted":"ID"}`); the last line for an
//! id wins. A file is dropped whole once it has not been written for
//! `keep_status`, so every record stays at least that long.
//!
//! In memory: per file (minute), only counts by state, for `GET /v1/queue`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hedwig::id::Id;
use hedwig::spool::{Change, Committer};
use serde::Deserialize;

use super::record::{Record, State};

/// A minute of acceptance: what names a file.
pub type Minute = u64;

/// Each filed record's file and share of the counts.
pub type Shares = Vec<(Minute, Tally)>;

/// Recipients by state in one file: its share of the counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records (messages), tombstones taken off.
    pub records: u64,
    /// Recipients by state, in [`State::ALL`] order.
    pub states: [u64; 4],
}

impl Tally {
    fn of(record: &Record) -> Tally {
        let mut t = Tally {
            records: 1,
            ..Tally::default()
        };
        for r in &record.recipients {
            t.states[state_index(r.state)] += 1;
        }
        t
    }

    fn add(&mut self, other: Tally) {
        self.records += other.records;
        for (a, b) in self.states.iter_mut().zip(other.states) {
            *a += b;
        }
    }

    fn sub(&mut self, other: Tally) {
        self.records = self.records.saturating_sub(other.records);
        for (a, b) in self.states.iter_mut().zip(other.states) {
            *a = a.saturating_sub(b);
        }
    }
}

/// The position of `s` in [`State::ALL`].
pub fn state_index(s: State) -> usize {
    State::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

/// A tombstone line: `{"deleted":"ID"}`.
#[derive(Deserialize)]
struct Deleted {
    deleted: Id,
}

/// What a file holds, read whole: its records in order, tombstones applied.
#[derive(Debug, Default)]
pub struct Contents {
    /// The records, last version of each id, in the order first written.
    pub records: Vec<Record>,
    /// Lines that did not parse (a torn last line after a crash, or damage).
    pub bad_lines: usize,
}

/// A file's records reduced to what the start scan keeps.
#[derive(Debug, Default)]
pub struct Summary {
    /// Id, Idempotency-Key and share of the counts of each record.
    pub records: Vec<(Id, Option<String>, Tally)>,
    /// Lines that did not parse.
    pub bad_lines: usize,
}

/// The finished-records log.
#[derive(Clone, Debug)]
pub struct Done {
    root: PathBuf,
    committer: Committer,
}

impl Done {
    /// Opens (creating) the log in `root` (blocking).
    pub fn open(root: &Path, committer: Committer) -> io::Result<Done> {
        fs::create_dir_all(root)?;
        Ok(Done {
            root: root.to_path_buf(),
            committer,
        })
    }

    /// The minute of acceptance of `id`.
    pub fn minute(id: Id) -> Minute {
        id.micros() / 60_000_000
    }

    /// The file for `minute`: `DAY/HHMM.jsonl` under the root.
    fn path(&self, minute: Minute) -> PathBuf {
        let t = UNIX_EPOCH + Duration::from_secs(minute * 60);
        let text = humantime::format_rfc3339_seconds(t).to_string();
        // "2024-05-01T13:42:00Z"
        self.root
            .join(&text[..10])
            .join(format!("{}{}.jsonl", &text[11..13], &text[14..16]))
    }

    /// Appends `records` durably; returns each one's file and share of the
    /// counts.
    #[cfg(test)]
    pub async fn append(&self, records: &[Record]) -> io::Result<Shares> {
        let (changes, tallies) = self.appends(records)?;
        self.committer.commit_all(changes).await?;
        Ok(tallies)
    }

    /// The appends that file `records`, for the caller to commit (with the
    /// unlinks that must follow them), and each record's share of the counts.
    pub fn appends(&self, records: &[Record]) -> io::Result<(Vec<Change>, Shares)> {
        let mut by_file: BTreeMap<Minute, Vec<u8>> = BTreeMap::new();
        let mut tallies = Vec::with_capacity(records.len());
        for record in records {
            let minute = Done::minute(record.id);
            let bytes = by_file.entry(minute).or_default();
            serde_json::to_writer(&mut *bytes, record).map_err(io::Error::other)?;
            bytes.push(b'\n');
            tallies.push((minute, Tally::of(record)));
        }
        let changes = by_file
            .into_iter()
            .map(|(minute, bytes)| Change::Append {
                path: self.path(minute),
                bytes,
            })
            .collect();
        Ok((changes, tallies))
    }

    /// Appends a tombstone for `id`: it is no longer found.
    pub async fn delete(&self, id: Id) -> io::Result<()> {
        let path = self.path(Done::minute(id));
        let bytes = format!("{{\"deleted\":\"{id}\"}}\n").into_bytes();
        self.committer.commit(Change::Append { path, bytes }).await
    }

    /// The finished record of `id`, if kept.
    pub async fn get(&self, id: Id) -> io::Result<Option<Record>> {
        let path = self.path(Done::minute(id));
        smol::unblock(move || find(&path, id)).await
    }

    /// Every file: its minute, when it was last written, and its path.
    pub async fn files(&self) -> io::Result<Vec<(Minute, SystemTime, PathBuf)>> {
        let root = self.root.clone();
        smol::unblock(move || list(&root)).await
    }

    /// Reads the files of `minutes` whole, in one trip to the blocking pool.
    pub async fn read(&self, minutes: Vec<Minute>) -> Vec<(Minute, io::Result<Contents>)> {
        let paths: Vec<(Minute, PathBuf)> =
            minutes.into_iter().map(|m| (m, self.path(m))).collect();
        smol::unblock(move || paths.into_iter().map(|(m, p)| (m, read(&p))).collect()).await
    }

    /// What the start scan needs of `minute`'s file: per record its id,
    /// key and share of the counts (read on the blocking pool, one file
    /// at a time, so a busy minute's records are never all in memory).
    pub async fn summarize(&self, minute: Minute) -> io::Result<Summary> {
        let path = self.path(minute);
        smol::unblock(move || {
            let contents = read(&path)?;
            let records = contents
                .records
                .into_iter()
                .map(|r| (r.id, r.key.clone(), Tally::of(&r)))
                .collect();
            Ok(Summary {
                records,
                bad_lines: contents.bad_lines,
            })
        })
        .await
    }

    /// Removes the files of `minutes` (expired), with their day directories
    /// once empty.
    pub async fn remove(&self, minutes: Vec<Minute>) -> io::Result<()> {
        for m in minutes {
            let path = self.path(m);
            self.committer.commit(Change::Unlink(path.clone())).await?;
            let day = path.parent().expect("day").to_path_buf();
            // Fails while the day still has files: that is fine.
            let _ = smol::unblock(move || fs::remove_dir(day)).await;
        }
        Ok(())
    }
}

/// The last version of `id`'s record in the file at `path`.
fn find(path: &Path, id: Id) -> io::Result<Option<Record>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let record_prefix = format!("{{\"id\":\"{id}\"");
    let tombstone = format!("{{\"deleted\":\"{id}\"}}");
    let mut found = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        // Only this id's lines are parsed.
        if line.starts_with(record_prefix.as_bytes()) {
            match serde_json::from_slice::<Record>(&line) {
                Ok(r) => found = Some(r),
                Err(e) => log::error!("{}: unreadable record of {id}: {e}", path.display()),
            }
        } else if line == tombstone.as_bytes() {
            found = None;
        }
    }
    Ok(found)
}

/// Reads a file whole.
fn read(path: &Path) -> io::Result<Contents> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
        Err(e) => return Err(e),
    };
    let mut at: HashMap<Id, usize> = HashMap::new();
    let mut slots: Vec<Option<Record>> = Vec::new();
    let mut bad_lines = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.starts_with(b"{\"deleted\":") {
            match serde_json::from_slice::<Deleted>(&line) {
                Ok(Deleted { deleted }) => {
                    if let Some(&i) = at.get(&deleted) {
                        slots[i] = None;
                    }
                }
                Err(_) => bad_lines += 1,
            }
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => match at.get(&r.id) {
                Some(&i) => slots[i] = Some(r),
                None => {
                    at.insert(r.id, slots.len());
                    slots.push(Some(r));
                }
            },
            Err(_) => bad_lines += 1,
        }
    }
    Ok(Contents {
        records: slots.into_iter().flatten().collect(),
        bad_lines,
    })
}

/// The files under `root`: `DAY/HHMM.jsonl`, with their mtimes.
fn list(root: &Path) -> io::Result<Vec<(Minute, SystemTime, PathBuf)>> {
    let mut files = Vec::new();
    for day in fs::read_dir(root)? {
        let day = day?;
        let Some(day_minute) = day.file_name().to_str().and_then(day_start) else {
            log::warn!("ignoring stray entry {}", day.path().display());
            continue;
        };
        for entry in fs::read_dir(day.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let minute = name.to_str().and_then(|n| {
                let hhmm = n.strip_suffix(".jsonl")?;
                let (h, m) = (
                    hhmm.get(..2)?.parse::<u64>().ok()?,
                    hhmm.get(2..)?.parse::<u64>().ok()?,
                );
                (hhmm.len() == 4 && h < 24 && m < 60).then_some(day_minute + h * 60 + m)
            });
            match minute {
                Some(m) => files.push((m, entry.metadata()?.modified()?, entry.path())),
                None => log::warn!("ignoring stray file {}", entry.path().display()),
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The first minute of the day named `YYYY-MM-DD`.
fn day_start(name: &str) -> Option<Minute> {
    let t = humantime::parse_rfc3339(&format!("{name}T00:00:00Z")).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() / 60)
}

/// Running counts over every file, for `GET /v1/queue`.
#[derive(Debug, Default)]
pub struct Tallies {
    by_file: HashMap<Minute, Tally>,
    total: Tally,
}

impl Tallies {
    /// Counts `t` in `minute`'s file.
    pub fn add(&mut self, minute: Minute, t: Tally) {
        self.by_file.entry(minute).or_default().add(t);
        self.total.add(t);
    }

    /// Takes `t` out of `minute`'s file (a deleted record).
    pub fn sub(&mut self, minute: Minute, t: Tally) {
        if let Some(f) = self.by_file.get_mut(&minute) {
            f.sub(t);
        }
        self.total.sub(t);
    }

    /// Forgets `minute`'s file (expired).
    pub fn drop_file(&mut self, minute: Minute) {
        if let Some(t) = self.by_file.remove(&minute) {
            self.total.sub(t);
        }
    }

    /// Every file's counts together.
    pub fn total(&self) -> Tally {
        self.total
    }

    /// Records per file, oldest first (for paging).
    pub fn files(&self) -> Vec<(Minute, u64)> {
        let mut v: Vec<(Minute, u64)> = self.by_file.iter().map(|(&m, t)| (m, t.records)).collect();
        v.sort_unstable();
        v
    }

    /// A record's share of the counts.
    pub fn of(record: &Record) -> Tally {
        Tally::of(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::address::Address;

    fn record(id: Id, state: State) -> Record {
        let mut r = Record::new(
            id,
            None,
            &[Address::parse("a@b").unwrap()],
            1,
            Some("k".into()),
            0,
        );
        r.recipients[0].state = state;
        r
    }

    #[test]
    fn append_find_delete_expire() {
        let dir = tempfile::tempdir().unwrap();
        let done = Done::open(&dir.path().join("done"), Committer::start()).unwrap();
        // Made from their text: Id::new never goes back to a time before
        // the ids other tests of this process made.
        let id = |secs: u64, n: u32| -> Id {
            format!("{:013X}{n:05X}", secs * 1_000_000).parse().unwrap()
        };
        let t = 1_714_570_920; // 2024-05-01T13:42:00Z
        let (a, b, c) = (id(t, 1), id(t, 2), id(t + 3600, 3));
        smol::block_on(async {
            let tallies = done
                .append(&[record(a, State::Delivered), record(b, State::Bounced)])
                .await
                .unwrap();
            assert_eq!(tallies[0].0, tallies[1].0);
            assert_eq!(tallies[1].1.states, [0, 0, 0, 1]);
            done.append(&[record(c, State::Delivered)]).await.unwrap();
            let mut newer = record(a, State::Delivered);
            newer.size = 99;
            done.append(&[newer]).await.unwrap();
            assert!(dir.path().join("done/2024-05-01/1342.jsonl").exists());
            assert_eq!(
                done.get(a).await.unwrap().unwrap().size,
                99,
                "last line wins"
            );
            assert!(done.get(c).await.unwrap().is_some());
            done.delete(b).await.unwrap();
            assert_eq!(done.get(b).await.unwrap(), None);
            let files = done.files().await.unwrap();
            assert_eq!(files.len(), 2);
            assert_eq!(files[0].0, Done::minute(a));
            let read = done.read(vec![files[0].0]).await;
            let contents = read[0].1.as_ref().unwrap();
            assert_eq!(contents.records.len(), 1, "b deleted, a once");
            assert_eq!(contents.records[0].size, 99);
            done.remove(vec![files[0].0]).await.unwrap();
            assert_eq!(done.get(a).await.unwrap(), None);
            assert!(!dir.path().join("done/2024-05-01/1342.jsonl").exists());
        });
    }

    #[test]
    fn torn_lines_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let done = Done::open(dir.path(), Committer::start()).unwrap();
        let id = Id::new(SystemTime::now());
        smol::block_on(done.append(&[record(id, State::Delivered)])).unwrap();
        let path = done.path(Done::minute(id));
        let mut text = fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"id\":\"tor");
        fs::write(&path, text).unwrap();
        let contents = read(&path).unwrap();
        assert_eq!((contents.records.len(), contents.bad_lines), (1, 1));
        assert!(find(&path, id).unwrap().is_some());
    }

    #[test]
    fn tallies_add_up() {
        let mut t = Tallies::default();
        let id = Id::new(SystemTime::now());
        t.add(5, Tally::of(&record(id, State::Delivered)));
        t.add(6, Tally::of(&record(id, State::Bounced)));
        t.sub(6, Tally::of(&record(id, State::Bounced)));
        assert_eq!(t.total().states, [0, 0, 1, 0]);
        t.drop_file(5);
        assert_eq!(t.total(), Tally::default());
        assert_eq!(t.files(), [(6, 0)]);
    }
}
