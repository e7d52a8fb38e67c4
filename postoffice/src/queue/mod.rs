//! The queue: messages and their delivery records on disk ([`store`],
//! [`done`]), their delivery state ([`record`]), and in memory only what
//! scheduling needs ([`memory`]): a time and an id per queued message, key
//! hashes and counts. Memory grows by a few dozen bytes per queued message
//! and not at all with finished ones.
//!
//! What the API asks of it besides new messages (status, deletion, flush,
//! counts, pages, expiry) is in [`status`].
//!
//! At start the directory is scanned in the background ([`scan`]): the API
//! serves at once, delivery starts with what is scanned, and only a
//! hand-off carrying an Idempotency-Key waits for the scan (its key may be
//! on a message not yet read).

pub mod done;
mod memory;
pub mod record;
mod scan;
mod status;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use futures_lite::{AsyncRead, AsyncReadExt};
use hedwig::envelope::Envelope;
use hedwig::id::Id;
use hedwig::message::Newlines;

use memory::Memory;
use record::{Policy, Record, State};
use store::Store;

/// Bytes read from a body at once.
const CHUNK: usize = 16 * 1024;

/// A message [`Queue::stage`]d: written, not yet committed. Dropped, it
/// leaves nothing queued.
pub enum Staged {
    /// Its key was queued before, as this id: nothing to commit.
    Known(Id),
    /// Written, with its record and its key held busy.
    New(Box<New>),
}

/// A new staged message.
pub struct New {
    writer: hedwig::spool::Writer,
    record: Record,
    busy: Option<KeyGuard>,
}

/// Why a message could not be queued.
#[derive(Debug)]
pub enum AddError {
    /// The same idempotency key is being queued right now; try again.
    KeyBusy,
    /// Larger than `max_message_size` and the hop's allowance
    /// (`handoff::HOP_ALLOWANCE`), after newline repair.
    TooLarge {
        /// The limit, in bytes.
        max: u64,
    },
    /// No message bytes.
    Empty,
    /// Reading the body failed (the client went away, or was too slow).
    Body(io::Error),
    /// The disk did not take it.
    Io(io::Error),
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddError::KeyBusy => f.write_str("a message with this Idempotency-Key is being queued"),
            AddError::TooLarge { max } => write!(f, "message larger than {max} bytes"),
            AddError::Empty => f.write_str("empty message"),
            AddError::Body(e) => write!(f, "request body: {e}"),
            AddError::Io(e) => write!(f, "cannot queue message: {e}"),
        }
    }
}

impl std::error::Error for AddError {}

/// Counts for `GET /v1/queue` and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Recipients by state (queued messages and kept finished records).
    pub by_state: HashMap<State, u64>,
    /// Recipients not yet final, by domain.
    pub by_domain: HashMap<String, u64>,
    /// Messages not finished.
    pub messages: u64,
}

/// What the queue is set up with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Retry timing.
    pub policy: Policy,
    /// How long finished records stay (ms).
    pub keep_status: u64,
    /// Finished messages whose Idempotency-Keys are remembered.
    pub remember_keys: usize,
    /// Largest message, in bytes; a hand-off may add what the previous hop
    /// added (`handoff::HOP_ALLOWANCE`).
    pub max_message_size: u64,
}

#[derive(Debug)]
struct Shared {
    memory: Mutex<Memory>,
    store: Store,
    settings: Settings,
    /// Wakes the delivery loop when something may be due sooner.
    wake: async_channel::Sender<()>,
    /// Closed once the start scan has indexed everything.
    scanned: async_channel::Receiver<()>,
    scan_done: Mutex<Option<async_channel::Sender<()>>>,
}

/// The queue, shared by the API and the delivery loop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

/// A message taken for delivery: its id, and the time it was due (earlier
/// than its record says when a flush made it due).
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The message.
    pub id: Id,
    /// When it was due.
    pub due: u64,
}

impl Queue {
    /// The queue on `store`; returns it and the receiver the delivery loop
    /// waits on. Nothing is indexed until [`Queue::scan`] runs.
    pub fn new(store: Store, settings: Settings) -> (Queue, async_channel::Receiver<()>) {
        let (wake, woken) = async_channel::bounded(1);
        let (scan_done, scanned) = async_channel::bounded(1);
        let shared = Shared {
            memory: Mutex::new(Memory::new(settings.remember_keys)),
            store,
            settings,
            wake,
            scanned,
            scan_done: Mutex::new(Some(scan_done)),
        };
        let queue = Queue {
            shared: Arc::new(shared),
        };
        (queue, woken)
    }

    /// Scans the directory and indexes what it holds (run it in the
    /// background); see [`scan`].
    pub async fn scan(&self, now: u64) {
        scan::run(self, now).await;
        self.memory().scanning = None;
        self.shared
            .scan_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.notify();
    }

