//! postoffice ends every delivery connection it can with QUIT, whatever the
//! reason (RFC 5321 section 4.1.1.10): STARTTLS required but not offered, a
//! failed handshake, and idle connections at shutdown; the reasons recorded
//! read as sentences, without OpenSSL's codes and source paths.

mod common;

use std::time::Duration;

use common::stack::{self_signed, Postoffice, Sink};
use common::{wait_until, TestDir};

const MESSAGE: &[u8] = b"From: a@x.test\r\nSubject: quit\r\n\r\nbody\r\n";

/// A postoffice delivering everything to `sink` under `starttls`.
fn postoffice(dir: &TestDir, sink: &Sink, starttls: &str) -> Postoffice {
    let body = format!(
        "delivery: (starttls: {starttls}, routes: {{\"*\": \"{}\"}})",
        sink.addr
    );
    Postoffice::start(dir, dir.free_addr(), &body)
}

fn quits(sink: &Sink) -> usize {
    std::fs::read_to_string(sink.dir.join("quits.log")).map_or(0, |q| q.lines().count())
}

#[test]
fn required_starttls_not_offered_ends_with_quit_and_a_sentence() {
    let dir = TestDir::new();
    let sink = Sink::start(&dir, "mx", dir.free_addr(), &[]);
    let po = postoffice(&dir, &sink, "Required");
    let id = po.post_raw("a@x.test", &["b@y.test"], MESSAGE);
    let r = po.wait_state(&id, "deferred", Duration::from_secs(15));
    assert_eq!(
        r["recipients"][0]["last_error"],
        "tls: the server does not offer STARTTLS, and delivery.starttls is Required"
    );
    assert!(
        wait_until(Duration::from_secs(5), || quits(&sink) >= 1),
        "no QUIT:\n{}",
        po.log()
    );
}

#[test]
fn failed_handshake_reason_has_no_openssl_paths() {
    let dir = TestDir::new();
    // A certificate for another name, which Required verifies and refuses.
    let (cert, key) = self_signed(&dir, "elsewhere.test");
    let tls = ["--tls", cert.to_str().unwrap(), key.to_str().unwrap()];
    let sink = Sink::start(&dir, "mx", dir.free_addr(), &tls);
    let po = postoffice(&dir, &sink, "Required");
    let id = po.post_raw("a@x.test", &["b@y.test"], MESSAGE);
    let r = po.wait_state(&id, "deferred", Duration::from_secs(15));
    let error = r["recipients"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("tls: the TLS handshake failed: certificate verify failed"),
        "{error}"
    );
    assert!(
        !error.contains(".c:") && !error.contains("error:0"),
        "{error}"
    );
}

#[test]
fn idle_connections_get_quit_at_shutdown() {
    let dir = TestDir::new();
    let sink = Sink::start(&dir, "mx", dir.free_addr(), &[]);
    let mut po = postoffice(&dir, &sink, "Never");
    let id = po.post_raw("a@x.test", &["b@y.test"], MESSAGE);
    po.wait_state(&id, "delivered", Duration::from_secs(15));
    // The connection now idles in the pool (for 2 s); stop before the sweep.
    assert_eq!(quits(&sink), 0);
    assert!(
        po.stop(Duration::from_secs(15)),
        "postoffice did not stop:\n{}",
        po.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || quits(&sink) == 1),
        "no QUIT at shutdown:\n{}",
        po.log()
    );
}
