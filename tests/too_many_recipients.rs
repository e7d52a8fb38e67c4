//! Recipients past max_recipients get 452 4.5.3; the message still goes to the
//! ones accepted, and only to them.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf, data_section};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn recipients_past_the_limit_are_deferred_and_the_rest_delivered() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let config = Config::new(&dir, po.addr());
    assert_eq!(config.max_recipients, 5);
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());

    smtp.expect("MAIL FROM:<many@example.org>", 250, "2.1.0");
    let rcpts: Vec<String> = (1..=8).map(|i| format!("r{i}@example.net")).collect();
    for rcpt in &rcpts[..5] {
        smtp.expect(&format!("RCPT TO:<{rcpt}>"), 250, "2.1.5");
    }
    for rcpt in &rcpts[5..] {
        smtp.expect(&format!("RCPT TO:<{rcpt}>"), 452, "4.5.3");
    }
    smtp.expect("DATA", 354, "");
    let message = crlf("Subject: many recipients\n\nhello\n");
    smtp.send(&data_section(&message)).unwrap();
    let id = smtp.reply().queued_id();

    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    let got = &po.accepted_by_key()[&id];
    assert_eq!(got.len(), 1, "handed off {} times", got.len());
    assert_eq!(
        got[0].to,
        &rcpts[..5],
        "only the accepted recipients: {}",
        got[0].summary()
    );
    assert_arrived("message", &got[0].body, &message);
}
