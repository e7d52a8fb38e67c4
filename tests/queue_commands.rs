//! The operator's queue commands against running daemons: `postoffice
//! queue` (list, --json, show, flush, delete) through the API of a real
//! postoffice delivering to a sink that defers one domain, and `mailman
//! queue` (list, --json, requeue) on a spool whose hand-offs postoffice
//! refused; a requeued message is handed off within 2 s, no restart. Exit
//! codes: 0, 1 for no such message, 2 for configuration or connection.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mailman::{Config, Mailman};
use common::message::crlf;
use common::postoffice::{Answer, Postoffice as Recorder};
use common::smtp::Smtp;
use common::stack::{binary, json, route_all_and, Postoffice, Sink, HOUR_RETRY};
use common::{wait_until, TestDir};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(self::binary(binary))
        .args(args)
        .output()
        .expect("run the command")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line on stderr and the exit code, for the failures.
fn failure(out: &Output) -> (Option<i32>, String) {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "one line, not {err:?}");
    (out.status.code(), err)
}

#[test]
fn postoffice_queue_lists_shows_flushes_and_deletes() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let _sink = Sink::start(&dir, "mx", sink_addr, &["--rcpt", "450:@slow.test"]);
    let po = Postoffice::start(&dir, dir.free_addr(), &route_all_and(sink_addr, HOUR_RETRY));
    let post = |to: &[&str]| po.post_raw("app@origin.test", to, &crlf("Subject: q\n\nx\n"));
    let slow = post(&["a@slow.test"]);
    let done = post(&["b@ok.test"]);
    let mixed = post(&["c@slow.test", "d@ok.test"]);
    po.wait_state(&slow, "deferred", Duration::from_secs(20));
    po.wait_state(&done, "delivered", Duration::from_secs(20));
    po.wait_state_of(&mixed, 1, "delivered", Duration::from_secs(20));
    let config = po.config_path().display().to_string();
    let cfg = ["--config", config.as_str()];

    // --json: the messages not finished, as the API shows them.
    let out = run("postoffice", &["queue", cfg[0], cfg[1], "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed = json(&stdout(&out));
    let ids: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [slow.as_str(), mixed.as_str()]);
    let first = &listed["messages"][0];
    assert_eq!(
        first,
        &po.status(&slow),
        "the same record as GET /v1/messages/ID"
    );
    assert_eq!(first["recipients"][0]["state"], "deferred");
    assert_eq!(first["recipients"][0]["attempts"], 1);
    assert!(
        first["recipients"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("450"),
        "{first}"
    );
    let all = json(&stdout(&run(
        "postoffice",
        &["queue", "--all", "--json", cfg[0], cfg[1]],
    )));
    assert_eq!(
        all["messages"].as_array().unwrap().len(),
        3,
        "--all shows the delivered one too"
    );

    // Text, like mailq: the message, each recipient's state, the error.
    let text = stdout(&run("postoffice", &["queue", cfg[0], cfg[1]]));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&slow) && l.ends_with(" app@origin.test")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("deferred     1 attempts") && l.ends_with(" a@slow.test")),
        "{text}"
    );
    assert!(text.contains("(450"), "{text}");
    assert!(text.ends_with("in 2 messages to 3 recipients\n"), "{text}");

    // show: every recipient and attempt.
    let out = run("postoffice", &["queue", "show", cfg[0], cfg[1], &mixed]);
    let shown = stdout(&out);
    assert!(
        out.status.success() && shown.contains("to c@slow.test: deferred, 1 attempts"),
        "{shown}"
    );
    assert!(
        shown.contains("to d@ok.test: delivered, 1 attempts"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .filter(|l| l.contains(" delivered ") && l.contains("250"))
            .count()
            == 1,
        "{shown}"
    );
    let shown = json(&stdout(&run(
        "postoffice",
        &["queue", "show", "--json", cfg[0], cfg[1], &mixed],
    )));
    assert_eq!(shown["recipients"][0]["history"][0]["state"], "deferred");
    assert_eq!(
        failure(&run(
            "postoffice",
            &["queue", "show", cfg[0], cfg[1], "66182D5504D033ACCB"]
        ))
        .0,
        Some(1)
    );

    // flush ID: tried again now, not in an hour.
    let out = run("postoffice", &["queue", "flush", cfg[0], cfg[1], &slow]);
    assert_eq!(stdout(&out), format!("{slow}: flushed\n"), "{out:?}");
    let again = wait_until(Duration::from_secs(10), || {
        po.status(&slow)["recipients"][0]["attempts"] == 2
    });
    assert!(again, "not retried: {}", po.status(&slow));
    let out = run("postoffice", &["queue", "flush", cfg[0], cfg[1]]);
    assert!(stdout(&out).starts_with("flushed "), "{out:?}");

    // delete: the one that exists goes; the missing one makes it exit 1.
    let out = run(
        "postoffice",
        &[
            "queue",
            "delete",
            cfg[0],
            cfg[1],
            &slow,
            "66182D5504D033ACCB",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout(&out), format!("{slow}: deleted\n"));
    assert_eq!(
        po.http("GET", &format!("/v1/messages/{slow}"), None, None)
            .0,
        404
    );

    // Configuration and connection errors: 2, one line.
    let (code, err) = failure(&run(
        "postoffice",
        &["queue", "--config", "/nonexistent/hedwig.ron"],
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("postoffice queue: cannot read /nonexistent/hedwig.ron"),
        "{err}"
    );
    let down = dir.path().join("down.ron");
    let closed: SocketAddr = dir.free_addr();
    std::fs::write(
        &down,
        format!(r#"(postoffice: (listen: "{closed}", tokens: ["tok"]))"#),
    )
    .unwrap();
    let (code, err) = failure(&run(
        "postoffice",
        &["queue", "--config", down.to_str().unwrap()],
    ));
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot connect"), "{err}");
    let wrong = dir.path().join("wrong.ron");
    std::fs::write(
        &wrong,
        format!(
            r#"(postoffice: (listen: "{}", tokens: ["not-it"]))"#,
            po.addr
        ),
    )
    .unwrap();
    let (code, err) = failure(&run(
        "postoffice",
        &["queue", "--config", wrong.to_str().unwrap()],
    ));
    assert_eq!(
        (code, err.contains("token was refused")),
        (Some(2), true),
        "{err}"
    );
}

#[test]
fn mailman_queue_lists_and_requeues_failed_messages() {
    let dir = TestDir::new();
    let recorder = Recorder::start(&dir);
    recorder.set_policy(|_| Answer::status(400));
    let mailman = Mailman::start(&dir, Config::new(&dir, recorder.addr()));
    let config = mailman.config_path().display().to_string();
    let cfg = ["--config", config.as_str()];
    let mut smtp = Smtp::ehlo(mailman.addr());
    let ids: Vec<String> = (0..3)
        .map(|i| {
            smtp.send_mail(
                "app@origin.test",
                &["a@dest.test"],
                &crlf(&format!("Subject: {i}\n\nx\n")),
            )
        })
        .collect();
    let failed = wait_until(Duration::from_secs(10), || {
        common::failed_files(mailman.spool()).len() == 3
    });
    assert!(failed, "not refused into failed/: {}", mailman.stderr());

    let listed = json(&stdout(&run(
        "mailman",
        &["queue", cfg[0], cfg[1], "--json"],
    )));
    let states: Vec<(&str, &str)> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "failed")).collect();
    assert_eq!(states, want);
    assert_eq!(
        listed["messages"][0]["to"],
        serde_json::json!(["a@dest.test"])
    );
    let text = stdout(&run("mailman", &["queue", cfg[0], cfg[1]]));
    assert!(
        text.contains(&format!("{} ", ids[0])) && text.contains(" failed   app@origin.test"),
        "{text}"
    );
    assert!(
        text.ends_with("in 3 messages (0 incoming, 0 waiting, 3 failed)\n"),
        "{text}"
    );

    // postoffice takes them now: one requeued by id, then the rest.
    recorder.set_policy(|_| Answer::status(202));
    let before = Instant::now();
    let out = run("mailman", &["queue", "requeue", cfg[0], cfg[1], &ids[1]]);
    assert_eq!(stdout(&out), format!("{}: requeued\n", ids[1]), "{out:?}");
    recorder.wait_for_keys(&ids[1..2], Duration::from_secs(5));
    let arrived = recorder.accepted()[0].received_at;
    assert!(
        arrived.duration_since(before) < Duration::from_secs(2),
        "{:?}",
        arrived.duration_since(before)
    );
    let out = run("mailman", &["queue", "requeue", cfg[0], cfg[1], &ids[1]]);
    assert_eq!(failure(&out).0, Some(1), "no longer in failed/");
    let out = run("mailman", &["queue", "requeue", cfg[0], cfg[1], "--failed"]);
    assert!(out.status.success(), "{out:?}");
    recorder.wait_for_keys(&ids, Duration::from_secs(5));
    let empty = wait_until(Duration::from_secs(5), || {
        stdout(&run("mailman", &["queue", cfg[0], cfg[1]])) == "Mail queue is empty\n"
    });
    assert!(
        empty,
        "{}",
        stdout(&run("mailman", &["queue", cfg[0], cfg[1]]))
    );
    let (code, err) = failure(&run("mailman", &["queue", "requeue", cfg[0], cfg[1]]));
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn postoffice_queue_speaks_https_to_a_postoffice_that_serves_it() {
    let dir = TestDir::new();
    // A certificate from a private CA the command is not told about: it
    // pins the one hedwig.ron names.
    let (po, _ca) = Postoffice::start_https(&dir, dir.free_addr());
    let config = po.config_path().display().to_string();
    let out = run("postoffice", &["queue", "--config", &config]);
    assert_eq!(stdout(&out), "Mail queue is empty\n", "{out:?}");
    let id = po.post_raw(
        "app@origin.test",
        &["a@nowhere.invalid"],
        &crlf("Subject: t\n\nx\n"),
    );
    let out = run(
        "postoffice",
        &["queue", "show", "--json", "--config", &config, &id],
    );
    assert_eq!(json(&stdout(&out))["id"], id.as_str(), "{out:?}");
    let (code, err) = failure(&run(
        "postoffice",
        &["queue", "show", "--config", &config, "NOSUCHID1"],
    ));
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "postoffice queue: no message NOSUCHID1")
    );
    // A config naming another certificate than the one served: refused.
    let (other, _) = common::stack::self_signed(&dir, "other.test");
    let text = std::fs::read_to_string(po.config_path()).unwrap();
    let served = text
        .split("cert: \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let wrong = dir.path().join("wrong-cert.ron");
    std::fs::write(&wrong, text.replace(served, other.to_str().unwrap())).unwrap();
    let (code, err) = failure(&run(
        "postoffice",
        &["queue", "--config", wrong.to_str().unwrap()],
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.ends_with("the certificate served is not postoffice's tls.cert"),
        "{err}"
    );
}
