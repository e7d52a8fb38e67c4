//! What postoffice knows of one message: per recipient, where delivery
//! stands. Pure data and pure transitions; time is a parameter (milliseconds
//! since 1970), so every rule here is tested without a clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not tried yet.
    Queued,
    /// Tried, failed for now, will be tried again.
    Deferred,
    /// The destination took it.
    Delivered,
    /// Failed for good; the sender was told (unless it was a bounce).
    Bounced,
}

impl State {
    /// Delivered or bounced: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Bounced)
    }

    /// Every state, for counting.
    pub const ALL: [State; 4] = [
        State::Queued,
        State::Deferred,
        State::Delivered,
        State::Bounced,
    ];

    /// The lowercase name, as in the API.
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Delivered => "delivered",
            State::Bounced => "bounced",
        }
    }
}

/// One recipient's delivery record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The envelope address.
    pub address: String,
    /// Where it stands.
    pub state: State,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since 1970); `None` once final.
    pub next_attempt: Option<u64>,
    /// `host[ip]:port` of the last attempt.
    pub relay: Option<String>,
    /// The remote's last reply.
    pub reply: Option<String>,
    /// When it became final.
    pub ended_at: Option<u64>,
    /// The last [`HISTORY`] attempts, oldest first (`attempts` counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
}

/// How many attempts a recipient's record keeps: enough to see a pattern,
/// few enough that a long-deferred message stays small in memory and on disk.
pub const HISTORY: usize = 10;

/// One delivery attempt, as the status page and `postoffice queue show` list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it ended (ms since 1970).
    pub at: u64,
    /// What it came to: delivered, deferred or bounced.
    pub state: State,
    /// `host[ip]:port`, when a server was reached.
    pub relay: Option<String>,
    /// The remote's reply, else what went wrong.
    pub text: String,
}

/// A message in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Queue id.
    pub id: String,
    /// Envelope sender; empty for the null sender.
    pub from: String,
    /// Message size in bytes.
    pub size: u64,
    /// When it was accepted (ms since 1970).
    pub received_at: u64,
    /// The Idempotency-Key it came with.
    pub key: Option<String>,
    /// One entry per envelope recipient.
    pub recipients: Vec<Recipient>,
}

/// What an attempt did for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered {
        /// Where it went.
        relay: String,
        /// The remote's reply.
        reply: String,
    },
    /// 4xx, connection trouble, DNS trouble: try again.
    Deferred {
        /// Where it was tried, if anywhere.
        relay: Option<String>,
        /// What went wrong.
        error: String,
        /// The remote's reply, if it said something.
        reply: Option<String>,
    },
    /// 5xx, null MX, NXDOMAIN: give up now.
    Bounced {
        /// Where it was tried, if anywhere.
        relay: Option<String>,
        /// What went wrong.
        error: String,
        /// The remote's reply, if it said something.
        reply: Option<String>,
    },
}

impl Outcome {
    /// The attempt this outcome records at `now` (its state may still turn
    /// from deferred to bounced: give-up time).
    fn attempt(&self, now: u64) -> Attempt {
        let (state, relay, text) = match self {
            Outcome::Delivered { relay, reply } => (State::Delivered, Some(relay), reply),
            Outcome::Deferred {
                relay,
                error,
                reply,
            } => (
                State::Deferred,
                relay.as_ref(),
                reply.as_ref().unwrap_or(error),
            ),
            Outcome::Bounced {
                relay,
                error,
                reply,
            } => (
                State::Bounced,
                relay.as_ref(),
                reply.as_ref().unwrap_or(error),
            ),
        };
        Attempt {
            at: now,
            state,
            relay: relay.cloned(),
            text: text.clone(),
        }
    }
}

