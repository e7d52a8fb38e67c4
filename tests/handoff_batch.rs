//! The batched hand-off, `POST /v1/batch`: driven with curl against the
//! real postoffice (per-part answers, keys, repaired newlines, a broken or
//! oversized body queuing nothing), used by mailman for a backlog, and
//! given up for one message at a time when a proxy in front refuses the
//! path. Bodies here are written out by hand, not by hedwig's encoder.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::clients::python;
use common::mailman::{Config, Mailman};
use common::stack::{json, nginx, route_all, Postoffice, Sink};
use common::{failed_files, spool_files, wait_until, TestDir};

const BATCH: &str = "application/x-hedwig-batch";

/// One part: `KEY LENGTH QUERY` CRLF, the message, CRLF.
fn part(key: &str, to: &str, message: &[u8]) -> Vec<u8> {
    let to = to.replace('@', "%40");
    let mut p = format!("{key} {} from=app%40x.test&to={to}\r\n", message.len()).into_bytes();
    p.extend_from_slice(message);
    p.extend_from_slice(b"\r\n");
    p
}

fn post(po: &Postoffice, body: &[u8]) -> (u16, serde_json::Value) {
    let (code, text) = po.http("POST", "/v1/batch", Some(BATCH), Some(body));
    (code, json(&text))
}

/// `(status, id or error)` per part.
fn results(answer: &serde_json::Value) -> Vec<(u64, String)> {
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {answer}"))
        .iter()
        .map(|r| {
            let text = r["id"].as_str().or(r["error"].as_str()).unwrap_or_default();
            (r["status"].as_u64().unwrap_or(0), text.to_string())
        })
        .collect()
}

