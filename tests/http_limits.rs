//! postoffice's HTTP bounds, each a hedwig.ron field: a head over
//! `max_header_size` gets 431, a head not finished within `header_timeout`
//! 408 (an idle keep-alive connection is just closed), and connections over
//! `max_connections` get 503 and are closed; refusals are JSON.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw::{connect, exchange, parse, read_until_close};
use common::stack::Postoffice;
use common::TestDir;

const LIMIT: Duration = Duration::from_secs(10);

fn start(dir: &TestDir, extra: &str) -> Postoffice {
    Postoffice::start_undelivering(dir, extra)
}

#[test]
fn oversize_heads_get_431() {
    let dir = TestDir::new();
    let po = start(&dir, "max_header_size: \"16KiB\",");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    // First request of a connection: a JSON 431.
    let (bytes, closed) = exchange(po.addr, big.as_bytes(), LIMIT);
    let answers = parse(&bytes);
    assert_eq!(answers[0].status, 431, "{answers:?}");
    assert!(answers[0].json()["error"]
        .as_str()
        .unwrap()
        .contains("16384"));
    assert!(closed);
    // After a first request on a keep-alive connection: hyper's 431.
    let mut s = connect(po.addr, LIMIT);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.write_all(big.as_bytes()).unwrap();
    let (bytes, closed) = read_until_close(&mut s, LIMIT);
    let statuses: Vec<u16> = parse(&bytes).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 431]);
    assert!(closed);
    // A head just under the limit is served.
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(15_000)
    );
    assert_eq!(
        parse(&exchange(po.addr, fits.as_bytes(), LIMIT).0)[0].status,
        200
    );
}

#[test]
fn slow_heads_get_408_and_idle_connections_are_closed() {
    let dir = TestDir::new();
    let po = start(&dir, "header_timeout: \"1s\",");
    // Half a head, then nothing.
    let started = Instant::now();
    let (bytes, closed) = exchange(po.addr, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n", LIMIT);
    let answers = parse(&bytes);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 408);
    assert!(answers[0].json()["error"].is_string());
    assert!(closed);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // The same on a keep-alive connection, after a first answer.
    let mut s = connect(po.addr, LIMIT);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = std::io::Read::read(&mut s, &mut first).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHos").unwrap();
    let (mut bytes, closed) = read_until_close(&mut s, LIMIT);
    bytes.splice(0..0, first[..n].iter().copied());
    let statuses: Vec<u16> = parse(&bytes).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 408]);
    assert!(closed);

    // Idle after an answer, or silent from the start: closed without a word.
    for request in [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..], b""] {
        let started = Instant::now();
        let (bytes, closed) = exchange(po.addr, request, LIMIT);
        assert!(closed, "not closed within {LIMIT:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let statuses: Vec<u16> = parse(&bytes).iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            if request.is_empty() {
                vec![]
            } else {
                vec![200]
            }
        );
    }
}

#[test]
fn connections_over_the_limit_get_503() {
    let dir = TestDir::new();
    let po = start(&dir, "max_connections: 4,");
    // Four held open (each after one answer, kept alive).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect(po.addr, LIMIT);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let (bytes, closed) = exchange(po.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", LIMIT);
    let answers = parse(&bytes);
    assert_eq!(answers[0].status, 503, "{answers:?}");
    assert_eq!(answers[0].header("retry-after"), Some("1"));
    assert!(answers[0].json()["error"]
        .as_str()
        .unwrap()
        .contains("too many connections"));
    assert!(closed);
    assert!(
        po.log().contains("over max_connections (4)"),
        "{}",
        po.log()
    );
    // One closes: a new one is served again.
    drop(held.pop());
    let ok = common::wait_until(LIMIT, || {
        let (bytes, _) = exchange(
            po.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            LIMIT,
        );
        parse(&bytes).first().is_some_and(|a| a.status == 200)
    });
    assert!(ok);
}
