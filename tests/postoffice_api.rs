//! Every endpoint of postoffice's HTTP API, driven with curl: authorization,
//! errors as JSON, idempotent repeats, JSON messages (Bcc stays hidden),
//! status, queue, flush, delete, health and metrics.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stack::{free_port, host_ip, json, raw_path, without_trace, Postoffice, Sink};
use common::TestDir;

const RAW: &[u8] = b"Subject: api\nFrom: a@x.test\n\nLF-only body\n";

#[test]
fn every_endpoint() {
    let dir = TestDir::new();
    let port = free_port(&dir);
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), port);
    let sink = Sink::start(&dir, "mx", mx, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!(
            "max_message_size: 2000, delivery: (starttls: Never, routes: {{\"*\": \"{mx}\"}})"
        ),
    );
    let mut failures: Vec<String> = Vec::new();
    let mut expect = |what: &str, got: (u16, String), code: u16| {
        if code == 0 {
            failures.push(what.to_string());
        } else if got.0 != code {
            failures.push(format!("{what}: expected {code}, got {} {}", got.0, got.1));
        } else if code >= 400 && json(&got.1)["error"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{what}: {code} without a JSON error: {}", got.1));
        }
    };

    // 401 on every endpoint but /healthz, with no token and with a wrong one.
    let endpoints = [
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages/X"),
        ("DELETE", "/v1/messages/X"),
        ("GET", "/v1/queue"),
        ("POST", "/v1/queue/flush"),
        ("GET", "/metrics"),
    ];
    for (method, path) in endpoints {
        for token in [None, Some("wrong")] {
            let got = po.http_as(token, method, path, None, None, &[]);
            expect(&format!("{method} {path} with token {token:?}"), got, 401);
        }
    }
    expect(
        "healthz",
        po.http_as(None, "GET", "/healthz", None, None, &[]),
        200,
    );
    expect(
        "unknown path",
        po.http("GET", "/v2/nothing", None, None),
        404,
    );

    // Raw messages: 202, idempotent by key; bad input answered clearly.
    let path = raw_path("a@x.test", &["r1@y.test", "r2@y.test"]);
    let key = ["Idempotency-Key: key-1"];
    let first = po.http_as(
        Some("tok"),
        "POST",
        &path,
        Some("message/rfc822"),
        Some(RAW),
        &key,
    );
    expect("raw message", first.clone(), 202);
    let id = json(&first.1)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let again = po.http_as(
        Some("tok"),
        "POST",
        &path,
        Some("message/rfc822"),
        Some(RAW),
        &key,
    );
    expect("repeat", again.clone(), 202);
    if json(&again.1)["id"] != id.as_str() {
        expect(
            &format!("repeat got another id: {} vs {id}", again.1),
            (0, String::new()),
            0,
        );
    }
    expect(
        "no content type",
        po.http("POST", &path, None, Some(RAW)),
        415,
    );
    expect(
        "text/plain",
        po.http("POST", &path, Some("text/plain"), Some(RAW)),
        415,
    );
    expect(
        "bad envelope",
        po.http(
            "POST",
            "/v1/messages?from=a%40x.test",
            Some("message/rfc822"),
            Some(RAW),
        ),
        400,
    );
    expect(
        "bad address",
        po.http(
            "POST",
            &raw_path("a@x.test", &["not-an-address"]),
            Some("message/rfc822"),
            Some(RAW),
        ),
        400,
    );
    // The limit (2000) plus what a hop may add on top (4096, the hand-off
    // contract's HOP_ALLOWANCE) is taken; one byte more is not.
    expect(
        "too large",
        po.http(
            "POST",
            &path,
            Some("message/rfc822"),
            Some(&vec![b'x'; 2000 + 4096 + 1]),
        ),
        413,
    );

    // JSON messages.
    let js = |v: &str| {
        po.http(
            "POST",
            "/v1/messages",
            Some("application/json"),
            Some(v.as_bytes()),
        )
    };
    expect("bad JSON", js("{\"from\": "), 400);
    expect(
        "unknown field",
        js(r#"{"from": "a@x.test", "to": ["b@y.test"], "colour": "red"}"#),
        400,
    );
    expect(
        "header injection",
        js(r#"{"from": "a@x.test", "to": ["b@y.test"], "subject": "hi\r\nBcc: evil@z.test"}"#),
        400,
    );
    expect("no recipients", js(r#"{"from": "a@x.test"}"#), 422);
    expect(
        "bad address",
        js(r#"{"from": "a@x.test", "to": ["b@"]}"#),
        422,
    );
    let made = js(
        r#"{"from": "App <a@x.test>", "to": ["t@y.test"], "bcc": ["hidden@y.test"], "subject": "json", "text": "hi"}"#,
    );
    expect("JSON message", made.clone(), 202);
    let json_id = json(&made.1)["id"].as_str().unwrap_or_default().to_string();

    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        po.log()
    );

    // Both messages are delivered; the raw one with CRLF endings, the JSON one
    // to the Bcc address too but without a Bcc header.
    let raw_status = po.wait_state(&id, "delivered", Duration::from_secs(10));
    assert!(
        raw_status["recipients"][0]["relay"]
            .as_str()
            .unwrap()
            .ends_with(&format!("[{}]:{}", mx.ip(), mx.port())),
        "{raw_status:#}"
    );
    assert!(
        raw_status["recipients"][0]["reply"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{raw_status:#}"
    );
    po.wait_state(&json_id, "delivered", Duration::from_secs(10));
    let got = sink.wait_for(2, Duration::from_secs(5));
    let raw = got
        .iter()
        .find(|r| r.text().contains("Subject: api"))
        .expect("raw message arrived");
    assert_eq!(
        without_trace(&raw.bytes),
        b"Subject: api\r\nFrom: a@x.test\r\n\r\nLF-only body\r\n"
    );
    let composed = got
        .iter()
        .find(|r| r.text().contains("Subject: json"))
        .expect("JSON message arrived");
    assert_eq!(composed.to, ["t@y.test", "hidden@y.test"]);
    assert!(
        !composed.text().to_ascii_lowercase().contains("bcc"),
        "{}",
        composed.text()
    );
    assert!(
        !composed.text().contains("hidden@y.test"),
        "{}",
        composed.text()
    );

    // Queue view, metrics, flush, delete.
    let (code, queue) = po.http("GET", "/v1/queue?limit=10", None, None);
    assert_eq!(code, 200);
    let queue = json(&queue);
    assert_eq!(
        queue["total"], 2,
        "idempotent repeat queued nothing: {queue:#}"
    );
    assert_eq!(queue["by_state"]["delivered"], 4, "{queue:#}");
    assert_eq!(po.http("GET", "/v1/queue?limit=0", None, None).0, 400);
    let (code, metrics) = po.http("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hedwig_messages_accepted_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hedwig_recipients_delivered_total 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hedwig_delivery_latency_seconds_count 4\n"),
        "{metrics}"
    );
    let (code, flushed) = po.http("POST", "/v1/queue/flush", None, None);
    assert_eq!(code, 202, "{flushed}");
    assert_eq!(json(&flushed)["flushed"], 0);
    assert_eq!(
        po.http("DELETE", &format!("/v1/messages/{id}"), None, None)
            .0,
        200
    );
    assert_eq!(
        po.http("GET", &format!("/v1/messages/{id}"), None, None).0,
        404
    );
    assert_eq!(
        po.http("DELETE", &format!("/v1/messages/{id}"), None, None)
            .0,
        404
    );
}
