//! Requests on one connection: pipelined requests answered in order, a
//! chunked body (Python's http.client), `Expect: 100-continue`, and a client
//! that never reads its answers, which postoffice drops after
//! `write_timeout` while it goes on serving everyone else.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::python;
use common::raw::{connect, parse, post, read_until_close};
use common::stack::{json, Postoffice};
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);
const MESSAGE: &[u8] = b"Subject: pipelined\r\n\r\nhello\r\n";

fn start(dir: &TestDir, extra: &str) -> Postoffice {
    Postoffice::start_undelivering(dir, extra)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = TestDir::new();
    let po = start(&dir, "");
    let mut all = Vec::new();
    all.extend(post("tok", MESSAGE, "Idempotency-Key: one\r\n"));
    all.extend(post("tok", MESSAGE, "Idempotency-Key: two\r\n"));
    all.extend(b"GET /healthz HTTP/1.1\r\nHost: po.test\r\n\r\n");
    all.extend(post("tok", MESSAGE, "Idempotency-Key: one\r\n"));
    all.extend(post(
        "tok",
        MESSAGE,
        "Idempotency-Key: three\r\nConnection: close\r\n",
    ));
    // All in one write: the server has them all at once.
    let mut s = connect(po.addr, LIMIT);
    s.write_all(&all).unwrap();
    let (bytes, closed) = read_until_close(&mut s, LIMIT);
    let answers = parse(&bytes);
    assert!(closed);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [202, 202, 200, 202, 202], "{answers:?}");
    let id = |i: usize| answers[i].json()["id"].as_str().unwrap().to_string();
    // Ids are time-ordered, so queued in the order sent; the repeated key
    // answers the first id.
    assert!(id(0) < id(1) && id(1) < id(4), "{answers:?}");
    assert_eq!(id(3), id(0));
    let (code, body) = po.http("GET", "/v1/queue", None, None);
    assert_eq!(code, 200);
    assert_eq!(json(&body)["total"], 3, "{body}");
}

#[test]
fn chunked_bodies_and_100_continue() {
    let dir = TestDir::new();
    let po = start(&dir, "");
    // Python's http.client, one keep-alive connection, chunked bodies.
    let script = r#"
import http.client, json, sys
host, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection(host, port, timeout=10)
ids = []
for i in range(3):
    chunks = iter([b"Subject: chunked %d\r\n" % i, b"\r\n", b"body " * 1000, b"\r\n"])
    c.request("POST", "/v1/messages?from=a%40x.test&to=b%40y.test", body=chunks,
              headers={"Authorization": "Bearer tok", "Content-Type": "message/rfc822"},
              encode_chunked=True)
    r = c.getresponse()
    ids.append((r.status, json.loads(r.read())["id"]))
print(json.dumps({"ids": ids, "same_socket": c.sock is not None}))
"#;
    let got = json(python(script, po.addr, &[]).trim());
    for pair in got["ids"].as_array().unwrap() {
        assert_eq!(pair[0], 202, "{got}");
        let record = po.status(pair[1].as_str().unwrap());
        assert!(record["size"].as_u64().unwrap() > 5000, "{record}");
    }

    // Expect: 100-continue: the body goes only after the interim answer.
    let mut s = connect(po.addr, LIMIT);
    let request = post(
        "tok",
        MESSAGE,
        "Expect: 100-continue\r\nConnection: close\r\n",
    );
    let split = request.len() - MESSAGE.len();
    s.write_all(&request[..split]).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&request[split..]).unwrap();
    let (bytes, _) = read_until_close(&mut s, LIMIT);
    assert_eq!(parse(&bytes)[0].status, 202);
}

#[test]
fn a_client_that_never_reads_is_dropped_after_write_timeout() {
    let dir = TestDir::new();
    let po = start(&dir, "write_timeout: \"2s\", header_timeout: \"60s\",");
    // Python with a tiny receive buffer pipelines 3,000 requests and reads
    // nothing for 6 s; then it reads what comes until the end.
    let script = r#"
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, port))
req = b"GET /metrics HTTP/1.1\r\nHost: po.test\r\nAuthorization: Bearer tok\r\n\r\n" * 3000
threading.Thread(target=lambda: s.sendall(req), daemon=True).start()
time.sleep(6)
s.settimeout(10)
got, start = 0, time.time()
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d.count(b"HTTP/1.1 200")
except ConnectionResetError:
    pass
print(got, round(time.time() - start, 1))
"#;
    let started = Instant::now();
    let child = Command::new("python3")
        .args([
            "-c",
            script,
            &po.addr.ip().to_string(),
            &po.addr.port().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // Meanwhile others are served.
    std::thread::sleep(Duration::from_secs(3));
    let (code, _) = po.http("GET", "/healthz", None, None);
    assert_eq!(code, 200);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let answered: u32 = fields
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    let draining: f64 = fields
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::MAX);
    assert!(
        answered < 3000 && draining < 5.0,
        "the stalled connection was not dropped: {answered} answers, read for {draining} s \
         ({:?} in all)\n{}",
        started.elapsed(),
        po.log()
    );
}
