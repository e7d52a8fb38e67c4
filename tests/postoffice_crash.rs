//! kill -9 postoffice while 1,000 messages are being queued and delivered,
//! then restart it on the same queue: every message that got a 202 reaches
//! the sink, and no recipient recorded as delivered before the kill is sent
//! again. Duplicates are possible only for deliveries in flight at the kill
//! (the remote said 250, the process died before writing it down).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::{free_port, host_ip, Postoffice, Sink};
use common::{queue_records, wait_until, TestDir};

const TOTAL: usize = 1000;
const KILL_AFTER: usize = 300;

/// One POST with a fresh connection; the id on 202, None on anything else.
fn post(addr: SocketAddr, seq: usize) -> Option<String> {
    let body = format!("Subject: crash {seq}\r\nX-Seq: {seq}\r\n\r\nmessage {seq}\r\n");
    let request = format!(
        "POST /v1/messages?from=s%40sender.test&to=r{seq}%40dom{}.test HTTP/1.1\r\nHost: po\r\n\
         Authorization: Bearer tok\r\nContent-Type: message/rfc822\r\nIdempotency-Key: seq-{seq}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        seq % 20,
        body.len()
    );
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 202") {
        return None;
    }
    let id = response.split("\"id\":\"").nth(1)?.split('"').next()?;
    Some(id.to_string())
}

/// (id, recipient) pairs the queue's records on disk show as delivered.
fn delivered_on_disk(queue: &std::path::Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for record in queue_records(queue) {
        for r in record["recipients"].as_array().into_iter().flatten() {
            if r["state"] == "delivered" {
                out.insert((
                    record["id"].as_str().unwrap_or("").into(),
                    r["address"].as_str().unwrap_or("").into(),
                ));
            }
        }
    }
    out
}

#[test]
fn kill_9_while_delivering_loses_nothing() {
    let dir = TestDir::new();
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let sink = Sink::start(&dir, "mx", mx, &[]);
    let addr = dir.free_addr();
    let mut po = Postoffice::start(
        &dir,
        addr,
        &format!("delivery: (starttls: Never, command_timeout: \"10s\", retry: (first: \"1s\", max: \"1s\", give_up: \"1h\"), routes: {{\"*\": \"{mx}\"}})"),
    );

    // Post from four threads; a refused post is retried with the same key,
    // as mailman would, until it gets its 202.
    let ids: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posters: Vec<_> = (0..4)
        .map(|_| {
            let (ids, next) = (ids.clone(), next.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    let seq = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if seq >= TOTAL {
                        return;
                    }
                    while Instant::now() < deadline {
                        if let Some(id) = post(addr, seq) {
                            ids.lock().unwrap().insert(seq, id);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();

    let reached = wait_until(Duration::from_secs(60), || {
        sink.received().len() >= KILL_AFTER
    });
    assert!(
        reached,
        "sink got only {} messages\n{}",
        sink.received().len(),
        po.log()
    );
    po.kill9();
    let before_kill = sink.received().len();
    let delivered_before = delivered_on_disk(&dir.path().join("queue"));
    assert!(
        delivered_before.len() >= KILL_AFTER / 2,
        "the records on disk show {} delivered of {before_kill} received",
        delivered_before.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    po.restart();
    for p in posters {
        p.join().unwrap();
    }
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), TOTAL, "not every message got its 202");

    // Every message arrives.
    let seq_of = |text: &str| -> Option<usize> {
        text.split("X-Seq: ")
            .nth(1)?
            .split("\r\n")
            .next()?
            .parse()
            .ok()
    };
    let all = wait_until(Duration::from_secs(90), || {
        sink.received()
            .iter()
            .filter_map(|r| seq_of(&r.text()))
            .collect::<BTreeSet<_>>()
            .len()
            >= TOTAL
    });
    let received = sink.received();
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &received {
        *count.entry(seq_of(&r.text()).expect("X-Seq")).or_default() += 1;
    }
    let missing: Vec<usize> = (0..TOTAL).filter(|s| !count.contains_key(s)).collect();
    assert!(
        all && missing.is_empty(),
        "missing after restart: {missing:?}\n{}",
        po.log()
    );

    // Duplicates only where nothing was written down before the kill.
    let dups: Vec<usize> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let wrongly_resent: Vec<usize> = dups
        .iter()
        .copied()
        .filter(|s| {
            delivered_before.contains(&(ids[s].clone(), format!("r{s}@dom{}.test", s % 20)))
        })
        .collect();
    eprintln!(
        "kill -9 after {before_kill} deliveries: {} messages, {} received, {} duplicates ({:.2}%), {} recorded delivered at the kill",
        TOTAL,
        received.len(),
        dups.len(),
        100.0 * dups.len() as f64 / TOTAL as f64,
        delivered_before.len()
    );
    assert!(
        wrongly_resent.is_empty(),
        "sent again after being recorded delivered: {wrongly_resent:?}"
    );
    // In flight at the kill: at most the delivery concurrency.
    assert!(dups.len() <= 100, "{} duplicates: {dups:?}", dups.len());
}
