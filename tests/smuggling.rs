//! SMTP smuggling (CVE-2023-51764 class): a bare CR or LF anywhere in DATA. DATA
//! ends only at the real CRLF.CRLF, the answer is 554 5.6.0, and neither the
//! message nor the smuggled one behind the fake end reaches postoffice.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

/// What follows the fake end: a whole second transaction.
const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n\
From: ceo@example.org\r\nSubject: smuggled\r\n\r\nsmuggled-payload\r\n";

/// (name, bytes between the legitimate body and SMUGGLED).
const FAKE_ENDS: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CR.CRLF", b"\r.\r\n"),
    ("CRLF.CR", b"\r\n.\r"),
    ("LF.CR", b"\n.\r"),
    ("CR.CR", b"\r.\r"),
];

/// Sends one DATA section whose body is `body` followed by the real end, and
/// checks: nothing is said before the real end, then exactly `554 5.6.0`, and the
/// session is still in sync.
fn refuse(mailman: &Mailman, name: &str, first: &[u8], rest: &[u8]) {
    let mut smtp = Smtp::ehlo(mailman.addr());
    smtp.expect("MAIL FROM:<sender@example.org>", 250, "2.1.0");
    smtp.expect("RCPT TO:<rcpt@example.net>", 250, "2.1.5");
    smtp.expect("DATA", 354, "");
    smtp.send(first).unwrap();
    if let Err(e) = smtp.silent_for(Duration::from_millis(300)) {
        panic!("{name}: DATA must not end at the fake end, but after {first:?}: {e}");
    }
    smtp.send(rest).unwrap();
    smtp.send(b"\r\n.\r\n").unwrap();
    let reply = smtp.reply();
    assert!(
        reply.is(554, "5.6.0"),
        "{name}: expected `554 5.6.0` at the real end of DATA, got `{reply}`"
    );
    // The next reply answers the next command: the smuggled commands got none.
    let noop = smtp.cmd("NOOP");
    assert!(
        noop.is(250, "2.0.0"),
        "{name}: after the 554, NOOP got `{noop}` (smuggled commands answered?)"
    );
    smtp.expect("QUIT", 221, "2.0.0");
}

#[test]
fn bare_cr_or_lf_in_data_is_refused_and_nothing_is_smuggled() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let body = b"From: sender@example.org\r\nSubject: smuggle\r\n\r\nlegit-body".to_vec();

    for (name, fake) in FAKE_ENDS {
        let mut first = body.clone();
        first.extend_from_slice(fake);
        refuse(&mailman, name, &first, SMUGGLED);
    }
    // A bare LF or CR that ends nothing is refused as well.
    refuse(
        &mailman,
        "bare LF in a line",
        b"Subject: x\r\n\r\none\ntwo",
        b"\r\nthree",
    );
    refuse(
        &mailman,
        "bare CR in a line",
        b"Subject: x\r\n\r\none\rtwo",
        b"\r\nthree",
    );
    refuse(
        &mailman,
        "bare LF in a header",
        b"Subject: x\nX-Y: z\r\n\r\nbody",
        b"",
    );
    mailman.assert_alive();

    // A good message afterwards is the only thing postoffice ever sees.
    let mut smtp = Smtp::ehlo(mailman.addr());
    let id = smtp.send_mail(
        "sender@example.org",
        &["rcpt@example.net"],
        &crlf("Subject: sentinel\n\nok\n"),
    );
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let all = po.deliveries();
    assert_eq!(
        all.len(),
        1,
        "only the sentinel may be handed off:\n{}",
        po.dump()
    );
    assert_eq!(all[0].key(), id);
    let spooled = common::spool_files(mailman.spool());
    assert!(
        !common::any_file_contains(&spooled, b"smuggle"),
        "smuggling attempt left in the spool: {spooled:?}"
    );
}