#[test]
fn batches_with_curl() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!(
            "max_message_size: 2000, max_batch_size: 9000, {}",
            route_all(sink_addr)
        ),
    );
    let one = b"Subject: one\r\n\r\nCRLF body\r\n";
    let two = b"Subject: two\n\nbare LF\n";
    let big = vec![b'x'; 2000 + 4096 + 1];
    let body = [
        part("k-1", "r1@y.test", one),
        part("k-2", "r2@y.test", two),
        part("k-3", "r3@y.test", &big),
    ]
    .concat();

    // One answer per part, in order: two queued, one too large.
    let (code, answer) = post(&po, &body);
    assert_eq!(code, 200, "{answer}\n{}", po.log());
    let first = results(&answer);
    assert_eq!(first.len(), 3, "{answer}");
    assert_eq!(
        (first[0].0, first[1].0, first[2].0),
        (202, 202, 413),
        "{answer}"
    );
    assert!(first[2].1.contains("larger than 2000 bytes"), "{answer}");
    // The same batch again: the keys answer the first ids, nothing queued twice.
    let (code, again) = post(&po, &body);
    assert_eq!(code, 200, "{again}");
    assert_eq!(results(&again), first, "a repeated batch");

    // A key twice in one batch: the second is told to retry.
    let (code, answer) = post(
        &po,
        &[
            part("k-5", "r5@y.test", b"Subject: five\r\n\r\n.\r\n"),
            part("k-5", "r5@y.test", b"Subject: five again\r\n\r\n.\r\n"),
        ]
        .concat(),
    );
    assert_eq!(code, 200, "{answer}");
    let statuses: Vec<u64> = results(&answer).iter().map(|r| r.0).collect();
    assert_eq!(statuses, [202, 503], "{answer}");

    // Broken or oversized bodies: one status for the batch, a JSON error
    // naming the fault, and none of their parts queued.
    let good = part("k-4", "r4@y.test", b"Subject: never\r\n\r\nnot queued\r\n");
    let mut wrong_length = good.clone();
    wrong_length.extend_from_slice(b"k-x 4 from=&to=a%40y.test\r\nabc\r\n\r\n");
    let mut cut_short = good.clone();
    cut_short.extend_from_slice(b"k-x 50 from=&to=a%40y.test\r\nabc");
    let mut bad_line = good.clone();
    bad_line.extend_from_slice(b"k-x 007 from=&to=a%40y.test\r\nabc\r\n");
    let over = [good.clone(), part("k-y", "r@y.test", &[b'y'; 1900])]
        .concat()
        .repeat(5);
    let cases: [(&str, &[u8], u16, &str); 5] = [
        (
            "wrong length",
            &wrong_length,
            400,
            "part 2: message not followed by CRLF",
        ),
        (
            "cut short",
            &cut_short,
            400,
            "part 2: body ends inside its 50 bytes",
        ),
        ("bad length", &bad_line, 400, "part 2: LENGTH must be"),
        ("empty", b"", 400, "empty batch"),
        ("over max_batch_size", &over, 413, "more than 9000 bytes"),
    ];
    for (what, body, want, says) in cases {
        let (code, answer) = post(&po, body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(code, want, "{what}: {answer}");
        assert!(error.contains(says), "{what}: {answer}");
    }
    let (code, text) = po.http("POST", "/v1/batch", Some("message/rfc822"), Some(&good));
    assert_eq!(code, 415, "{text}");
    let no_token = po.http_as(None, "POST", "/v1/batch", Some(BATCH), Some(&good), &[]);
    assert_eq!(no_token.0, 401, "{}", no_token.1);

    // Delivered: one, two (its newlines repaired, a trace added) and five;
    // never the broken batches' first part.
    sink.wait_for(3, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let got: BTreeMap<String, String> = sink
        .received()
        .iter()
        .map(|r| (r.to.join(","), r.text()))
        .collect();
    let rcpts: Vec<&String> = got.keys().collect();
    assert_eq!(rcpts, ["r1@y.test", "r2@y.test", "r5@y.test"], "{got:?}");
    let two = &got["r2@y.test"];
    assert!(two.ends_with("Subject: two\r\n\r\nbare LF\r\n"), "{two:?}");
    assert!(
        two.starts_with("Received: from ") && two.contains("by po.test"),
        "{two:?}"
    );
    assert!(got["r5@y.test"].contains("Subject: five\r\n"), "{got:?}");
}

/// Sends `n` messages over one SMTP session with smtplib: subjects m0..m(n-1).
const SEND: &str = r#"
import smtplib, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with smtplib.SMTP(host, port, timeout=20) as s:
    for i in range(n):
        s.sendmail("app@x.test", ["r%d@y.test" % i],
                   "From: app@x.test\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (i, i))
print("sent")
"#;

#[test]
fn mailman_hands_a_backlog_off_in_batches() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po_addr = dir.free_addr();
    // postoffice is down while 60 messages are spooled.
    let mut config = Config::new(&dir, po_addr);
    config.concurrency = 2;
    config.batch = 16;
    let mailman = Mailman::start(&dir, config);
    assert_eq!(python(SEND, mailman.addr(), &["60"]).trim(), "sent");
    let _po = Postoffice::start(&dir, po_addr, &route_all(sink_addr));

    let got = sink.wait_for(60, Duration::from_secs(60));
    let emptied = wait_until(Duration::from_secs(10), || {
        spool_files(mailman.spool()).is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = if got.len() == 60 {
        sink.received()
    } else {
        got
    };
    let mut subjects: Vec<String> = got
        .iter()
        .filter_map(|r| {
            r.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(String::from))
        })
        .collect();
    subjects.sort_by_key(|s| s[1..].parse::<u32>().unwrap_or(u32::MAX));
    let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    assert_eq!(subjects, want, "each message once\n{}", mailman.stderr());
    assert!(
        emptied,
        "spool not emptied: {:?}",
        spool_files(mailman.spool())
    );
    // Most went in batches (the first is a probe, alone), none above 16.
    let log = mailman.stderr();
    let sizes: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("hand-off status=202"))
        .filter_map(|l| l.split(" batch=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(sizes.len() >= 50, "{} of 60 in batches\n{log}", sizes.len());
    assert!(sizes.iter().all(|&n| (2..=16).contains(&n)), "{sizes:?}");
}

#[test]
fn a_proxy_that_refuses_batches_gets_messages_one_by_one() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(&dir, dir.free_addr(), &route_all(sink_addr));
    // A proxy passing only the single hand-off on, as one written before
    // batches existed would.
    let proxy_addr = dir.free_addr();
    let upstream = po.addr;
    let _proxy = nginx(
        &dir,
        &format!(
            "  server {{
    listen {proxy_addr};
    location = /v1/batch {{ return 404; }}
    location / {{ proxy_pass http://{upstream}; }}
  }}"
        ),
    );
    let up = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(proxy_addr).is_ok()
    });
    assert!(up, "nginx did not start");
    let mut config = Config::new(&dir, proxy_addr);
    config.concurrency = 1;
    let mailman = Mailman::start(&dir, config);
    // A burst, so that batches form while the first hand-off is out.
    assert_eq!(python(SEND, mailman.addr(), &["30"]).trim(), "sent");

    let got = sink.wait_for(30, Duration::from_secs(60));
    assert_eq!(got.len(), 30, "{}", mailman.stderr());
    let log = mailman.stderr();
    assert!(
        log.contains("sending each alone"),
        "no batch was refused\n{log}"
    );
    assert!(
        failed_files(mailman.spool()).is_empty(),
        "moved to failed/\n{log}"
    );
    let none_left = wait_until(Duration::from_secs(10), || {
        spool_files(mailman.spool()).is_empty()
    });
    assert!(none_left, "{:?}", spool_files(mailman.spool()));
}
