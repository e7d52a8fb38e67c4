//! The SMTP clients deployments use, run as processes: msmtp and swaks; and
//! Python scripts as HTTP clients (http.client).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::smtp::queued_id;

/// What one client run did.
#[derive(Debug)]
pub struct Sent {
    /// Whether the client exited 0.
    pub ok: bool,
    /// The queued-as ID mailman answered, if the client reported one.
    pub id: Option<String>,
    /// The client's log / transcript, for failure messages.
    pub transcript: String,
}

/// Sends `message` (LF line endings, as a local program would pipe it) with msmtp
/// from `from` to `to`, with an msmtprc that sets host, port, `auth off`, `tls off`
/// and asks msmtp not to add any header of its own. The ID comes from msmtp's log.
pub fn msmtp(dir: &Path, server: SocketAddr, from: &str, to: &[&str], message: &[u8]) -> Sent {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let rc = dir.join(format!("msmtprc.{n}"));
    let log = dir.join(format!("msmtp.{n}.log"));
    let config = format!(
        "defaults\nauth off\ntls off\nset_from_header off\nset_date_header off\nset_msgid_header off\n\
         timeout 20\nlogfile {log}\n\naccount default\nhost {host}\nport {port}\nfrom {from}\n\
         domain client.test\n",
        log = log.display(),
        host = server.ip(),
        port = server.port(),
    );
    std::fs::write(&rc, config).expect("write msmtprc");
    // msmtp refuses a config file that others can read.
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).expect("chmod msmtprc");
    let mut child = Command::new("msmtp")
        .arg("-C")
        .arg(&rc)
        .args(to)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run msmtp (is it installed? scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message)
        .expect("pipe message to msmtp");
    let out = child.wait_with_output().expect("wait for msmtp");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    Sent {
        ok: out.status.success(),
        id: queued_id(&logged),
        transcript: format!("{}{}{}", logged, text(&out.stdout), text(&out.stderr)),
    }
}

/// Runs swaks against `server` with EHLO `client.test`, the message `data` (taken
/// from a file, CRLF-converted by swaks, which also dot-stuffs and adds the final
/// CRLF.CRLF) and the extra arguments `args` (e.g. `--from`, `--to a,b`).
pub fn swaks(dir: &Path, server: SocketAddr, args: &[&str], data: &[u8]) -> Sent {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let file = dir.join(format!("swaks.{n}.eml"));
    std::fs::write(&file, data).expect("write swaks data");
    let out: Output = Command::new("swaks")
        .arg("--server")
        .arg(server.ip().to_string())
        .arg("--port")
        .arg(server.port().to_string())
        .args(["--ehlo", "client.test", "--timeout", "20"])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run swaks (is it installed? scripts/test installs it)");
    let transcript = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let id = transcript
        .lines()
        .filter(|l| l.starts_with("<-  250 "))
        .find_map(queued_id);
    Sent {
        ok: out.status.success(),
        id,
        transcript,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the Python `script` with `server`'s address and port as its first two
/// arguments, then `args`; returns its stdout, or panics with its stderr.
pub fn python(script: &str, server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &server.ip().to_string(),
            &server.port().to_string(),
        ])
        .args(args)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3: {}", text(&out.stderr));
    text(&out.stdout)
}
