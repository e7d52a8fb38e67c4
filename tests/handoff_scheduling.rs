//! Hand-offs run several at a time (up to `concurrency`) and oldest first.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::{Answer, Postoffice};
use common::smtp::Smtp;
use common::TestDir;

fn send(mailman: &Mailman, n: usize) -> Vec<String> {
    let mut smtp = Smtp::ehlo(mailman.addr());
    (0..n)
        .map(|i| {
            smtp.send_mail(
                "a@example.org",
                &["b@example.net"],
                &crlf(&format!("Subject: {i}\n\nx\n")),
            )
        })
        .collect()
}

#[test]
fn several_hand_offs_in_flight_up_to_concurrency() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    po.set_policy(|_| Answer {
        status: 202,
        delay: Duration::from_millis(700),
    });
    let mut config = Config::new(&dir, po.addr());
    config.concurrency = 4;
    let mailman = Mailman::start(&dir, config);

    let ids = send(&mailman, 10);
    po.wait_for_keys(&ids, Duration::from_secs(15));
    let max = po.max_in_flight();
    assert!(
        (2..=4).contains(&max),
        "hand-offs in flight at once: {max}, expected 2..=4 with concurrency 4"
    );
}

#[test]
fn oldest_message_is_handed_off_first() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    // One at a time, slowly: the queue builds up behind the first message.
    po.set_policy(|_| Answer {
        status: 202,
        delay: Duration::from_millis(300),
    });
    let mut config = Config::new(&dir, po.addr());
    config.concurrency = 1;
    let mailman = Mailman::start(&dir, config);

    let ids = send(&mailman, 6);
    po.wait_for_keys(&ids, Duration::from_secs(15));
    let order: Vec<String> = po.accepted().iter().map(|d| d.key().to_string()).collect();
    assert_eq!(
        order, ids,
        "hand-off order (left) vs acceptance order (right)"
    );
    assert_eq!(po.max_in_flight(), 1, "concurrency 1 exceeded");
}
