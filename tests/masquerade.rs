//! Sender identity for containers: mail that a container sends as
//! `root@3f2a9c1b7e4d` (its hostname) leaves mailman as `root@example.org`,
//! envelope and From:/Sender:/Return-Path: alike, and the rewrite is logged;
//! a real domain is left alone. swaks is the container's client.

mod common;

use std::time::Duration;

use common::clients::swaks;
use common::mailman::{Config, Mailman};
use common::postoffice::Postoffice;
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);

fn rig(extra: &str) -> (TestDir, Postoffice, Mailman) {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.extra = extra.into();
    let mailman = Mailman::start(&dir, config);
    (dir, po, mailman)
}

/// Sends `headers` and a body from `from`; returns the hand-off's sender and text.
fn send(
    dir: &TestDir,
    po: &Postoffice,
    mailman: &Mailman,
    from: &str,
    headers: &str,
) -> (String, String) {
    let data = format!("{headers}\nSubject: cron\n\nbackup done\n");
    let args = ["--from", from, "--to", "ops@example.net"];
    let sent = swaks(dir.path(), mailman.addr(), &args, data.as_bytes());
    assert!(sent.ok, "swaks failed:\n{}", sent.transcript);
    let id = sent.id.expect("queued as");
    po.wait_for_keys(std::slice::from_ref(&id), LIMIT);
    let d = po.accepted().into_iter().find(|d| d.key() == id).unwrap();
    (
        d.from.unwrap_or_default(),
        String::from_utf8_lossy(&d.body).into_owned(),
    )
}

#[test]
fn container_sender_becomes_the_domain_envelope_and_headers() {
    let (dir, po, mailman) =
        rig(r#"masquerade: Some((domain: "example.org", rewrite_from_header: true)),"#);
    let headers = "From: Cron Daemon <root@3f2a9c1b7e4d>\nSender: root@mailman.test\nReturn-Path: <root@3f2a9c1b7e4d>\nTo: ops@example.net";
    let (from, text) = send(&dir, &po, &mailman, "root@3f2a9c1b7e4d", headers);
    assert_eq!(from, "root@example.org");
    assert!(
        text.contains("\r\nFrom: Cron Daemon <root@example.org>\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nSender: root@example.org\r\n"), "{text}");
    assert!(
        text.contains("\r\nReturn-Path: <root@example.org>\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nTo: ops@example.net\r\n"), "{text}");
    let log = mailman.stderr();
    assert!(
        log.contains("masquerade: from=<root@3f2a9c1b7e4d> becomes <root@example.org>"),
        "{log}"
    );
    assert!(
        log.contains("masquerade: sender fields of the header rewritten"),
        "{log}"
    );

    // A real domain is nobody's to rewrite.
    let (from, text) = send(
        &dir,
        &po,
        &mailman,
        "shop@example.com",
        "From: shop@example.com",
    );
    assert_eq!(from, "shop@example.com");
    assert!(text.contains("\r\nFrom: shop@example.com\r\n"), "{text}");
}

#[test]
fn envelope_only_when_headers_are_not_asked_for() {
    let (dir, po, mailman) =
        rig(r#"masquerade: (domain: "example.org", rewrite_from_header: false),"#);
    let (from, text) = send(&dir, &po, &mailman, "app@localhost", "From: app@localhost");
    assert_eq!(from, "app@example.org");
    assert!(text.contains("\r\nFrom: app@localhost\r\n"), "{text}");
}
