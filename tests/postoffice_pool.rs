//! Connection reuse: a burst to one MX shares connections, and a connection
//! left idle is closed with QUIT (RFC 5321 section 4.1.1.10) a few seconds
//! later, not held open until the remote times it out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stack::{free_port, host_ip, Postoffice, Sink};
use common::{wait_until, TestDir};

fn quits(sink: &Sink) -> usize {
    std::fs::read_to_string(sink.dir.join("quits.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn idle_connections_are_reused_then_closed_with_quit() {
    let dir = TestDir::new();
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let sink = Sink::start(&dir, "mx", mx, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("delivery: (starttls: Never, routes: {{\"*\": \"{mx}\"}})"),
    );
    // One after the other: each finds the previous one's connection idle.
    for n in 0..5 {
        let id = po.post_raw(
            "a@origin.test",
            &["b@dest.test"],
            format!("Subject: pooled {n}\r\n\r\nx\r\n").as_bytes(),
        );
        po.wait_state(&id, "delivered", Duration::from_secs(20));
    }
    assert_eq!(sink.received().len(), 5);
    assert_eq!(quits(&sink), 0, "no QUIT while the connection is in use");
    // Idle for 2 s, then the next sweep (every 2 s) closes it with QUIT.
    assert!(
        wait_until(Duration::from_secs(10), || quits(&sink) >= 1),
        "the idle connection was not closed with QUIT\n{}",
        po.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        quits(&sink),
        1,
        "five messages over one connection, one QUIT"
    );
}
