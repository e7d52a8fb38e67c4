//! Fault suite: kill -9 of mailman, then of postoffice, then of both, at
//! random moments while numbered messages flow through the whole path
//! (smtplib -> mailman -> postoffice -> MX by DNS -> sink), each restarted.
//! Nothing answered 250 is lost. Duplicates can only come from the windows
//! SMTP itself cannot close (a reply lost to the kill after the final dot,
//! or the remote's 250 not yet written down), so each kill may cause at
//! most one per sender session plus one per delivery in flight.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::faults::{wait_delivered, Path4, Sender, Tally, DELIVERY_CONCURRENCY};
use common::{rng, TestDir};

/// Messages per round, and rounds: three of each kind of kill.
const PER_ROUND: u64 = 1000;
/// The sender's SMTP sessions.
const SESSIONS: usize = 8;
const KILLS: [&str; 9] = [
    "mailman",
    "mailman",
    "mailman",
    "postoffice",
    "postoffice",
    "postoffice",
    "both",
    "both",
    "both",
];

#[test]
fn kill_9_rounds_lose_nothing() {
    let dir = TestDir::new();
    let mut rng = rng("kill_9_rounds_lose_nothing");
    let mut path = Path4::start(&dir, &[], "");
    let mut sent = BTreeMap::new();

    for (round, victim) in KILLS.iter().enumerate() {
        let first = round as u64 * PER_ROUND;
        let mut sender = Sender::start(
            &dir,
            path.mailman.addr(),
            first,
            PER_ROUND,
            SESSIONS as u32,
            Duration::from_secs(60),
        );
        // A random moment while this round's mail flows.
        std::thread::sleep(Duration::from_millis(rng.u64(100..1200)));
        let flowing = sender.running();
        if *victim != "postoffice" {
            path.mailman.kill9();
        }
        if *victim != "mailman" {
            path.postoffice.kill9();
        }
        std::thread::sleep(Duration::from_millis(rng.u64(50..500)));
        if *victim != "mailman" {
            path.postoffice.restart();
        }
        if *victim != "postoffice" {
            path.mailman.restart();
        }
        let round_sent = sender.finish(Duration::from_secs(120));
        // Each round drains before the next, so its duplicates are its own.
        let before = Tally::count("", &sent, &path.sink.received()).duplicated;
        sent.extend(round_sent);
        let after = Tally::count(
            "",
            &sent,
            &wait_delivered(&path.sink, &sent, Duration::from_secs(60)),
        );
        let duplicated = after.duplicated - before;
        eprintln!(
            "round {round}: killed {victim} {}; {duplicated} duplicates",
            if flowing {
                "while sending"
            } else {
                "after sending, while forwarding"
            },
        );
        assert!(
            duplicated <= SESSIONS + DELIVERY_CONCURRENCY,
            "{duplicated} duplicates from one kill of {victim}: more than the {SESSIONS} \
             sessions and {DELIVERY_CONCURRENCY} deliveries in flight could cause\n{}",
            path.logs()
        );
    }

    let received = wait_delivered(&path.sink, &sent, Duration::from_secs(120));
    let tally = Tally::count(
        "kill -9: 3x mailman, 3x postoffice, 3x both",
        &sent,
        &received,
    );
    tally.report();
    assert_eq!(tally.strays, 0, "unknown messages arrived");
    assert_eq!(
        tally.lost,
        0,
        "lost (answered 250, never delivered): {:?}\n{}",
        tally.lost_seqs,
        path.logs()
    );
    assert_eq!(
        tally.answered, tally.sent,
        "every message is answered 250 in the end"
    );
}
