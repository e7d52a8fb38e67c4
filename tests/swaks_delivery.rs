//! swaks hands messages to mailman and postoffice receives them intact: plain,
//! 8-bit UTF-8, from the null sender, dot-stuffed, to several recipients.

mod common;

use std::time::Duration;

use common::clients::swaks;
use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf};
use common::postoffice::{Delivery, Postoffice};
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);

struct Rig {
    dir: TestDir,
    po: Postoffice,
    mailman: Mailman,
}

impl Rig {
    fn new() -> Rig {
        let dir = TestDir::new();
        let po = Postoffice::start(&dir);
        let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
        Rig { dir, po, mailman }
    }

    /// Sends `text` (LF, no final newline: swaks ends DATA with CRLF.CRLF itself)
    /// and returns the one hand-off with the queued-as ID.
    fn send(&self, args: &[&str], text: &str) -> Delivery {
        let sent = swaks(self.dir.path(), self.mailman.addr(), args, text.as_bytes());
        assert!(sent.ok, "swaks failed:\n{}", sent.transcript);
        let id = sent
            .id
            .unwrap_or_else(|| panic!("no `queued as ID` in swaks output:\n{}", sent.transcript));
        self.po.wait_for_keys(std::slice::from_ref(&id), LIMIT);
        let with_id: Vec<_> = self
            .po
            .accepted()
            .into_iter()
            .filter(|d| d.key() == id)
            .collect();
        assert_eq!(
            with_id.len(),
            1,
            "message {id} handed off {} times:\n{}",
            with_id.len(),
            self.po.dump()
        );
        with_id.into_iter().next().unwrap()
    }
}

/// The message swaks puts on the wire for `text`: CRLF lines, ending in CRLF.
fn wire(text: &str) -> Vec<u8> {
    crlf(&format!("{text}\n"))
}

#[test]
fn plain_message() {
    let rig = Rig::new();
    let text = "From: a@example.org\nTo: b@example.net\nSubject: plain\nDate: Tue, 1 Jul 2025 10:00:00 +0000\nMessage-ID: <plain@example.org>\n\nHello.";
    let d = rig.send(&["--from", "a@example.org", "--to", "b@example.net"], text);
    assert_eq!(d.from.as_deref(), Some("a@example.org"));
    assert_eq!(d.to, ["b@example.net"]);
    assert_arrived("plain message", &d.body, &wire(text));
}

#[test]
fn eight_bit_utf8_message() {
    let rig = Rig::new();
    let text = "From: a@example.org\nTo: b@example.net\nSubject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n\
                Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
                Grüße aus Köln – ½ € — 日本語 — emoji 🦉\nÿ\u{00a0}non-breaking";
    let d = rig.send(&["--from", "a@example.org", "--to", "b@example.net"], text);
    assert_arrived("8-bit message", &d.body, &wire(text));
}

#[test]
fn null_sender() {
    let rig = Rig::new();
    let text =
        "From: MAILER-DAEMON@example.org\nTo: b@example.net\nSubject: bounce\n\nUndeliverable.";
    let d = rig.send(&["--from", "<>", "--to", "b@example.net"], text);
    assert_eq!(
        d.from.as_deref(),
        Some(""),
        "null sender must arrive as an empty from=: {}",
        d.summary()
    );
    assert_eq!(d.to, ["b@example.net"]);
    assert_arrived("bounce", &d.body, &wire(text));
}

#[test]
fn dot_stuffed_lines_arrive_unstuffed() {
    let rig = Rig::new();
    // Not ending in a lone "." line: swaks would take that for the terminator.
    let text = "From: a@example.org\nSubject: dots\n\n.\n..\n.leading\n...three\n. space\n.\nend.";
    let d = rig.send(&["--from", "a@example.org", "--to", "b@example.net"], text);
    assert_arrived("dot lines", &d.body, &wire(text));
}

#[test]
fn several_recipients() {
    let rig = Rig::new();
    let text = "From: a@example.org\nSubject: many\n\nTo all.";
    let to = [
        "b@example.net",
        "c@example.com",
        "d+tag@sub.example.org",
        "postmaster@example.net",
    ];
    let d = rig.send(&["--from", "a@example.org", "--to", &to.join(",")], text);
    assert_eq!(d.to, to, "{}", d.summary());
    assert_arrived("message to several recipients", &d.body, &wire(text));
}
