//! The docker-compose deployment, for real: a docker engine (Debian's
//! docker.io) of the test's own, in a network namespace it creates, builds
//! the repository's Dockerfile (FROM scratch, the static binaries from
//! scripts/build-static) and runs the repository's docker-compose.yml with
//! Debian's docker-compose: postoffice with its queue on a volume, mailman on
//! the host network bound to docker0 with its spool on a host path, both
//! dropping to 65534:65534. Two containers with msmtp (an image imported from
//! the host's own msmtp and libraries, no registry), one on the default
//! bridge and one on a compose network, send to 172.17.0.1:25, and both
//! messages arrive at a sink.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::docker::{rootfs_tar, run, Engine};
use common::host::thread_ids;
use common::stack::Proc;
use common::{wait_until, TestDir};

const TOKEN: &str = "compose-token";

#[test]
fn compose_runs_both_and_containers_mail_through_docker0() {
    let dir = TestDir::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The images hold the static binaries; cargo rebuilds only what changed.
    run(Command::new(repo.join("scripts/build-static"))
        .arg("x86_64")
        .current_dir(repo));
    let engine = Engine::start(dir.path());

    // The destination: a sink on docker0's address inside the namespace.
    let sink_dir = dir.path().join("sink");
    let script = repo.join("tests/peers/sink.py");
    let _sink = Proc::spawn(
        dir.path(),
        "sink",
        engine
            .nsenter("python3")
            .arg(&script)
            .arg("172.17.0.1:2526")
            .arg(&sink_dir),
    );
    let config = dir.path().join("hedwig.ron");
    std::fs::write(
        &config,
        format!(
            r#"(
    mailman: (
        listen: ["docker0:25"], hostname: "mailman.test", user: "65534:65534",
        postoffice: (url: "http://127.0.0.1:8025", token: "{TOKEN}", retry: (first: "1s", max: "2s")),
    ),
    postoffice: (
        tokens: ["{TOKEN}"], hostname: "po.test", user: "65534:65534",
        delivery: (starttls: Never, routes: {{"*": "172.17.0.1:2526"}}),
    ),
)
"#
        ),
    )
    .unwrap();

    let project = format!("hedwig{}", std::process::id());
    let compose = |args: &[&str]| {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(repo)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", engine.socket().display()),
            )
            .env("HEDWIG_CONFIG", &config)
            .env("HEDWIG_SPOOL", dir.path().join("mailman-spool"))
            .arg("--file")
            .arg(repo.join("docker-compose.yml"))
            .arg("--project-name")
            .arg(&project)
            .args(args);
        cmd
    };
    let _down = Down(compose(&["down", "--volumes", "--timeout", "5"]));
    run(&mut compose(&["up", "--detach", "--build"]));
    let in_netns = |script: &str| {
        engine
            .nsenter("python3")
            .arg("-c")
            .arg(script)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ready = wait_until(Duration::from_secs(60), || {
        in_netns("import socket; socket.create_connection(('172.17.0.1', 25), 2); socket.create_connection(('172.17.0.1', 2526), 2)")
            && in_netns("import urllib.request as u; assert b'ok' in u.urlopen('http://127.0.0.1:8025/healthz', timeout=2).read()")
    });
    let logs = || {
        String::from_utf8_lossy(&compose(&["logs", "--no-color"]).output().unwrap().stdout)
            .into_owned()
    };
    assert!(ready, "mailman or postoffice not up:\n{}", logs());

    // Senders: msmtp in a container of its own, on the default bridge and
    // on the compose project's network.
    let tar = rootfs_tar(dir.path(), "/usr/bin/msmtp");
    run(engine
        .client()
        .args(["import"])
        .arg(&tar)
        .arg("hedwig-test/msmtp"));
    let networks = [
        ("bridge".to_string(), "default bridge"),
        (format!("{project}_default"), "compose network"),
    ];
    for (network, name) in &networks {
        let mut child = engine
            .client()
            .args([
                "run",
                "--rm",
                "-i",
                "--network",
                network,
                "hedwig-test/msmtp",
            ])
            .args([
                "/usr/bin/msmtp",
                "--host=172.17.0.1",
                "--port=25",
                "--auth=off",
                "--tls=off",
            ])
            .args([
                "--domain=container.test",
                "--from=app@container.test",
                "rcpt@dest.test",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let message = format!("From: app@container.test\r\nTo: rcpt@dest.test\r\nSubject: from the {name}\r\n\r\nhello\r\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "msmtp on {network}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
    }
    let arrived = |subject: &str| {
        std::fs::read_dir(&sink_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.path().extension().is_some_and(|x| x == "eml")
                    && std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains(subject)
            })
    };
    let both = wait_until(Duration::from_secs(60), || {
        networks
            .iter()
            .all(|(_, name)| arrived(&format!("Subject: from the {name}")))
    });
    assert!(both, "not both delivered:\n{}", logs());

    // Each daemon runs as 65534:65534 in its container.
    for service in ["postoffice", "mailman"] {
        let container = format!("{project}_{service}_1");
        let pid = run(engine
            .client()
            .args(["inspect", "--format", "{{.State.Pid}}", &container]));
        let pid: u32 = String::from_utf8_lossy(&pid.stdout).trim().parse().unwrap();
        for ids in thread_ids(pid) {
            assert_eq!(
                ids,
                [
                    "Uid: 65534 65534 65534 65534",
                    "Gid: 65534 65534 65534 65534",
                    "Groups: 65534"
                ],
                "{service}"
            );
        }
    }
    // The queue is on a volume, the spool on the host path.
    let volumes = run(engine.client().args(["volume", "ls", "--quiet"]));
    assert!(String::from_utf8_lossy(&volumes.stdout).contains(&format!("{project}_queue")));
    assert!(dir.path().join("mailman-spool/maildrop").is_dir());
}

/// Runs `docker-compose down` when the test ends, passed or not.
struct Down(Command);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
