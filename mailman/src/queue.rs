//! `mailman queue`: the spool as an operator sees it, read from the disk
//! beside the running daemon (nothing is created or cleared), and
//! `mailman queue requeue`, which puts failed messages back.
//!
//! ```text
//! mailman queue [--config PATH] [--json]
//! mailman queue requeue [--config PATH] ID... | --failed
//! ```
//!
//! Exit 0 when all went well, 1 when a named message is not in `failed/`,
//! 2 for a configuration or spool that cannot be read, each with one line
//! on stderr.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use hedwig::config::Mailman;
use hedwig::spool::{read_head, Head, Spool};
use serde_json::json;

use crate::maildrop;

const USAGE: &str = "usage: mailman queue [--config PATH] [--json]
       mailman queue requeue [--config PATH] ID... | --failed";

/// Where a message stands in mailman's spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Dropped by sendmail, not yet picked up.
    Incoming,
    /// In `queue/`, waiting for (or in) its hand-off.
    Waiting,
    /// In `failed/`: postoffice refused it for good.
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Incoming => "incoming",
            State::Waiting => "waiting",
            State::Failed => "failed",
        }
    }
}

/// Runs `mailman queue ARGS`.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let requeue = args.first().is_some_and(|a| a == "requeue");
    if requeue {
        args.remove(0);
    }
    let (mut config, mut json, mut failed, mut ids) = (None, false, false, Vec::new());
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" | "-c" => match it.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return usage("option '--config' needs a path"),
            },
            _ if arg.starts_with("--config=") => config = Some(arg["--config=".len()..].into()),
            "--json" if !requeue => json = true,
            "--failed" if requeue => failed = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with('-') => return usage(&format!("unknown option '{arg}'")),
            _ if requeue => ids.push(arg),
            _ => return usage(&format!("unexpected argument '{arg}'")),
        }
    }
    let path = hedwig::cli::config_path(config);
    let config = match hedwig::config::load(&path).and_then(|c| c.into_mailman(&path)) {
        Ok(c) => c,
        Err(e) => return error(&e.to_string()),
    };
    if !requeue {
        return list(&config, json);
    }
    if failed != ids.is_empty() {
        return usage("name the messages to requeue, or give --failed");
    }
    requeue_ids(&config, ids, failed)
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("mailman queue: {problem} (see --help)");
    ExitCode::from(2)
}

fn error(problem: &str) -> ExitCode {
    eprintln!("mailman queue: {problem}");
    ExitCode::from(2)
}

/// Lists the spool: incoming, waiting, failed, each oldest first, as text
/// like `mailq`'s or as one JSON document; streamed, whatever its length.
pub fn list(config: &Mailman, json: bool) -> ExitCode {
    let spool = Spool::at(&config.spool);
    let drop = maildrop::dir(&config.spool);
    let mut incoming = Vec::new();
    let listed = fs::read_dir(&drop).map(|entries| {
        for entry in entries.flatten() {
            if let Some(maildrop::Entry::Drop(id)) = entry.file_name().to_str().map(maildrop::entry)
            {
                incoming.push(id.to_string());
            }
        }
        incoming.sort();
    });
    let sets = listed.and_then(|()| {
        Ok([
            (State::Incoming, incoming),
            (State::Waiting, spool.list_blocking()?),
            (State::Failed, spool.list_failed()?),
        ])
    });
    let sets = match sets {
        Ok(s) => s,
        Err(e) => {
            return error(&format!(
                "cannot read the spool {}: {e} (run as root or as mailman's user)",
                config.spool.display()
            ))
        }
    };
    let mut out = io::stdout().lock();
    let result = if json {
        write_json(&mut out, &spool, &sets)
    } else {
        write_text(&mut out, &spool, &sets)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) ends the listing; nothing to report.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => error(&e.to_string()),
    }
}

/// One message's file: its head and message size, `None` if it vanished
/// (handed off while being listed).
fn describe(spool: &Spool, state: State, id: &str) -> Option<io::Result<(Head, u64)>> {
    let path = match state {
        State::Incoming => maildrop::dir(spool.root()).join(id),
        State::Waiting | State::Failed => spool.path(id, state == State::Failed),
    };
    let file = match hedwig::privilege::open_untrusted(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        other => other,
    };
    Some(file.and_then(|f| {
        let len = f.metadata()?.size();
        let (head, offset) = read_head(BufReader::new(f))?;
        Ok((head, len.saturating_sub(offset)))
    }))
}

fn arrival(id: &str) -> String {
    hedwig::id::time(id).map_or_else(String::new, |t| {
        humantime::format_rfc3339_seconds(t).to_string()
    })
}

type Sets = [(State, Vec<String>); 3];

