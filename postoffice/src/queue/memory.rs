//! What the queue holds in memory, a few dozen bytes per queued message and
//! no strings: the schedule (a time and an id), the messages being
//! delivered, idempotency keys as hashes, and counts. Records live on disk.
//! Pure: time is a parameter.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use hedwig::id::Id;

use super::done::{state_index, Tallies};
use super::record::{Record, State};

/// A message being delivered (or waiting for a connection to its domain).
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    /// When it was taken (ms since 1970).
    pub at: u64,
    /// Deleted through the API meanwhile: its outcome is not written.
    pub deleted: bool,
}

/// Idempotency keys, as 64-bit hashes with a per-process random seed (so no
/// sender can aim at a collision), of every queued message and of the
/// last `remember` finished ones.
#[derive(Debug)]
pub struct Keys {
    seed: RandomState,
    ids: HashMap<u64, Id>,
    /// Keys being queued right now.
    busy: HashSet<u64>,
    /// Finished messages' keys, oldest first, at most `remember`.
    finished: VecDeque<(u64, Id)>,
    remember: usize,
}

impl Keys {
    /// No keys; `remember` finished ones are kept.
    pub fn new(remember: usize) -> Keys {
        Keys {
            seed: RandomState::new(),
            ids: HashMap::new(),
            busy: HashSet::new(),
            finished: VecDeque::new(),
            remember,
        }
    }

    /// The hash standing for `key`.
    pub fn hash(&self, key: &str) -> u64 {
        self.seed.hash_one(key)
    }

    /// The id queued under `h`, or whether `h` is being queued now.
    pub fn get(&self, h: u64) -> Result<Option<Id>, Busy> {
        if self.busy.contains(&h) {
            return Err(Busy);
        }
        Ok(self.ids.get(&h).copied())
    }

    /// Marks `h` as being queued; false if it already is.
    pub fn start(&mut self, h: u64) -> bool {
        self.busy.insert(h)
    }

    /// `h` is no longer being queued (written, or failed).
    pub fn end(&mut self, h: u64) {
        self.busy.remove(&h);
    }

    /// `h` names queued message `id`.
    pub fn queued(&mut self, h: u64, id: Id) {
        self.ids.insert(h, id);
    }

    /// Message `id` under `h` finished: its key is kept a while longer.
    pub fn finished(&mut self, h: u64, id: Id) {
        self.ids.insert(h, id);
        self.finished.push_back((h, id));
        while self.finished.len() > self.remember {
            let Some((old, old_id)) = self.finished.pop_front() else {
                break;
            };
            if self.ids.get(&old) == Some(&old_id) {
                self.ids.remove(&old);
            }
        }
    }

    /// Forgets `h` of deleted message `id`.
    pub fn remove(&mut self, h: u64, id: Id) {
        if self.ids.get(&h) == Some(&id) {
            self.ids.remove(&h);
        }
    }
}

/// A key is being queued by another request right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Counts over the queued (unfinished) messages.
#[derive(Debug, Default)]
pub struct Pending {
    /// Messages.
    pub messages: u64,
    /// Their recipients by state, in [`State::ALL`] order.
    pub states: [u64; 4],
    /// Their recipients not yet final, by domain.
    pub domains: HashMap<String, u64>,
}

impl Pending {
    /// Counts `r` in.
    pub fn add(&mut self, r: &Record) {
        self.messages += 1;
        for (i, rcpt) in r.recipients.iter().enumerate() {
            self.states[state_index(rcpt.state)] += 1;
            if !rcpt.state.is_final() {
                *self.domains.entry(r.domain(i)).or_default() += 1;
            }
        }
    }

    /// Counts `r` out.
    pub fn sub(&mut self, r: &Record) {
        self.messages = self.messages.saturating_sub(1);
        for (i, rcpt) in r.recipients.iter().enumerate() {
            let n = &mut self.states[state_index(rcpt.state)];
            *n = n.saturating_sub(1);
            if !rcpt.state.is_final() {
                let domain = r.domain(i);
                if let Some(n) = self.domains.get_mut(&domain) {
                    *n -= 1;
                    if *n == 0 {
                        self.domains.remove(&domain);
                    }
                }
            }
        }
    }
}

