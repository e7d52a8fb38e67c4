//! A private Postfix instance, the MTA in between for tests that need a
//! real one: its own main.cf and master.cf, queue and log under the test's
//! directory, smtpd on one loopback address, everything relayed to
//! `relayhost`. Needs root (master runs as root and drops to user postfix).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::stack::Proc;
use super::{wait_until, TestDir};

/// Postfix's master in the foreground (`postfix start-fg`); stopped on drop.
#[derive(Debug)]
pub struct Postfix {
    /// Where its smtpd listens.
    pub addr: SocketAddr,
    etc: PathBuf,
    maillog: PathBuf,
    proc: Proc,
}

impl Postfix {
    /// Starts Postfix on `addr` relaying everything to `relayhost`.
    pub fn start(dir: &TestDir, addr: SocketAddr, relayhost: SocketAddr) -> Postfix {
        let base = dir.path().join("postfix");
        let (etc, queue, data) = (base.join("etc"), base.join("queue"), base.join("data"));
        for d in [&etc, &queue, &data] {
            std::fs::create_dir_all(d).expect("postfix dirs");
        }
        // Its daemons run as user postfix and must reach the queue below the test dir.
        for d in [dir.path(), base.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        chown_postfix(&data);
        let maillog = base.join("maillog");
        let main = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [{relay_ip}]:{relay_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = {base}
maillog_file = {maillog}
",
            queue = queue.display(),
            data = data.display(),
            relay_ip = relayhost.ip(),
            relay_port = relayhost.port(),
            maillog = maillog.display(),
            base = base.display(),
        );
        std::fs::write(etc.join("main.cf"), main).expect("main.cf");
        // Debian's master.cf without chroot, smtpd on our address only.
        let services = [
            &format!("{addr} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        std::fs::write(etc.join("master.cf"), services.join("\n") + "\n").expect("master.cf");
        let mut cmd = Command::new("/usr/sbin/postfix");
        cmd.arg("-c").arg(&etc).arg("start-fg");
        let proc = Proc::spawn(dir.path(), "postfix", &mut cmd);
        let postfix = Postfix {
            addr,
            etc,
            maillog,
            proc,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(up, "postfix did not listen on {addr}:\n{}", postfix.log());
        postfix
    }

    /// Its start-up output and maillog.
    pub fn log(&self) -> String {
        let maillog = std::fs::read_to_string(&self.maillog).unwrap_or_default();
        format!("{}\n--- maillog\n{maillog}", self.proc.log())
    }
}

fn chown_postfix(path: &Path) {
    let ok = Command::new("chown")
        .arg("postfix")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown postfix {}", path.display());
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // A clean stop takes its daemons down with the master.
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .output();
        wait_until(Duration::from_secs(10), || !self.proc.alive());
        if std::thread::panicking() {
            eprintln!("--- postfix\n{}", self.log());
        }
    }
}
