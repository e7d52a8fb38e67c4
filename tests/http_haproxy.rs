//! postoffice behind HAProxy with its default `option httpchk`, which sends
//! `OPTIONS / HTTP/1.0` and wants a 2xx or 3xx (async-h1 refused 1.0, so
//! HAProxy marked postoffice DOWN): the server is UP, requests pass, and the
//! check has teeth (postoffice killed: DOWN; back: UP). The config is
//! README's snippet.

mod common;

use std::process::Command;
use std::time::Duration;

use common::stack::{json, raw_path, Postoffice, Proc};
use common::{wait_until, TestDir};

/// The status HAProxy's stats page gives server `po` of backend `postoffice`.
fn server_status(stats: std::net::SocketAddr) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{stats}/stats;csv"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("postoffice,po,"))
        .and_then(|l| l.split(',').nth(17))
        .unwrap_or("")
        .to_string()
}

#[test]
fn haproxy_default_httpchk_sees_postoffice_up() {
    let dir = TestDir::new();
    let mut po = Postoffice::start_undelivering(&dir, "");
    let (front, stats) = (dir.free_addr(), dir.free_addr());
    let conf = format!(
        "global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend hedwig
  bind {front}
  default_backend postoffice
backend postoffice
  option httpchk
  server po {po} check inter 200ms fall 2 rise 2
listen stats
  bind {stats}
  stats enable
  stats uri /stats
",
        po = po.addr
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let haproxy = Proc::spawn(dir.path(), "haproxy", &mut cmd);

    let up = wait_until(Duration::from_secs(10), || server_status(stats) == "UP");
    assert!(
        up,
        "not UP: {:?}\n{}\n{}",
        server_status(stats),
        haproxy.log(),
        po.log()
    );

    // Through HAProxy: a message posted, its status read.
    let post = |path: &str, ct: Option<&str>, body: Option<&[u8]>| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-H",
            "Authorization: Bearer tok",
        ]);
        if let (Some(ct), Some(body)) = (ct, body) {
            let file = dir.path().join("body");
            std::fs::write(&file, body).unwrap();
            cmd.args(["-H", &format!("Content-Type: {ct}")])
                .arg("--data-binary")
                .arg(format!("@{}", file.display()));
        }
        let out = cmd
            .arg(format!("http://{front}{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let (code, body) = post(
        &raw_path("a@x.test", &["b@y.test"]),
        Some("message/rfc822"),
        Some(b"Subject: via haproxy\r\n\r\nx\r\n"),
    );
    assert_eq!(code, 202, "{body}\n{}", haproxy.log());
    let id = json(&body)["id"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("/v1/messages/{id}"), None, None).0, 200);

    // The check is real: DOWN while postoffice is dead, UP again after.
    po.kill9();
    assert!(wait_until(Duration::from_secs(10), || server_status(stats) == "DOWN"));
    po.restart();
    assert!(wait_until(Duration::from_secs(10), || server_status(stats) == "UP"));
}
