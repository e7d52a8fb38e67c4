//! Per-domain concurrency feedback, as Postfix's destination concurrency
//! feedback: a provider that says "too many connections" or "rate limited"
//! (a 421, or a 4.7.x "try again later") gets half the connections it had
//! (down to 1) and a pause before the next new one; successes grow the
//! window back to `per_domain`, one connection per window's worth of
//! successes. Every domain has its own window, so one throttling provider
//! never holds the others' connections.
//!
//! A pure state machine: time is a parameter, nothing here sleeps. The
//! delivery loop ([`super::domains`]) asks [`Windows::try_open`] before
//! connecting and reports each session's outcome with [`Windows::close`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hedwig::smtp::reply::Reply;

/// What a finished session says about the provider's appetite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Mail was accepted: the window may grow.
    Success,
    /// The provider throttled us: halve the window and pause.
    Throttled,
    /// Anything else (a refusal, a network error): no change.
    Neutral,
}

impl Feedback {
    /// Reads a reply: 421 (the server is closing, typically "too many
    /// connections"), or a transient 4.7.x or one whose text speaks of rate
    /// or "later" (Outlook's 451 4.7.500 "Server busy", NetEase's plain
    /// 451s), is throttling; a positive reply is success.
    pub fn of(reply: &Reply) -> Feedback {
        if reply.is_positive() {
            return Feedback::Success;
        }
        let text = reply.to_string().to_ascii_lowercase();
        let words = ["rate", "try again later", "too many", "throttl", "busy"];
        let policy = text
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with("4.7."));
        if reply.code == 421
            || (reply.is_transient() && (policy || words.iter().any(|w| text.contains(w))))
        {
            Feedback::Throttled
        } else {
            Feedback::Neutral
        }
    }
}

/// Why a connection cannot be opened now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The window is full: wait for a session to close.
    Slot,
    /// The domain is in a pause after throttling, until then.
    Until(Instant),
}

/// A session the window counted; give it back with [`Windows::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The window's generation when the session opened: a session opened
    /// before the last halving cannot halve it again (one halving per
    /// round of sessions, as TCP halves once per window of loss).
    generation: u64,
}

#[derive(Debug, Clone)]
struct Window {
    limit: usize,
    open: usize,
    successes: usize,
    generation: u64,
    strikes: u32,
    paused_until: Option<Instant>,
}

/// The windows of every domain with sessions or a reduced window.
#[derive(Debug)]
pub struct Windows {
    per_domain: usize,
    first: Duration,
    max: Duration,
    domains: HashMap<String, Window>,
}

/// A change of a domain's window worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The window before.
    pub from: usize,
    /// The window after.
    pub to: usize,
    /// For a throttling, how long new connections pause.
    pub pause: Option<Duration>,
}

impl Windows {
    /// Windows of at most `per_domain`; pauses double from `first` up to `max`.
    pub fn new(per_domain: usize, first: Duration, max: Duration) -> Windows {
        Windows {
            per_domain: per_domain.max(1),
            first,
            max: max.max(first),
            domains: HashMap::new(),
        }
    }

    /// Opens a session to `domain` if its window and pause allow.
    pub fn try_open(&mut self, domain: &str, now: Instant) -> Result<Ticket, Wait> {
        let per_domain = self.per_domain;
        let w = self.domains.entry(domain.to_string()).or_insert(Window {
            limit: per_domain,
            open: 0,
            successes: 0,
            generation: 0,
            strikes: 0,
            paused_until: None,
        });
        if let Some(until) = w.paused_until {
            if now < until {
                return Err(Wait::Until(until));
            }
            w.paused_until = None;
        }
        if w.open >= w.limit {
            return Err(Wait::Slot);
        }
        w.open += 1;
        Ok(Ticket {
            generation: w.generation,
        })
    }

