//! What the status page remembers of recent deliveries, in fixed memory:
//! per-minute counts over 24 hours (a ring of 1440 slots), the last 50
//! failures, and the deferral reasons of the last 24 hours per domain (at
//! most 500 of them; the one seen longest ago makes room). Pure: every call
//! takes the time, so it is tested without a clock.

use std::collections::VecDeque;

/// Minutes the chart covers.
pub const MINUTES: usize = 24 * 60;
/// Failures kept for the page.
pub const FAILURES: usize = 50;
/// Distinct (domain, reason) pairs kept.
const REASONS: usize = 500;
/// Longest reason kept, in bytes.
const REASON_LEN: usize = 200;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = MINUTES as u64 * MINUTE_MS;

/// What became of one recipient's attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 2xx.
    Delivered = 0,
    /// Tried again later.
    Deferred = 1,
    /// Failed for good.
    Bounced = 2,
}

/// One failed attempt, for the list on the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// When (ms since 1970).
    pub at: u64,
    /// Queue id.
    pub id: String,
    /// The recipient.
    pub recipient: String,
    /// Deferred or bounced.
    pub kind: Kind,
    /// The remote's reply, else what went wrong.
    pub text: String,
}

/// The counters of one minute.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    minute: u64,
    counts: [u32; 3],
}

/// The recent past, bounded.
#[derive(Debug)]
pub struct History {
    slots: Vec<Slot>,
    failures: VecDeque<Failure>,
    /// Deferral reasons with their count and when each was last seen; a
    /// list, searched whole: it is short, and the page sorts it anyway.
    reasons: Vec<Seen>,
}

/// A deferral reason to one domain.
#[derive(Clone, Debug)]
struct Seen {
    domain: String,
    reason: String,
    count: u32,
    last: u64,
}

impl Default for History {
    fn default() -> History {
        History {
            slots: vec![Slot::default(); MINUTES],
            failures: VecDeque::with_capacity(FAILURES),
            reasons: Vec::new(),
        }
    }
}

/// One deferral reason, for the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// The destination domain.
    pub domain: String,
    /// Deferrals with this reason in the last 24 hours.
    pub count: u32,
    /// The reason.
    pub text: String,
}

impl History {
    /// Counts one attempt's outcome at `now`.
    pub fn count(&mut self, kind: Kind, now: u64) {
        let minute = now / MINUTE_MS;
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.minute > minute {
            // From before a clock step back: its minute's slot is reused.
            return;
        }
        if slot.minute != minute {
            *slot = Slot {
                minute,
                counts: [0; 3],
            };
        }
        slot.counts[kind as usize] = slot.counts[kind as usize].saturating_add(1);
    }

    /// Remembers a failed attempt (deferred or bounced) to `domain`.
    pub fn fail(&mut self, failure: Failure, domain: &str) {
        if failure.kind == Kind::Deferred {
            // Replies name the recipient; without it one reason counts once
            // for all the recipients it stops.
            let mut reason = failure.text.replace(&failure.recipient, "…");
            if reason.len() > REASON_LEN {
                let mut end = REASON_LEN;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason.truncate(end);
            }
            let known = self
                .reasons
                .iter_mut()
                .find(|r| r.domain == domain && r.reason == reason);
            match known {
                Some(seen) => {
                    seen.count = seen.count.saturating_add(1);
                    seen.last = seen.last.max(failure.at);
                }
                None => {
                    if self.reasons.len() >= REASONS {
                        let oldest = self.reasons.iter().enumerate().min_by_key(|(_, r)| r.last);
                        if let Some(i) = oldest.map(|(i, _)| i) {
                            self.reasons.swap_remove(i);
                        }
                    }
                    self.reasons.push(Seen {
                        domain: domain.to_string(),
                        reason,
                        count: 1,
                        last: failure.at,
                    });
                }
            }
        }
        if self.failures.len() == FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(failure);
    }

    /// Counts per minute for the 24 hours up to `now`, oldest first:
    /// [delivered, deferred, bounced].
    pub fn per_minute(&self, now: u64) -> Vec<[u32; 3]> {
        let current = now / MINUTE_MS;
        (0..MINUTES as u64)
            .map(|ago| current.wrapping_sub(MINUTES as u64 - 1 - ago))
            .map(|minute| {
                let slot = self.slots[(minute % MINUTES as u64) as usize];
                if slot.minute == minute {
                    slot.counts
                } else {
                    [0; 3]
                }
            })
            .collect()
    }

    /// The failures kept, newest first.
    pub fn failures(&self) -> Vec<Failure> {
        self.failures.iter().rev().cloned().collect()
    }

