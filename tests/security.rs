//! Bad input and security on the whole path: no open relay, HTTPS to
//! postoffice verified against a private CA from hedwig.ron, and 1,000
//! connections held open against a bounded mailman.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::smtp::Smtp;
use common::stack::{Postoffice, Sink};
use common::{spool_files, wait_until, TestDir};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn mailman_hands_off_over_https_trusting_the_ca_in_hedwig_ron() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let (po, ca) = Postoffice::start_https(&dir, sink_addr);
    let po_addr = po.addr;

    // First without the CA: the certificate cannot be verified, so nothing
    // is handed off and the message stays in the spool.
    let untrusting = TestDir::new();
    let mut config = Config::new(&untrusting, po_addr);
    config.postoffice_url = Some(format!("https://{po_addr}"));
    let mailman = Mailman::start(&untrusting, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    smtp.send_mail(
        "a@origin.test",
        &["b@dest.test"],
        b"Subject: untrusted\r\n\r\nx\r\n",
    );
    assert!(
        wait_until(SECS(10), || mailman.stderr().contains("certificate")),
        "no certificate error:\n{}",
        mailman.stderr()
    );
    assert_eq!(spool_files(mailman.spool()).len(), 1, "kept in the spool");
    drop(mailman);

    // With ca_file: handed off over HTTPS and delivered.
    let mut config = Config::new(&dir, po_addr);
    config.postoffice_url = Some(format!("https://{po_addr}"));
    config.ca_file = Some(ca);
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    smtp.send_mail(
        "a@origin.test",
        &["b@dest.test"],
        b"Subject: over https\r\n\r\nx\r\n",
    );
    let got = sink.wait_for(1, SECS(20));
    assert_eq!(got.len(), 1, "{}\n{}", mailman.stderr(), po.log());
    assert!(got[0].text().contains("Subject: over https"));
    assert!(wait_until(SECS(10), || spool_files(mailman.spool()).is_empty()));
}

#[test]
fn a_client_outside_allow_cannot_hand_in_mail_whatever_it_tries() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("delivery: (routes: {{\"*\": \"{sink_addr}\"}}, starttls: Never)"),
    );
    let mut config = Config::new(&dir, po.addr);
    config.allow = vec!["10.0.0.0/8".into(), "::1/128".into()];
    let mailman = Mailman::start_expecting(&dir, config, "554 ");

    // Whole transactions written at once, before and regardless of the
    // greeting, with every trick an open-relay probe uses.
    let attempts: [&[u8]; 4] = [
        b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: relay\r\n\r\nx\r\n.\r\nQUIT\r\n",
        b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<@relay.test:c@d.test>\r\nDATA\r\n\r\nx\r\n.\r\n",
        b"XCLIENT ADDR=10.0.0.1\r\nEHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c%d.test@localhost>\r\nDATA\r\nx\r\n.\r\n",
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<postmaster>\r\nBDAT 3 LAST\r\nxyz",
    ];
    for attempt in attempts {
        let mut s = TcpStream::connect(mailman.addr()).expect("connect");
        s.set_read_timeout(Some(SECS(5))).unwrap();
        let _ = s.write_all(attempt);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("554 5.7.1"),
            "not refused at once: {answer:?}"
        );
        assert!(
            !answer.contains("\r\n250") && !answer.contains("\r\n354"),
            "mailman answered past its 554: {answer:?}"
        );
    }
    std::thread::sleep(SECS(1));
    assert!(spool_files(mailman.spool()).is_empty(), "nothing spooled");
    assert!(sink.received().is_empty(), "nothing relayed");
}

/// A process's resident memory in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_thousand_connections_held_open_bounded_memory_and_421_past_the_limit() {
    // 1,000 sockets here and in mailman: more than the usual soft limit.
    let me = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &me, "--nofile=8192:8192"])
        .status()
        .expect("run prlimit");
    assert!(raised.success(), "prlimit --nofile");

    let dir = TestDir::new();
    let po = common::postoffice::Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.max_connections = 512;
    let mailman = Mailman::start(&dir, config);
    let idle = rss_kib(mailman.pid());

    let mut greeted = 0;
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(mailman.addr()).expect("connect");
        s.set_read_timeout(Some(SECS(10))).unwrap();
        let mut line = [0u8; 64];
        let n = s.read(&mut line).unwrap_or(0);
        let line = String::from_utf8_lossy(&line[..n]).into_owned();
        if line.starts_with("220 ") {
            greeted += 1;
            // Each held session sits in the middle of a command line.
            let _ =
                s.write_all(b"EHLO held\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
        } else if line.starts_with("421 4.7.0") {
            refused += 1;
        } else {
            panic!("unexpected greeting {line:?}");
        }
        held.push(s);
    }
    std::thread::sleep(SECS(1));
    let loaded = rss_kib(mailman.pid());
    eprintln!(
        "1,000 connections: {greeted} served, {refused} refused with 421; mailman RSS {idle} KiB idle, {loaded} KiB with 512 sessions in DATA"
    );
    assert_eq!((greeted, refused), (512, 488));
    // A session's buffers are bounded by max_line_length (4 KiB here), its
    // reader and its task: about 32 KiB each, whatever the clients do.
    assert!(
        loaded.saturating_sub(idle) < 512 * 64,
        "memory grew by {} KiB for 512 sessions",
        loaded - idle
    );
    // Everyone past the limit was closed; freeing slots serves again.
    drop(held);
    assert!(wait_until(SECS(10), || Smtp::connect(mailman.addr())
        .and_then(|mut s| s.read_reply())
        .is_ok_and(|r| r.code == 220)));
}
