//! The fake postoffice every hand-off test runs against answers a burst of
//! new keep-alive connections at once: Python's http.client opens 16, sends a
//! hand-off on each and reads every answer while all of them stay open, as
//! mailman's pool does when postoffice comes back. tiny_http 0.12.0 left
//! connections beyond its idle threads queued with no thread to serve them
//! until another connection closed (vendor/tiny_http/VENDORED.md).

mod common;

use common::clients::python;
use common::postoffice::Postoffice;
use common::TestDir;

/// Connections in one burst: as many as the fake's own workers.
const CONNECTIONS: usize = 16;

/// A fresh endpoint has few idle threads; each round starts one.
const ROUNDS: usize = 3;

/// Opens `n` connections to host:port, sends one hand-off on each, then
/// reads the answers, all within 5 s; prints each status (or "timeout") as JSON.
const BURST: &str = r#"
import http.client, json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [http.client.HTTPConnection(host, port, timeout=5) for _ in range(n)]
for c in conns:
    c.connect()
for i, c in enumerate(conns):
    c.request("POST", "/v1/messages?from=a%40x.test&to=b%40y.test",
              body=b"Subject: burst %d\r\n\r\nhello\r\n" % i,
              headers={"Idempotency-Key": "burst-%d" % i,
                       "Content-Type": "message/rfc822"})
deadline = time.monotonic() + 5
statuses = []
for c in conns:
    c.sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        r = c.getresponse()
        r.read()
        statuses.append(r.status)
    except socket.timeout:
        statuses.append("timeout")
print(json.dumps(statuses))
"#;

#[test]
fn a_burst_of_new_connections_is_answered_at_once() {
    for round in 0..ROUNDS {
        let dir = TestDir::new();
        let po = Postoffice::start(&dir);
        let statuses = python(BURST, po.addr(), &[&CONNECTIONS.to_string()]);
        let want = format!("[{}]", vec!["202"; CONNECTIONS].join(", "));
        assert_eq!(
            statuses.trim(),
            want,
            "round {round}: every connection of the burst answered within 5 s:\n{}",
            po.dump()
        );
        assert_eq!(po.accepted_by_key().len(), CONNECTIONS, "{}", po.dump());
    }
}
