//! Errors an operator reads: a listen entry naming an interface the host
//! lacks says so and lists the ones it has, once (not as a log line and
//! again); and when a proxy (nginx) in front of postoffice answers with its
//! HTML error page, mailman's log keeps one event per line, naming the
//! page by its title instead of copying it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::mailman::{run_with, Config, Mailman};
use common::message::crlf;
use common::smtp::Smtp;
use common::stack::Proc;
use common::{wait_until, TestDir};

#[test]
fn a_missing_interface_is_named_with_the_ones_there_are() {
    let dir = TestDir::new();
    // docker0 on a host without docker; another name where docker runs.
    let name = if std::path::Path::new("/sys/class/net/docker0").exists() {
        "nodocker9"
    } else {
        "docker0"
    };
    let config = Config::new(&dir, dir.free_addr());
    let text = config.to_ron().replace(
        &format!("listen: [\"{}\"]", config.listen),
        &format!("listen: [\"{name}:25\"]"),
    );
    let path = dir.path().join("mailman.ron");
    std::fs::write(&path, text).unwrap();
    let out = run_with(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("mailman: listen {name}:25: there is no interface {name} (interfaces: ");
    assert!(
        err.starts_with(&prefix) && err.contains("lo") && err.ends_with(")\n"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "printed once: {err}");
}

#[test]
fn a_proxys_html_error_page_is_one_log_line() {
    let dir = TestDir::new();
    let proxy = dir.free_addr();
    let closed = dir.free_addr();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen {proxy};\n    location / {{ proxy_pass http://{closed}; }}\n  }}\n}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg(format!(
            "daemon off; pid {}/nginx.pid; error_log stderr;",
            dir.path().display()
        ));
    let _nginx = Proc::spawn(dir.path(), "nginx", &mut cmd);
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            proxy
        )
        .is_ok()),
        "nginx did not start"
    );

    let mailman = Mailman::start(&dir, Config::new(&dir, proxy));
    let id = Smtp::ehlo(mailman.addr()).send_mail(
        "a@origin.test",
        &["b@dest.test"],
        &crlf("Subject: x\n\nx\n"),
    );
    let logged = wait_until(Duration::from_secs(10), || {
        mailman.stderr().contains("hand-off deferred")
    });
    let log = mailman.stderr();
    assert!(logged, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains(&id) && l.contains("status=502"))
        .expect("the hand-off line");
    assert!(
        line.contains(r#"response=HTML page "502 Bad Gateway" ("#),
        "{line}"
    );
    for l in log.lines().filter(|l| !l.starts_with("--- ")) {
        assert!(
            l.starts_with("[20"),
            "a line that is no log event: {l:?}\n{log}"
        );
        assert!(!l.contains("<html") && !l.contains("<center>"), "{l}");
    }
}
