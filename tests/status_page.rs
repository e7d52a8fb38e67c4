//! The status page in a real browser: headless Chromium (Debian's) logs in
//! with Basic credentials (any user, a token as password) and renders `/`
//! after deliveries, deferrals and a bounce; the numbers in its DOM are the
//! ones `GET /v1/queue` reports, the chart's delivered line has points above
//! zero, the failures link to message pages that list every attempt. A
//! screenshot goes to target/tmp/status-page.png. Without credentials, or
//! with a wrong token, the answer is 401 with a Basic challenge.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::message::crlf;
use common::stack::{json, route_all_and, Postoffice, Sink, HOUR_RETRY};
use common::{wait_until, TestDir};

/// Runs headless Chromium on `url` with `args` (--dump-dom, --screenshot);
/// its stdout. Bounded: killed after a minute.
fn chromium(dir: &Path, url: &str, args: &[&str]) -> String {
    let profile = dir.join(format!("chromium-{}", fastrand::u32(..)));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromium (scripts/test installs Debian's chromium)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium on {url}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text inside the element whose opening tag contains `marker`.
fn text_after<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let close = rest[open_end..].find('<').unwrap();
    &rest[open_end..open_end + close]
}

/// The (x, y) points of the chart's polyline of class `class`.
fn points(dom: &str, class: &str) -> Vec<(u32, u32)> {
    let start = dom
        .find(&format!("<polyline class=\"{class}\""))
        .expect("the polyline");
    let rest = &dom[start..];
    let p = rest.find("points=\"").unwrap() + 8;
    let end = rest[p..].find('"').unwrap();
    rest[p..p + end]
        .split_whitespace()
        .map(|xy| {
            let (x, y) = xy.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

fn curl_status(url: &str, user: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "20"]);
    if let Some(u) = user {
        cmd.arg("-u").arg(u);
    }
    let out = cmd.arg(url).output().expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

#[test]
fn chromium_renders_the_status_page_with_the_apis_numbers() {
    let dir = TestDir::new();
    let sink_addr = dir.free_addr();
    let _sink = Sink::start(
        &dir,
        "mx",
        sink_addr,
        &["--rcpt", "450:@slow.test", "--rcpt", "550:@bad.test"],
    );
    let po = Postoffice::start(&dir, dir.free_addr(), &route_all_and(sink_addr, HOUR_RETRY));
    let post = |to: &[&str]| po.post_raw("app@origin.test", to, &crlf("Subject: s\n\nx\n"));
    let delivered: Vec<String> = (0..3).map(|_| post(&["a@ok.test"])).collect();
    let slow = [post(&["b@slow.test"]), post(&["c@slow.test", "d@ok.test"])];
    let bounced = post(&["e@bad.test"]);
    for id in &delivered {
        po.wait_state(id, "delivered", Duration::from_secs(20));
    }
    po.wait_state(&slow[0], "deferred", Duration::from_secs(20));
    po.wait_state_of(&slow[1], 1, "delivered", Duration::from_secs(20));
    po.wait_state(&bounced, "bounced", Duration::from_secs(20));
    // The bounce's DSN goes out too; then nothing moves for an hour.
    let settled = wait_until(Duration::from_secs(20), || {
        json(&po.http("GET", "/v1/queue", None, None).1)["by_state"]["queued"] == 0
    });
    assert!(settled, "{}", po.http("GET", "/v1/queue", None, None).1);
    let api = json(&po.http("GET", "/v1/queue", None, None).1);

    let base = format!("http://{}/", po.addr);
    let logged_in = format!("http://anyone:{}@{}/", po.token, po.addr);
    let dom = chromium(dir.path(), &logged_in, &["--dump-dom"]);
    assert!(dom.contains(r#"<meta http-equiv="refresh" content="30">"#));
    assert!(!dom.contains("<script"), "no script");
    assert_eq!(
        text_after(&dom, r#"id="messages""#),
        api["messages"].to_string()
    );
    for state in ["queued", "deferred", "delivered", "bounced"] {
        let shown = text_after(&dom, &format!(r#"id="state-{state}""#));
        assert_eq!(shown, api["by_state"][state].to_string(), "{state}");
    }
    for (domain, n) in api["by_domain"].as_object().unwrap() {
        let row = format!(r#"<tr class="domain"><td>{domain}</td><td class="n">{n}</td></tr>"#);
        assert!(dom.contains(&row), "{row} not in the DOM:\n{dom}");
    }
    assert_eq!(api["by_domain"]["slow.test"], 2);
    // The chart: deliveries this minute, above the zero line.
    let line = points(&dom, "delivered");
    let zero = line[0].1;
    assert!(
        line.iter().any(|&(_, y)| y < zero),
        "no delivery drawn: {line:?}"
    );
    assert!(
        text_after(&dom, r#"id="total-delivered""#)
            .parse::<u32>()
            .unwrap()
            >= 5
    );
    assert!(text_after(&dom, r#"id="total-bounced""#) == "1");
    // Deferral reasons and the failures, each linking to its message.
    let reason = "<tr><td>slow.test</td><td class=\"n\">2</td><td><code>450 4.2.0 &lt;…&gt;: refused by sink</code></td></tr>";
    assert!(dom.contains(reason), "one reason, two deferrals:\n{dom}");
    assert_eq!(dom.matches(r#"<tr class="failure">"#).count(), 3);
    for id in [&slow[0], &slow[1], &bounced] {
        assert!(
            dom.contains(&format!(r#"<a href="messages/{id}">{id}</a>"#)),
            "{id}"
        );
    }

    // A message's page: its recipients and every attempt.
    let page = chromium(
        dir.path(),
        &format!("{logged_in}messages/{}", slow[1]),
        &["--dump-dom"],
    );
    assert_eq!(text_after(&page, r#"id="message-id""#), slow[1]);
    assert_eq!(page.matches(r#"<tr class="attempt">"#).count(), 2);
    assert!(
        page.contains(r#"data-state="deferred""#) && page.contains(r#"data-state="delivered""#)
    );

    // A screenshot under target/ for a person to look at.
    let shot: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        dir.path(),
        &logged_in,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1700",
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // The page is small, and closed without the right credentials.
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-u",
            &format!("x:{}", po.token),
            &base,
        ])
        .output()
        .unwrap();
    let size = out.stdout.len();
    assert!(size < 100 * 1024 && size > 1000, "{size} bytes");
    for user in [None, Some("x:wrong"), Some("x:")] {
        let (status, head) = curl_status(&base, user);
        assert_eq!(status, 401, "{user:?}: {head}");
        assert!(
            head.lines().any(|l| l
                .to_ascii_lowercase()
                .starts_with("www-authenticate: basic realm=\"hedwig\"")),
            "{head}"
        );
    }
    assert_eq!(
        curl_status(&format!("{base}messages/{}", slow[0]), None).0,
        401
    );
    assert_eq!(
        curl_status(
            &format!("{base}messages/NOSUCHID1"),
            Some(&format!("x:{}", po.token))
        )
        .0,
        404
    );
}
