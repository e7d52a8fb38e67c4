//! The queue: durable records on disk ([`store`]), their delivery state
//! ([`record`]), and in memory an index by id and by idempotency key plus a
//! schedule ordered by next attempt. The directory is scanned once at start;
//! after that, waiting messages cost nothing until their time comes.

pub mod record;
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use hedwig::envelope::Envelope;

use record::{Outcome, Policy, Record, State};
use store::Store;

/// Why a message could not be queued.
#[derive(Debug)]
pub enum AddError {
    /// The same idempotency key is being queued right now; try again.
    KeyBusy,
    /// The disk did not take it.
    Io(io::Error),
}

/// Counts for `GET /v1/queue` and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Recipients by state.
    pub by_state: HashMap<State, u64>,
    /// Pending recipients by domain.
    pub by_domain: HashMap<String, u64>,
    /// Messages not finished.
    pub messages: u64,
}

/// A key known to the queue: being written, or written under this id.
#[derive(Debug, Clone)]
enum Key {
    Pending,
    Queued(String),
}

/// Where an id stands in the schedule.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Due(u64),
    Expires(u64),
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, Record>,
    keys: HashMap<String, Key>,
    /// (due, id) of every unfinished message not being delivered.
    due: BTreeSet<(u64, String)>,
    /// (expiry, id) of finished messages kept for status queries.
    expiry: BTreeSet<(u64, String)>,
    /// Each id's key in `due` or `expiry`, so it can be taken out again.
    slot: HashMap<String, Slot>,
    in_flight: HashSet<String>,
}

/// The queue, shared by the API and the delivery loop.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    store: Store,
    policy: Policy,
    keep_status: u64,
    /// Wakes the delivery loop when something new is due.
    wake: async_channel::Sender<()>,
}

impl Queue {
    /// Loads the queue from `store` at `now`; returns it and the receiver the
    /// delivery loop waits on.
    pub fn load(
        store: Store,
        policy: Policy,
        keep_status_ms: u64,
        now: u64,
    ) -> io::Result<(Queue, async_channel::Receiver<()>)> {
        let (wake, woken) = async_channel::bounded(1);
        let queue = Queue {
            inner: Arc::default(),
            store,
            policy,
            keep_status: keep_status_ms,
            wake,
        };
        {
            let mut inner = queue.lock();
            for record in queue.store.load(now)? {
                inner.index(record, keep_status_ms);
            }
        }
        Ok((queue, woken))
    }

