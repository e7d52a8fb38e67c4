//! msmtp, the client deployments use, hands a message to mailman and postoffice
//! receives exactly those bytes, that envelope, the token and the queued-as ID.

mod common;

use std::time::Duration;

use common::clients::msmtp;
use common::mailman::{Config, Mailman, TOKEN};
use common::message::{assert_arrived, crlf};
use common::postoffice::Postoffice;
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);

/// Sends `text` with msmtp and returns the single hand-off that carries its ID.
fn send(
    dir: &TestDir,
    mailman: &Mailman,
    po: &Postoffice,
    from: &str,
    to: &[&str],
    text: &str,
) -> common::postoffice::Delivery {
    let sent = msmtp(dir.path(), mailman.addr(), from, to, text.as_bytes());
    assert!(sent.ok, "msmtp failed:\n{}", sent.transcript);
    let id = sent
        .id
        .unwrap_or_else(|| panic!("msmtp logged no `queued as ID`:\n{}", sent.transcript));
    po.wait_for_keys(std::slice::from_ref(&id), LIMIT);
    let with_id: Vec<_> = po
        .accepted()
        .into_iter()
        .filter(|d| d.key() == id)
        .collect();
    assert_eq!(
        with_id.len(),
        1,
        "message {id} handed off {} times:\n{}",
        with_id.len(),
        po.dump()
    );
    with_id.into_iter().next().unwrap()
}

#[test]
fn msmtp_message_arrives_exactly_with_envelope_token_and_id() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    // A complete message: nothing may be added but the Received field.
    let text = "From: Sender <sender@example.org>\n\
                To: one@example.net, two@example.com\n\
                Subject: msmtp complete\n\
                Date: Tue, 1 Jul 2025 10:00:00 +0000\n\
                Message-ID: <complete.1@example.org>\n\
                MIME-Version: 1.0\n\
                \n\
                First line.\n\
                .A line that starts with a dot\n\
                ..two dots\n\
                \n\
                Last line.\n";
    let to = ["one@example.net", "two@example.com", "three@example.com"];
    let d = send(&dir, &mailman, &po, "sender@example.org", &to, text);
    assert_eq!(d.method, "POST", "{}", d.summary());
    assert_eq!(d.path, "/v1/messages", "{}", d.summary());
    assert_eq!(
        d.from.as_deref(),
        Some("sender@example.org"),
        "{}",
        d.summary()
    );
    assert_eq!(d.to, to, "{}", d.summary());
    assert_eq!(
        d.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(d.content_type.as_deref(), Some("message/rfc822"));
    assert_arrived("complete message", &d.body, &crlf(text));
}

#[test]
fn msmtp_message_without_date_and_message_id_gets_both_added() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    let bare = "From: sender@example.org\nTo: one@example.net\nSubject: bare\n\nbody\n";
    let d = send(
        &dir,
        &mailman,
        &po,
        "sender@example.org",
        &["one@example.net"],
        bare,
    );
    assert_eq!(d.to, ["one@example.net"]);
    assert_arrived("message without Date and Message-ID", &d.body, &crlf(bare));

    // Only the missing one is added.
    let dated =
        "From: sender@example.org\nDate: Tue, 1 Jul 2025 10:00:00 +0000\nSubject: dated\n\nbody\n";
    let d = send(
        &dir,
        &mailman,
        &po,
        "sender@example.org",
        &["one@example.net"],
        dated,
    );
    assert_arrived("message with Date only", &d.body, &crlf(dated));

    let with_id = "From: sender@example.org\nMessage-ID: <x.2@example.org>\nSubject: id\n\nbody\n";
    let d = send(
        &dir,
        &mailman,
        &po,
        "sender@example.org",
        &["one@example.net"],
        with_id,
    );
    assert_arrived("message with Message-ID only", &d.body, &crlf(with_id));
}
