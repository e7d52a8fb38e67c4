//! A message of exactly `max_message_size`, with the same limit in both
//! sections (as the shipped hedwig.ron has it), gets 250 from mailman and
//! is taken by postoffice, although mailman's `Received:`, `Date:` and
//! `Message-ID:` make it larger on the way: postoffice's limit leaves room
//! for what the previous hop adds (the hand-off contract's HOP_ALLOWANCE).
//! Nothing is parked in failed/.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::smtp::Smtp;
use common::stack::{route_all, Postoffice, Sink};
use common::{failed_files, spool_files, wait_until, TestDir};

const MAX: usize = 100_000;

#[test]
fn a_message_of_exactly_the_limit_crosses_the_hop() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("max_message_size: {MAX}, {}", route_all(sink_addr)),
    );
    let mut config = Config::new(&dir, po.addr);
    config.max_message_size = MAX as u64;
    let mailman = Mailman::start(&dir, config);

    // No Date: or Message-ID:, so mailman adds both besides Received:.
    let mut message = b"Subject: exactly the limit\r\n\r\n".to_vec();
    while message.len() < MAX {
        let line = format!("{:0>78}\r\n", message.len());
        message.extend_from_slice(&line.as_bytes()[..line.len().min(MAX - message.len())]);
    }
    message.truncate(MAX - 2);
    message.extend_from_slice(b"\r\n");
    assert_eq!(message.len(), MAX);
    let mut smtp = Smtp::ehlo(mailman.addr());
    smtp.send_mail("a@x.test", &["b@y.test"], &message);

    let got = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(
        got.len(),
        1,
        "not delivered:\n{}\n{}",
        mailman.stderr(),
        po.log()
    );
    assert!(
        got[0].bytes.len() > MAX,
        "no trace fields added? {}",
        got[0].bytes.len()
    );
    assert!(wait_until(Duration::from_secs(10), || spool_files(
        mailman.spool()
    )
    .is_empty()));
    assert!(
        failed_files(mailman.spool()).is_empty(),
        "parked: {:?}",
        failed_files(mailman.spool())
    );

    // One byte over the limit plus the allowance is still refused.
    let (code, body) = po.http(
        "POST",
        &common::stack::raw_path("a@x.test", &["b@y.test"]),
        Some("message/rfc822"),
        Some(&vec![b'x'; MAX + 4096 + 1]),
    );
    assert_eq!(code, 413, "{body}");
}