/// Everything in memory, under the queue's lock.
#[derive(Debug)]
pub struct Memory {
    /// (due, id) of every queued message waiting for its time.
    pub due: BTreeSet<(u64, Id)>,
    /// Messages taken out of `due` for delivery.
    pub in_flight: HashMap<Id, Taken>,
    /// Idempotency keys.
    pub keys: Keys,
    /// Counts of queued messages.
    pub pending: Pending,
    /// Counts of finished records by file.
    pub tallies: Tallies,
    /// While the start scan runs: ids queued since the start, which the
    /// scan must not index a second time.
    pub scanning: Option<HashSet<Id>>,
    /// The last flush (ms since 1970).
    pub flushed_at: u64,
}

impl Memory {
    /// Empty, remembering `remember` finished keys.
    pub fn new(remember: usize) -> Memory {
        Memory {
            due: BTreeSet::new(),
            in_flight: HashMap::new(),
            keys: Keys::new(remember),
            pending: Pending::default(),
            tallies: Tallies::default(),
            scanning: Some(HashSet::new()),
            flushed_at: 0,
        }
    }

    /// Indexes queued message `r`: counted, its key known, scheduled.
    pub fn index(&mut self, r: &Record) {
        self.pending.add(r);
        if let Some(k) = &r.key {
            let h = self.keys.hash(k);
            self.keys.queued(h, r.id);
        }
        if let Some(at) = r.next_due() {
            self.due.insert((at, r.id));
        }
    }

    /// Takes the first message due at `now`, with the time it was due.
    pub fn take(&mut self, now: u64) -> Option<(Id, u64)> {
        let &(at, id) = self.due.first()?;
        if at > now {
            return None;
        }
        self.due.pop_first();
        self.in_flight.insert(
            id,
            Taken {
                at: now,
                deleted: false,
            },
        );
        Some((id, at))
    }

    /// Puts taken message `id` back, due at `at`, unless it was deleted.
    pub fn put_back(&mut self, id: Id, at: u64) {
        if let Some(t) = self.in_flight.remove(&id) {
            if !t.deleted {
                // Flushed while it was out: due no later than the flush.
                let at = if t.at < self.flushed_at {
                    at.min(self.flushed_at)
                } else {
                    at
                };
                self.due.insert((at, id));
            }
        }
    }

    /// Makes every waiting message due at `now`; returns how many moved.
    pub fn flush(&mut self, now: u64) -> usize {
        self.flushed_at = now;
        let later: Vec<(u64, Id)> = self.due.range((now + 1, Id::MIN)..).copied().collect();
        for entry in &later {
            self.due.remove(entry);
            self.due.insert((now, entry.1));
        }
        later.len()
    }

    /// Makes waiting message `id` due at `now`: `None` when it is not
    /// waiting (or out for delivery), else whether it was due later.
    pub fn flush_one(&mut self, id: Id, now: u64) -> Option<bool> {
        if self.in_flight.contains_key(&id) {
            return Some(false);
        }
        let &(at, _) = self.due.iter().find(|&&(_, x)| x == id)?;
        if at <= now {
            return Some(false);
        }
        self.due.remove(&(at, id));
        self.due.insert((now, id));
        Some(true)
    }

    /// Takes `id` out of the schedule; whether it was waiting there.
    pub fn unschedule(&mut self, id: Id) -> bool {
        let before = self.due.len();
        self.due.retain(|&(_, x)| x != id);
        self.due.len() != before
    }

    /// When the next message falls due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Recipients by state: queued messages and finished records together.
    pub fn states(&self) -> [u64; 4] {
        let done = self.tallies.total().states;
        let mut all = self.pending.states;
        for (a, b) in all.iter_mut().zip(done) {
            *a += b;
        }
        all
    }

