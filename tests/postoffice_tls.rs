//! TLS both ways: STARTTLS to an MX with a self-signed certificate under
//! Opportunistic (used, like Postfix's `may`), Required against an MX without
//! STARTTLS (deferred, never sent in clear), and postoffice's own HTTPS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stack::{free_port, host_ip, self_signed, without_trace, Postoffice, Sink};
use common::TestDir;

const MESSAGE: &[u8] = b"Subject: tls\r\n\r\nsecret\r\n";

#[test]
fn opportunistic_uses_starttls_with_a_self_signed_certificate() {
    let dir = TestDir::new();
    let (cert, key) = self_signed(&dir, "mx.test");
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let sink = Sink::start(
        &dir,
        "mx",
        mx,
        &["--tls", cert.to_str().unwrap(), key.to_str().unwrap()],
    );
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("delivery: (starttls: Opportunistic, routes: {{\"*\": \"{mx}\"}})"),
    );
    let id = po.post_raw("a@x.test", &["b@y.test"], MESSAGE);
    po.wait_state(&id, "delivered", Duration::from_secs(15));
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert!(got[0].tls, "the sink saw no TLS");
    assert_eq!(without_trace(&got[0].bytes), MESSAGE);
    assert!(
        po.log().contains("tls=yes status=delivered"),
        "{}",
        po.log()
    );
}

#[test]
fn required_defers_when_starttls_is_missing() {
    let dir = TestDir::new();
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let sink = Sink::start(&dir, "mx", mx, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("delivery: (starttls: Required, routes: {{\"*\": \"{mx}\"}})"),
    );
    let id = po.post_raw("a@x.test", &["b@y.test"], MESSAGE);
    let r = po.wait_state(&id, "deferred", Duration::from_secs(15));
    let error = r["recipients"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("STARTTLS"), "{r:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.received().is_empty(), "sent in clear despite Required");
}

#[test]
fn postoffice_serves_https_itself() {
    let dir = TestDir::new();
    let (cert, key) = self_signed(&dir, "po.test");
    let tls = format!(
        "tls: Some((cert: \"{}\", key: \"{}\"))",
        cert.display(),
        key.display()
    );
    let po = Postoffice::start_with(&dir, dir.free_addr(), &tls, Some(cert));
    let (code, body) = po.http("GET", "/v1/queue", None, None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(po.http_as(None, "GET", "/v1/queue", None, None, &[]).0, 401);
}
