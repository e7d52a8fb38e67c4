//! A whole session for three messages, EHLO to QUIT, sent in one write: every reply
//! comes back in order and all three messages are handed off.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::message::{assert_arrived, crlf, data_section};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn three_messages_in_one_write() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));

    let envelopes: [(&str, &[&str]); 3] = [
        ("one@example.org", &["a@example.net"]),
        ("two@example.org", &["b@example.net", "c@example.net"]),
        ("", &["d@example.net"]),
    ];
    let messages: Vec<Vec<u8>> = (1..=3)
        .map(|i| {
            crlf(&format!(
                "Subject: pipelined {i}\nX-Seq: {i}\n\nmessage {i}\n.dot line {i}\n"
            ))
        })
        .collect();

    let mut script = b"EHLO client.test\r\n".to_vec();
    for ((from, to), message) in envelopes.iter().zip(&messages) {
        script.extend_from_slice(format!("MAIL FROM:<{from}>\r\n").as_bytes());
        for rcpt in *to {
            script.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        }
        script.extend_from_slice(b"DATA\r\n");
        script.extend_from_slice(&data_section(message));
    }
    script.extend_from_slice(b"QUIT\r\n");

    let mut smtp = Smtp::open(mailman.addr());
    smtp.send(&script).expect("write the whole session");

    // Replies, in order: EHLO, then per message MAIL, each RCPT, DATA, end of data.
    let mut transcript = Vec::new();
    let mut next = |what: &str, code: u16, enhanced: &str| {
        let reply = smtp
            .read_reply()
            .unwrap_or_else(|e| panic!("reply to {what}: {e}; so far: {transcript:#?}"));
        transcript.push(reply.to_string());
        assert!(
            reply.is(code, enhanced),
            "reply to {what}: expected `{code} {enhanced}`, got `{reply}`; so far: {transcript:#?}"
        );
        reply
    };
    next("EHLO", 250, "");
    let mut ids = Vec::new();
    for (i, (_, to)) in envelopes.iter().enumerate() {
        next(&format!("MAIL of message {i}"), 250, "2.1.0");
        for rcpt in *to {
            next(&format!("RCPT {rcpt}"), 250, "2.1.5");
        }
        next(&format!("DATA of message {i}"), 354, "");
        ids.push(next(&format!("end of data of message {i}"), 250, "2.0.0").queued_id());
    }
    next("QUIT", 221, "2.0.0");
    smtp.closed_within(Duration::from_secs(5))
        .expect("mailman closes after QUIT");

    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 3, "queued-as IDs must differ: {ids:?}");
    po.wait_for_keys(&ids, Duration::from_secs(10));
    let by_key = po.accepted_by_key();
    assert_eq!(
        by_key.len(),
        3,
        "exactly three hand-offs expected:\n{}",
        po.dump()
    );
    for (i, id) in ids.iter().enumerate() {
        let got = &by_key[id];
        assert_eq!(
            got.len(),
            1,
            "message {i} ({id}) handed off {} times",
            got.len()
        );
        let d = &got[0];
        let (from, to) = envelopes[i];
        assert_eq!(
            d.from.as_deref(),
            Some(from),
            "envelope sender of message {i}: {}",
            d.summary()
        );
        assert_eq!(d.to, to, "recipients of message {i}: {}", d.summary());
        assert_arrived(&format!("message {i}"), &d.body, &messages[i]);
    }
}
