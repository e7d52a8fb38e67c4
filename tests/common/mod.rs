//! Harness for hedwig's end-to-end tests: real processes, real peers, loopback only.
//!
//! Every test gets its own [`TestDir`] (a temp dir and a 127.0.0.x address of its
//! own), starts a fake postoffice ([`postoffice::Postoffice`], a tiny_http server
//! that records every hand-off) and a real `mailman` process
//! ([`mailman::Mailman`]), and talks to mailman with a raw SMTP client
//! ([`smtp::Smtp`]) or the clients deployments use (msmtp, swaks: [`clients`]).
//!
//! # Layout
//! - `mod.rs`: per-test directory and address, polling, spool inspection.
//! - `mailman.rs`: the config file and the mailman process (start, kill, restart).
//! - `postoffice.rs`: the recording HTTP endpoint that plays postoffice.
//! - `smtp.rs`: a raw SMTP client with exact reply parsing.
//! - `message.rs`: building test messages and checking what arrived.
//! - `clients.rs`: running msmtp and swaks.
//! - `raw.rs`: HTTP over a raw socket, answers parsed.
//! - `docker.rs`: a docker engine of the test's own in a network namespace.
//! - `host.rs`: commands run as cron runs them, other users, /proc, Python's email parser.
//! - `strace.rs`: the order of system calls, for what kill -9 cannot show.
//!
//! Nothing here is allowed to hang: every socket has a timeout and every wait a bound.
//! When a test panics, the mailman stderr log and the endpoint's record are printed
//! and the temp dir is kept for inspection.
#![allow(dead_code)]

pub mod clients;
pub mod dkim;
pub mod docker;
pub mod faults;
pub mod host;
pub mod mailman;
pub mod message;
pub mod postfix;
pub mod postoffice;
pub mod raw;
pub mod smtp;
pub mod stack;
pub mod strace;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh temp dir and a loopback address of its own for one test.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// The 127.0.0.x address mailman and the endpoint of this test bind to.
    pub ip: Ipv4Addr,
}

impl TestDir {
    /// Creates the temp dir and picks a 127.0.0.x address no other test of this
    /// process uses (distinct across processes too, most of the time; ports are
    /// picked free anyway).
    pub fn new() -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        clock(Instant::now()); // start the clock

        // 127.0.0.1 stays the client side of every connection; use .2 to .251.
        let x = 2 + ((std::process::id().wrapping_mul(37).wrapping_add(n)) % 250) as u8;
        let dir = tempfile::Builder::new()
            .prefix("hedwig-test-")
            .tempdir()
            .expect("create temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
            ip: Ipv4Addr::new(127, 0, 0, x),
        }
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets other users reach the test's files (the temp dir is 0700), for
    /// a test that runs something as an unprivileged user.
    pub fn open_up(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the test dir");
    }

    /// A free port on this test's address (bind :0, read it, release it).
    pub fn free_addr(&self) -> SocketAddr {
        let listener = TcpListener::bind((self.ip, 0)).expect("bind :0 to find a free port");
        listener.local_addr().expect("local addr")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the evidence: config, spool and logs stay where they are.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("--- test failed; its files are kept in {}", kept.display());
            }
        }
    }
}

/// `t` as seconds since this test process first asked, e.g. `+1.234s`: lines up
/// the endpoint's record with the test's own steps.
pub fn clock(t: Instant) -> String {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    format!("+{:.3}s", t.saturating_duration_since(epoch).as_secs_f64())
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every message file in `spool`: under `queue/` and `tmp/` (not
/// `failed/`, nor `free/`, where removed files wait to be written over).
pub fn spool_files(spool: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["queue", "tmp"] {
        walk(&spool.join(dir), Path::new("/nonexistent"), &mut out);
    }
    out.sort();
    out
}

/// Every regular file under `spool/failed/`.
pub fn failed_files(spool: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&spool.join("failed"), Path::new("/nonexistent"), &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, skip, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Every delivery record postoffice has written under its `queue`
/// directory, as JSON: the saved records of queued messages
/// (`state/ID.json`) and the finished ones (`done/DAY/HHMM.jsonl`, the last
/// line of each id, tombstones applied). A torn last line is skipped.
pub fn queue_records(queue: &Path) -> Vec<serde_json::Value> {
    let mut by_id: std::collections::BTreeMap<String, Option<serde_json::Value>> =
        Default::default();
    let mut files = Vec::new();
    walk(&queue.join("done"), Path::new("/nonexistent"), &mut files);
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(id) = v["deleted"].as_str() {
                by_id.insert(id.to_string(), None);
            } else if let Some(id) = v["id"].as_str() {
                by_id.insert(id.to_string(), Some(v.clone()));
            }
        }
    }
    for entry in std::fs::read_dir(queue.join("state"))
        .into_iter()
        .flatten()
        .flatten()
    {
        // A .json.tmp not yet renamed is not recorded: a restart discards it.
        if entry.path().extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let id = v["id"].as_str().unwrap_or_default().to_string();
            by_id.entry(id).or_insert(Some(v));
        }
    }
    by_id.into_values().flatten().collect()
}

/// Whether any file in `files` contains `needle`.
pub fn any_file_contains(files: &[PathBuf], needle: &[u8]) -> bool {
    files.iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

/// A seeded RNG; the seed comes from HEDWIG_TEST_SEED or is random, and is printed
/// so a failing run can be repeated.
pub fn rng(test: &str) -> fastrand::Rng {
    let seed = std::env::var("HEDWIG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: HEDWIG_TEST_SEED={seed}");
    fastrand::Rng::with_seed(seed)
}

/// Runs `cmd` with `input` on its standard input; its output.
pub fn run_with_input(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    // A program that exits without reading all of it is judged by its output.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("wait")
}