    /// The most frequent deferral reasons of the 24 hours up to `now`, for
    /// the `domains` domains with most deferrals, `per_domain` each.
    pub fn reasons(&self, now: u64, domains: usize, per_domain: usize) -> Vec<Reason> {
        let mut recent: Vec<&Seen> = self
            .reasons
            .iter()
            .filter(|r| now.saturating_sub(r.last) < DAY_MS)
            .collect();
        // Domains by their deferrals, most first; within one, reasons likewise.
        let total = |domain: &str| -> u64 {
            recent
                .iter()
                .filter(|r| r.domain == domain)
                .map(|r| u64::from(r.count))
                .sum()
        };
        let mut order: Vec<(u64, &str)> = recent
            .iter()
            .map(|r| (total(&r.domain), r.domain.as_str()))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        order.dedup();
        recent.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        order
            .into_iter()
            .take(domains)
            .flat_map(|(_, domain)| {
                recent
                    .iter()
                    .filter(move |r| r.domain == domain)
                    .take(per_domain)
                    .map(|r| Reason {
                        domain: r.domain.clone(),
                        count: r.count,
                        text: r.reason.clone(),
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    fn failure(at: u64, kind: Kind, text: &str) -> Failure {
        Failure {
            at,
            id: "ID".into(),
            recipient: "a@b.test".into(),
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn counts_per_minute_over_a_day() {
        let mut h = History::default();
        h.count(Kind::Delivered, T);
        h.count(Kind::Delivered, T + 1000);
        h.count(Kind::Deferred, T - MINUTE_MS);
        h.count(Kind::Bounced, T - 2 * DAY_MS);
        let m = h.per_minute(T);
        assert_eq!(m.len(), MINUTES);
        assert_eq!(m[MINUTES - 1], [2, 0, 0]);
        assert_eq!(m[MINUTES - 2], [0, 1, 0]);
        assert_eq!(
            m.iter().map(|c| c[2]).sum::<u32>(),
            0,
            "two days ago is gone"
        );
        // A day later the same slot starts again from zero.
        h.count(Kind::Bounced, T + DAY_MS);
        let m = h.per_minute(T + DAY_MS);
        assert_eq!(m[MINUTES - 1], [0, 0, 1]);
        assert_eq!(m.iter().map(|c| c[0]).sum::<u32>(), 0);
    }

    #[test]
    fn keeps_the_last_fifty_failures_newest_first() {
        let mut h = History::default();
        for n in 0..60 {
            h.fail(failure(T + n, Kind::Bounced, "550 no"), "b.test");
        }
        let f = h.failures();
        assert_eq!(f.len(), FAILURES);
        assert_eq!((f[0].at, f[49].at), (T + 59, T + 10));
    }

    #[test]
    fn reasons_per_domain_most_frequent_first_within_a_day() {
        let mut h = History::default();
        for (domain, text, n) in [
            ("a.test", "450 greylisted", 5),
            ("a.test", "421 busy", 2),
            ("b.test", "timeout", 9),
            ("c.test", "old", 1),
        ] {
            for _ in 0..n {
                let at = if domain == "c.test" {
                    T - 2 * DAY_MS
                } else {
                    T
                };
                h.fail(failure(at, Kind::Deferred, text), domain);
            }
        }
        h.fail(failure(T, Kind::Bounced, "550 not a deferral"), "a.test");
        h.fail(
            failure(T, Kind::Deferred, "450 <a@b.test>: greylisted"),
            "b.test",
        );
        let mut other = failure(T, Kind::Deferred, "450 <c@b.test>: greylisted");
        other.recipient = "c@b.test".into();
        h.fail(other, "b.test");
        let r = h.reasons(T, 10, 3);
        let got: Vec<(&str, u32, &str)> = r
            .iter()
            .map(|r| (r.domain.as_str(), r.count, r.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("b.test", 9, "timeout"),
                ("b.test", 2, "450 <…>: greylisted"),
                ("a.test", 5, "450 greylisted"),
                ("a.test", 2, "421 busy")
            ]
        );
        assert_eq!(h.reasons(T, 1, 1).len(), 1);
    }

    #[test]
    fn reasons_are_bounded() {
        let mut h = History::default();
        for n in 0..(REASONS as u64 + 20) {
            h.fail(
                failure(
                    T + n,
                    Kind::Deferred,
                    &format!("reason {n} {}", "x".repeat(300)),
                ),
                "d.test",
            );
        }
        assert_eq!(h.reasons.len(), REASONS);
        assert!(h.reasons.iter().all(|r| r.reason.len() <= REASON_LEN));
        assert!(
            !h.reasons.iter().any(|r| r.reason.starts_with("reason 0 ")),
            "the oldest made room"
        );
    }
}
