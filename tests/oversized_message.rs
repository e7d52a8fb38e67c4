//! Messages over max_message_size are refused with 552 5.3.4, announced (SIZE=) or
//! not, and nothing of them reaches postoffice; the session goes on.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{crlf, data_section};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

/// A message of about `size` bytes, every line carrying `marker`.
fn message(marker: &str, size: usize) -> Vec<u8> {
    let mut text = format!("Subject: {marker}\n\n");
    while text.len() < size {
        text.push_str(&format!("{marker} {:0>60}\n", text.len()));
    }
    crlf(&text)
}

#[test]
fn oversized_data_is_read_to_the_end_and_refused() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());

    smtp.expect("MAIL FROM:<big@example.org>", 250, "2.1.0");
    smtp.expect("RCPT TO:<rcpt@example.net>", 250, "2.1.5");
    smtp.expect("DATA", 354, "");
    let big = message("too-big", 150_000);
    smtp.send(&data_section(&big))
        .expect("send oversized message");
    let reply = smtp.reply();
    assert!(
        reply.is(552, "5.3.4"),
        "after a {}-byte message with max_message_size 100000: got `{reply}`",
        big.len()
    );

    // The session is in sync: the next command gets its own reply, and a message
    // under the limit goes through.
    smtp.expect("NOOP", 250, "2.0.0");
    let fits = message("fits", 60_000);
    let id = smtp.send_mail("small@example.org", &["rcpt@example.net"], &fits);
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let all = po.deliveries();
    assert_eq!(
        all.len(),
        1,
        "only the message that fits may be handed off:\n{}",
        po.dump()
    );
    assert_eq!(all[0].key(), id);
    assert!(
        !common::any_file_contains(&common::spool_files(mailman.spool()), b"too-big"),
        "oversized message left in the spool"
    );
}

#[test]
fn announced_size_over_the_limit_is_refused_at_mail() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());

    smtp.expect("MAIL FROM:<big@example.org> SIZE=200000", 552, "5.3.4");
    // A refused MAIL leaves no transaction behind.
    smtp.expect("RCPT TO:<rcpt@example.net>", 503, "5.5.1");
    smtp.expect("MAIL FROM:<small@example.org> SIZE=1000", 250, "2.1.0");
    smtp.expect("RSET", 250, "2.0.0");
}