    /// The retry policy records are updated under.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        let _ = self.wake.try_send(());
    }

    /// Queues a message durably (blocking I/O: call from a blocking thread).
    /// Returns its id and whether it is new; a known key returns the first id.
    pub fn add(
        &self,
        envelope: &Envelope,
        key: Option<&str>,
        message: &[u8],
        now: u64,
    ) -> Result<(String, bool), AddError> {
        self.add_traced(envelope, key, message, now, |_| String::new())
    }

    /// [`Queue::add`], with the header field `trace` makes from the new id
    /// (a `Received:`) written before the message.
    pub fn add_traced(
        &self,
        envelope: &Envelope,
        key: Option<&str>,
        message: &[u8],
        now: u64,
        trace: impl FnOnce(&str) -> String,
    ) -> Result<(String, bool), AddError> {
        if let Some(k) = key {
            let mut inner = self.lock();
            match inner.keys.get(k) {
                Some(Key::Queued(id)) => return Ok((id.clone(), false)),
                Some(Key::Pending) => return Err(AddError::KeyBusy),
                None => inner.keys.insert(k.to_string(), Key::Pending),
            };
        }
        let id = hedwig::id::new(std::time::UNIX_EPOCH + std::time::Duration::from_millis(now));
        let head = trace(&id);
        let written = self
            .store
            .add(&id, envelope, key, &[head.as_bytes(), message]);
        let mut inner = self.lock();
        if let Err(e) = written {
            if let Some(k) = key {
                inner.keys.remove(k);
            }
            return Err(AddError::Io(e));
        }
        let to: Vec<String> = envelope.to.iter().map(|a| a.to_string()).collect();
        let record = Record::new(
            id.clone(),
            envelope.sender().into(),
            &to,
            (head.len() + message.len()) as u64,
            key.map(String::from),
            now,
        );
        inner.index(record, self.keep_status);
        drop(inner);
        self.notify();
        Ok((id, true))
    }

    /// Takes every message due at `now` that is not already being delivered.
    pub fn take_due(&self, now: u64) -> Vec<(Record, Vec<usize>)> {
        let mut inner = self.lock();
        let mut jobs = Vec::new();
        while let Some((at, _)) = inner.due.first() {
            if *at > now {
                break;
            }
            let (_, id) = inner.due.pop_first().expect("first exists");
            inner.slot.remove(&id);
            let Some(record) = inner.records.get(&id) else {
                continue;
            };
            let due = record.due(now);
            if due.is_empty() {
                continue;
            }
            jobs.push((record.clone(), due));
            inner.in_flight.insert(id);
        }
        jobs
    }

    /// When the delivery loop should look again: the next due time or expiry.
    pub fn next_wake(&self) -> Option<u64> {
        let inner = self.lock();
        let due = inner.due.first().map(|(t, _)| *t);
        let expiry = inner.expiry.first().map(|(t, _)| *t);
        due.into_iter().chain(expiry).min()
    }

    /// Records a delivery round's outcomes for `id` durably (blocking I/O).
    /// Returns the record as it now stands.
    pub fn finish(
        &self,
        id: &str,
        outcomes: Vec<(usize, Outcome)>,
        now: u64,
    ) -> io::Result<Option<Record>> {
        let mut record = {
            let inner = self.lock();
            match inner.records.get(id) {
                Some(r) => r.clone(),
                // Deleted while it was being delivered.
                None => return Ok(None),
            }
        };
        for (i, outcome) in outcomes {
            record.apply(i, outcome, now, &self.policy);
        }
        let saved = self.store.save(&record);
        let finished = record.finished_at().is_some();
        if saved.is_ok() && finished {
            if let Err(e) = self.store.remove_message(id) {
                log::error!("{id}: finished but cannot remove message file: {e}");
            }
        }
        let mut inner = self.lock();
        inner.in_flight.remove(id);
        if !inner.records.contains_key(id) {
            return Ok(None);
        }
        if let Err(e) = saved {
            // Not on disk: keep the old record; the attempt will be made again.
            let retry_at = now + self.policy.first.as_millis() as u64;
            inner.schedule(id, Slot::Due(retry_at));
            drop(inner);
            self.notify();
            return Err(e);
        }
        inner.index(record.clone(), self.keep_status);
        drop(inner);
        // The delivery loop sleeps until the next due time it knew of; this
        // record may now be due sooner.
        self.notify();
        Ok(Some(record))
    }

    /// The message bytes of `id` (blocking I/O).
    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        self.store.message(id)
    }

    /// The record of `id`, if known.
    pub fn get(&self, id: &str) -> Option<Record> {
        self.lock().records.get(id).cloned()
    }

    /// Forgets `id` (blocking I/O); `false` when unknown.
    pub fn delete(&self, id: &str) -> io::Result<bool> {
        let known = self.lock().records.contains_key(id);
        if !known {
            return Ok(false);
        }
        self.store.remove(id)?;
        let mut inner = self.lock();
        inner.unindex(id);
        Ok(true)
    }

    /// Makes every deferred recipient due now; returns how many messages.
    pub fn flush(&self, now: u64) -> usize {
        let mut inner = self.lock();
        let mut flushed = Vec::new();
        for (id, record) in inner.records.iter_mut() {
            if record.flush(now) {
                flushed.push(id.clone());
            }
        }
        for id in &flushed {
            if !inner.in_flight.contains(id) {
                inner.schedule(id, Slot::Due(now));
            }
        }
        drop(inner);
        self.notify();
        flushed.len()
    }

    /// Makes the deferred recipients of `id` due now; `None` when `id` is
    /// unknown, else whether any was deferred.
    pub fn flush_one(&self, id: &str, now: u64) -> Option<bool> {
        let mut inner = self.lock();
        let flushed = inner.records.get_mut(id)?.flush(now);
        if flushed && !inner.in_flight.contains(id) {
            inner.schedule(id, Slot::Due(now));
        }
        drop(inner);
        self.notify();
        Some(flushed)
    }

    /// Drops finished records whose status time ran out by `now`.
    pub fn expire(&self, now: u64) {
        loop {
            let id = {
                let inner = self.lock();
                match inner.expiry.first() {
                    Some((t, id)) if *t <= now => id.clone(),
                    _ => return,
                }
            };
            if let Err(e) = self.store.remove(&id) {
                log::error!("{id}: cannot remove expired record: {e}");
            }
            self.lock().unindex(&id);
        }
    }

    /// Counts by state and domain.
    pub fn counts(&self) -> Counts {
        let inner = self.lock();
        let mut c = Counts::default();
        for r in inner.records.values() {
            if r.finished_at().is_none() {
                c.messages += 1;
            }
            for (i, rcpt) in r.recipients.iter().enumerate() {
                *c.by_state.entry(rcpt.state).or_default() += 1;
                if !rcpt.state.is_final() {
                    *c.by_domain.entry(r.domain(i)).or_default() += 1;
                }
            }
        }
        c
    }

    /// A page of records, oldest first.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<Record>) {
        let inner = self.lock();
        let mut ids: Vec<&String> = inner.records.keys().collect();
        ids.sort();
        let total = ids.len();
        let page = ids
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|id| inner.records[id].clone())
            .collect();
        (total, page)
    }
}

impl Inner {
    /// Puts a record in the index and in the schedule or the expiry list.
    fn index(&mut self, record: Record, keep_status: u64) {
        let id = record.id.clone();
        if let Some(k) = &record.key {
            self.keys.insert(k.clone(), Key::Queued(id.clone()));
        }
        match record.finished_at() {
            Some(done) => self.schedule(&id, Slot::Expires(done.saturating_add(keep_status))),
            None if self.in_flight.contains(&id) => self.unschedule(&id),
            None => match record.next_due() {
                Some(at) => self.schedule(&id, Slot::Due(at)),
                None => self.unschedule(&id),
            },
        }
        self.records.insert(id, record);
    }

