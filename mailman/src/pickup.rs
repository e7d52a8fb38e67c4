//! Pickup: moves what `sendmail` dropped into the spool and tells the
//! forwarder, once a second (so a dropped message is on its way within 2 s),
//! and once at start before the forwarder scans the spool.
//!
//! A drop is untrusted (see [`crate::maildrop`]): it is opened without
//! following links and must be a regular file with one link; its head must
//! parse, its recipients and size fit the limits SMTP applies. Then it is
//! copied into the spool through the same stamper as SMTP input, with a
//! `Received:` naming the uid that owns the file, committed (fsync, rename,
//! fsync), and only then removed from the drop directory. A drop that breaks
//! the rules is logged with its owner and removed; one the spool cannot take
//! now (disk full) stays for the next pass.

use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_lite::FutureExt;
use hedwig::id::Id;
use hedwig::message::{received_local, rfc5322_date, Stamper};
use hedwig::privilege::open_untrusted;
use hedwig::spool::{read_head, Spool};
use smol::Timer;

use crate::maildrop::{self, Entry};
use crate::shutdown::Shutdown;

/// How often the drop directory is looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// Most directory entries handled in one pass; the next pass goes on.
const MAX_PER_PASS: usize = 1000;

/// An unfinished drop untouched this long was left by a writer that died.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// What pickup needs to know.
#[derive(Debug)]
pub struct Pickup {
    /// The spool drops go into.
    pub spool: Spool,
    /// Name in the `Received:` field and in Message-IDs.
    pub hostname: String,
    /// Largest message, as for SMTP.
    pub max_message_size: u64,
    /// Most recipients, as for SMTP.
    pub max_recipients: usize,
    /// Header section held back to add Date and Message-ID.
    pub max_header: usize,
    /// The daemon's own uid: requeue markers must be its or root's.
    pub uid: u32,
}

/// Why a drop was not taken.
enum Refusal {
    /// It breaks the rules: remove it.
    Bad(String),
    /// The spool failed: keep it for the next pass.
    Later(io::Error),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Refusal {
        Refusal::Later(e)
    }
}

/// Runs passes until shutdown, sending the ids taken to the forwarder.
pub async fn run(pickup: Arc<Pickup>, accepted: async_channel::Sender<Id>, shutdown: Shutdown) {
    loop {
        let stop = async {
            Timer::after(INTERVAL).await;
            false
        }
        .or(async {
            shutdown.wait().await;
            true
        })
        .await;
        if stop {
            return;
        }
        let p = pickup.clone();
        for id in smol::unblock(move || p.pass(SystemTime::now(), true)).await {
            // Only ids of hedwig's shape are taken (see take()).
            if let Ok(id) = id.parse::<Id>() {
                let _ = accepted.try_send(id);
            }
        }
    }
}

impl Pickup {
    /// One look at the drop directory (blocking I/O): takes every drop, and
    /// returns the ids now in `queue/` for the forwarder, requeued ones
    /// among them when `requeued` (at start the forwarder's own scan finds
    /// those, and the markers are only cleared).
    pub fn pass(&self, now: SystemTime, requeued: bool) -> Vec<String> {
        let dir = maildrop::dir(self.spool.root());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                log::error!("cannot read {}: {e}", dir.display());
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for entry in entries.flatten().take(MAX_PER_PASS) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                remove(&entry.path(), "a name that is not UTF-8");
                continue;
            };
            let path = entry.path();
            match maildrop::entry(name) {
                Entry::Drop(id) => match self.take(&path, id, now) {
                    Ok(Some(id)) => ids.push(id),
                    Ok(None) => {}
                    Err(Refusal::Bad(why)) => remove(&path, &why),
                    Err(Refusal::Later(e)) => {
                        log::error!("{id}: cannot move the drop into the spool, will retry: {e}")
                    }
                },
                Entry::Requeued(id) => {
                    let owner = fs::symlink_metadata(&path).map(|m| m.uid()).ok();
                    if owner.is_some_and(|uid| uid == 0 || uid == self.uid) {
                        let _ = fs::remove_file(&path);
                        if requeued && self.spool.path(id, false).exists() {
                            log::info!("{id}: requeued from failed/");
                            ids.push(id.to_string());
                        }
                    } else {
                        remove(&path, "a requeue marker not made by root or the daemon");
                    }
                }
                Entry::Unfinished => {
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE);
                    if stale {
                        remove(&path, "unfinished for a day");
                    }
                }
                Entry::Stray => remove(&path, "not a drop"),
            }
        }
        ids
    }

    /// Moves drop `id` into the spool; `None` when it was already there
    /// (taken before a crash, removed after).
    fn take(&self, path: &Path, id: &str, now: SystemTime) -> Result<Option<String>, Refusal> {
        let file = open_untrusted(path).map_err(|e| Refusal::Bad(format!("cannot open: {e}")))?;
        let meta = file.metadata()?;
        let uid = meta.uid();
        let bad = |why: String| Refusal::Bad(format!("from uid {uid}: {why}"));
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(bad("not a regular file with one link".into()));
        }
        // The spool keeps a message as its id in 16 bytes: a drop named
        // otherwise (sendmail names its drops with hedwig ids) is refused.
        if id.parse::<Id>().is_err() {
            return Err(bad(format!("{id:?} is not a message id")));
        }
        if self.spool.path(id, false).exists() {
            let _ = fs::remove_file(path);
            return Ok(None);
        }
        let mut reader = BufReader::new(file);
        let (head, _) = read_head(&mut reader).map_err(|e| bad(e.to_string()))?;
        let envelope = head.envelope;
        if envelope.to.is_empty() || envelope.to.len() > self.max_recipients {
            return Err(bad(format!(
                "{} recipients (1 to max_recipients {})",
                envelope.to.len(),
                self.max_recipients
            )));
        }
        let received = received_local(&self.hostname, "hedwig mailman", uid, id, now);
        let message_id = format!("{id}@{}", self.hostname);
        let mut stamper = Stamper::new(received, rfc5322_date(now), message_id, self.max_header);
        let mut writer = self.spool.create_blocking(id, &envelope, None)?;
        let mut body = reader.take(self.max_message_size + 1);
        let (mut chunk, mut out) = (vec![0; 64 * 1024], Vec::new());
        let mut size = 0u64;
        loop {
            let n = body.read(&mut chunk).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > self.max_message_size {
                return Err(bad(format!(
                    "larger than max_message_size ({} bytes)",
                    self.max_message_size
                )));
            }
            stamper.push(&chunk[..n], &mut out);
            writer.write(&out)?;
            out.clear();
        }
        stamper.finish(&mut out);
        writer.write(&out)?;
        writer.commit()?;
        let _ = fs::remove_file(path);
        let to: Vec<&str> = envelope.to.iter().map(|a| a.as_str()).collect();
        log::info!(
            "{id}: accepted uid={uid} (sendmail) from=<{}> to=<{}> size={size}",
            envelope.sender(),
            to.join(">,<"),
        );
        Ok(Some(id.to_string()))
    }
}

