//! One smol executor runs everything: while mailman hands mail off to
//! postoffice over HTTPS, neither process has a thread of async-std's
//! executor, a second async-io reactor, or a tokio runtime. Thread names
//! are read from /proc/PID/task/*/comm.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::smtp::Smtp;
use common::stack::{Postoffice, Sink};
use common::{wait_until, TestDir};

/// The names of `pid`'s threads.
fn threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Panics unless every thread is the main one, smol's (`smol-N` executor
/// threads, the one `async-io` reactor) or its blocking pool (`blocking-N`).
fn only_smol(binary: &str, names: &[String]) {
    let reactors = names.iter().filter(|n| *n == "async-io").count();
    assert!(
        reactors <= 1,
        "{binary}: {reactors} async-io reactors: {names:?}"
    );
    for name in names {
        let ours = name == binary
            || name == "async-io"
            || name.starts_with("smol-")
            || name.starts_with("blocking-");
        assert!(ours, "{binary}: foreign thread {name:?} among {names:?}");
    }
}

#[test]
fn only_smol_threads_while_serving_https() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let (po, ca) = Postoffice::start_https(&dir, sink_addr);
    let mut config = Config::new(&dir, po.addr);
    config.postoffice_url = Some(format!("https://{}", po.addr));
    config.ca_file = Some(ca);
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    for i in 0..20 {
        smtp.send_mail(
            "a@x.test",
            &["b@y.test"],
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    // Sampled while the hand-offs and deliveries run, and after.
    let mut seen = (Vec::new(), Vec::new());
    let done = wait_until(Duration::from_secs(20), || {
        let (m, p) = (threads(mailman.pid()), threads(po.pid()));
        only_smol("mailman", &m);
        only_smol("postoffice", &p);
        seen = (m, p);
        sink.received().len() == 20
    });
    assert!(
        done,
        "{} of 20 delivered\n{}",
        sink.received().len(),
        po.log()
    );
    assert!(seen.0.contains(&"async-io".to_string()), "{seen:?}");
    eprintln!(
        "mailman threads: {:?}\npostoffice threads: {:?}",
        seen.0, seen.1
    );
}
