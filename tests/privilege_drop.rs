//! `user: Some("nobody")`: mailman and postoffice start as root (mailman
//! binds its port, postoffice opens its queue) and then every thread of
//! each runs as nobody, real, effective, saved and filesystem ids, with
//! nobody's group as the only group, as /proc shows while mail flows from
//! msmtp through both to a sink. A user that does not exist, or a switch
//! without root, stops the start with one line.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::msmtp;
use common::host::{primary_group, thread_ids, uid_of};
use common::mailman::{binary, run_with, Config, Mailman};
use common::message::crlf;
use common::stack::{self, Postoffice, Sink};
use common::TestDir;

#[test]
fn both_daemons_run_as_nobody_while_mail_flows() {
    let dir = TestDir::new();
    dir.open_up();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!(r#"user: "nobody", delivery: (starttls: Never, routes: {{"*": "{sink_addr}"}})"#),
    );
    let mut config = Config::new(&dir, po.addr);
    config.extra = r#"user: "nobody","#.into();
    let mailman = Mailman::start(&dir, config);
    let (uid, gid) = (uid_of("nobody"), primary_group("nobody"));
    let want = [
        format!("Uid: {uid} {uid} {uid} {uid}"),
        format!("Gid: {gid} {gid} {gid} {gid}"),
        format!("Groups: {gid}"),
    ];

    // Mail flows in the background while /proc is read.
    let (addr, path) = (mailman.addr(), dir.path().to_path_buf());
    let sender = std::thread::spawn(move || {
        for n in 0..10 {
            let sent = msmtp(
                &path,
                addr,
                "app@origin.test",
                &["a@dest.test"],
                &crlf(&format!("Subject: {n}\n\nx\n")),
            );
            assert!(sent.ok, "{}", sent.transcript);
        }
    });
    let mut seen = 0;
    while !sender.is_finished() || seen == 0 {
        for (name, pid) in [("mailman", mailman.pid()), ("postoffice", po.pid())] {
            let threads = thread_ids(pid);
            assert!(!threads.is_empty());
            for ids in threads {
                assert_eq!(ids, want, "a thread of {name} (pid {pid})");
            }
        }
        seen += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    sender.join().unwrap();
    assert_eq!(
        sink.wait_for(10, Duration::from_secs(20)).len(),
        10,
        "{}",
        po.log()
    );
    // The spool and queue were handed over, the drop directory made for all.
    let owner = |p: &str| {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path().join(p)).unwrap())
    };
    assert_eq!((owner("spool/queue"), owner("queue/state")), (uid, uid));
    assert!(mailman
        .stderr()
        .contains(&format!("running as nobody ({uid}:{gid})")));
    assert!(po
        .log()
        .contains(&format!("running as nobody ({uid}:{gid})")));
}

#[test]
fn no_such_user_or_no_root_stops_the_start_with_one_line() {
    let dir = TestDir::new();
    dir.open_up();
    let mut config = Config::new(&dir, dir.free_addr());
    config.extra = r#"user: "nosuchuser","#.into();
    let path = dir.path().join("mailman.ron");
    std::fs::write(&path, config.to_ron()).unwrap();
    let out = run_with(&path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains(" INFO "))
            .collect::<Vec<_>>(),
        ["mailman: user nosuchuser: no such user in /etc/passwd (scripts/install creates it)"]
    );

    // Not root, and told to become someone else: refused, nothing served.
    config.extra = r#"user: "root","#.into();
    config.spool = dir.path().join("spool-nobody");
    std::fs::create_dir(&config.spool).unwrap();
    std::process::Command::new("chown")
        .arg("nobody")
        .arg(&config.spool)
        .status()
        .unwrap();
    std::fs::write(&path, config.to_ron()).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            &format!("--regid={}", primary_group("nobody")),
            "--clear-groups",
        ])
        .arg(binary())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let uid = uid_of("nobody");
    assert!(
        err.ends_with(&format!(
            "mailman: cannot switch to user root (0:0): running as uid {uid}, not root\n"
        )),
        "{err}"
    );

    let po_config = dir.path().join("po.ron");
    let queue = dir.path().join("queue");
    std::fs::write(
        &po_config,
        format!(
            r#"(postoffice: (listen: "{}", tokens: ["t"], queue: {:?}, user: "nosuchuser"))"#,
            dir.free_addr(),
            queue
        ),
    )
    .unwrap();
    let out = Command::new(stack::binary("postoffice"))
        .arg("--config")
        .arg(&po_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        "postoffice: user nosuchuser: no such user in /etc/passwd (scripts/install creates it)\n"
    );
}
