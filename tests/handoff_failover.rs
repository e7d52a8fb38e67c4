//! Failover: with `url: [A, B]`, mailman hands off to A; while A is down or
//! answers 503 it uses B, skipping A while A's backoff lasts; once A's
//! backoff is over and A answers, A takes the mail again.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::{Answer, Postoffice};
use common::smtp::Smtp;
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(15);

/// The keys each endpoint answered 2xx.
fn accepted(po: &Postoffice) -> Vec<String> {
    po.accepted().iter().map(|d| d.key().to_string()).collect()
}

/// Every key each endpoint was asked with, whatever it answered.
fn asked(po: &Postoffice) -> Vec<String> {
    po.deliveries()
        .iter()
        .map(|d| d.key().to_string())
        .collect()
}

#[test]
fn a_failing_postoffice_is_skipped_until_it_answers_again() {
    let dir = TestDir::new();
    let mut a = Postoffice::reserve(&dir);
    let b = Postoffice::start(&dir);
    let mut config = Config::new(&dir, a.addr());
    config.failover = vec![format!("http://{}", b.addr())];
    // A URL that failed once waits 2 s before it is preferred again.
    config.retry_first = "2s".into();
    config.retry_max = "4s".into();
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    let mut send = |n: u32| {
        smtp.send_mail(
            "s@x.test",
            &["r@y.test"],
            &crlf(&format!("Subject: {n}\n\nx\n")),
        )
    };

    // A is down: B takes the first message, at once.
    let m1 = send(1);
    b.wait_for_keys(std::slice::from_ref(&m1), LIMIT);
    assert!(
        mailman.stderr().contains("trying the next one"),
        "{}",
        mailman.stderr()
    );

    // A is up again and its backoff over: A takes the next.
    a.listen();
    std::thread::sleep(Duration::from_millis(2500));
    let m2 = send(2);
    a.wait_for_keys(std::slice::from_ref(&m2), LIMIT);
    assert_eq!(accepted(&b), std::slice::from_ref(&m1));

    // A answers 503: B takes that message in the same hand-off, and the
    // next one goes straight to B while A is in backoff.
    a.set_policy(|_| Answer::status(503));
    let m3 = send(3);
    b.wait_for_keys(std::slice::from_ref(&m3), LIMIT);
    let m4 = send(4);
    b.wait_for_keys(std::slice::from_ref(&m4), LIMIT);
    assert!(asked(&a).contains(&m3));
    assert!(
        !asked(&a).contains(&m4),
        "A asked while in backoff:\n{}",
        a.dump()
    );

    // A well again: after its backoff it is first again.
    a.set_policy(|_| Answer::status(202));
    std::thread::sleep(Duration::from_millis(2500));
    let m5 = send(5);
    a.wait_for_keys(std::slice::from_ref(&m5), LIMIT);
    assert_eq!(accepted(&a), [m2, m5]);
    assert_eq!(accepted(&b), [m1, m3, m4]);
    assert!(
        mailman.stderr().contains("answers again"),
        "{}",
        mailman.stderr()
    );
}
