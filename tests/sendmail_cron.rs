//! sendmail for cron: jobs pipe their output into `sendmail` (a link to the
//! mailman binary) with cron's bare environment, as root and as an
//! unprivileged user; mailman, itself running as `nobody`, hands each
//! message on within 2 seconds; `-t` takes To, Cc and Bcc, and the Bcc
//! field is gone from what postoffice receives, as Python's email parser
//! reads it.

mod common;

use std::time::{Duration, Instant};

use common::host::{cron, email_headers, uid_of};
use common::mailman::{binary, Config, Mailman};
use common::postoffice::{Delivery, Postoffice};
use common::TestDir;

/// Writes `message` to a file and pipes it, cron-style, into `command`.
fn pipe(
    dir: &TestDir,
    user: Option<&str>,
    message: &str,
    command: &str,
) -> (Instant, std::process::Output) {
    let file = dir.path().join(format!("job-{}.txt", fastrand::u32(..)));
    std::fs::write(&file, message).unwrap();
    let out = cron(
        dir.path(),
        user,
        &format!("cat {} | {command}", file.display()),
    );
    (Instant::now(), out)
}

fn by_subject(po: &Postoffice, subject: &str) -> Delivery {
    let needle = format!("Subject: {subject}\r\n");
    let found = po.wait_for(Duration::from_secs(10), |log| {
        log.iter()
            .any(|d| d.accepted() && String::from_utf8_lossy(&d.body).contains(&needle))
    });
    let log = found.unwrap_or_else(|log| panic!("no hand-off with {subject:?}; got:\n{log:?}"));
    log.into_iter()
        .find(|d| d.accepted() && String::from_utf8_lossy(&d.body).contains(&needle))
        .unwrap()
}

#[test]
fn cron_jobs_mail_through_sendmail_as_root_and_as_nobody() {
    let dir = TestDir::new();
    dir.open_up();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.extra = r#"user: "nobody","#.into();
    let mailman = Mailman::start(&dir, config);
    // Cron runs jobs in the user's home; ./hedwig.ron is found there.
    std::fs::copy(mailman.config_path(), dir.path().join("hedwig.ron")).unwrap();
    let sendmail = dir.path().join("sendmail");
    std::os::unix::fs::symlink(binary(), &sendmail).unwrap();
    let sendmail = sendmail.display().to_string();

    // Root's job: recipients from the header, a Bcc among them.
    let message = "From: Backup <backup@origin.test>\nTo: ops@dest.test\nCc: Jo <jo@dest.test>\n\
                   Bcc: audit@dest.test\nSubject: root job\n\nbackup done\n.\nstill the message\n";
    let (sent, out) = pipe(&dir, None, message, &format!("{sendmail} -t -i"));
    assert!(out.status.success(), "sendmail as root: {out:?}");
    let d = by_subject(&po, "root job");
    let waited = d.received_at.saturating_duration_since(sent);
    assert!(
        waited < Duration::from_secs(2),
        "handed off after {waited:?}"
    );
    assert_eq!(d.from.as_deref(), Some("root@mailman.test"));
    assert_eq!(d.to, ["ops@dest.test", "jo@dest.test", "audit@dest.test"]);
    let h = email_headers(&d.body);
    assert!(h.get("bcc").is_none(), "Bcc left in the message: {h}");
    assert!(
        !String::from_utf8_lossy(&d.body).contains("audit@"),
        "the Bcc address shows"
    );
    assert_eq!(h["to"], serde_json::json!(["ops@dest.test"]));
    assert_eq!(h["cc"], serde_json::json!(["Jo <jo@dest.test>"]));
    // The raw bytes carry CRLF; Python's payload uses "\n".
    assert!(String::from_utf8_lossy(&d.body)
        .contains("\r\n\r\nbackup done\r\n.\r\nstill the message\r\n"));
    assert_eq!(
        h["_body"][0], "backup done\n.\nstill the message\n",
        "-i keeps the lone dot"
    );
    let received = h["received"][0].as_str().unwrap();
    assert!(
        received.starts_with("by mailman.test (hedwig mailman, from userid 0)"),
        "{received}"
    );
    assert!(
        h.get("date").is_some() && h.get("message-id").is_some(),
        "{h}"
    );

    // nobody's job: recipients as arguments, cron's -F and -oem; a lone dot
    // ends the message without -i.
    let message = "Subject: nobody job\n\nline\n.\nnot sent\n";
    let command = format!("{sendmail} -FNightly -oem -odi root@dest.test other@dest.test");
    let (sent, out) = pipe(&dir, Some("nobody"), message, &command);
    assert!(out.status.success(), "sendmail as nobody: {out:?}");
    let d = by_subject(&po, "nobody job");
    assert!(d.received_at.saturating_duration_since(sent) < Duration::from_secs(2));
    assert_eq!(d.from.as_deref(), Some("nobody@mailman.test"));
    assert_eq!(d.to, ["root@dest.test", "other@dest.test"]);
    let h = email_headers(&d.body);
    assert_eq!(
        h["from"],
        serde_json::json!(["Nightly <nobody@mailman.test>"])
    );
    let uid = uid_of("nobody");
    assert!(
        h["received"][0]
            .as_str()
            .unwrap()
            .contains(&format!("from userid {uid})")),
        "{h}"
    );
    assert_eq!(h["_body"][0], "line\n", "a lone dot ends the message");
    assert!(mailman
        .stderr()
        .contains(&format!("uid={uid} (sendmail) from=<nobody@mailman.test>")));

    // sendmail -bp lists the spool for root: empty once both are handed off.
    let mut listing = String::new();
    let empty = common::wait_until(Duration::from_secs(5), || {
        listing =
            String::from_utf8_lossy(&cron(dir.path(), None, &format!("{sendmail} -bp")).stdout)
                .into_owned();
        listing == "Mail queue is empty\n"
    });
    assert!(empty, "sendmail -bp: {listing}");
}

#[test]
fn with_mailman_stopped_the_message_waits_for_its_start() {
    let dir = TestDir::new();
    dir.open_up();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.extra = r#"user: "nobody","#.into();
    let config_path = dir.path().join("hedwig.ron");
    std::fs::write(&config_path, config.to_ron()).unwrap();
    let sendmail = format!(
        "{} sendmail --config {}",
        binary().display(),
        config_path.display()
    );

    // Before mailman ever made its spool, there is nowhere to drop: 75.
    let (_, out) = pipe(
        &dir,
        Some("nobody"),
        "Subject: early\n\nx\n",
        &format!("{sendmail} a@dest.test"),
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("sendmail: no drop directory ") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let mut mailman = Mailman::start(&dir, config);
    mailman.sigterm();
    assert!(
        mailman.wait_exit(Duration::from_secs(10)).is_some(),
        "mailman did not stop"
    );
    let (_, out) = pipe(
        &dir,
        Some("nobody"),
        "Subject: waiting\n\nx\n",
        &format!("{sendmail} a@dest.test"),
    );
    assert!(out.status.success(), "{out:?}");
    let drops = std::fs::read_dir(dir.path().join("spool/maildrop"))
        .unwrap()
        .count();
    assert_eq!(drops, 1, "the message waits in the drop directory");
    std::thread::sleep(Duration::from_secs(2));
    assert!(po.deliveries().is_empty(), "nothing without mailman");
    mailman.restart();
    let d = by_subject(&po, "waiting");
    assert_eq!(d.to, ["a@dest.test"]);
}
