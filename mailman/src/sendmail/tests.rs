//! `submit` driven with byte literals as stdin, into a spool in a temp dir.

use std::ffi::OsString;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::maildrop;

fn config(dir: &std::path::Path) -> Mailman {
    let text = format!(
        r#"(mailman: (hostname: "host.test", spool: {:?}, max_recipients: 5, max_message_size: 400, max_header_size: 200,
            postoffice: (url: "http://127.0.0.1:1", token: "t")))"#,
        dir.join("spool").display().to_string()
    );
    let config = hedwig::config::parse("test.ron", &text)
        .unwrap()
        .mailman
        .unwrap();
    Spool::open(&config.spool).unwrap();
    maildrop::prepare(&config.spool, None).unwrap();
    config
}

fn options(args: &[&str]) -> args::Options {
    args::parse(args.iter().map(OsString::from), Mode::Deliver).unwrap()
}

/// Submits `input` with `args`; returns the drop's envelope and bytes.
fn send(args: &[&str], input: &[u8]) -> Result<(Envelope, String), Failure> {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let id = submit(&config, &options(args), input, 0, now)?;
    let path = maildrop::dir(&config.spool).join(&id);
    let bytes = std::fs::read(path).unwrap();
    let (head, offset) = hedwig::spool::read_head(&bytes[..]).unwrap();
    Ok((
        head.envelope,
        String::from_utf8(bytes[offset as usize..].to_vec()).unwrap(),
    ))
}

fn to(envelope: &Envelope) -> Vec<&str> {
    envelope.to.iter().map(|a| a.as_str()).collect()
}

#[test]
fn lf_becomes_crlf_and_arguments_are_recipients() {
    let (env, text) = send(
        &["-f", "me@x.org", "a@b.org, Cee <c@d.org>"],
        b"Subject: hi\n\nline\r\nline two\n",
    )
    .unwrap();
    assert_eq!(env.sender(), "me@x.org");
    assert_eq!(to(&env), ["a@b.org", "c@d.org"]);
    assert_eq!(
        text,
        "Subject: hi\r\nFrom: <me@x.org>\r\n\r\nline\r\nline two\r\n"
    );
}

#[test]
fn a_lone_dot_ends_the_message_unless_i() {
    let input = b"Subject: dots\n\n.leading\n.\nafter\n";
    let (_, text) = send(&["a@b.org"], input).unwrap();
    assert_eq!(
        text,
        "Subject: dots\r\nFrom: <root@host.test>\r\n\r\n.leading\r\n"
    );
    for flag in ["-i", "-oi"] {
        let (_, text) = send(&[flag, "a@b.org"], input).unwrap();
        assert!(
            text.ends_with("\r\n.leading\r\n.\r\nafter\r\n"),
            "{flag}: {text:?}"
        );
    }
}

#[test]
fn t_reads_to_cc_bcc_and_bcc_is_removed() {
    let input = b"From: App <app@x.org>\nTo: a@b.org,\n  \"Doe, Jo\" <jo@b.org>\nCc: c@d.org\nBcc: hidden@e.org\nSubject: t\n\nbody\n";
    let (env, text) = send(&["-t", "-i"], input).unwrap();
    assert_eq!(to(&env), ["a@b.org", "jo@b.org", "c@d.org", "hidden@e.org"]);
    assert!(
        !text.contains("hidden") && !text.to_ascii_lowercase().contains("bcc"),
        "{text}"
    );
    assert!(
        text.starts_with("From: App <app@x.org>\r\nTo: a@b.org,\r\n  \"Doe, Jo\" <jo@b.org>\r\n"),
        "{text}"
    );
    // Arguments are added, as Postfix does, and a repeat counts once.
    let (env, _) = send(&["-t", "extra@f.org", "a@b.org"], input).unwrap();
    assert_eq!(
        to(&env),
        [
            "extra@f.org",
            "a@b.org",
            "jo@b.org",
            "c@d.org",
            "hidden@e.org"
        ]
    );
}

#[test]
fn unqualified_names_get_the_hostname_and_f_name_makes_the_from() {
    let (env, text) = send(&["-F", "Cron Daemon", "root"], b"Subject: cron\n\nout\n").unwrap();
    assert_eq!(env.sender(), "root@host.test");
    assert_eq!(to(&env), ["root@host.test"]);
    assert!(
        text.contains("From: \"Cron Daemon\" <root@host.test>\r\n")
            || text.contains("From: Cron Daemon <root@host.test>\r\n"),
        "{text}"
    );
    let (env, text) = send(&["-f", "<>", "a@b.org"], b"no header at all\n").unwrap();
    assert_eq!(env.from, None);
    assert_eq!(
        text, "no header at all\r\n",
        "a body line ends the header; pickup adds the blank line"
    );
}

#[test]
fn bad_input_gets_the_sendmail_exit_codes() {
    let code = |args: &[&str], input: &[u8]| send(args, input).unwrap_err().code;
    assert_eq!(
        code(&[], b"Subject: x\n\nbody\n"),
        EX_USAGE,
        "no recipients"
    );
    assert_eq!(
        code(&["-t"], b"Subject: x\n\nbody\n"),
        EX_USAGE,
        "-t and none in the header"
    );
    let six = [
        "a@b.org", "c@d.org", "e@f.org", "g@h.org", "i@j.org", "k@l.org",
    ];
    assert_eq!(code(&six, b"x\n"), EX_DATAERR, "over max_recipients");
    assert_eq!(code(&["a@@b"], b"x\n"), EX_DATAERR);
    assert_eq!(
        code(&["a@b.org"], &[b'x'; 500]),
        EX_DATAERR,
        "over max_message_size"
    );
    let long_header = format!("Subject: {}\n\nbody\n", "y".repeat(250));
    assert_eq!(code(&["a@b.org"], long_header.as_bytes()), EX_DATAERR);
    let failure = send(&["a@b.org"], &[b'x'; 500]).unwrap_err();
    assert_eq!(
        failure.message,
        "message larger than max_message_size (400 bytes)"
    );
}

#[test]
fn no_drop_directory_is_a_temporary_failure_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::remove_dir(maildrop::dir(&config.spool)).unwrap();
    let err = submit(
        &config,
        &options(&["a@b.org"]),
        &b"x\n"[..],
        0,
        std::time::SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(err.code, EX_TEMPFAIL);
    assert!(
        err.message.starts_with("no drop directory "),
        "{}",
        err.message
    );
}