fn write_text(out: &mut impl Write, spool: &Spool, sets: &Sets) -> io::Result<()> {
    let total: usize = sets.iter().map(|(_, ids)| ids.len()).sum();
    if total == 0 {
        return writeln!(out, "Mail queue is empty");
    }
    writeln!(
        out,
        "{:<20} {:>9} {:<20} {:<8} Sender/Recipients",
        "Queue ID", "Size", "Arrival", "State"
    )?;
    let mut bytes = 0;
    for (state, ids) in sets {
        for id in ids {
            let Some(found) = describe(spool, *state, id) else {
                continue;
            };
            match found {
                Ok((head, size)) => {
                    bytes += size;
                    let from = head.envelope.sender();
                    let from = if from.is_empty() { "<>" } else { from };
                    writeln!(
                        out,
                        "{id:<20} {size:>9} {:<20} {:<8} {from}",
                        arrival(id),
                        state.name()
                    )?;
                    for to in &head.envelope.to {
                        writeln!(out, "{:61}{to}", "")?;
                    }
                }
                Err(e) => writeln!(
                    out,
                    "{id:<20} {:>9} {:<20} {:<8} (unreadable: {e})",
                    "?",
                    arrival(id),
                    state.name()
                )?,
            }
        }
    }
    let counts: Vec<String> = sets
        .iter()
        .map(|(s, ids)| format!("{} {}", ids.len(), s.name()))
        .collect();
    writeln!(
        out,
        "-- {} KiB in {total} messages ({})",
        bytes.div_ceil(1024),
        counts.join(", ")
    )
}

fn write_json(out: &mut impl Write, spool: &Spool, sets: &Sets) -> io::Result<()> {
    write!(out, "{{\"spool\":{},\"messages\":[", json!(spool.root()))?;
    let mut first = true;
    for (state, ids) in sets {
        for id in ids {
            let Some(found) = describe(spool, *state, id) else {
                continue;
            };
            let item = match found {
                Ok((head, size)) => json!({
                    "id": id,
                    "state": state.name(),
                    "size": size,
                    "arrival": arrival(id),
                    "from": head.envelope.sender(),
                    "to": head.envelope.to.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"id": id, "state": state.name(), "error": e.to_string()}),
            };
            write!(out, "{}{item}", if first { "" } else { "," })?;
            first = false;
        }
    }
    writeln!(out, "]}}")
}

/// Puts `ids` (or every failed message) back into `queue/` and leaves a
/// marker, so a running mailman hands them off within 2 s.
fn requeue_ids(config: &Mailman, ids: Vec<String>, all: bool) -> ExitCode {
    let spool = Spool::at(&config.spool);
    let ids = if all {
        match spool.list_failed() {
            Ok(ids) => ids,
            Err(e) => {
                return error(&format!(
                    "cannot read {}: {e}",
                    spool.path("", true).display()
                ))
            }
        }
    } else {
        ids
    };
    let mut missing = false;
    for id in ids {
        if !hedwig::id::is_valid(&id) || !spool.path(&id, true).is_file() {
            eprintln!("mailman queue: no failed message {id}");
            missing = true;
            continue;
        }
        let result = spool
            .requeue(&id)
            .and_then(|()| maildrop::mark_requeued(spool.root(), &id));
        match result {
            Ok(()) => println!("{id}: requeued"),
            Err(e) => return error(&format!("{id}: cannot requeue: {e}")),
        }
    }
    if missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig::envelope::Envelope;
    use hedwig::smtp::address::Address;
    use std::path::Path;

    fn spool_with(dir: &Path) -> Spool {
        let spool = Spool::open(&dir.join("spool")).unwrap();
        maildrop::prepare(spool.root(), None).unwrap();
        let envelope = Envelope {
            from: None,
            to: vec![Address::parse("a@b.test").unwrap()],
        };
        let id = "18A0B0C0D0E0F0123";
        let mut w = spool
            .create_blocking(&format!("{id}1"), &envelope, None)
            .unwrap();
        w.write(b"0123456789").unwrap();
        w.commit().unwrap();
        spool
            .create_blocking(&format!("{id}2"), &envelope, None)
            .unwrap()
            .commit()
            .unwrap();
        let failed = format!("{id}2");
        std::fs::rename(spool.path(&failed, false), spool.path(&failed, true)).unwrap();
        let drop = maildrop::dir(spool.root());
        Spool::create_in(&drop, &format!("{id}3"), &envelope, 0o640)
            .unwrap()
            .commit()
            .unwrap();
        spool
    }

    #[test]
    fn lists_every_state_as_text_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path());
        let sets: Sets = [
            (State::Incoming, vec!["18A0B0C0D0E0F01233".into()]),
            (State::Waiting, spool.list_blocking().unwrap()),
            (State::Failed, spool.list_failed().unwrap()),
        ];
        let mut text = Vec::new();
        write_text(&mut text, &spool, &sets).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("18A0B0C0D0E0F01231          10 "), "{text}");
        assert!(text.contains(" waiting  <>\n"), "{text}");
        assert!(
            text.ends_with("-- 1 KiB in 3 messages (1 incoming, 1 waiting, 1 failed)\n"),
            "{text}"
        );
        let mut out = Vec::new();
        write_json(&mut out, &spool, &sets).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let states: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["incoming", "waiting", "failed"]);
        assert_eq!(v["messages"][1]["size"], 10);
        assert_eq!(v["messages"][1]["to"][0], "a@b.test");
        assert!(v["messages"][0]["arrival"].as_str().unwrap().ends_with('Z'));
    }
}
