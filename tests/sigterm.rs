//! SIGTERM: idle sessions get 421 4.3.2 and are closed, mailman exits 0 within
//! shutdown_timeout, and spooled mail stays for the next start.

mod common;

use std::time::{Duration, Instant};

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::{any_file_contains, spool_files, TestDir};

#[test]
fn sigterm_says_421_to_idle_sessions_and_exits_0() {
    let dir = TestDir::new();
    // Postoffice down, so the accepted message is still spooled at shutdown.
    let po = Postoffice::reserve(&dir);
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    let mut greeted = Smtp::open(mailman.addr());
    let mut busy = Smtp::ehlo(mailman.addr());
    busy.send_mail(
        "a@example.org",
        &["b@example.net"],
        &crlf("Subject: spooled-at-shutdown\n\nx\n"),
    );
    let mut after_ehlo = Smtp::ehlo(mailman.addr());

    let start = Instant::now();
    mailman.sigterm();
    for (name, smtp) in [
        ("greeted", &mut greeted),
        ("after a message", &mut busy),
        ("after EHLO", &mut after_ehlo),
    ] {
        let reply = smtp
            .read_reply()
            .unwrap_or_else(|e| panic!("idle session {name}: no 421 after SIGTERM: {e}"));
        assert!(
            reply.is(421, "4.3.2"),
            "idle session {name}: expected `421 4.3.2`, got `{reply}`"
        );
        smtp.closed_within(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("session {name}: {e}"));
    }
    // shutdown_timeout is 5s; hand-offs to a dead postoffice must not hold it longer.
    let status = mailman
        .wait_exit(Duration::from_secs(8))
        .expect("mailman still running 8 s after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("exited {:?} after SIGTERM", start.elapsed());
    assert!(
        Smtp::connect(mailman.addr()).is_err(),
        "still accepting connections after exit"
    );
    let spooled = spool_files(mailman.spool());
    assert!(
        any_file_contains(&spooled, b"spooled-at-shutdown"),
        "accepted message not kept in the spool: {spooled:?}"
    );
}
