//! Postfix's smtp-sink as the destination MX: the message arrives byte for
//! byte (dot-stuffing undone on the far side), and all recipients of one
//! domain travel in one transaction.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::stack::{free_port, host_ip, Postoffice, Proc};
use common::{wait_until, TestDir};

#[test]
fn smtp_sink_receives_identical_bytes_in_one_transaction() {
    let dir = TestDir::new();
    let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
    let dumps = dir.path().join("dumps");
    // -d: one file per transaction; -u root: smtp-sink insists on a user when run as root.
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    cmd.args(["-u", "root", "-d"])
        .arg(format!("{}/%M.", dumps.display()))
        .arg(mx.to_string())
        .arg("100");
    let sink = Proc::spawn(dir.path(), "smtp-sink", &mut cmd);
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(mx)
            .is_ok()),
        "{}",
        sink.log()
    );
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("delivery: (starttls: Never, routes: {{\"*\": \"{mx}\"}})"),
    );

    let message: &[u8] =
        b"From: a@x.test\r\nSubject: sink bytes\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
    let id = po.post_raw(
        "a@x.test",
        &["r1@dest.test", "r2@dest.test", "r3@dest.test"],
        message,
    );
    po.wait_state(&id, "delivered", Duration::from_secs(15));

    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dumps)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        files.len(),
        1,
        "one transaction for one domain: {files:?}\n{}",
        po.log()
    );
    let dump = std::fs::read_to_string(&files[0]).expect("read dump");
    // smtp-sink writes LF lines: its own X- fields and Received, then the message.
    let rcpts: Vec<&str> = dump
        .lines()
        .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
        .collect();
    assert_eq!(
        rcpts,
        ["<r1@dest.test>", "<r2@dest.test>", "<r3@dest.test>"],
        "{dump}"
    );
    let mut lines = dump.split_inclusive('\n').peekable();
    while lines.peek().is_some_and(|l| l.starts_with("X-")) {
        lines.next();
    }
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("Received: from")),
        "{dump}"
    );
    while lines
        .peek()
        .is_some_and(|l| l.starts_with('\t') || l.starts_with(' '))
    {
        lines.next();
    }
    // Then postoffice's own trace field.
    let mut trace = lines.next().unwrap_or_default().to_string();
    while lines
        .peek()
        .is_some_and(|l| l.starts_with('\t') || l.starts_with(' '))
    {
        trace.push_str(lines.next().unwrap_or_default());
    }
    assert!(
        trace.starts_with("Received: from 127.")
            && trace.contains("by po.test (hedwig postoffice) with HTTP id"),
        "{dump}"
    );
    let body: String = lines.collect();
    // The dump ends with one empty line of smtp-sink's own.
    let body = body.strip_suffix('\n').unwrap_or(&body);
    assert_eq!(
        body,
        String::from_utf8_lossy(message).replace("\r\n", "\n"),
        "dump:\n{dump}"
    );
}
