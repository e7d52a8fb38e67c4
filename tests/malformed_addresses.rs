//! Malformed addresses get 501 5.5.4; liberal forms Postfix accepts are accepted.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{crlf, data_section};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn malformed_addresses_are_refused_liberal_ones_accepted() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());
    let mut failures = Vec::new();

    for bad in [
        "MAIL FROM:<a@@b>",
        "MAIL FROM:<a@b",
        "MAIL FROM:",
        "MAIL FROM:<@>",
        "MAIL FROM:<a@>",
    ] {
        if smtp.check(bad, 501, "5.5.4", &mut failures).code == 250 {
            smtp.expect("RSET", 250, "2.0.0");
        }
    }
    // Without angle brackets, like Postfix.
    smtp.check("MAIL FROM:a@example.org", 250, "2.1.0", &mut failures);
    for bad in [
        "RCPT TO:<no-at-sign>",
        "RCPT TO:<x@@example.net>",
        "RCPT TO:",
        "RCPT TO:<>",
        "RCPT TO:<@example.net>",
    ] {
        smtp.check(bad, 501, "5.5.4", &mut failures);
    }
    smtp.check("RCPT TO:<postmaster>", 250, "2.1.5", &mut failures);
    smtp.check("RCPT TO:b@example.net", 250, "2.1.5", &mut failures);
    smtp.expect("DATA", 354, "");
    smtp.send(&data_section(&crlf("Subject: liberal\n\nok\n")))
        .unwrap();
    let id = smtp.reply().queued_id();

    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    let d = &po.accepted_by_key()[&id][0];
    if d.from.as_deref() != Some("a@example.org") || d.to != ["postmaster", "b@example.net"] {
        failures.push(format!(
            "envelope: expected from a@example.org to [postmaster, b@example.net]: {}",
            d.summary()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} replies differ from the spec:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
