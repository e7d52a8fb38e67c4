//! postoffice signs what it delivers with every configured key that covers
//! the From: domain, and dkimpy verifies the signatures: on a raw message
//! and a JSON-built one straight at the MX, and after Postfix relayed it.
//! Keys are made by the openssl command, as the README tells operators.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::dkim::{make_key, verify, TestKey};
use common::postfix::Postfix;
use common::stack::{binary, free_port, host_ip, Postoffice, Sink};
use common::TestDir;

fn keys(dir: &TestDir) -> Vec<TestKey> {
    vec![
        make_key(dir, "example.org", "hedwig2026", false),
        make_key(dir, "example.org", "ed2026", true),
    ]
}

fn dkim_ron(keys: &[TestKey]) -> String {
    let list: Vec<String> = keys.iter().map(TestKey::ron).collect();
    format!("dkim: [{}]", list.join(", "))
}

const RAW: &[u8] = "From: Shop <shop@mail.example.org>\r\nTo: you@dest.test\r\n\
Subject: Your order, with a subject long enough to be folded by somebody on the way\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nGrüße!\r\n.\r\n.leading dot\r\n\r\n\r\n"
    .as_bytes();

#[test]
fn raw_and_json_messages_verify_at_the_mx() {
    let dir = TestDir::new();
    let keys = keys(&dir);
    let sink = Sink::start(&dir, "mx", dir.free_addr(), &[]);
    let routes = format!(
        "delivery: (starttls: Never, routes: {{\"*\": \"{}\"}})",
        sink.addr
    );
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("{routes}, {}", dkim_ron(&keys)),
    );
    assert!(po
        .log()
        .contains("DKIM: signing mail from example.org (s=ed2026, ed25519-sha256)"));

    let raw = po.post_raw("shop@mail.example.org", &["you@dest.test"], RAW);
    let body = r#"{"from": "Shop <shop@example.org>", "to": ["you@dest.test"],
        "subject": "Order 4711", "text": "Thanks!\n.\nA line of text long enough to be wrapped by the quoted-printable encoder, with ümlauts.",
        "html": "<p>Thanks!</p>", "headers": {"X-Order": "4711"},
        "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content": "SGVsbG8="}]}"#;
    let (code, answer) = po.http(
        "POST",
        "/v1/messages",
        Some("application/json"),
        Some(body.as_bytes()),
    );
    assert_eq!(code, 202, "{answer}");
    let json = common::stack::json(&answer)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Mail from a domain with no key goes unsigned.
    let foreign = b"From: x@elsewhere.test\r\nSubject: x\r\n\r\nx\r\n";
    let unsigned = po.post_raw("x@elsewhere.test", &["you@dest.test"], foreign);
    for id in [&raw, &json, &unsigned] {
        po.wait_state(id, "delivered", Duration::from_secs(15));
    }
    let got = sink.wait_for(3, Duration::from_secs(5));
    assert_eq!(got.len(), 3);
    for m in &got {
        let expect = if m.text().contains("elsewhere.test") {
            0
        } else {
            2
        };
        verify(&m.bytes, &keys, expect, true).unwrap();
    }
    let text = got.iter().map(|m| m.text()).collect::<String>();
    assert!(
        text.contains("h=from:to:subject:mime-version:content-type:from;"),
        "{text}"
    );
}

#[test]
fn signatures_survive_postfix_in_between() {
    let dir = TestDir::new();
    let keys = keys(&dir);
    let sink = Sink::start(&dir, "final", dir.free_addr(), &[]);
    let relay = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let postfix = Postfix::start(&dir, relay, sink.addr);
    let routes = format!("delivery: (starttls: Never, routes: {{\"*\": \"{relay}\"}})");
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("{routes}, {}", dkim_ron(&keys)),
    );
    let id = po.post_raw("shop@mail.example.org", &["you@dest.test"], RAW);
    po.wait_state(&id, "delivered", Duration::from_secs(15));
    let got = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", postfix.log());
    let text = got[0].text();
    assert!(
        text.starts_with("Received: from "),
        "Postfix's trace on top: {text}"
    );
    verify(&got[0].bytes, &keys, 2, true).unwrap();
}

/// `postoffice --check --config CONFIG`: its exit code and stderr.
fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(binary("postoffice"))
        .args(["--check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_a_bad_key_by_position() {
    let dir = TestDir::new();
    let good = make_key(&dir, "example.org", "good", true);
    let short = dir.path().join("short.pem");
    common::stack::openssl(dir.path(), &["genrsa", "-out", "short.pem", "1024"]);
    let config = dir.path().join("hedwig.ron");
    let text = format!(
        "(postoffice: (\n  tokens: [\"t\"],\n  dkim: [\n    {},\n    (domain: \"example.org\", selector: \"old\", key: {:?}),\n  ],\n))\n",
        good.ron(),
        short.display().to_string()
    );
    std::fs::write(&config, &text).unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, Some(2), "{stderr}");
    // ron places a string at its first character inside the quotes.
    let col = text.lines().nth(4).unwrap().find("key: \"").unwrap() + 7;
    let expected = format!(
        "postoffice: {}:5:{col}: postoffice.dkim.key: {}: RSA key of 1024 bits is too short: use 2048 bits or more\n",
        config.display(),
        short.display()
    );
    assert_eq!(stderr, expected);
    // A file that is no key at all, and one that is missing.
    std::fs::write(&short, "not a key\n").unwrap();
    let (_, stderr) = check(&config);
    assert!(
        stderr.contains("postoffice.dkim.key: ") && stderr.contains(": not a PEM private key"),
        "{stderr}"
    );
    std::fs::remove_file(&short).unwrap();
    let (_, stderr) = check(&config);
    assert!(
        stderr.contains(": cannot read: No such file or directory"),
        "{stderr}"
    );
    // Both good: ok.
    std::fs::write(
        &config,
        text.replace(
            &short.display().to_string(),
            &good.path.display().to_string(),
        )
        .replace("\"old\"", "\"other\""),
    )
    .unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, Some(0), "{stderr}");
}
