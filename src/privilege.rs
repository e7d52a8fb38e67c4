//! Giving up root: a daemon opens its sockets, spool and keys as root, then
//! becomes the configured `user` before it accepts anything.
//!
//! On Linux a thread's uid and gids are its own: the C library's `setuid`
//! signals every thread to change, the raw system call changes only the
//! caller. hedwig makes the change with the raw calls (rustix, already in the
//! tree through async-io, so no libc binding and no `unsafe` here) while the
//! process has one thread, which [`become_user`] checks in `/proc` before and
//! after: the smol reactor and the blocking pool start only afterwards, and
//! inherit the new identity.
//!
//! The account is read from `/etc/passwd` (as a static musl binary does
//! anyway), or given as numbers, `"UID:GID"`, for a container image with no
//! passwd file.

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;

use rustix::process::{Gid, Uid};

/// Who a daemon runs as: `user: Some("hedwig")` or `Some("998:998")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// A user name, looked up in `/etc/passwd`; its primary group is the gid.
    Name(String),
    /// Numeric ids, used as they are.
    Ids {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

impl FromStr for RunAs {
    type Err = String;

    fn from_str(s: &str) -> Result<RunAs, String> {
        if let Some((uid, gid)) = s.split_once(':') {
            return match (uid.parse(), gid.parse()) {
                (Ok(uid), Ok(gid)) => Ok(RunAs::Ids { uid, gid }),
                _ => Err(format!("invalid user {s:?}: write a name or UID:GID")),
            };
        }
        // useradd's rule (NAME_REGEX) without the trailing `$` of Samba accounts.
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(RunAs::Name(s.to_string()))
        } else {
            Err(format!("invalid user {s:?}: write a name or UID:GID"))
        }
    }
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunAs::Name(name) => f.write_str(name),
            RunAs::Ids { uid, gid } => write!(f, "{uid}:{gid}"),
        }
    }
}

/// The account a daemon becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// What the configuration said, for messages.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id; also the only supplementary group.
    pub gid: u32,
}

impl RunAs {
    /// The account, looking a name up in `/etc/passwd`.
    pub fn account(&self) -> Result<Account, String> {
        match self {
            RunAs::Ids { uid, gid } => Ok(Account {
                name: self.to_string(),
                uid: *uid,
                gid: *gid,
            }),
            RunAs::Name(name) => {
                let passwd = std::fs::read_to_string("/etc/passwd")
                    .map_err(|e| format!("user {name}: cannot read /etc/passwd: {e}"))?;
                lookup(name, &passwd).ok_or_else(|| {
                    format!("user {name}: no such user in /etc/passwd (scripts/install creates it)")
                })
            }
        }
    }
}

/// The login name of `uid` in `/etc/passwd`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_of(uid, &passwd)
}

fn name_of(uid: u32, passwd: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse() == Ok(uid)).then(|| name.to_string())
    })
}

/// Finds `name` in the text of a passwd file.
fn lookup(name: &str, passwd: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(Account {
            name: name.to_string(),
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    })
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The real uid of this process.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Opens for reading a file another user may have put where we look: no
/// symlink is followed, and no FIFO or device can block the open.
pub fn open_untrusted(path: &Path) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(std::fs::File::from(rustix::fs::open(
        path,
        flags,
        Mode::empty(),
    )?))
}

/// Makes `dirs` belong to `account` (while root), so the daemon can still
/// write them after [`become_user`]. A directory that belonged to someone
/// else is handed over with everything in it, once: a spool made while the
/// daemon ran as root keeps working when `user` is set later.
pub fn hand_over(dirs: &[&Path], account: &Account) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in dirs {
        let meta = std::fs::symlink_metadata(dir)?;
        if meta.uid() == account.uid && meta.gid() == account.gid {
            continue;
        }
        log::info!(
            "handing {} over to {} ({}:{})",
            dir.display(),
            account.name,
            account.uid,
            account.gid
        );
        chown_tree(dir, account)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, account: &Account) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
        .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", path.display())))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), account)?;
        }
    }
    Ok(())
}

