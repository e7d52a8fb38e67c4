//! Provider throttling: a sink that greets a third concurrent session with
//! "421 4.7.0 Too many concurrent SMTP connections" (as large providers do)
//! gets its domain's concurrency halved and new connections paused, so
//! every message still arrives without hammering it; another domain's mail
//! goes through meanwhile, undelayed.

mod common;

use std::time::{Duration, Instant};

use common::stack::{Postoffice, Sink};
use common::TestDir;

#[test]
fn a_throttling_provider_gets_fewer_connections_and_others_none_the_worse() {
    let dir = TestDir::new();
    let strict = Sink::start(&dir, "strict", dir.free_addr(), &["--max-sessions", "2"]);
    let other = Sink::start(&dir, "other", dir.free_addr(), &[]);
    let body = format!(
        "delivery: (starttls: Never, per_domain: 8, throttle_pause: \"500ms\", \
         retry: (first: \"1s\", max: \"2s\", give_up: \"5m\"), \
         routes: {{\"strict.test\": \"{}\", \"other.test\": \"{}\"}})",
        strict.addr, other.addr
    );
    let po = Postoffice::start(&dir, dir.free_addr(), &body);
    let message = b"From: a@x.test\r\nSubject: burst\r\n\r\nhello\r\n";
    let strict_ids: Vec<String> = (0..16)
        .map(|i| po.post_raw("a@x.test", &[&format!("r{i}@strict.test")], message))
        .collect();
    let started = Instant::now();
    let other_ids: Vec<String> = (0..4)
        .map(|i| po.post_raw("a@x.test", &[&format!("r{i}@other.test")], message))
        .collect();
    for id in &other_ids {
        po.wait_state(id, "delivered", Duration::from_secs(10));
    }
    let other_took = started.elapsed();
    for id in &strict_ids {
        po.wait_state(id, "delivered", Duration::from_secs(60));
    }
    assert_eq!(strict.received().len(), 16);
    let log = po.log();
    assert!(
        log.contains("strict.test: throttled (421 4.7.0 Too many concurrent SMTP connections")
            && log.contains("concurrency 8 -> 4, new connections pause 0.5s"),
        "{log}"
    );
    assert!(!log.contains("other.test: throttled"), "{log}");
    // The other domain did not wait for the throttled one's pauses and retries.
    assert!(
        other_took < Duration::from_secs(5),
        "other.test took {other_took:?}"
    );
    // Sessions the sink refused: the first burst's, then a few while the
    // window finds its size; not one per message per retry.
    let sessions = std::fs::read_to_string(strict.dir.join("sessions.log")).unwrap();
    let refused = sessions
        .lines()
        .filter(|n| n.parse::<u32>().unwrap() > 2)
        .count();
    eprintln!(
        "strict.test: {} sessions, {refused} refused",
        sessions.lines().count()
    );
    assert!(
        refused <= 12,
        "{refused} sessions refused:\n{sessions}\n{log}"
    );
}
