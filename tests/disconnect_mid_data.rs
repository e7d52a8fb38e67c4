//! A client that disconnects in the middle of DATA: nothing is handed off, no file
//! is left in the spool, and the next client is served.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::{failed_files, spool_files, wait_until, TestDir};

#[test]
fn disconnect_mid_data_leaves_nothing_behind() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    for cut in [0, 10, 30_000] {
        let mut smtp = Smtp::ehlo(mailman.addr());
        smtp.expect("MAIL FROM:<quitter@example.org>", 250, "2.1.0");
        smtp.expect("RCPT TO:<rcpt@example.net>", 250, "2.1.5");
        smtp.expect("DATA", 354, "");
        let mut partial = b"Subject: half-sent\r\n\r\n".to_vec();
        while partial.len() < cut {
            partial.extend_from_slice(b"half-sent line of a message that never ends\r\n");
        }
        partial.truncate(cut);
        smtp.send(&partial).unwrap();
        // Give mailman time to take what was sent (and maybe spool part of it).
        std::thread::sleep(Duration::from_millis(200));
        smtp.abort();
    }

    // A mailman that wrongly finishes the message on EOF would spool it now.
    std::thread::sleep(Duration::from_millis(500));
    let clean = wait_until(Duration::from_secs(3), || {
        spool_files(mailman.spool()).is_empty()
    });
    assert!(
        clean,
        "files left in the spool after aborted DATA: {:?}",
        spool_files(mailman.spool())
    );
    assert!(
        failed_files(mailman.spool()).is_empty(),
        "aborted DATA moved to failed/: {:?}",
        failed_files(mailman.spool())
    );
    mailman.assert_alive();

    let message = crlf("Subject: next client\n\nserved\n");
    let mut smtp = Smtp::ehlo(mailman.addr());
    let id = smtp.send_mail("next@example.org", &["rcpt@example.net"], &message);
    po.wait_for_keys(std::slice::from_ref(&id), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let all = po.deliveries();
    assert_eq!(
        all.len(),
        1,
        "only the next client's message may be handed off:\n{}",
        po.dump()
    );
    assert_arrived("next client's message", &all[0].body, &message);
}
