//! mailman resumes whatever the spool holds when it starts: mail accepted while
//! postoffice was down is handed off by the next mailman process.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::{spool_files, wait_until, TestDir};

#[test]
fn spooled_mail_is_handed_off_after_a_restart() {
    let dir = TestDir::new();
    let mut po = Postoffice::reserve(&dir);
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    let messages: Vec<Vec<u8>> = (0..5)
        .map(|i| crlf(&format!("Subject: resume {i}\n\nbody {i}\n")))
        .collect();
    let mut smtp = Smtp::ehlo(mailman.addr());
    let ids: Vec<String> = messages
        .iter()
        .map(|m| smtp.send_mail("a@example.org", &["b@example.net"], m))
        .collect();
    smtp.expect("QUIT", 221, "2.0.0");

    mailman.sigterm();
    let status = mailman
        .wait_exit(Duration::from_secs(8))
        .expect("mailman did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        !spool_files(mailman.spool()).is_empty(),
        "nothing spooled while postoffice was down"
    );

    po.listen();
    mailman.restart();
    po.wait_for_keys(&ids, Duration::from_secs(10));
    let by_key = po.accepted_by_key();
    for (id, m) in ids.iter().zip(&messages) {
        assert_eq!(
            by_key[id].len(),
            1,
            "{id} handed off {} times",
            by_key[id].len()
        );
        assert_arrived(id, &by_key[id][0].body, m);
    }
    let empty = wait_until(Duration::from_secs(2), || {
        spool_files(mailman.spool()).is_empty()
    });
    assert!(
        empty,
        "spool not emptied: {:?}",
        spool_files(mailman.spool())
    );
}
