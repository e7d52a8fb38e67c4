//! mailman logs one line on stderr per accepted message and per hand-off, each
//! naming the message's ID.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::{wait_until, TestDir};

#[test]
fn accepted_and_handed_off_messages_are_logged_by_id() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());
    let ids: Vec<String> = (0..3)
        .map(|i| {
            smtp.send_mail(
                "a@example.org",
                &["b@example.net"],
                &crlf(&format!("Subject: {i}\n\nx\n")),
            )
        })
        .collect();
    po.wait_for_keys(&ids, Duration::from_secs(10));

    let lines_with = |id: &str| mailman.stderr().lines().filter(|l| l.contains(id)).count();
    let logged = wait_until(Duration::from_secs(3), || {
        ids.iter().all(|id| lines_with(id) >= 2)
    });
    let counts: Vec<(&String, usize)> = ids.iter().map(|id| (id, lines_with(id))).collect();
    assert!(
        logged,
        "expected at least 2 stderr lines (accepted, handed off) per ID, got {counts:?}\n{}",
        mailman.stderr()
    );
}