    /// Waits until the start scan is done.
    pub async fn scanned(&self) {
        let _ = self.shared.scanned.recv().await;
    }

    /// The retry policy records are updated under.
    pub fn policy(&self) -> Policy {
        self.shared.settings.policy
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.shared.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    fn notify(&self) {
        let _ = self.shared.wake.try_send(());
    }

    /// Queues a message durably, streaming `body` to disk with its newlines
    /// repaired and its size checked, after the header field `trace` makes
    /// from the new id (a `Received:`). Returns the id and whether it is
    /// new; a known `key` returns the first id and reads nothing.
    pub async fn add(
        &self,
        envelope: &Envelope,
        key: Option<&str>,
        trace: impl FnOnce(Id) -> String + Send,
        body: impl AsyncRead + Unpin + Send,
        now: u64,
    ) -> Result<(Id, bool), AddError> {
        let staged = self.stage(envelope, key, trace, body, now).await?;
        self.commit(staged).await
    }

    /// The first half of [`Queue::add`]: the message written but not yet
    /// durable or visible, so several (a batch) can be committed together,
    /// or dropped, queuing nothing, when their request turns out broken.
    pub async fn stage(
        &self,
        envelope: &Envelope,
        key: Option<&str>,
        trace: impl FnOnce(Id) -> String + Send,
        mut body: impl AsyncRead + Unpin + Send,
        now: u64,
    ) -> Result<Staged, AddError> {
        // One copy of the code for every kind of body and trace (the
        // binary's size budget is tight).
        let mut trace = Some(trace);
        let mut trace = move |id| trace.take().map_or_else(String::new, |t| t(id));
        self.stage_dyn(envelope, key, &mut trace, &mut body, now)
            .await
    }

    async fn stage_dyn(
        &self,
        envelope: &Envelope,
        key: Option<&str>,
        trace: &mut (dyn FnMut(Id) -> String + Send),
        body: &mut (dyn AsyncRead + Unpin + Send),
        now: u64,
    ) -> Result<Staged, AddError> {
        let hash = match key {
            Some(k) => {
                // Its first copy may be in a message the scan has not read yet.
                self.scanned().await;
                let h = self.memory().keys.hash(k);
                if let Some(id) = self.known_key(h, k).await? {
                    return Ok(Staged::Known(id));
                }
                Some(h)
            }
            None => None,
        };
        // Until this guard goes, the key is busy: a second request with it
        // is told to retry. It goes with the commit task, so a request
        // dropped mid-commit cannot let a repeat in before its message is indexed.
        let busy = hash.map(|h| KeyGuard(self.clone(), h));
        let id = Id::new(UNIX_EPOCH + Duration::from_millis(now));
        let mut writer = self.store().writer(id, envelope, key);
        let head = trace(id);
        writer.write(head.as_bytes()).await.map_err(AddError::Io)?;
        let max = self.shared.settings.max_message_size;
        let (mut newlines, mut buf, mut out) = (Newlines::default(), vec![0; CHUNK], Vec::new());
        let mut size = 0u64;
        loop {
            let n = body.read(&mut buf).await.map_err(AddError::Body)?;
            if n == 0 {
                newlines.finish(&mut out);
            } else {
                newlines.push(&buf[..n], &mut out);
            }
            size += out.len() as u64;
            if !hedwig::handoff::fits(size, max) {
                return Err(AddError::TooLarge { max });
            }
            writer.write(&out).await.map_err(AddError::Io)?;
            out.clear();
            if n == 0 {
                break;
            }
        }
        if size == 0 {
            return Err(AddError::Empty);
        }
        let record = Record::new(
            id,
            envelope.from.clone(),
            &envelope.to,
            head.len() as u64 + size,
            key.map(String::from),
            now,
        );
        Ok(Staged::New(Box::new(New {
            writer,
            record,
            busy,
        })))
    }

    /// The second half of [`Queue::add`]: makes a staged message durable
    /// (with whatever else the committer has waiting) and indexes it.
    pub async fn commit(&self, staged: Staged) -> Result<(Id, bool), AddError> {
        let New {
            writer,
            record,
            busy,
        } = match staged {
            Staged::Known(id) => return Ok((id, false)),
            Staged::New(new) => *new,
        };
        let id = record.id;
        // Committed and indexed in a task of its own: once on disk, the
        // message is indexed even if this request is dropped meanwhile.
        let (tx, rx) = async_channel::bounded(1);
        let queue = self.clone();
        smol::spawn(async move {
            let result = writer.commit().await;
            if result.is_ok() {
                queue.index_new(&record);
            }
            drop(busy);
            let _ = tx.send(result).await;
        })
        .detach();
        match rx.recv().await {
            Ok(Ok(())) => Ok((id, true)),
            Ok(Err(e)) => Err(AddError::Io(e)),
            Err(_) => Err(AddError::Io(io::Error::other("commit task lost"))),
        }
    }

    /// The id already queued under key `k` (hash `h`), checked on disk so a
    /// hash collision can never swallow a message; marks `h` busy if not.
    async fn known_key(&self, h: u64, k: &str) -> Result<Option<Id>, AddError> {
        let found = self.memory().keys.get(h).map_err(|_| AddError::KeyBusy)?;
        if let Some(id) = found {
            if self.key_of(id).await.as_deref() == Some(k) {
                return Ok(Some(id));
            }
        }
        if !self.memory().keys.start(h) {
            return Err(AddError::KeyBusy);
        }
        Ok(None)
    }

    /// The key message `id` was queued with, from disk.
    async fn key_of(&self, id: Id) -> Option<String> {
        match self.store().load(vec![id]).await.pop() {
            Some((_, Ok(r))) => r.key,
            _ => self.store().done().get(id).await.ok().flatten()?.key,
        }
    }

    fn index_new(&self, record: &Record) {
        let mut m = self.memory();
        if let Some(ids) = &mut m.scanning {
            ids.insert(record.id);
        }
        m.index(record);
        drop(m);
        self.notify();
    }

    /// Takes the first message due at `now` for delivery.
    pub fn take(&self, now: u64) -> Option<Job> {
        let (id, due) = self.memory().take(now)?;
        Some(Job { id, due })
    }

    /// When the next message falls due.
    pub fn next_wake(&self) -> Option<u64> {
        self.memory().next_due()
    }

    /// The record of taken message `id`, from disk.
    pub async fn record(&self, id: Id) -> io::Result<Record> {
        let (_, loaded) = self
            .store()
            .load(vec![id])
            .await
            .pop()
            .expect("one in, one out");
        loaded
    }

    /// The record of taken message `id` and its bytes through `then` (a
    /// signature), read and done together on the blocking pool.
    pub async fn record_and_message(
        &self,
        id: Id,
        then: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) -> io::Result<(Record, Vec<u8>)> {
        self.store().load_with_message(id, then).await
    }

    /// The message bytes of `id` through `then` (a signature), on the
    /// blocking pool.
    pub async fn message(
        &self,
        id: Id,
        then: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) -> io::Result<Vec<u8>> {
        self.store().message(id, then).await
    }

    /// Gives back taken message `id` unchanged, due at `at` (a domain had no
    /// free connection, or its files could not be read).
    pub fn put_back(&self, id: Id, at: u64) {
        self.memory().put_back(id, at);
        self.notify();
    }

    /// Drops taken message `id` whose files are gone (deleted meanwhile).
    pub fn forget(&self, id: Id) {
        self.memory().in_flight.remove(&id);
    }

    /// Records a delivery round of taken message `before`, now `after`,
    /// durably: a finished message goes to `done/`, one still queued gets
    /// its record saved and its next time in the schedule.
    pub async fn finish(&self, before: &Record, after: Record, now: u64) -> io::Result<()> {
        let id = after.id;
        let deleted = self.memory().in_flight.get(&id).is_some_and(|t| t.deleted);
        if deleted {
            let mut m = self.memory();
            m.in_flight.remove(&id);
            m.pending.sub(before);
            return Ok(());
        }
        let saved = if after.finished_at().is_some() {
            self.store()
                .finish(std::slice::from_ref(&after))
                .await
                .map(Some)
        } else if &after != before {
            self.store().save(&after).await.map(|()| None)
        } else {
            Ok(None)
        };
        let mut m = self.memory();
        let tallies = match saved {
            Ok(t) => t,
            Err(e) => {
                // Not on disk: the old record stands; the attempt is made again.
                let first = self.shared.settings.policy.backoff.first.as_millis() as u64;
                m.put_back(id, now + first);
                drop(m);
                self.notify();
                return Err(e);
            }
        };
        m.pending.sub(before);
        match tallies {
            Some(tallies) => {
                m.in_flight.remove(&id);
                for (minute, t) in tallies {
                    m.tallies.add(minute, t);
                }
                if let Some(k) = &after.key {
                    let h = m.keys.hash(k);
                    m.keys.finished(h, id);
                }
            }
            None => {
                m.pending.add(&after);
                let at = after.next_due().unwrap_or(now);
                m.put_back(id, at);
            }
        }
        drop(m);
        // The delivery loop sleeps until the next due time it knew of; this
        // message may now be due sooner.
        self.notify();
        Ok(())
    }
}

/// Frees an idempotency key when its request ends, however it ends.
struct KeyGuard(Queue, u64);

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.0.memory().keys.end(self.1);
    }
}

#[cfg(test)]
mod tests;
