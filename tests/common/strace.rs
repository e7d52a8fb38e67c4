//! What kill -9 cannot show: that the data is synced, the file renamed and
//! its directory synced *before* the 250 or 202 is written. The page cache
//! survives a kill; only the order of the system calls tells a missing fsync.
//! This runs a binary under `strace -f -y` and reads which call finished
//! before which began.
//!
//! To check another path (a new way into a spool), start its process with
//! [`traced`], find its acknowledgement with a function like [`smtp_ack`] or
//! [`http_ack`], and call [`durable_before_ack`] for each message id.

use std::path::Path;
use std::process::Command;

use super::stack::Proc;

/// The system calls the check needs.
const CALLS: &str = "trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg";

/// `binary` started under strace, its trace going to `trace`.
pub fn traced(dir: &Path, name: &str, trace: &Path, binary: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-s", "1024", "-e", CALLS, "-o"])
        .arg(trace)
        .arg("--")
        .arg(binary)
        .args(args);
    Proc::spawn(dir, name, &mut cmd)
}

/// One system call: its name, its text (arguments and result), and the
/// positions of the trace lines where it began and where it ended.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// Reads a `strace -f` trace, joining `<unfinished ...>` with its `resumed` line.
pub fn parse(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: std::collections::HashMap<String, Call> = Default::default();
    for (n, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(mut call) = pending.remove(pid) {
                call.text
                    .push_str(resumed.split_once("resumed>").map_or("", |(_, r)| r));
                call.end = n;
                calls.push(call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let call = Call {
            name: name.to_string(),
            text: args.to_string(),
            start: n,
            end: n,
        };
        if let Some(head) = args.strip_suffix(" <unfinished ...>") {
            pending.insert(
                pid.to_string(),
                Call {
                    text: head.to_string(),
                    ..call
                },
            );
        } else {
            calls.push(call);
        }
    }
    calls.sort_by_key(|c| c.start);
    calls
}

fn is_sync(c: &Call) -> bool {
    c.name == "fsync" || c.name == "fdatasync"
}

fn is_write(c: &Call) -> bool {
    matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg")
}

/// The fd annotation of a call's first argument: `12<socket:[699264]>` -> `socket:[699264]`.
fn fd_target(c: &Call) -> &str {
    c.text
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or("", |(t, _)| t)
}

/// Where the 250 for message `id` began to be written (SMTP).
pub fn smtp_ack(calls: &[Call], id: &str) -> Option<usize> {
    let needle = format!("queued as {id}");
    calls
        .iter()
        .find(|c| is_write(c) && c.text.contains(&needle))
        .map(|c| c.start)
}

/// Where the status line of the 202 whose body names `id` began to be
/// written (HTTP): the last `HTTP/1.1 ` write on the same socket before it.
pub fn http_ack(calls: &[Call], id: &str) -> Option<usize> {
    let needle = format!("\\\"id\\\":\\\"{id}\\\"");
    let body = calls
        .iter()
        .find(|c| is_write(c) && c.text.contains(&needle))?;
    let socket = fd_target(body);
    calls
        .iter()
        .filter(|c| is_write(c) && c.start <= body.start && fd_target(c) == socket)
        .filter(|c| c.text.contains("\"HTTP/1.1 "))
        .map(|c| c.start)
        .next_back()
        .or(Some(body.start))
}

/// What the order of one message's calls was.
#[derive(Debug)]
pub struct Durable {
    /// The line where the directory sync that covered its rename ended.
    pub dir_synced: usize,
}

/// Checks that message `id`, placed as `spool/queue/ID` by a rename (from
/// `tmp/ID`, or from a file reused from `free/`), had its data synced under
/// the name it was written at before that rename began, and that the
/// directory sync that followed the rename ended before `ack` (the line where
/// the acknowledgement began).
pub fn durable_before_ack(
    calls: &[Call],
    spool: &Path,
    id: &str,
    ack: usize,
) -> Result<Durable, String> {
    let placed = spool.join("queue").join(id).display().to_string();
    let queue_dir = spool.join("queue").display().to_string();
    let renamed = calls
        .iter()
        .find(|c| c.name.starts_with("rename") && c.text.contains(&format!(", \"{placed}\"")))
        .ok_or_else(|| format!("{id}: never renamed into place"))?;
    let written_at = renamed
        .text
        .split('"')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    calls
        .iter()
        .rfind(|c| is_sync(c) && fd_target(c) == written_at && c.end < renamed.start)
        .ok_or_else(|| format!("{id}: its data ({written_at}) was not synced before the rename"))?;
    let dir_synced = calls
        .iter()
        .find(|c| is_sync(c) && fd_target(c) == queue_dir && c.start > renamed.end)
        .ok_or_else(|| format!("{id}: the directory was not synced after the rename"))?;
    if ack <= dir_synced.end {
        return Err(format!(
            "{id}: acknowledged (line {ack}) before the directory sync ended (line {})",
            dir_synced.end
        ));
    }
    Ok(Durable {
        dir_synced: dir_synced.end,
    })
}
