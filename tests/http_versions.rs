//! postoffice speaks HTTP/1.0 and 1.1 as RFC 9112 says, over a raw socket:
//! 1.0 closes after the answer unless it asked for keep-alive, 1.1 needs
//! exactly one Host (400), any other version gets 505, and every refusal is
//! a JSON error. nginx's default `proxy_pass` and HAProxy's `httpchk` speak
//! 1.0 (tests/http_nginx.rs, tests/http_haproxy.rs).

mod common;

use std::time::Duration;

use common::raw::{exchange, parse};
use common::stack::Postoffice;
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);

fn start(dir: &TestDir) -> Postoffice {
    Postoffice::start_undelivering(dir, "")
}

#[test]
fn http_1_0_is_answered_and_closed_unless_kept_alive() {
    let dir = TestDir::new();
    let po = start(&dir);

    let (bytes, closed) = exchange(po.addr, b"GET /healthz HTTP/1.0\r\n\r\n", LIMIT);
    let answers = parse(&bytes);
    assert!(closed, "HTTP/1.0 without keep-alive must be closed");
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].version.as_str(), answers[0].status),
        ("HTTP/1.0", 200)
    );
    assert_eq!(answers[0].json()["status"], "ok");

    // Keep-alive asked for: two answers on one connection, the second
    // request (without keep-alive) ending it.
    let two = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /v1/queue HTTP/1.0\r\nAuthorization: Bearer tok\r\n\r\n";
    let (bytes, closed) = exchange(po.addr, two, LIMIT);
    let answers = parse(&bytes);
    assert!(closed);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].header("connection"), Some("keep-alive"));
    assert_eq!(answers[1].status, 200);
    assert!(answers[1].json()["by_state"].is_object(), "{answers:?}");
}

#[test]
fn http_1_1_needs_exactly_one_host() {
    let dir = TestDir::new();
    let po = start(&dir);
    for request in [
        &b"GET /healthz HTTP/1.1\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let (bytes, closed) = exchange(po.addr, request, LIMIT);
        let answers = parse(&bytes);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].status, 400);
        assert!(answers[0].json()["error"]
            .as_str()
            .unwrap()
            .contains("Host"));
        assert!(closed, "closed after a 400");
    }
    let (bytes, _) = exchange(
        po.addr,
        b"GET /healthz HTTP/1.1\r\nHost: po.test\r\nConnection: close\r\n\r\n",
        LIMIT,
    );
    assert_eq!(parse(&bytes)[0].status, 200);
}

#[test]
fn other_versions_get_505_with_a_json_error() {
    let dir = TestDir::new();
    let po = start(&dir);
    for (request, version) in [
        (&b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n"[..], "HTTP/2.0"),
        (b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n", "HTTP/1.2"),
        // HTTP/2 with prior knowledge.
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2.0"),
    ] {
        let (bytes, closed) = exchange(po.addr, request, LIMIT);
        let answers = parse(&bytes);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].status, 505, "{answers:?}");
        let error = answers[0].json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(version), "{error}");
        assert!(closed);
    }
    // Garbage is a 400, also in JSON.
    let (bytes, _) = exchange(po.addr, b"\x16\x03\x01 hello\r\n\r\n", LIMIT);
    let answers = parse(&bytes);
    assert_eq!(answers[0].status, 400);
    assert!(answers[0].json()["error"].is_string());
}
