//! postoffice behind nginx (Debian's nginx-light) terminating TLS, with the
//! plain default `proxy_pass`, which speaks HTTP/1.0 to the upstream and
//! closes after each request (async-h1 refused 1.0: 502 on everything);
//! and the keep-alive variant (HTTP/1.1 upstream, `keepalive`). mailman
//! hands off through the first over HTTPS, trusting the private CA. The
//! snippets are README's.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::smtp::Smtp;
use common::stack::{json, nginx, private_ca, raw_path, route_all, Postoffice, Sink};
use common::{wait_until, TestDir};

/// curl through nginx at `addr` as https://po.test:PORT`path`, trusting `ca`.
fn curl(ca: &std::path::Path, addr: SocketAddr, path: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("po.test:{}:{}", addr.port(), addr.ip()))
        .args(args)
        .arg(format!("https://po.test:{}{path}", addr.port()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn mailman_hands_off_through_nginx_over_https() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let sink = Sink::start(&dir, "mx", sink_addr, &[]);
    let po = Postoffice::start(&dir, dir.free_addr(), &route_all(sink_addr));
    let (plain, kept) = (dir.free_addr(), dir.free_addr());
    let (ca, cert, key) = private_ca(&dir, &plain.ip().to_string());
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        cert.display(),
        key.display()
    );
    let upstream = po.addr;
    let servers = format!(
        "  # The default proxy_pass: HTTP/1.0 to postoffice, a connection per request.
  server {{
    listen {plain} ssl;
    {tls}
    client_max_body_size 30m;
    large_client_header_buffers 4 64k;
    location / {{ proxy_pass http://{upstream}; }}
  }}
  # Keep-alive to postoffice.
  upstream postoffice {{ server {upstream}; keepalive 16; }}
  server {{
    listen {kept} ssl;
    {tls}
    client_max_body_size 30m;
    large_client_header_buffers 4 64k;
    location / {{
      proxy_pass http://postoffice;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}"
    );
    let proxy = nginx(&dir, &servers);
    let up = wait_until(Duration::from_secs(10), || {
        curl(&ca, plain, "/healthz", &[]).0 == 200
    });
    assert!(
        up,
        "nginx: {:?}\n{}",
        curl(&ca, plain, "/healthz", &[]),
        proxy.log()
    );

    // curl through both: health, a 2 MB message, a status query.
    let body_file = dir.path().join("big.eml");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 2_000_000 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    std::fs::write(&body_file, &big).unwrap();
    for addr in [plain, kept] {
        let post = raw_path("a@x.test", &["b@y.test"]);
        let (code, body) = curl(
            &ca,
            addr,
            &post,
            &[
                "-H",
                "Authorization: Bearer tok",
                "-H",
                "Content-Type: message/rfc822",
                "--data-binary",
                &format!("@{}", body_file.display()),
            ],
        );
        assert_eq!(
            code,
            202,
            "through {addr}: {body}\n{}\n{}",
            proxy.log(),
            po.log()
        );
        let id = json(&body)["id"].as_str().unwrap().to_string();
        let (code, body) = curl(
            &ca,
            addr,
            &format!("/v1/messages/{id}"),
            &["-H", "authorization: bearer tok"],
        );
        assert_eq!(code, 200, "{body}");
    }

    // mailman through the default proxy_pass, over HTTPS.
    let mut config = Config::new(&dir, plain);
    config.postoffice_url = Some(format!("https://{plain}"));
    config.ca_file = Some(ca);
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    for i in 0..5 {
        smtp.send_mail(
            "a@x.test",
            &["c@y.test"],
            format!("Subject: via nginx {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    let got = sink.wait_for(7, Duration::from_secs(30));
    assert_eq!(
        got.len(),
        7,
        "{}\n{}\n{}",
        mailman.stderr(),
        proxy.log(),
        po.log()
    );
    let via = got
        .iter()
        .filter(|r| r.text().contains("Subject: via nginx"))
        .count();
    assert_eq!(via, 5);
    assert!(
        !mailman.stderr().contains("status=502"),
        "{}",
        mailman.stderr()
    );
}
