//! The host around the daemons: commands run the way cron runs them, other
//! users, what /proc says about a process, and Python's email parser as the
//! judge of a message's header.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `script` with `/bin/sh -c` as cron runs a job: an environment of
/// just PATH, SHELL, HOME and LOGNAME, stdin closed, in `cwd`; as `user`
/// (with that user's primary group only) when given, else as root.
pub fn cron(cwd: &Path, user: Option<&str>, script: &str) -> Output {
    let login = user.unwrap_or("root");
    let mut cmd = match user {
        None => Command::new("/bin/sh"),
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={user}"))
                .arg(format!("--regid={}", primary_group(user)))
                .arg("--clear-groups")
                .arg("/bin/sh");
            c
        }
    };
    cmd.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("HOME", "/")
        .env("LOGNAME", login)
        .stdin(Stdio::null())
        .output()
        .expect("run /bin/sh")
}

/// The gid of `user`'s primary group, from `id -g`.
pub fn primary_group(user: &str) -> String {
    let out = Command::new("id")
        .arg("-g")
        .arg(user)
        .output()
        .expect("run id");
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The uid of `user`, from `id -u`.
pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

/// Every thread of `pid` as /proc sees it: its `Uid:`, `Gid:` and `Groups:`
/// lines, whitespace collapsed (e.g. "Uid: 65534 65534 65534 65534").
pub fn thread_ids(pid: u32) -> Vec<[String; 3]> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let field = |name: &str| {
                let line = status.lines().find(|l| l.starts_with(name)).unwrap_or(name);
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            [field("Uid:"), field("Gid:"), field("Groups:")]
        })
        .collect()
}

/// The header fields of `message` as Python's `email` package reads them:
/// a JSON object from lowercased name to the list of its values.
pub fn email_headers(message: &[u8]) -> serde_json::Value {
    let script = "import email, email.policy, json, sys\n\
                  m = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.SMTP)\n\
                  out = {}\n\
                  for k, v in m.items():\n    out.setdefault(k.lower(), []).append(str(v))\n\
                  out['_body'] = [m.get_payload()]\n\
                  print(json.dumps(out))";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 email: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}
