//! A 250 or a 202 is written only after the message's data is synced, its
//! file renamed into the spool and the spool directory synced: the order
//! of the system calls, read with strace, for many messages at once (so the
//! group commit is on: one directory sync answers several messages).
//! kill -9 cannot show this; a missing fsync only loses mail on power loss.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mailman::Config;
use common::stack::{binary, Proc};
use common::strace::{durable_before_ack, http_ack, parse, smtp_ack, traced};
use common::TestDir;

/// Stops the traced binary (strace's child) and waits for strace to end,
/// so the trace is complete.
fn stop(mut strace: Proc) {
    let pid = strace.pid();
    assert_ne!(pid, 0, "strace runs");
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = Command::new("kill").args(["-TERM", child]).status();
    }
    let until = Instant::now() + Duration::from_secs(20);
    while strace.alive() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    strace.kill9();
}

fn wait_for_greeting(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let greeting = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .ok()
            .and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).ok()?;
                Some(line)
            });
        if greeting.is_some_and(|l| l.starts_with("220 ")) {
            return;
        }
        assert!(Instant::now() < until, "no greeting from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks every acknowledged id; returns how many directory syncs
/// answered them.
fn check_all(
    trace: &str,
    spool: &std::path::Path,
    ids: &[String],
    ack: fn(&[common::strace::Call], &str) -> Option<usize>,
) -> usize {
    let calls = parse(trace);
    let mut syncs = std::collections::BTreeSet::new();
    for id in ids {
        let at = ack(&calls, id).unwrap_or_else(|| panic!("{id}: no acknowledgement in the trace"));
        match durable_before_ack(&calls, spool, id, at) {
            Ok(d) => {
                syncs.insert(d.dir_synced);
            }
            Err(e) => panic!("{e}"),
        }
    }
    syncs.len()
}

#[test]
fn mailman_answers_250_only_after_sync_rename_and_directory_sync() {
    let dir = TestDir::new();
    // postoffice is not there: the messages stay in the spool.
    let config = Config::new(&dir, dir.free_addr());
    let config_path = dir.path().join("mailman.ron");
    std::fs::write(&config_path, config.to_ron()).unwrap();
    let trace = dir.path().join("mailman.strace");
    let args = ["--config", config_path.to_str().unwrap()];
    let strace = traced(
        dir.path(),
        "mailman",
        &trace,
        &common::mailman::binary(),
        &args,
    );
    wait_for_greeting(config.listen);
    // Postfix's smtp-source: 60 messages over 10 sessions at once.
    let sent = Command::new("smtp-source")
        .args([
            "-s",
            "10",
            "-m",
            "60",
            "-f",
            "a@src.test",
            "-t",
            "b@dst.test",
        ])
        .arg(config.listen.to_string())
        .status()
        .expect("smtp-source (Debian package postfix) is installed by scripts/test");
    assert!(sent.success());
    stop(strace);
    let text = std::fs::read_to_string(&trace).unwrap();
    let ids: Vec<String> = text
        .split("queued as ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .collect();
    assert_eq!(ids.len(), 60, "every message answered 250");
    let syncs = check_all(&text, &config.spool, &ids, smtp_ack);
    eprintln!("60 messages acknowledged after {syncs} directory syncs");
    assert!(
        syncs < 60,
        "group commit: several messages share a directory sync"
    );
}

/// POSTs one message with curl; its id from the 202.
fn post(addr: SocketAddr, n: usize) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "Authorization: Bearer tok",
            "-H",
            "Content-Type: message/rfc822",
        ])
        .args([
            "--data-binary",
            &format!("Subject: {n}\r\n\r\nbody {n}\r\n"),
        ])
        .arg(format!(
            "http://{addr}/v1/messages?from=a%40src.test&to=b%40dst.test"
        ))
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next());
    id.unwrap_or_else(|| panic!("no 202 for message {n}: {body}"))
        .to_string()
}

#[test]
fn postoffice_answers_202_only_after_sync_rename_and_directory_sync() {
    postoffice_acknowledges_durably(|addr| {
        // 40 messages from 8 clients at once.
        let posters: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..5).map(|i| post(addr, t * 5 + i)).collect::<Vec<_>>()
                })
            })
            .collect();
        posters
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
}

/// POSTs messages `ns` as one batch with curl; their ids from the parts' 202s.
fn post_batch(addr: SocketAddr, ns: std::ops::Range<usize>) -> Vec<String> {
    let mut body = Vec::new();
    for n in ns.clone() {
        let message = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
        let head = format!(
            "key-{n} {} from=a%40src.test&to=b%40dst.test\r\n",
            message.len()
        );
        body.extend_from_slice(format!("{head}{message}\r\n").as_bytes());
    }
    let mut curl = Command::new("curl")
        .args(["-s", "-H", "Authorization: Bearer tok"])
        .args(["-H", "Content-Type: application/x-hedwig-batch"])
        .args(["--data-binary", "@-"])
        .arg(format!("http://{addr}/v1/batch"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    curl.stdin.take().unwrap().write_all(&body).unwrap();
    let out = curl.wait_with_output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "batch {ns:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), ns.len(), "{answer}");
    results
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 202, "{answer}");
            r["id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn postoffice_answers_a_batch_only_after_sync_rename_and_directory_sync() {
    postoffice_acknowledges_durably(|addr| {
        // 40 messages in four batches from four clients at once.
        let posters: Vec<_> = (0..4)
            .map(|t| std::thread::spawn(move || post_batch(addr, t * 10..t * 10 + 10)))
            .collect();
        posters
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
}

/// Starts postoffice under strace, has `send` post 40 messages (returning
/// their ids) and checks each was durable before its id was written.
fn postoffice_acknowledges_durably(send: fn(SocketAddr) -> Vec<String>) {
    let dir = TestDir::new();
    let addr = dir.free_addr();
    let queue = dir.path().join("queue");
    // Deliveries go nowhere (they defer); only the acceptance matters here.
    let nowhere = dir.free_addr();
    let config = dir.path().join("postoffice.ron");
    let text = format!(
        "(postoffice: (listen: \"{addr}\", tokens: [\"tok\"], hostname: \"po.test\", queue: {:?},\n  delivery: (starttls: Never, routes: {{\"*\": \"{nowhere}\"}})))\n",
        queue.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let trace = dir.path().join("postoffice.strace");
    let strace = traced(
        dir.path(),
        "postoffice",
        &trace,
        &binary("postoffice"),
        &["--config", config.to_str().unwrap()],
    );
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < until, "postoffice did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids = send(addr);
    assert_eq!(ids.len(), 40);
    stop(strace);
    let text = std::fs::read_to_string(&trace).unwrap();
    let syncs = check_all(&text, &queue, &ids, http_ack);
    eprintln!("40 messages acknowledged after {syncs} directory syncs");
    let _ = std::io::stderr().flush();
}
