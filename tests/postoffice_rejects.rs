//! A 4xx other than 429 from postoffice is permanent: the message moves to
//! SPOOL/failed/, is kept there and is not retried; other mail flows on.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::{Answer, Postoffice};
use common::smtp::Smtp;
use common::{any_file_contains, failed_files, spool_files, wait_until, TestDir};

#[test]
fn client_errors_move_the_message_to_failed() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    po.set_policy(|d| {
        let body = String::from_utf8_lossy(&d.body);
        Answer::status(if body.contains("reject-400") {
            400
        } else if body.contains("reject-422") {
            422
        } else {
            202
        })
    });
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let mut smtp = Smtp::ehlo(mailman.addr());
    let bad400 = smtp.send_mail(
        "a@example.org",
        &["b@example.net"],
        &crlf("Subject: reject-400\n\nx\n"),
    );
    let bad422 = smtp.send_mail(
        "a@example.org",
        &["b@example.net"],
        &crlf("Subject: reject-422\n\nx\n"),
    );
    let good = smtp.send_mail(
        "a@example.org",
        &["b@example.net"],
        &crlf("Subject: delivered-ok\n\nx\n"),
    );

    po.wait_for_keys(std::slice::from_ref(&good), Duration::from_secs(10));
    let moved = wait_until(Duration::from_secs(10), || {
        let failed = failed_files(mailman.spool());
        any_file_contains(&failed, b"reject-400") && any_file_contains(&failed, b"reject-422")
    });
    assert!(
        moved,
        "rejected messages not in failed/: {:?}\nspool: {:?}",
        failed_files(mailman.spool()),
        spool_files(mailman.spool())
    );

    // Longer than the largest retry delay (1s): no second attempt, still kept.
    std::thread::sleep(Duration::from_millis(2500));
    for (id, status) in [(&bad400, 400), (&bad422, 422)] {
        let attempts: Vec<_> = po
            .deliveries()
            .into_iter()
            .filter(|d| d.key.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(
            attempts.len(),
            1,
            "{id} (answered {status}) must be tried once, was tried {} times:\n{}",
            attempts.len(),
            po.dump()
        );
        assert_eq!(attempts[0].status, status);
    }
    let failed = failed_files(mailman.spool());
    assert!(
        any_file_contains(&failed, b"reject-400") && any_file_contains(&failed, b"reject-422"),
        "failed/ must keep them: {failed:?}"
    );
    let left = spool_files(mailman.spool());
    assert!(
        !any_file_contains(&left, b"reject-"),
        "rejected message also left in the queue: {left:?}"
    );
    assert!(
        !any_file_contains(&left, b"delivered-ok"),
        "delivered message left in the spool: {left:?}"
    );
}
