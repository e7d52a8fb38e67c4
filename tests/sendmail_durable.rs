//! sendmail's exit 0 is a promise like SMTP's 250: strace shows the drop
//! file written and fsync'd, then renamed into place, then its directory
//! fsync'd, and only then the exit; no byte is written after the file's
//! fsync.

mod common;

use std::process::Command;

use common::mailman::{binary, Config, Mailman};
use common::postoffice::Postoffice;
use common::TestDir;

#[test]
fn exit_zero_only_after_file_fsync_rename_and_directory_fsync() {
    let dir = TestDir::new();
    // mailman makes the spool and its drop directory, then stops, so the
    // drop stays where strace saw it written.
    let po = Postoffice::reserve(&dir);
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    mailman.kill9();
    let drop_dir = dir.path().join("spool/maildrop");
    let trace = dir.path().join("strace.log");
    let message = dir.path().join("message.txt");
    std::fs::write(&message, "Subject: durable\n\nbody line\n").unwrap();
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=write,fsync,fdatasync,rename,renameat,renameat2,exit_group",
            "-o",
        ])
        .arg(&trace)
        .arg(binary())
        .arg("sendmail")
        .arg("--config")
        .arg(mailman.config_path())
        .arg("a@dest.test")
        .stdin(std::fs::File::open(&message).unwrap())
        .output()
        .expect("run strace (scripts/test installs it)");
    assert!(out.status.success(), "sendmail under strace: {out:?}");
    let log = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let dir_text = drop_dir.display().to_string();
    let position = |what: &str, pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no {what} in the trace:\n{log}"))
    };
    let tmp = format!("{dir_text}/.");
    let file_sync = position("fsync of the temp file", &|l| {
        l.contains("fsync(") && l.contains(&tmp) && l.contains(".tmp>)") && l.ends_with("= 0")
    });
    let rename = position("rename into place", &|l| {
        l.contains("rename") && l.contains(&tmp) && l.ends_with("= 0")
    });
    let dir_sync = position("fsync of the drop directory", &|l| {
        l.contains("fsync(") && l.contains(&format!("<{dir_text}>)")) && l.ends_with("= 0")
    });
    let exit = position("exit", &|l| l.contains("exit_group(0)"));
    assert!(
        file_sync < rename && rename < dir_sync && dir_sync < exit,
        "order: fsync file {file_sync}, rename {rename}, fsync dir {dir_sync}, exit {exit}\n{log}"
    );
    let late_write = lines[file_sync..]
        .iter()
        .any(|l| l.contains("write(") && l.contains(&tmp));
    assert!(!late_write, "written after its fsync:\n{log}");
    // What was promised is there.
    let drops: Vec<_> = std::fs::read_dir(&drop_dir).unwrap().flatten().collect();
    assert_eq!(drops.len(), 1);
    let text = std::fs::read_to_string(drops[0].path()).unwrap();
    assert!(text.ends_with("\nto a@dest.test\n\nSubject: durable\r\nFrom: <root@mailman.test>\r\n\r\nbody line\r\n"), "{text}");
}
