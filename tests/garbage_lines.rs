//! 10,000 lines of random garbage each get a 5xx, and the same session can then
//! send a good message that arrives; mailman survives. With the default
//! `max_errors`, the 21st command after 20 refusals gets 421 and the close.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

const LINES: usize = 10_000;
/// Lines per write; replies are read after each batch so neither side's socket
/// buffer fills up.
const BATCH: usize = 100;

/// Verbs mailman knows or might know; garbage must not start with one.
const VERBS: &[&[u8]] = &[
    b"HELO", b"EHLO", b"LHLO", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP", b"QUIT",
    b"VRFY", b"EXPN", b"HELP", b"STAR", b"AUTH", b"ETRN", b"TURN", b"XCLI", b"XFOR", b"ATRN",
];

/// One random line without CR or LF: random bytes, printable text or verb-like words.
fn garbage(rng: &mut fastrand::Rng) -> Vec<u8> {
    loop {
        let len = rng.usize(1..300);
        let line: Vec<u8> = match rng.u8(0..3) {
            0 => (0..len)
                .map(|_| loop {
                    let b = rng.u8(..);
                    if b != b'\r' && b != b'\n' {
                        break b;
                    }
                })
                .collect(),
            1 => (0..len).map(|_| rng.u8(0x20..0x7f)).collect(),
            _ => {
                let word: Vec<u8> = (0..rng.usize(3..9)).map(|_| rng.u8(b'A'..=b'Z')).collect();
                let arg: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(0x21..0x7f)).collect();
                [word, b" ".to_vec(), arg].concat()
            }
        };
        let head = line.get(..4).map(|h| h.to_ascii_uppercase());
        if !head.is_some_and(|h| VERBS.contains(&h.as_slice())) {
            return line;
        }
    }
}

#[test]
fn garbage_gets_5xx_and_the_session_survives() {
    let mut rng = common::rng("garbage_gets_5xx_and_the_session_survives");
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.max_errors = 1_000_000;
    let mut mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());

    let mut sent = 0;
    while sent < LINES {
        let lines: Vec<Vec<u8>> = (0..BATCH).map(|_| garbage(&mut rng)).collect();
        let mut batch = Vec::new();
        for line in &lines {
            batch.extend_from_slice(line);
            batch.extend_from_slice(b"\r\n");
        }
        smtp.send(&batch)
            .unwrap_or_else(|e| panic!("writing garbage line {sent}: {e}"));
        for line in &lines {
            let reply = smtp.read_reply().unwrap_or_else(|e| {
                panic!(
                    "garbage line {sent} {:?}: no reply: {e}",
                    String::from_utf8_lossy(line)
                )
            });
            assert!(
                (500..600).contains(&reply.code),
                "garbage line {sent} {:?}: expected a 5xx, got `{reply}`",
                String::from_utf8_lossy(line)
            );
            sent += 1;
        }
    }

    mailman.assert_alive();
    let message = crlf("Subject: after the garbage\n\nstill here\n");
    let id = smtp.send_mail("sender@example.org", &["rcpt@example.net"], &message);
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    assert_arrived(
        "message after garbage",
        &po.accepted_by_key()[&id][0].body,
        &message,
    );
    assert_eq!(
        po.deliveries().len(),
        1,
        "garbage must not hand anything off:\n{}",
        po.dump()
    );
    // And a new client is served too.
    Smtp::ehlo(mailman.addr()).expect("QUIT", 221, "2.0.0");
}

#[test]
fn twenty_refusals_then_421_and_close() {
    let mut rng = common::rng("twenty_refusals_then_421_and_close");
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());
    for n in 0..20 {
        let line = garbage(&mut rng);
        smtp.send(&[line.as_slice(), b"\r\n"].concat())
            .expect("send");
        let reply = smtp.reply();
        assert!((500..600).contains(&reply.code), "refusal {n}: `{reply}`");
    }
    // The next command, even a good one, gets 421 and the close.
    smtp.expect("NOOP", 421, "4.7.0");
    smtp.closed_within(Duration::from_secs(5))
        .expect("closed after too many errors");
    // Other clients are not affected.
    Smtp::ehlo(mailman.addr()).expect("QUIT", 221, "2.0.0");
}
