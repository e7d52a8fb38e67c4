//! What postoffice knows of one message: per recipient, where delivery
//! stands. Pure data and pure transitions; time is a parameter (milliseconds
//! since 1970), so every rule here is tested without a clock.
//!
//! Every field is typed (addresses, replies, the relay), stored as readable
//! JSON through each type's own printer and parser, and a record that does
//! not parse back is an error, never a guess.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use hedwig::id::Id;
use hedwig::retry::Backoff;
use hedwig::smtp::address::Address;
use hedwig::smtp::reply::Reply;
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

/// The mail server an attempt went to: `mx.example.org[192.0.2.1]:25`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// Its name (the MX host or the route's host).
    pub host: String,
    /// The address connected to.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.host, self.ip, self.port)
    }
}

impl FromStr for Relay {
    type Err = String;

    fn from_str(s: &str) -> Result<Relay, String> {
        let bad = || format!("not a relay (host[ip]:port): {s:?}");
        let (host, rest) = s.split_once('[').ok_or_else(bad)?;
        let (ip, port) = rest.rsplit_once("]:").ok_or_else(bad)?;
        Ok(Relay {
            host: host.to_string(),
            ip: ip.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for Relay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Relay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Relay, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One recipient's delivery record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The envelope address.
    pub address: Address,
    /// Where it stands.
    pub state: State,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since 1970); `None` once final.
    pub next_attempt: Option<u64>,
    /// The server of the last attempt.
    pub relay: Option<Relay>,
    /// The remote's last reply.
    pub reply: Option<Reply>,
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
    /// The server, when one was reached.
    pub relay: Option<Relay>,
    /// The remote's reply (one line), else what went wrong.
    pub text: String,
}

/// A message in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Queue id.
    pub id: Id,
    /// Envelope sender; `None` for the null sender (stored as "").
    #[serde(with = "sender")]
    pub from: Option<Address>,
    /// Message size in bytes.
    pub size: u64,
    /// When it was accepted (ms since 1970).
    pub received_at: u64,
    /// The Idempotency-Key it came with.
    pub key: Option<String>,
    /// One entry per envelope recipient, in envelope order.
    pub recipients: Vec<Recipient>,
}

/// The envelope sender as the API and the records write it: the null
/// sender is "".
mod sender {
    use hedwig::smtp::address::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(from: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(from.as_ref().map_or("", Address::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        Address::parse(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}")))
    }
}

/// What an attempt did for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered {
        /// Where it went.
        relay: Relay,
        /// The remote's reply.
        reply: Reply,
    },
    /// 4xx, connection trouble, DNS trouble: try again.
    Deferred {
        /// Where it was tried, if anywhere.
        relay: Option<Relay>,
        /// What went wrong.
        error: String,
        /// The remote's reply, if it said something.
        reply: Option<Reply>,
    },
    /// 5xx, null MX, NXDOMAIN: give up now.
    Bounced {
        /// Where it was tried, if anywhere.
        relay: Option<Relay>,
        /// What went wrong.
        error: String,
        /// The remote's reply, if it said something.
        reply: Option<Reply>,
    },
}

impl Outcome {
    /// The attempt this outcome records at `now` (its state may still turn
    /// from deferred to bounced: give-up time).
    fn attempt(&self, now: u64) -> Attempt {
        let line = |r: &Reply| r.to_lines().replace('\n', " ");
        let (state, relay, text) = match self {
            Outcome::Delivered { relay, reply } => (State::Delivered, Some(relay), line(reply)),
            Outcome::Deferred {
                relay,
                error,
                reply,
            } => (
                State::Deferred,
                relay.as_ref(),
                reply.as_ref().map_or_else(|| error.clone(), line),
            ),
            Outcome::Bounced {
                relay,
                error,
                reply,
            } => (
                State::Bounced,
                relay.as_ref(),
                reply.as_ref().map_or_else(|| error.clone(), line),
            ),
        };
        Attempt {
            at: now,
            state,
            relay: relay.cloned(),
            text,
        }
    }
}

/// The delivery policy's timing.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Age after which a deferred recipient is bounced.
    pub give_up: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Record {
    /// A fresh record: every recipient queued and due at `now`.
    pub fn new(
        id: Id,
        from: Option<Address>,
        to: &[Address],
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

    /// The sender as text, empty for the null sender.
    pub fn sender(&self) -> &str {
        self.from.as_ref().map_or("", Address::as_str)
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
                let wait = policy.backoff.wait(r.attempts);
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

    /// Indexes of the recipients due at `now`; with `all`, every recipient
    /// not final (a flush made the message due before its time).
    pub fn due(&self, now: u64, all: bool) -> Vec<usize> {
        let due = |r: &Recipient| {
            !r.state.is_final() && (all || r.next_attempt.is_some_and(|t| t <= now))
        };
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

    /// The recipient's domain, lowercased (the unit of a delivery).
    pub fn domain(&self, i: usize) -> String {
        self.recipients[i]
            .address
            .domain()
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// Checks a record read from disk against the message's envelope: the
    /// same id and the same recipients in the same order.
    pub fn matches(&self, id: Id, to: &[Address]) -> Result<(), String> {
        if self.id != id {
            return Err(format!("record of {} in the file of {id}", self.id));
        }
        let ours = self.recipients.iter().map(|r| &r.address);
        if !ours.eq(to.iter()) {
            return Err("recipients differ from the message's envelope".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::reply::Status;

    const MIN: u64 = 60_000;
    const POLICY: Policy = Policy {
        backoff: Backoff {
            first: Duration::from_secs(300),
            max: Duration::from_secs(3600),
        },
        give_up: Duration::from_secs(5 * 86400),
    };

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn record() -> Record {
        let id = "0000000000001AAAAA".parse().unwrap();
        Record::new(
            id,
            Some(addr("s@x")),
            &[addr("a@b.org"), addr("c@D.org")],
            10,
            None,
            0,
        )
    }

    fn relay() -> Relay {
        "mx[1.2.3.4]:25".parse().unwrap()
    }

    fn deferred() -> Outcome {
        Outcome::Deferred {
            relay: Some(relay()),
            error: "450 busy".into(),
            reply: None,
        }
    }

    #[test]
    fn new_records_are_due_now() {
        let r = record();
        assert_eq!(r.due(0, false), [0, 1]);
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
        assert_eq!(r.due(6 * MIN, false), [1]);
        assert_eq!(r.due(6 * MIN, true), [0, 1], "a flush makes all due");
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
            relay: relay(),
            reply: Reply::new(250, Status(2, 0, 0), "ok"),
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
        assert!(r.due(100, true).is_empty());
    }

    #[test]
    fn json_round_trip_is_typed_and_readable() {
        let mut r = record();
        r.apply(
            0,
            Outcome::Delivered {
                relay: "mx.b.org[::1]:2525".parse().unwrap(),
                reply: Reply::new(250, Status(2, 0, 0), "ok"),
            },
            3,
            &POLICY,
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"state\":\"queued\""), "{json}");
        assert!(json.contains("\"relay\":\"mx.b.org[::1]:2525\""), "{json}");
        assert!(json.contains("\"reply\":\"250 2.0.0 ok\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        // A record that does not parse is an error, not a guess.
        for (from, to) in [
            ("\"address\":\"a@b.org\"", "\"address\":\"a@@b\""),
            ("\"relay\":\"mx.b.org[::1]:2525\"", "\"relay\":\"mx\""),
            ("\"reply\":\"250 2.0.0 ok\"", "\"reply\":\"ok\""),
        ] {
            let broken = json.replace(from, to);
            assert!(serde_json::from_str::<Record>(&broken).is_err(), "{broken}");
        }
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
        assert_eq!(
            h[0].relay.as_ref().map(Relay::to_string).as_deref(),
            Some("mx[1.2.3.4]:25")
        );
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
    fn records_must_match_their_envelope() {
        let r = record();
        assert!(r.matches(r.id, &[addr("a@b.org"), addr("c@D.org")]).is_ok());
        assert!(r.matches(r.id, &[addr("a@b.org")]).is_err());
        assert!(r
            .matches(r.id, &[addr("c@D.org"), addr("a@b.org")])
            .is_err());
        let other = "0000000000001AAAAB".parse().unwrap();
        assert!(r
            .matches(other, &[addr("a@b.org"), addr("c@D.org")])
            .is_err());
        assert_eq!(
            "h[1.2.3.4]:25".parse::<Relay>().unwrap().to_string(),
            "h[1.2.3.4]:25"
        );
        assert!("h[x]:25".parse::<Relay>().is_err());
    }
}