/// Becomes `account`: supplementary groups, then gid, then uid, each real,
/// effective and saved, and checks that root cannot be regained. Must run
/// while the process has a single thread. Already running as `account`
/// (not root) is fine; any other non-root user is an error.
pub fn become_user(account: &Account) -> Result<(), String> {
    let who = format!("user {} ({}:{})", account.name, account.uid, account.gid);
    if !is_root() {
        let (uid, gid) = (uid(), rustix::process::getgid().as_raw());
        if (uid, gid) == (account.uid, account.gid) {
            return Ok(());
        }
        return Err(format!(
            "cannot switch to {who}: running as uid {uid}, not root"
        ));
    }
    let threads = threads()?;
    if threads != 1 {
        return Err(format!(
            "cannot switch to {who}: {threads} threads are running (the switch must come first)"
        ));
    }
    let fail = |step: &str, e: rustix::io::Errno| format!("cannot switch to {who}: {step}: {e}");
    // Groups and gid need root: they go before the uid.
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    rustix::thread::set_thread_groups(&[gid]).map_err(|e| fail("setgroups", e))?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    check(account).map_err(|e| format!("after switching to {who}: {e}"))?;
    log::info!("running as {}", who.trim_start_matches("user "));
    Ok(())
}

/// Verifies the switch as the kernel sees it.
fn check(account: &Account) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (field, want) in [("Uid:", account.uid), ("Gid:", account.gid)] {
        if let Some(line) = status.lines().find(|l| l.starts_with(field)) {
            let ids: Vec<&str> = line[field.len()..].split_whitespace().collect();
            if ids.iter().any(|id| *id != want.to_string()) {
                return Err(format!("{line:?}, not {want} everywhere"));
            }
        }
    }
    let groups = rustix::process::getgroups().map_err(|e| format!("getgroups: {e}"))?;
    if groups != [Gid::from_raw(account.gid)] {
        return Err(format!("supplementary groups {groups:?}"));
    }
    if account.uid != 0
        && rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok()
    {
        return Err("root could be regained".into());
    }
    Ok(())
}

/// Threads of this process, from `/proc/self/task`.
fn threads() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.count())
        .map_err(|e| format!("cannot count threads in /proc/self/task: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!("hedwig".parse(), Ok(RunAs::Name("hedwig".into())));
        assert_eq!("_mail-1".parse(), Ok(RunAs::Name("_mail-1".into())));
        assert_eq!("998:997".parse(), Ok(RunAs::Ids { uid: 998, gid: 997 }));
        for bad in [
            "",
            "Hedwig",
            "1abc",
            "a b",
            "x:y",
            "1:",
            ":1",
            &"a".repeat(33),
        ] {
            assert!(bad.parse::<RunAs>().is_err(), "{bad:?}");
        }
        assert_eq!(RunAs::Ids { uid: 1, gid: 2 }.to_string(), "1:2");
    }

    #[test]
    fn passwd_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      hedwigx:x:5:5::/:/bin/false\n\
                      hedwig:x:998:997:hedwig mail queue:/var/spool/hedwig:/usr/sbin/nologin\n\
                      broken:x:notanumber:1::/:\n";
        let a = lookup("hedwig", passwd).unwrap();
        assert_eq!((a.uid, a.gid), (998, 997));
        assert_eq!(lookup("hedwi", passwd), None);
        assert_eq!(lookup("broken", passwd), None);
        assert_eq!(lookup("root", passwd).unwrap().uid, 0);
        assert_eq!(name_of(998, passwd).as_deref(), Some("hedwig"));
        assert_eq!(name_of(0, passwd).as_deref(), Some("root"));
        assert_eq!(name_of(4, passwd), None);
    }

    #[test]
    fn numeric_accounts_need_no_passwd_file() {
        let a = RunAs::Ids {
            uid: 65534,
            gid: 65534,
        }
        .account()
        .unwrap();
        assert_eq!(a.name, "65534:65534");
    }
}