    /// Moves `id` to `slot`, out of wherever it was.
    fn schedule(&mut self, id: &str, slot: Slot) {
        self.unschedule(id);
        match slot {
            Slot::Due(at) => self.due.insert((at, id.to_string())),
            Slot::Expires(at) => self.expiry.insert((at, id.to_string())),
        };
        self.slot.insert(id.to_string(), slot);
    }

    /// Takes `id` out of the schedule and the expiry list.
    fn unschedule(&mut self, id: &str) {
        match self.slot.remove(id) {
            Some(Slot::Due(at)) => self.due.remove(&(at, id.to_string())),
            Some(Slot::Expires(at)) => self.expiry.remove(&(at, id.to_string())),
            None => false,
        };
    }

    fn unindex(&mut self, id: &str) {
        self.unschedule(id);
        if let Some(r) = self.records.remove(id) {
            if let Some(k) = r.key {
                self.keys.remove(&k);
            }
        }
        self.in_flight.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::address::Address;
    use std::time::Duration;

    const POLICY: Policy = Policy {
        first: Duration::from_secs(1),
        max: Duration::from_secs(4),
        give_up: Duration::from_secs(100),
    };

    fn envelope() -> Envelope {
        let to = vec![
            Address::parse("a@one.test").unwrap(),
            Address::parse("b@two.test").unwrap(),
        ];
        Envelope {
            from: Some(Address::parse("s@x.test").unwrap()),
            to,
        }
    }

    fn queue(dir: &std::path::Path, now: u64) -> Queue {
        Queue::load(Store::open(dir).unwrap(), POLICY, 10_000, now)
            .unwrap()
            .0
    }

    #[test]
    fn add_is_idempotent_by_key_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 1000);
        let (id, new) = q.add(&envelope(), Some("K1"), b"m", 1000).unwrap();
        assert!(new);
        assert_eq!(
            q.add(&envelope(), Some("K1"), b"m", 1001).unwrap(),
            (id.clone(), false)
        );
        let q = queue(dir.path(), 2000);
        assert_eq!(
            q.add(&envelope(), Some("K1"), b"m", 2001).unwrap(),
            (id, false)
        );
        assert_eq!(q.counts().messages, 1);
    }

    #[test]
    fn schedule_delivers_defers_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (q, woken) = Queue::load(Store::open(dir.path()).unwrap(), POLICY, 10_000, 0).unwrap();
        let (id, _) = q.add(&envelope(), None, b"m", 0).unwrap();
        assert!(
            woken.try_recv().is_ok(),
            "a new message wakes the delivery loop"
        );
        let jobs = q.take_due(0);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].1, [0, 1]);
        // Being delivered: not handed out twice.
        assert!(q.take_due(0).is_empty());
        let delivered = Outcome::Delivered {
            relay: "r".into(),
            reply: "250".into(),
        };
        let deferred = Outcome::Deferred {
            relay: None,
            error: "450".into(),
            reply: None,
        };
        q.finish(&id, vec![(0, delivered), (1, deferred)], 10)
            .unwrap();
        assert_eq!(q.next_wake(), Some(1010));
        assert!(q.take_due(1009).is_empty());
        let jobs = q.take_due(1010);
        assert_eq!(jobs[0].1, [1], "only the deferred recipient is tried again");
        let delivered = Outcome::Delivered {
            relay: "r".into(),
            reply: "250".into(),
        };
        let r = q.finish(&id, vec![(1, delivered)], 1020).unwrap().unwrap();
        assert_eq!(r.finished_at(), Some(1020));
        // Kept for status until keep_status has passed, even across a restart.
        let q = queue(dir.path(), 1030);
        assert!(q.get(&id).is_some());
        assert!(q.take_due(5000).is_empty());
        assert_eq!(q.next_wake(), Some(11_020));
        q.expire(11_020);
        assert!(q.get(&id).is_none());
        assert!(queue(dir.path(), 12_000).get(&id).is_none());
    }

    #[test]
    fn flush_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), 0);
        let (id, _) = q.add(&envelope(), None, b"m", 0).unwrap();
        q.take_due(0);
        let deferred = |_| Outcome::Deferred {
            relay: None,
            error: "x".into(),
            reply: None,
        };
        q.finish(&id, vec![(0, deferred(0)), (1, deferred(1))], 0)
            .unwrap();
        assert!(q.take_due(10).is_empty());
        assert_eq!(q.flush(10), 1);
        assert_eq!(q.take_due(10).len(), 1);
        q.finish(&id, vec![(0, deferred(0)), (1, deferred(1))], 10)
            .unwrap();
        assert!(q.take_due(11).is_empty());
        assert_eq!(q.flush_one("nope", 11), None);
        assert_eq!(q.flush_one(&id, 11), Some(true));
        assert_eq!(q.take_due(11).len(), 1);
        assert!(q.delete(&id).unwrap());
        assert!(!q.delete(&id).unwrap());
        assert!(queue(dir.path(), 20).get(&id).is_none());
    }
}
