//! The signer's tests. Whether a signature is good is dkimpy's word
//! (tests/peers/dkim_verify.py), never ours.

use std::time::{Duration, SystemTime};

use super::key::tests::pem;
use super::*;
use crate::testing::{python_at_says_ok, DEBIAN_PYTHON};

const VERIFY: &str = include_str!("../../../tests/peers/dkim_verify.py");

/// Two keys for example.org (RSA and Ed25519), one for other.test.
struct Keys {
    _dir: tempfile::TempDir,
    signer: Signer,
    records: Vec<String>,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Vec::new();
    for (domain, selector, ed25519) in [
        ("example.org", "rsa1", false),
        ("example.org", "ed1", true),
        ("other.test", "o1", true),
    ] {
        let path = dir.path().join(format!("{selector}.pem"));
        std::fs::write(&path, pem(ed25519)).unwrap();
        config.push(DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            key: path,
        });
    }
    let signer = Signer::load(&config).unwrap();
    let records = signer
        .keys
        .iter()
        .map(|k| format!("{}={}", k.config.record_name(), k.key.record()))
        .collect();
    Keys {
        _dir: dir,
        signer,
        records,
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Signs `message` and has dkimpy verify the `expect` signatures.
fn verified(keys: &Keys, message: &[u8], expect: usize) -> Vec<u8> {
    let mut signed = keys.signer.sign(message, now()).unwrap();
    signed.extend_from_slice(message);
    let expect = expect.to_string();
    let mut args = vec!["--expect", &expect, "--refold"];
    args.extend(keys.records.iter().map(String::as_str));
    python_at_says_ok(DEBIAN_PYTHON, VERIFY, &args, &signed);
    signed
}

const PLAIN: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@dest.test\r\n\
Subject: a subject long enough that an MTA might fold it somewhere along the way\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello,\r\n\r\nBob.\r\n";

#[test]
fn both_algorithms_verify_and_lines_stay_short() {
    let keys = keys();
    let signed = verified(&keys, PLAIN, 2);
    let text = String::from_utf8(signed).unwrap();
    assert!(text.contains("a=rsa-sha256;"), "{text}");
    assert!(text.contains("a=ed25519-sha256;"), "{text}");
    assert!(text.contains("c=relaxed/relaxed;"));
    assert!(text.contains("t=1767225600;"));
    assert!(
        text.contains("h=from:to:subject:date:message-id:from;"),
        "{text}"
    );
    let fields = &text[..text.find("From:").unwrap()];
    assert!(fields.split("\r\n").all(|l| l.len() <= WIDTH), "{fields}");
}

#[test]
fn subdomain_signs_with_parent_key_and_others_go_unsigned() {
    let keys = keys();
    let sub = b"From: news@mail.example.org\r\nSubject: x\r\n\r\nbody\r\n";
    verified(&keys, sub, 2);
    let other = b"From: x@other.test\r\nSubject: x\r\n\r\nbody\r\n";
    verified(&keys, other, 1);
    let foreign = b"From: x@elsewhere.test\r\nSubject: x\r\n\r\nbody\r\n";
    assert!(keys.signer.sign(foreign, now()).unwrap().is_empty());
    let lookalike = b"From: x@badexample.org\r\n\r\nbody\r\n";
    assert!(keys.signer.sign(lookalike, now()).unwrap().is_empty());
    assert!(keys
        .signer
        .sign(b"Subject: no from\r\n\r\nx\r\n", now())
        .unwrap()
        .is_empty());
}

#[test]
fn multipart_eight_bit_and_dot_lines_verify() {
    let keys = keys();
    let multipart = "From: a@example.org\r\nTo: b@dest.test\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Grüße aus Köln, 你好\r\n.\r\n..two dots\r\n.leading dot  \t \r\n\r\n\r\n--b1\r\n\
Content-Type: text/html\r\n\r\n<p>hi</p>\r\n--b1--\r\n\r\n\r\n";
    verified(&keys, multipart.as_bytes(), 2);
}

#[test]
fn repeated_and_folded_fields_verify() {
    let keys = keys();
    let m = b"Received: from x\r\nFrom: a@example.org\r\nTo: one@dest.test,\r\n\ttwo@dest.test\r\n\
To: three@dest.test\r\nReferences: <1@x>\r\n <2@x>\r\nSubject:   spaced    out   \r\n\r\n";
    let signed = verified(&keys, m, 2);
    let text = String::from_utf8_lossy(&signed);
    assert!(
        text.contains("h=from:to:to:subject:references:from;"),
        "{text}"
    );
}
