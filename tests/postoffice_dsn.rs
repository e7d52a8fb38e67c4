//! Bounces that every parser reads: a long multi-line 550 and a UTF-8
//! recipient the MX cannot take (no SMTPUTF8: status 5.6.7) come back in one
//! DSN that Python's email package and flufl.bounce (from PyPI, in a venv
//! under target/) read whole, and that dkimpy verifies, since postoffice
//! signs its own bounces too.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::dkim::{make_key, verify};
use common::stack::{Postoffice, Sink};
use common::TestDir;

/// The reply's lines, as a large provider words a policy refusal.
const LINES: [&str; 3] = [
    "The user or domain that you are sending to (or from) has a policy that",
    "prohibited the mail that you sent. Please contact your domain administrator",
    "for further details. To learn more, visit https://support.example.com/mail/answer/10002",
];

/// Python with flufl.bounce: a venv under target/, made on first use.
fn flufl_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/flufl-venv");
    let python = venv.join("bin/python");
    let has = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import flufl.bounce"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let made = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "python3 -m venv {} (python3-venv)", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "flufl.bounce"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "pip install flufl.bounce");
    }
    python
}

#[test]
fn long_replies_and_utf8_recipients_read_by_email_and_flufl_bounce() {
    let dir = TestDir::new();
    let text = LINES.join("|");
    let mx = Sink::start(
        &dir,
        "mx",
        dir.free_addr(),
        &[
            "--rcpt",
            "550:long@dest.test",
            "--rcpt-text",
            &text,
            "--no-smtputf8",
        ],
    );
    let senders = Sink::start(&dir, "senders", dir.free_addr(), &[]);
    let key = make_key(&dir, "po.test", "bounces", true);
    let body = format!(
        "delivery: (starttls: Never, routes: {{\"dest.test\": \"{mx}\", \"utf8.test\": \"{mx}\", \"*\": \"{s}\"}}), dkim: [{k}]",
        mx = mx.addr,
        s = senders.addr,
        k = key.ron()
    );
    let po = Postoffice::start(&dir, dir.free_addr(), &body);
    let message = b"From: sender@origin.test\r\nSubject: will bounce\r\n\r\nbody\r\n";
    let id = po.post_raw(
        "sender@origin.test",
        &["long@dest.test", "用户@utf8.test"],
        message,
    );
    let record = po.wait_state(&id, "bounced", Duration::from_secs(15));
    let errors = record["recipients"].to_string();
    assert!(errors.contains("5.6.7 non-ASCII address"), "{errors}");

    let dsns = senders.wait_for(1, Duration::from_secs(15));
    assert_eq!(dsns.len(), 1, "{}", po.log());
    let dsn = &dsns[0];
    assert_eq!(dsn.from, "", "a DSN comes from the null sender");
    verify(&dsn.bytes, &[key], 1, false).unwrap();

    let script = format!(
        r#"
import email, re, sys
from flufl.bounce import all_failures
m = email.message_from_bytes(sys.stdin.buffer.read())
assert m.get_content_type() == 'multipart/report', m.get_content_type()
status = m.get_payload()[1]
assert status.get_content_type() == 'message/delivery-status'
assert status['Content-Transfer-Encoding'] == '7bit', status['Content-Transfer-Encoding']
blocks = status.get_payload()
by_status = {{b['Status']: b for b in blocks[1:]}}
assert set(by_status) == {{'5.1.1', '5.6.7'}}, by_status.keys()
unfold = lambda v: ' '.join(v.split())
diag = unfold(by_status['5.1.1']['Diagnostic-Code'])
for line in {lines:?}:
    assert line in diag, (line, diag)
assert diag.startswith('smtp; 550'), diag
assert by_status['5.1.1']['Final-Recipient'] == 'rfc822; long@dest.test'
kind, addr = by_status['5.6.7']['Final-Recipient'].split(';', 1)
assert kind == 'utf-8', kind
addr = re.sub(r'\\x\{{([0-9A-F]+)\}}', lambda x: chr(int(x.group(1), 16)), addr.strip())
assert addr == '用户@utf8.test', addr
temporary, permanent = all_failures(m)
assert permanent == {{b'long@dest.test'}}, permanent
assert not temporary, temporary
print('ok')
"#,
        lines = LINES
    );
    let out = common::run_with_input(
        Command::new(flufl_python()).args(["-c", &script]),
        &dsn.bytes,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dsn.text()
    );
}