    /// Every queued message's id (waiting or being delivered), sorted.
    pub fn queued_ids(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self.due.iter().map(|&(_, id)| id).collect();
        ids.extend(
            self.in_flight
                .iter()
                .filter(|(_, t)| !t.deleted)
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        ids
    }
}

/// The count of recipients in `state` among `states`.
pub fn count(states: &[u64; 4], state: State) -> u64 {
    states[state_index(state)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::address::Address;

    fn id(n: u64) -> Id {
        format!("{n:018X}").parse().unwrap()
    }

    fn record(n: u64, due: u64) -> Record {
        let to = [
            Address::parse("a@x.test").unwrap(),
            Address::parse("b@Y.test").unwrap(),
        ];
        let mut r = Record::new(id(n), None, &to, 1, Some(format!("k{n}")), due);
        r.recipients[1].state = State::Delivered;
        r
    }

    #[test]
    fn take_put_back_flush() {
        let mut m = Memory::new(10);
        m.index(&record(1, 100));
        m.index(&record(2, 50));
        assert_eq!(m.next_due(), Some(50));
        assert_eq!(m.take(49), None);
        assert_eq!(m.take(100), Some((id(2), 50)));
        assert_eq!(m.take(100), Some((id(1), 100)));
        assert_eq!(m.take(100), None);
        // Flushed while out: comes back due at the flush, not later.
        m.flush(120);
        m.put_back(id(2), 500);
        assert_eq!(m.next_due(), Some(120));
        m.put_back(id(1), 600);
        assert_eq!(m.next_due(), Some(120), "both taken before the flush");
        assert_eq!(m.flush(130), 0, "due already");
        assert_eq!(
            m.due.iter().copied().collect::<Vec<_>>(),
            [(120, id(1)), (120, id(2))]
        );
        // Taken after the flush: put back when its record says.
        m.take(130);
        m.put_back(id(1), 700);
        assert_eq!(m.due.last(), Some(&(700, id(1))));
        assert!(m.unschedule(id(2)));
        assert!(!m.unschedule(id(2)));
        assert_eq!(m.queued_ids(), [id(1)]);
    }

    #[test]
    fn deleted_while_out_is_not_put_back() {
        let mut m = Memory::new(10);
        m.index(&record(1, 0));
        m.take(0);
        m.in_flight.get_mut(&id(1)).unwrap().deleted = true;
        assert!(m.queued_ids().is_empty());
        m.put_back(id(1), 5);
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn counts_follow_records() {
        let mut m = Memory::new(10);
        let r = record(1, 0);
        m.index(&r);
        assert_eq!(m.pending.messages, 1);
        assert_eq!(count(&m.states(), State::Queued), 1);
        assert_eq!(count(&m.states(), State::Delivered), 1);
        assert_eq!(m.pending.domains.get("x.test"), Some(&1));
        assert_eq!(
            m.pending.domains.get("y.test"),
            None,
            "final recipients are not pending"
        );
        m.pending.sub(&r);
        assert_eq!(m.pending.messages, 0);
        assert!(m.pending.domains.is_empty());
        assert_eq!(m.states(), [0; 4]);
    }

    #[test]
    fn keys_are_remembered_while_queued_and_a_while_after() {
        let mut k = Keys::new(2);
        let h: Vec<u64> = (0..4).map(|n| k.hash(&format!("key{n}"))).collect();
        assert_ne!(h[0], h[1]);
        assert!(k.start(h[0]));
        assert!(!k.start(h[0]));
        assert_eq!(k.get(h[0]), Err(Busy));
        k.queued(h[0], id(0));
        k.end(h[0]);
        assert_eq!(k.get(h[0]), Ok(Some(id(0))));
        for (n, &hn) in h.iter().enumerate() {
            k.finished(hn, id(n as u64));
        }
        // Only the last two finished ones are kept.
        assert_eq!(k.get(h[0]), Ok(None));
        assert_eq!(k.get(h[1]), Ok(None));
        assert_eq!(k.get(h[3]), Ok(Some(id(3))));
        k.remove(h[3], id(3));
        assert_eq!(k.get(h[3]), Ok(None));
    }
}
