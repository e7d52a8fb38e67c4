//! The bearer scheme is case-insensitive (RFC 9110 section 11.1), and a 401
//! says how to authenticate (`WWW-Authenticate: Bearer`, RFC 6750), with
//! `error="invalid_token"` when a token was given and is wrong.

mod common;

use std::time::Duration;

use common::raw::{exchange, parse};
use common::stack::Postoffice;
use common::TestDir;

#[test]
fn bearer_in_any_case_and_401_with_a_challenge() {
    let dir = TestDir::new();
    let po = Postoffice::start_undelivering(&dir, "");
    let ask = |authorization: &str| {
        let request = format!(
            "GET /v1/queue HTTP/1.1\r\nHost: po.test\r\n{authorization}Connection: close\r\n\r\n"
        );
        let (bytes, _) = exchange(po.addr, request.as_bytes(), Duration::from_secs(10));
        parse(&bytes).remove(0)
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let a = ask(&format!("Authorization: {scheme} tok\r\n"));
        assert_eq!(a.status, 200, "{scheme}: {a:?}");
    }
    let missing = ask("");
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"postoffice\"")
    );
    assert_eq!(missing.json()["error"], "missing bearer token");
    for wrong in ["Bearer nope", "Basic dG9rOg==", "Bearer"] {
        let a = ask(&format!("Authorization: {wrong}\r\n"));
        assert_eq!(a.status, 401, "{wrong}: {a:?}");
        let challenge = a.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"postoffice\""),
            "{challenge}"
        );
    }
    let a = ask("Authorization: Bearer nope\r\n");
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"postoffice\", error=\"invalid_token\"")
    );
}
