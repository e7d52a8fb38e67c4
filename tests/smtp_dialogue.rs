//! The greeting, EHLO keywords and the replies to the simple commands are exactly
//! as specified; HELO clients and SMTPUTF8 addresses are served.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn greeting_ehlo_and_simple_commands() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::connect(mailman.addr()).unwrap();

    let greeting = smtp.reply();
    assert_eq!(greeting.to_string(), "220 mailman.test ESMTP hedwig");
    let ehlo = smtp.expect("EHLO client.test", 250, "");
    assert!(
        ehlo.lines[0].starts_with("mailman.test"),
        "EHLO first line: {ehlo}"
    );
    for keyword in [
        "PIPELINING",
        "8BITMIME",
        "SIZE 100000",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            ehlo.lines[1..].iter().any(|l| l == keyword),
            "EHLO reply lacks {keyword:?}: {ehlo}"
        );
    }
    smtp.expect("NOOP", 250, "2.0.0");
    smtp.expect("RSET", 250, "2.0.0");
    smtp.expect("VRFY postmaster", 252, "2.5.0");
    let help = smtp.cmd("HELP");
    assert_eq!(help.code, 214, "HELP: {help}");
    // Verbs are case-insensitive.
    smtp.expect("noop", 250, "2.0.0");
    smtp.expect("QUIT", 221, "2.0.0");
    smtp.closed_within(Duration::from_secs(5))
        .expect("closed after QUIT");
}

#[test]
fn helo_client_sends_a_message() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::open(mailman.addr());
    smtp.expect("HELO old.client.test", 250, "");
    let message = crlf("Subject: helo\n\nplain old SMTP\n");
    let id = smtp.send_mail("old@example.org", &["b@example.net"], &message);
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    assert_arrived("HELO message", &po.accepted_by_key()[&id][0].body, &message);
}

#[test]
fn smtputf8_and_8bitmime_parameters() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());

    smtp.expect(
        "MAIL FROM:<jörg@exämple.org> BODY=8BITMIME SMTPUTF8 SIZE=500",
        250,
        "2.1.0",
    );
    smtp.expect("RCPT TO:<用户@例子.广告>", 250, "2.1.5");
    smtp.expect("RCPT TO:<plain+tag@example.net>", 250, "2.1.5");
    smtp.expect("DATA", 354, "");
    let message = crlf("From: Jörg <jörg@exämple.org>\nSubject: Grüße\n\nÜmläüte & 日本語\n");
    smtp.send(&common::message::data_section(&message)).unwrap();
    let id = smtp.reply().queued_id();

    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    let d = &po.accepted_by_key()[&id][0];
    assert_eq!(
        d.from.as_deref(),
        Some("jörg@exämple.org"),
        "form-decoded UTF-8 sender: {}",
        d.summary()
    );
    assert_eq!(
        d.to,
        ["用户@例子.广告", "plain+tag@example.net"],
        "form-decoded recipients: {}",
        d.summary()
    );
    assert_arrived("UTF-8 message", &d.body, &message);
}
