//! Which spooled message the forwarder hands off next. Pure: time is a
//! parameter, so the policy is tested without sleeping.
//!
//! Messages go oldest first (ids sort by acceptance time). When a hand-off
//! fails for a reason worth retrying, postoffice is most likely down or
//! overloaded for every message, not just that one, so the whole queue
//! pauses (doubling from `first`, capped at `max`, like Postfix's dead-host
//! backoff) and then one message at a time probes until one succeeds. This
//! keeps a thousand spooled messages from each hammering a dead postoffice
//! on its own timer, and once postoffice is back the spool drains in the
//! order it filled.
//!
//! The probe is the oldest message that has not failed yet, so one message
//! that postoffice keeps refusing with a temporary error cannot hold up the
//! rest: it waits on its own doubling backoff while the others flow.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hedwig::id::Id;
use hedwig::retry::Backoff;

/// The forwarder's queue of spooled messages waiting for a hand-off.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Messages not in flight, oldest first.
    waiting: BTreeSet<Id>,
    /// Messages that failed since their last success: failures so far and
    /// the earliest next try.
    failed: HashMap<Id, (u32, Instant)>,
    /// Hand-offs that failed in a row, counting one per pause.
    streak: u32,
    /// No hand-off starts before this, after a failure.
    paused_until: Option<Instant>,
}

impl Schedule {
    /// Adds a message to hand off as soon as the queue allows.
    pub fn add(&mut self, id: Id) {
        self.waiting.insert(id);
    }

    /// Takes the next message to hand off at `now`, given how many are in
    /// flight; None when nothing may start now.
    pub fn pop_due(&mut self, now: Instant, in_flight: usize) -> Option<Id> {
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        let id = if self.streak > 0 {
            // Probing: one at a time, preferring a message that has not failed.
            if in_flight > 0 {
                return None;
            }
            self.waiting
                .iter()
                .find(|id| !self.failed.contains_key(*id))
                .or_else(|| self.oldest_eligible(now))
        } else {
            self.oldest_eligible(now)
        }
        .copied()?;
        self.waiting.remove(&id);
        Some(id)
    }

    /// Takes up to `max` messages for one hand-off: as [`Schedule::pop_due`]
    /// takes one, and while probing (after a failure) only that one.
    pub fn pop_batch(&mut self, now: Instant, in_flight: usize, max: usize) -> Vec<Id> {
        let mut ids = Vec::new();
        while ids.len() < max && (ids.is_empty() || self.streak == 0) {
            match self.pop_due(now, in_flight) {
                Some(id) => ids.push(id),
                None => break,
            }
        }
        ids
    }

    fn oldest_eligible(&self, now: Instant) -> Option<&Id> {
        self.waiting
            .iter()
            .find(|id| self.failed.get(*id).is_none_or(|&(_, at)| at <= now))
    }

    /// When [`Schedule::pop_due`] may next return a message, if nothing else
    /// happens first (a new message, a hand-off ending).
    pub fn next_due(&self, now: Instant, in_flight: usize) -> Option<Instant> {
        if self.waiting.is_empty() || (self.streak > 0 && in_flight > 0) {
            return None;
        }
        if let Some(until) = self.paused_until.filter(|&until| now < until) {
            return Some(until);
        }
        if self.streak > 0 && self.waiting.iter().any(|id| !self.failed.contains_key(id)) {
            return Some(now);
        }
        self.waiting
            .iter()
            .map(|id| self.failed.get(id).map_or(now, |&(_, at)| at.max(now)))
            .min()
    }

    /// Records a hand-off that postoffice acknowledged: the queue flows again.
    pub fn succeeded(&mut self, id: Id) {
        self.failed.remove(&id);
        self.streak = 0;
        self.paused_until = None;
    }

    /// Records a hand-off that failed but may succeed later; the message
    /// waits again. Returns how long this message waits.
    pub fn failed(&mut self, id: Id, now: Instant, retry: Backoff) -> Duration {
        let failures = self.failed.get(&id).map_or(1, |&(n, _)| n + 1);
        let wait = retry.wait(failures);
        self.failed.insert(id, (failures, now + wait));
        self.waiting.insert(id);
        // The hand-offs in flight when postoffice went away fail together:
        // they make one pause, not a doubling each.
        if self.paused_until.is_none_or(|until| now >= until) {
            self.streak += 1;
            self.paused_until = Some(now + retry.wait(self.streak));
        }
        wait
    }

    /// Forgets a message that is done with (refused for good).
    pub fn forget(&mut self, id: Id) {
        self.failed.remove(&id);
    }

