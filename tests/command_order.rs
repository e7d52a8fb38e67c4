//! Commands out of order, unknown or too long get the right 5xx and change nothing:
//! the same session can still send a message afterwards.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn out_of_order_unknown_and_overlong_commands() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let config = Config::new(&dir, po.addr());
    let max_line = config.max_line_length as usize;
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::open(mailman.addr());
    let mut failures = Vec::new();
    let f = &mut failures;

    // Before EHLO / HELO.
    smtp.check("MAIL FROM:<a@example.org>", 503, "5.5.1", f);
    smtp.check("RCPT TO:<b@example.net>", 503, "5.5.1", f);
    smtp.check("DATA", 503, "5.5.1", f);
    smtp.expect("EHLO client.test", 250, "");
    // RCPT and DATA before MAIL.
    smtp.check("RCPT TO:<b@example.net>", 503, "5.5.1", f);
    smtp.check("DATA", 503, "5.5.1", f);
    // DATA before any RCPT; nested MAIL.
    smtp.expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    smtp.check("DATA", 503, "5.5.1", f);
    smtp.check("MAIL FROM:<a2@example.org>", 503, "5.5.1", f);
    // DATA when every recipient was refused.
    smtp.check("RCPT TO:<no-at-sign>", 501, "5.5.4", f);
    smtp.check("DATA", 554, "5.5.1", f);
    smtp.expect("RSET", 250, "2.0.0");
    // Unknown commands and overlong lines.
    smtp.check("FROB", 500, "5.5.2", f);
    smtp.check("MAILFROM:<a@example.org>", 500, "5.5.2", f);
    smtp.check(
        &format!("NOOP {}", "x".repeat(max_line + 100)),
        500,
        "5.5.2",
        f,
    );
    smtp.check(
        &format!("MAIL FROM:<{}@example.org>", "y".repeat(max_line * 2)),
        500,
        "5.5.2",
        f,
    );
    smtp.expect("NOOP", 250, "2.0.0");

    // After all that, the transaction state is clean and a message goes through.
    let message = crlf("Subject: after errors\n\nstill works\n");
    let id = smtp.send_mail("a@example.org", &["b@example.net"], &message);
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    let got = &po.accepted_by_key()[&id];
    assert_eq!(
        got[0].from.as_deref(),
        Some("a@example.org"),
        "{}",
        got[0].summary()
    );
    assert_eq!(got[0].to, ["b@example.net"], "{}", got[0].summary());
    assert_eq!(
        po.deliveries().len(),
        1,
        "one hand-off only:\n{}",
        po.dump()
    );
    smtp.expect("QUIT", 221, "2.0.0");
    assert!(
        failures.is_empty(),
        "{} replies differ from the spec:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
