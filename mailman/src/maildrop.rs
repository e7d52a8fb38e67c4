//! The drop directory, `SPOOL/maildrop/`: how `mailman sendmail` hands a
//! message to the daemon without a network connection and without root,
//! and how `mailman queue requeue` wakes it.
//!
//! Any local user may submit mail (they could already, over SMTP to the
//! docker0 address), so the directory is writable by all, like Postfix's
//! maildrop before postdrop and like /tmp, and nothing in it is trusted:
//!
//! - mode 3777: sticky, so nobody removes or renames another's file; setgid,
//!   so each file takes the spool's group (the daemon's), and `sendmail`
//!   makes it 0640: readable by the daemon, by nobody else. The directory is
//!   readable because a writer must open it to fsync it;
//! - the spool above it is 0711 (reachable, not listable), its `tmp/`,
//!   `queue/` and `failed/` 0700;
//! - a drop is written as `.ID.tmp`, fsync'd, renamed to `ID`, and the
//!   directory fsync'd, by the spool's own writer, before `sendmail` exits 0;
//! - [`crate::pickup`] opens each `ID` without following links, takes only
//!   a regular file with one link, checks it as it checks SMTP input, stamps
//!   it with the uid that owns it, and moves it into the spool.
//!
//! `ID.requeue`, empty and owned by root or the daemon's user, says that
//! `queue/ID` came back from `failed/`: a running daemon hands it off.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hedwig::privilege::Account;

/// The drop directory's name inside the spool.
pub const DIR: &str = "maildrop";

/// The suffix of a requeue marker.
pub const REQUEUE: &str = ".requeue";

/// A drop file: its owner writes, the daemon's group reads.
pub const FILE_MODE: u32 = 0o640;

/// Sticky, setgid, writable by all.
const DIR_MODE: u32 = 0o3777;

/// The drop directory of the spool at `spool`.
pub fn dir(spool: &Path) -> PathBuf {
    spool.join(DIR)
}

/// Makes the spool's directories (created by `Spool::open`) and the drop
/// directory what the module header says; hands them to `account` first
/// when there is one and this process is root.
pub fn prepare(spool: &Path, account: Option<&Account>) -> io::Result<()> {
    let drop = dir(spool);
    fs::create_dir_all(&drop)?;
    let inner: Vec<PathBuf> = ["tmp", "queue", "failed"]
        .iter()
        .map(|d| spool.join(d))
        .collect();
    if let Some(account) = account.filter(|_| hedwig::privilege::is_root()) {
        let mut all: Vec<&Path> = vec![spool, &drop];
        all.extend(inner.iter().map(PathBuf::as_path));
        hedwig::privilege::hand_over(&all, account)?;
    }
    set_mode(spool, 0o711)?;
    for d in &inner {
        set_mode(d, 0o700)?;
    }
    set_mode(&drop, DIR_MODE)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("chmod {:o} {}: {e}", mode, path.display()),
        )
    })
}

/// Leaves the marker that tells a running daemon `queue/ID` is back.
pub fn mark_requeued(spool: &Path, id: &str) -> io::Result<()> {
    let marker = dir(spool).join(format!("{id}{REQUEUE}"));
    fs::write(&marker, b"")
}

/// What a name in the drop directory stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A finished drop, `ID`.
    Drop(&'a str),
    /// `.ID.tmp`: a drop being written (or left by a writer that died).
    Unfinished,
    /// `ID.requeue`.
    Requeued(&'a str),
    /// Anything else: not ours.
    Stray,
}

/// Sorts a file name of the drop directory.
pub fn entry(name: &str) -> Entry<'_> {
    let valid = hedwig::id::is_valid;
    if valid(name) {
        Entry::Drop(name)
    } else if let Some(id) = name.strip_suffix(REQUEUE).filter(|id| valid(id)) {
        Entry::Requeued(id)
    } else if name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(valid)
    {
        Entry::Unfinished
    } else {
        Entry::Stray
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            entry("6615A5BADBE80B6F3E"),
            Entry::Drop("6615A5BADBE80B6F3E")
        );
        assert_eq!(
            entry("6615A5BADBE80B6F3E.requeue"),
            Entry::Requeued("6615A5BADBE80B6F3E")
        );
        assert_eq!(entry(".6615A5BADBE80B6F3E.tmp"), Entry::Unfinished);
        for stray in [
            "",
            ".",
            "..",
            "x",
            ".requeue",
            "a b",
            ".x.tmp",
            "6615A5BADBE80B6F3E.tmp",
        ] {
            assert_eq!(entry(stray), Entry::Stray, "{stray:?}");
        }
    }

    #[test]
    fn prepare_sets_the_modes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        hedwig::spool::Spool::open(&spool).unwrap();
        prepare(&spool, None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&spool), 0o711);
        assert_eq!(mode(&spool.join("queue")), 0o700);
        assert_eq!(mode(&spool.join("maildrop")), 0o3777);
        mark_requeued(&spool, "6615A5BADBE80B6F3E").unwrap();
        assert!(spool.join("maildrop/6615A5BADBE80B6F3E.requeue").exists());
    }
}
