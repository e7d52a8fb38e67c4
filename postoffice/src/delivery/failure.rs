//! The one place that decides what an attempt's result means for a
//! recipient: delivered, deferred (try again later, or elsewhere) or
//! bounced (never again). Every failure of a delivery passes here: DNS
//! trouble, a connection or protocol failure, a refusal by the server,
//! a message we will not send, a queue file that cannot be read.

use std::io;

use hedwig::smtp::reply::Reply;

use super::client;
use super::smtp;
use crate::dns::DnsError;
use crate::queue::record::{Outcome, Relay};

/// Why an attempt failed for every recipient it carried.
#[derive(Debug)]
pub enum Failure {
    /// Finding the mail servers failed.
    Dns(DnsError),
    /// Talking to `relay` failed.
    Smtp(Relay, client::Error),
    /// There was no server to try.
    NoServer,
    /// The message could not be read from the queue.
    QueueFile(io::Error),
}

/// Whether trying again (here or elsewhere) may help.
pub fn is_permanent(failure: &Failure) -> bool {
    match failure {
        Failure::Dns(e) => e.is_permanent(),
        Failure::Smtp(_, client::Error::Smtp(e)) => match e {
            smtp::Error::Rejected(r) => r.is_permanent(),
            smtp::Error::Local(_) => true,
            smtp::Error::Greeting(_) | smtp::Error::Tls(_) | smtp::Error::Protocol(_) => false,
        },
        Failure::Smtp(_, client::Error::Io(_)) => false,
        Failure::NoServer | Failure::QueueFile(_) => false,
    }
}

/// Whether the next server of the domain may do better than this one
/// (RFC 5321 section 5.1): not when the message was refused for good, nor
/// when it cannot be read from the queue.
pub fn try_next_server(failure: &Failure) -> bool {
    !is_permanent(failure) && !matches!(failure, Failure::QueueFile(_))
}

/// The server's reply behind `failure`, if it said something.
pub fn reply_of(failure: &Failure) -> Option<&Reply> {
    match failure {
        Failure::Smtp(
            _,
            client::Error::Smtp(smtp::Error::Rejected(r) | smtp::Error::Greeting(r)),
        ) => Some(r),
        _ => None,
    }
}

/// The outcome of `failure` for each recipient it carried.
pub fn outcome(failure: &Failure) -> Outcome {
    let (relay, reply) = match failure {
        Failure::Smtp(relay, client::Error::Smtp(e)) => {
            let reply = match e {
                smtp::Error::Rejected(r) | smtp::Error::Greeting(r) => Some(r.clone()),
                _ => None,
            };
            (Some(relay.clone()), reply)
        }
        Failure::Smtp(relay, client::Error::Io(_)) => (Some(relay.clone()), None),
        _ => (None, None),
    };
    let error = describe(failure);
    if is_permanent(failure) {
        Outcome::Bounced {
            relay,
            error,
            reply,
        }
    } else {
        Outcome::Deferred {
            relay,
            error,
            reply: None,
        }
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Dns(e) => e.to_string(),
        Failure::Smtp(_, e) => e.to_string(),
        Failure::NoServer => "no server to try".into(),
        Failure::QueueFile(e) => format!("queue file: {e}"),
    }
}

/// The outcome of the server's `reply` for one recipient.
pub fn reply_outcome(relay: &Relay, reply: Reply) -> Outcome {
    if reply.is_positive() {
        Outcome::Delivered {
            relay: relay.clone(),
            reply,
        }
    } else if reply.is_permanent() {
        Outcome::Bounced {
            relay: Some(relay.clone()),
            error: format!("remote said {}", reply.code),
            reply: Some(reply),
        }
    } else {
        Outcome::Deferred {
            relay: Some(relay.clone()),
            error: format!("remote said {}", reply.code),
            reply: Some(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::smtp::reply::Status;

    fn relay() -> Relay {
        "mx[127.0.0.1]:25".parse().unwrap()
    }

    #[test]
    fn replies_sort_into_outcomes() {
        let r = |code| Reply::new(code, Status(2, 0, 0), "x");
        assert!(matches!(
            reply_outcome(&relay(), r(250)),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            reply_outcome(&relay(), r(450)),
            Outcome::Deferred { .. }
        ));
        assert!(matches!(
            reply_outcome(&relay(), r(550)),
            Outcome::Bounced { .. }
        ));
    }

    #[test]
    fn failures_sort_into_outcomes() {
        let smtp = |e| Failure::Smtp(relay(), client::Error::Smtp(e));
        let r550 = Reply::new(550, Status(5, 7, 1), "no");
        let r451 = Reply::new(451, Status(4, 3, 0), "later");
        let cases = [
            (smtp(smtp::Error::Rejected(r550.clone())), true),
            (smtp(smtp::Error::Rejected(r451)), false),
            (smtp(smtp::Error::Local("too big".into())), true),
            (smtp(smtp::Error::Greeting(r550)), false),
            (smtp(smtp::Error::Tls("no".into())), false),
            (smtp(smtp::Error::Protocol("x".into())), false),
            (
                Failure::Smtp(relay(), client::Error::Io(io::ErrorKind::TimedOut.into())),
                false,
            ),
            (Failure::NoServer, false),
            (Failure::QueueFile(io::ErrorKind::NotFound.into()), false),
        ];
        for (f, permanent) in cases {
            assert_eq!(is_permanent(&f), permanent, "{f:?}");
            let queue_file = matches!(f, Failure::QueueFile(_));
            assert_eq!(try_next_server(&f), !permanent && !queue_file, "{f:?}");
            let bounced = matches!(outcome(&f), Outcome::Bounced { .. });
            assert_eq!(bounced, permanent, "{f:?}");
        }
    }
}