    /// Closes a session opened with `ticket`, with what it learnt; returns
    /// the window's change, if any.
    pub fn close(
        &mut self,
        domain: &str,
        ticket: Ticket,
        feedback: Feedback,
        now: Instant,
    ) -> Option<Change> {
        let w = self.domains.get_mut(domain)?;
        w.open = w.open.saturating_sub(1);
        let change = match feedback {
            Feedback::Throttled if ticket.generation == w.generation => {
                let from = w.limit;
                w.limit = (w.limit / 2).max(1);
                w.generation += 1;
                w.successes = 0;
                let pause = self
                    .first
                    .saturating_mul(1 << w.strikes.min(16))
                    .min(self.max);
                w.strikes += 1;
                w.paused_until = Some(now + pause);
                Some(Change {
                    from,
                    to: w.limit,
                    pause: Some(pause),
                })
            }
            Feedback::Success => {
                w.strikes = 0;
                w.successes += 1;
                // One more connection per window's worth of successes (additive increase).
                if w.limit < self.per_domain && w.successes >= w.limit {
                    w.successes = 0;
                    w.limit += 1;
                    Some(Change {
                        from: w.limit - 1,
                        to: w.limit,
                        pause: None,
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        // A domain back to normal and idle needs no entry.
        if w.open == 0 && w.limit == self.per_domain && w.paused_until.is_none_or(|u| u <= now) {
            self.domains.remove(domain);
        }
        change
    }

    /// Domains with an entry (open sessions, a reduced window or a pause).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.domains.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::reply::Status;

    const S: Duration = Duration::from_secs(1);

    fn open_all(w: &mut Windows, now: Instant) -> Vec<Ticket> {
        std::iter::from_fn(|| w.try_open("gmail.com", now).ok()).collect()
    }

    #[test]
    fn throttling_halves_once_per_round_and_pauses() {
        let t0 = Instant::now();
        let mut w = Windows::new(10, 30 * S, 600 * S);
        let tickets = open_all(&mut w, t0);
        assert_eq!(tickets.len(), 10);
        assert_eq!(w.try_open("gmail.com", t0), Err(Wait::Slot));
        // Eight sessions of the first round are throttled: one halving.
        let change = w.close("gmail.com", tickets[0], Feedback::Throttled, t0);
        assert_eq!(
            change,
            Some(Change {
                from: 10,
                to: 5,
                pause: Some(30 * S)
            })
        );
        for t in &tickets[1..8] {
            assert_eq!(w.close("gmail.com", *t, Feedback::Throttled, t0), None);
        }
        // New connections wait out the pause, whatever the window.
        assert_eq!(
            w.try_open("gmail.com", t0 + S),
            Err(Wait::Until(t0 + 30 * S))
        );
        // Another domain is not held back.
        assert!(w.try_open("qq.com", t0).is_ok());
        // After the pause: two sessions still open, so three more.
        let later = t0 + 30 * S;
        assert_eq!(open_all(&mut w, later).len(), 3);
        // The next round throttled again: halved and a longer pause.
        let t = w.try_open("yahoo.com", later).unwrap();
        let _ = t;
        let ticket = Ticket { generation: 1 };
        let change = w.close("gmail.com", ticket, Feedback::Throttled, later);
        assert_eq!(
            change,
            Some(Change {
                from: 5,
                to: 2,
                pause: Some(60 * S)
            })
        );
    }

    #[test]
    fn never_below_one_and_pauses_capped() {
        let t0 = Instant::now();
        let mut w = Windows::new(2, 30 * S, 90 * S);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..4 {
            let t = w.try_open("d", now).unwrap();
            let c = w.close("d", t, Feedback::Throttled, now).unwrap();
            assert!(c.to >= 1);
            pauses.push(c.pause.unwrap());
            now += c.pause.unwrap();
        }
        assert_eq!(pauses, [30 * S, 60 * S, 90 * S, 90 * S]);
    }

    #[test]
    fn successes_grow_the_window_back() {
        let t0 = Instant::now();
        let mut w = Windows::new(4, S, S);
        let t = w.try_open("d", t0).unwrap();
        w.close("d", t, Feedback::Throttled, t0); // 4 -> 2
        let now = t0 + S;
        let mut limits = Vec::new();
        for _ in 0..10 {
            let t = w.try_open("d", now).unwrap();
            if let Some(c) = w.close("d", t, Feedback::Success, now) {
                limits.push(c.to);
            }
        }
        // Two successes at 2 make 3, three at 3 make 4, then it stays.
        assert_eq!(limits, [3, 4]);
        assert_eq!(w.tracked(), 0, "back to normal and idle: forgotten");
        // Neutral outcomes change nothing.
        let t = w.try_open("d", now).unwrap();
        assert_eq!(w.close("d", t, Feedback::Neutral, now), None);
    }

    #[test]
    fn replies_are_read_as_feedback() {
        let r = |code, s: (u8, u16, u16), text| Reply::new(code, Status(s.0, s.1, s.2), text);
        let f = |reply: Reply| Feedback::of(&reply);
        assert_eq!(f(r(250, (2, 0, 0), "ok")), Feedback::Success);
        assert_eq!(
            f(r(421, (4, 7, 0), "Too many concurrent SMTP connections")),
            Feedback::Throttled
        );
        assert_eq!(f(r(421, (4, 3, 2), "shutting down")), Feedback::Throttled);
        assert_eq!(
            f(r(451, (4, 7, 500), "Server busy. Please try again later")),
            Feedback::Throttled
        );
        assert_eq!(
            f(r(
                450,
                (4, 2, 1),
                "receiving mail at a rate that prevents more"
            )),
            Feedback::Throttled
        );
        assert_eq!(f(r(450, (4, 2, 0), "mailbox busy")), Feedback::Throttled);
        assert_eq!(
            f(r(450, (4, 1, 1), "no such user here yet")),
            Feedback::Neutral
        );
        assert_eq!(
            f(r(550, (5, 7, 1), "rate of spam too high")),
            Feedback::Neutral
        );
    }
}