/// Removes what is not to be taken, saying why.
fn remove(path: &Path, why: &str) {
    let removed = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
    match removed {
        Ok(()) => log::warn!("removed {} from the drop directory: {why}", path.display()),
        Err(e) => log::debug!("cannot remove {} ({why}): {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::envelope::Envelope;
    use hedwig::smtp::address::Address;

    fn setup() -> (tempfile::TempDir, Pickup) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        crate::maildrop::prepare(spool.root(), None).unwrap();
        let pickup = Pickup {
            spool,
            hostname: "host.test".into(),
            max_message_size: 100,
            max_recipients: 2,
            max_header: 1000,
            uid: hedwig::privilege::uid(),
        };
        (dir, pickup)
    }

    fn put(p: &Pickup, id: &str, to: &[&str], body: &[u8]) {
        let envelope = Envelope {
            from: Some(Address::parse("a@b.test").unwrap()),
            to: to.iter().map(|a| Address::parse(a).unwrap()).collect(),
        };
        let dir = maildrop::dir(p.spool.root());
        let mut w = Spool::create_in(&dir, id, &envelope, maildrop::FILE_MODE).unwrap();
        w.write(body).unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn takes_stamps_and_removes_a_drop() {
        let (_dir, p) = setup();
        put(
            &p,
            "00000000000000000A",
            &["c@d.test"],
            b"Subject: x\r\n\r\nhi\r\n",
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(p.pass(now, true), ["00000000000000000A"]);
        let id = "00000000000000000A".parse().unwrap();
        let (head, body) = smol::block_on(p.spool.read(id)).unwrap();
        assert_eq!(head.envelope.to[0].as_str(), "c@d.test");
        let text = String::from_utf8(body).unwrap();
        let uid = hedwig::privilege::uid();
        assert!(
            text.starts_with(&format!(
                "Received: by host.test (hedwig mailman, from userid {uid})\r\n\tid 00000000000000000A; "
            )),
            "{text}"
        );
        assert!(text.contains("Subject: x\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <00000000000000000A@host.test>\r\n\r\nhi\r\n"), "{text}");
        assert_eq!(
            fs::read_dir(maildrop::dir(p.spool.root())).unwrap().count(),
            0
        );
        assert!(p.pass(now, true).is_empty());
    }

    #[test]
    fn bad_drops_are_removed_and_never_reach_the_spool() {
        let (_dir, p) = setup();
        let dir = maildrop::dir(p.spool.root());
        put(
            &p,
            "00000000000000000B",
            &["c@d.test", "e@f.test", "g@h.test"],
            b"x",
        );
        put(&p, "00000000000000000C", &["c@d.test"], &[b'x'; 101]);
        fs::write(dir.join("00000000000000000D"), b"not a spool file\n\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("00000000000000000E")).unwrap();
        fs::write(dir.join("stray"), b"").unwrap();
        fs::write(dir.join(".00000000000000000F.tmp"), b"being written").unwrap();
        let now = SystemTime::now();
        assert!(p.pass(now, true).is_empty());
        assert!(p.spool.list_blocking().unwrap().is_empty());
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            [".00000000000000000F.tmp"],
            "a fresh unfinished drop stays"
        );
        assert!(p
            .pass(now + STALE + Duration::from_secs(1), true)
            .is_empty());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn requeue_markers_announce_only_while_running() {
        let (_dir, p) = setup();
        let id = "00000000000000000A";
        p.spool
            .create_blocking(
                id,
                &Envelope {
                    from: None,
                    to: vec![Address::parse("c@d.test").unwrap()],
                },
                None,
            )
            .unwrap()
            .commit()
            .unwrap();
        maildrop::mark_requeued(p.spool.root(), id).unwrap();
        assert!(
            p.pass(SystemTime::now(), false).is_empty(),
            "at start: cleared only"
        );
        maildrop::mark_requeued(p.spool.root(), id).unwrap();
        assert_eq!(p.pass(SystemTime::now(), true), [id]);
        assert_eq!(
            fs::read_dir(maildrop::dir(p.spool.root())).unwrap().count(),
            0
        );
    }
}
