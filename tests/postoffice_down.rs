//! While postoffice is down (refusing connections, then answering 503 or 429),
//! mailman accepts mail and retries; once postoffice is up, every message arrives
//! exactly once.

mod common;

use std::time::{Duration, Instant};

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::{Answer, Postoffice};
use common::smtp::Smtp;
use common::{spool_files, wait_until, TestDir};

const MESSAGES: usize = 20;

fn message(i: usize) -> Vec<u8> {
    crlf(&format!(
        "Subject: while down {i}\nX-Seq: {i}\n\nmessage {i}\n"
    ))
}

/// Sends MESSAGES messages in one session; returns (id, message) in order.
fn send_all(mailman: &Mailman) -> Vec<(String, Vec<u8>)> {
    let mut smtp = Smtp::ehlo(mailman.addr());
    let sent: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let m = message(i);
            (
                smtp.send_mail("sender@example.org", &["rcpt@example.net"], &m),
                m,
            )
        })
        .collect();
    smtp.expect("QUIT", 221, "2.0.0");
    sent
}

/// Every message arrived intact, each key answered 2xx exactly once, spool empty.
fn assert_each_once(po: &Postoffice, mailman: &Mailman, sent: &[(String, Vec<u8>)]) {
    let keys: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    po.wait_for_keys(&keys, Duration::from_secs(20));
    // Late duplicates would show up within a retry interval or two.
    std::thread::sleep(Duration::from_millis(1500));
    let by_key = po.accepted_by_key();
    for (id, m) in sent {
        let got = &by_key[id];
        assert_eq!(
            got.len(),
            1,
            "{id} accepted {} times:\n{}",
            got.len(),
            po.dump()
        );
        assert_arrived(id, &got[0].body, m);
    }
    assert_eq!(
        by_key.len(),
        sent.len(),
        "unexpected keys handed off:\n{}",
        po.dump()
    );
    let empty = wait_until(Duration::from_secs(2), || {
        spool_files(mailman.spool()).is_empty()
    });
    assert!(
        empty,
        "spool not emptied after every 2xx: {:?}",
        spool_files(mailman.spool())
    );
}

#[test]
fn refused_then_503_then_up_delivers_each_once() {
    let dir = TestDir::new();
    let mut po = Postoffice::reserve(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    // Down: nothing listens on postoffice's port. Every message still gets 250.
    let sent = send_all(&mailman);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        spool_files(mailman.spool()).len() >= MESSAGES,
        "spool must hold all {MESSAGES} while postoffice is down: {:?}",
        spool_files(mailman.spool())
    );

    // Up but overloaded: 503 for 1.5 s, then 202.
    let up = Instant::now();
    po.set_policy(move |_| {
        Answer::status(if up.elapsed() < Duration::from_millis(1500) {
            503
        } else {
            202
        })
    });
    po.listen();
    assert_each_once(&po, &mailman, &sent);
    let refused = po.deliveries().iter().filter(|d| d.status == 503).count();
    assert!(
        refused > 0,
        "mailman made no attempt in the 1.5 s of 503s (max retry is 1s):\n{}",
        po.dump()
    );
}

#[test]
fn answers_429_are_retried() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    // Each message's first attempt gets 429, later ones 202.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    po.set_policy(move |d| {
        let fresh = seen.lock().unwrap().insert(d.key.clone());
        Answer::status(if fresh { 429 } else { 202 })
    });
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let sent = send_all(&mailman);
    assert_each_once(&po, &mailman, &sent);
    let throttled = po.deliveries().iter().filter(|d| d.status == 429).count();
    assert_eq!(
        throttled,
        MESSAGES,
        "each message's first attempt got 429:\n{}",
        po.dump()
    );
}