    /// Messages waiting (not in flight).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const RETRY: Backoff = Backoff {
        first: S,
        max: Duration::from_secs(8),
    };
    const MAX: Duration = Duration::from_secs(8);

    /// The id named `s`, ordered as the names are.
    fn id(s: &str) -> Id {
        format!("{s:0>18}").parse().unwrap()
    }

    fn schedule(ids: &[&str]) -> Schedule {
        let mut s = Schedule::default();
        for name in ids {
            s.add(id(name));
        }
        s
    }

    #[test]
    fn oldest_first() {
        let t = Instant::now();
        let mut s = schedule(&["C", "A", "B"]);
        assert_eq!(s.pop_due(t, 0), Some(id("A")));
        assert_eq!(s.pop_due(t, 1), Some(id("B")));
        assert_eq!(s.pop_due(t, 2), Some(id("C")));
        assert_eq!(s.pop_due(t, 3), None);
        assert_eq!(s.next_due(t, 3), None);
    }

    #[test]
    fn batches_take_the_oldest_but_probe_alone() {
        let t = Instant::now();
        let mut s = schedule(&["D", "A", "C", "B", "E"]);
        assert_eq!(s.pop_batch(t, 0, 3), [id("A"), id("B"), id("C")]);
        assert_eq!(s.pop_batch(t, 1, 3), [id("D"), id("E")]);
        assert_eq!(s.pop_batch(t, 2, 3), []);
        // A failed batch pauses the queue; the next hand-off is one probe.
        for name in ["A", "B", "C"] {
            s.failed(id(name), t, RETRY);
        }
        assert_eq!(s.pop_batch(t, 0, 3), []);
        assert_eq!(s.pop_batch(t + S, 0, 3).len(), 1);
    }

    #[test]
    fn a_failure_pauses_everything_then_probes_one_at_a_time() {
        let t = Instant::now();
        let mut s = schedule(&["A", "B", "C", "D"]);
        let a = s.pop_due(t, 0).unwrap();
        let b = s.pop_due(t, 1).unwrap();
        // Both in flight fail: one pause of `first`, not two doublings.
        assert_eq!(s.failed(a, t, RETRY), S);
        assert_eq!(s.failed(b, t, RETRY), S);
        assert_eq!(s.pop_due(t, 0), None);
        assert_eq!(s.next_due(t, 0), Some(t + S));
        // After the pause, one probe: the oldest message that has not failed.
        assert_eq!(s.pop_due(t + S, 0), Some(id("C")));
        assert_eq!(s.pop_due(t + S, 1), None, "one probe at a time");
        assert_eq!(s.next_due(t + S, 1), None);
        // The probe fails: the pause doubles.
        s.failed(id("C"), t + S, RETRY);
        assert_eq!(s.next_due(t + S, 0), Some(t + 3 * S));
        assert_eq!(s.pop_due(t + 3 * S, 0), Some(id("D")));
        // The probe succeeds: everything flows again, oldest first.
        s.succeeded(id("D"));
        assert_eq!(s.pop_due(t + 3 * S, 0), Some(id("A")));
        assert_eq!(s.pop_due(t + 3 * S, 1), Some(id("B")));
        assert_eq!(s.pop_due(t + 3 * S, 2), Some(id("C")));
    }

    #[test]
    fn pauses_double_up_to_max_and_reset_on_success() {
        let t = Instant::now();
        let mut s = schedule(&["A"]);
        let mut now = t;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let probe = s.pop_due(now, 0).expect("probe");
            s.failed(probe, now, RETRY);
            let next = s.next_due(now, 0).unwrap();
            pauses.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 8, 8]);
        let probe = s.pop_due(now, 0).unwrap();
        s.succeeded(probe);
        s.add(id("B"));
        let b = s.pop_due(now, 0).unwrap();
        s.failed(b, now, RETRY);
        assert_eq!(s.next_due(now, 0), Some(now + S));
    }

    #[test]
    fn a_message_that_keeps_failing_does_not_hold_up_the_rest() {
        let t = Instant::now();
        let mut s = schedule(&["A", "B", "C"]);
        // A fails every time, the others succeed.
        let a = s.pop_due(t, 0).unwrap();
        s.failed(a, t, RETRY);
        assert_eq!(s.pop_due(t + S, 0), Some(id("B")));
        s.succeeded(id("B"));
        // A's own backoff has passed: it goes first again, and fails again.
        assert_eq!(s.pop_due(t + S, 0), Some(id("A")));
        s.failed(id("A"), t + S, RETRY);
        // Its own wait doubles; C flows after one pause.
        assert_eq!(s.pop_due(t + 2 * S, 0), Some(id("C")));
        s.succeeded(id("C"));
        assert_eq!(
            s.pop_due(t + 2 * S, 0),
            None,
            "A waits 2 s from its last try"
        );
        assert_eq!(s.next_due(t + 2 * S, 0), Some(t + 3 * S));
        assert_eq!(s.pop_due(t + 3 * S, 0), Some(id("A")));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn after_an_outage_the_spool_drains_in_order() {
        let t = Instant::now();
        let ids: Vec<Id> = (0..100).map(|n| id(&format!("{n:03}"))).collect();
        let mut s = Schedule::default();
        let mut now = t;
        // postoffice is down while the messages arrive: a few probes fail.
        for id in &ids {
            s.add(*id);
            if let Some(probe) = s.pop_due(now, 0) {
                s.failed(probe, now, RETRY);
            }
            now += Duration::from_millis(100);
        }
        // Back up: the first probe succeeds, then all go oldest first.
        now += MAX;
        let probe = s.pop_due(now, 0).unwrap();
        s.succeeded(probe);
        let mut order = vec![probe];
        while let Some(id) = s.pop_due(now, 0) {
            s.succeeded(id);
            order.push(id);
        }
        assert_eq!(order.len(), 100);
        let mut sorted = order[1..].to_vec();
        sorted.sort();
        assert_eq!(order[1..], sorted[..], "in order after the probe");
    }
}