/// The delivery policy's timing.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// First retry wait.
    pub first: Duration,
    /// Cap of the doubling.
    pub max: Duration,
    /// Age after which a deferred recipient is bounced.
    pub give_up: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Record {
    /// A fresh record: every recipient queued and due at `now`.
    pub fn new(
        id: String,
        from: String,
        to: &[String],
        size: u64,
        key: Option<String>,
        now: u64,
    ) -> Record {
        let recipients = to
            .iter()
            .map(|a| Recipient {
                address: a.clone(),
                state: State::Queued,
                attempts: 0,
                last_error: None,
                next_attempt: Some(now),
                relay: None,
                reply: None,
                ended_at: None,
                history: Vec::new(),
            })
            .collect();
        Record {
            id,
            from,
            size,
            received_at: now,
            key,
            recipients,
        }
    }

    /// Applies one attempt's outcome for recipient `i` at `now`. A deferral
    /// past `give_up` (counted from acceptance) becomes a bounce.
    pub fn apply(&mut self, i: usize, outcome: Outcome, now: u64, policy: &Policy) {
        let age = now.saturating_sub(self.received_at);
        let r = &mut self.recipients[i];
        r.attempts += 1;
        let attempt = outcome.attempt(now);
        match outcome {
            Outcome::Delivered { relay, reply } => {
                r.state = State::Delivered;
                r.relay = Some(relay);
                r.reply = Some(reply);
                r.last_error = None;
                r.next_attempt = None;
                r.ended_at = Some(now);
            }
            Outcome::Deferred {
                relay,
                error,
                reply,
            } if age < ms(policy.give_up) => {
                r.state = State::Deferred;
                r.relay = relay.or(r.relay.take());
                r.reply = reply;
                r.last_error = Some(error);
                let wait = hedwig::retry::backoff(policy.first, policy.max, r.attempts);
                r.next_attempt = Some(now.saturating_add(ms(wait)));
            }
            Outcome::Deferred {
                relay,
                error,
                reply,
            } => {
                let error = format!("gave up after {} attempts: {error}", r.attempts);
                r.state = State::Bounced;
                r.relay = relay.or(r.relay.take());
                r.reply = reply;
                r.last_error = Some(error);
                r.next_attempt = None;
                r.ended_at = Some(now);
            }
            Outcome::Bounced {
                relay,
                error,
                reply,
            } => {
                r.state = State::Bounced;
                r.relay = relay;
                r.reply = reply;
                r.last_error = Some(error);
                r.next_attempt = None;
                r.ended_at = Some(now);
            }
        }
        if r.history.len() == HISTORY {
            r.history.remove(0);
        }
        r.history.push(Attempt {
            state: r.state,
            ..attempt
        });
    }

    /// Indexes of the recipients due at `now`.
    pub fn due(&self, now: u64) -> Vec<usize> {
        let due = |r: &Recipient| r.next_attempt.is_some_and(|t| t <= now) && !r.state.is_final();
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| due(r))
            .map(|(i, _)| i)
            .collect()
    }

    /// The earliest next attempt of any recipient still pending.
    pub fn next_due(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| !r.state.is_final())
            .filter_map(|r| r.next_attempt)
            .min()
    }

    /// When the last recipient became final, once all are.
    pub fn finished_at(&self) -> Option<u64> {
        if self.recipients.iter().all(|r| r.state.is_final()) {
            self.recipients
                .iter()
                .filter_map(|r| r.ended_at)
                .max()
                .or(Some(self.received_at))
        } else {
            None
        }
    }

    /// Makes every deferred recipient due at `now` (a queue flush).
    pub fn flush(&mut self, now: u64) -> bool {
        let mut any = false;
        for r in &mut self.recipients {
            if r.state == State::Deferred {
                r.next_attempt = Some(now);
                any = true;
            }
        }
        any
    }

    /// The recipient's domain, lowercased (the unit of a delivery).
    pub fn domain(&self, i: usize) -> String {
        let a = &self.recipients[i].address;
        a.rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const POLICY: Policy = Policy {
        first: Duration::from_secs(300),
        max: Duration::from_secs(3600),
        give_up: Duration::from_secs(5 * 86400),
    };

    fn record() -> Record {
        Record::new(
            "ID".into(),
            "s@x".into(),
            &["a@b.org".into(), "c@D.org".into()],
            10,
            None,
            0,
        )
    }

    fn deferred() -> Outcome {
        Outcome::Deferred {
            relay: Some("mx[1.2.3.4]:25".into()),
            error: "450 busy".into(),
            reply: None,
        }
    }

    #[test]
    fn new_records_are_due_now() {
        let r = record();
        assert_eq!(r.due(0), [0, 1]);
        assert_eq!(r.next_due(), Some(0));
        assert_eq!(r.domain(1), "d.org");
        assert_eq!(r.finished_at(), None);
    }

    #[test]
    fn deferrals_back_off_then_bounce_after_give_up() {
        let mut r = record();
        r.apply(0, deferred(), 0, &POLICY);
        assert_eq!(r.recipients[0].state, State::Deferred);
        assert_eq!(r.recipients[0].next_attempt, Some(5 * MIN));
        r.apply(0, deferred(), 5 * MIN, &POLICY);
        assert_eq!(r.recipients[0].next_attempt, Some(15 * MIN));
        assert_eq!(r.due(6 * MIN), [1]);
        for _ in 0..10 {
            r.apply(0, deferred(), 20 * MIN, &POLICY);
        }
        // Capped at one hour.
        assert_eq!(r.recipients[0].next_attempt, Some(80 * MIN));
        r.apply(0, deferred(), 5 * 1440 * MIN, &POLICY);
        assert_eq!(r.recipients[0].state, State::Bounced);
        assert!(r.recipients[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 13 attempts"));
    }

    #[test]
    fn finished_when_all_final() {
        let mut r = record();
        let delivered = Outcome::Delivered {
            relay: "mx".into(),
            reply: "250 ok".into(),
        };
        r.apply(0, delivered, 7, &POLICY);
        assert_eq!(r.finished_at(), None);
        assert_eq!(r.next_due(), Some(0));
        r.apply(
            1,
            Outcome::Bounced {
                relay: None,
                error: "550".into(),
                reply: None,
            },
            9,
            &POLICY,
        );
        assert_eq!(r.finished_at(), Some(9));
        assert_eq!(r.next_due(), None);
        assert!(r.due(100).is_empty());
    }

    #[test]
    fn flush_makes_deferred_due() {
        let mut r = record();
        r.apply(0, deferred(), 0, &POLICY);
        assert!(r.flush(1));
        assert_eq!(r.due(1), [0, 1]);
    }

    #[test]
    fn history_keeps_the_last_attempts_in_order() {
        let mut r = record();
        for n in 0..(HISTORY as u64 + 3) {
            r.apply(0, deferred(), n * MIN, &POLICY);
        }
        let h = &r.recipients[0].history;
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].at, 3 * MIN, "the oldest three fell off");
        assert_eq!(h[HISTORY - 1].state, State::Deferred);
        assert_eq!(h[0].relay.as_deref(), Some("mx[1.2.3.4]:25"));
        assert_eq!(h[0].text, "450 busy");
        r.apply(0, deferred(), 6 * 1440 * MIN, &POLICY);
        assert_eq!(
            r.recipients[0].history.last().unwrap().state,
            State::Bounced,
            "gave up"
        );
        // Records written before the history existed still load.
        let old = r#"{"address":"a@b","state":"queued","attempts":0,"last_error":null,
            "next_attempt":0,"relay":null,"reply":null,"ended_at":null}"#;
        assert!(serde_json::from_str::<Recipient>(old)
            .unwrap()
            .history
            .is_empty());
    }

    #[test]
    fn json_round_trip() {
        let r = record();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"state\":\"queued\""));
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
