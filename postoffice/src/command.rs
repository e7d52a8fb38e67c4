//! `postoffice queue`: the operator's view of a running postoffice, through
//! its HTTP API (address and token from hedwig.ron), like Postfix's `mailq`,
//! `postqueue -f` and `postsuper -d`.
//!
//! ```text
//! postoffice queue [--config PATH] [--json] [--all]   list messages not finished (--all: also those kept for status)
//! postoffice queue show [--config PATH] [--json] ID   one message, every recipient and its attempts
//! postoffice queue flush [--config PATH] [ID]         retry deferred recipients now
//! postoffice queue delete [--config PATH] ID...       forget messages
//! ```
//!
//! Exit 0 when all went well, 1 when a message does not exist, 2 for a
//! configuration or connection error, each with one line on stderr.

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use serde_json::Value;

use crate::api::client::Client;

const USAGE: &str = "usage: postoffice queue [--config PATH] [--json] [--all]
       postoffice queue show [--config PATH] [--json] ID
       postoffice queue flush [--config PATH] [ID]
       postoffice queue delete [--config PATH] ID...";

/// Messages asked for per request while listing.
const PAGE: usize = 1000;

/// A failure and its exit code.
struct Failure(u8, String);

fn connection(e: String) -> Failure {
    Failure(2, e)
}

/// Runs `postoffice queue ARGS`.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let action = match args.first().map(String::as_str) {
        Some(a @ ("show" | "flush" | "delete")) => {
            let a = a.to_string();
            args.remove(0);
            a
        }
        _ => "list".to_string(),
    };
    let (mut config, mut json, mut all, mut ids) = (None, false, false, Vec::new());
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" | "-c" => match it.next() {
                Some(p) => config = Some(p.into()),
                None => return usage("option '--config' needs a path"),
            },
            _ if arg.starts_with("--config=") => config = Some(arg["--config=".len()..].into()),
            "--json" if matches!(action.as_str(), "list" | "show") => json = true,
            "--all" if action == "list" => all = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with('-') => return usage(&format!("unknown option '{arg}'")),
            _ if action != "list" => ids.push(arg),
            _ => return usage(&format!("unexpected argument '{arg}'")),
        }
    }
    let wrong = match action.as_str() {
        "show" => ids.len() != 1,
        "flush" => ids.len() > 1,
        "delete" => ids.is_empty(),
        _ => false,
    };
    if wrong {
        return usage(&format!("wrong number of message ids for '{action}'"));
    }
    let result = client(config).and_then(|client| match action.as_str() {
        "show" => show(&client, &ids[0], json),
        "flush" => flush(&client, ids.first()),
        "delete" => delete(&client, &ids),
        _ => list(&client, json, all),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("postoffice queue: {message}");
            ExitCode::from(code)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("postoffice queue: {problem} (see --help)");
    ExitCode::from(2)
}

/// The API client the configuration describes: postoffice's listen address
/// (a wildcard one reached on loopback) and its first token.
fn client(config: Option<std::path::PathBuf>) -> Result<Client, Failure> {
    let path = hedwig::cli::config_path(config);
    let config = hedwig::config::load(&path)
        .and_then(|c| c.into_postoffice(&path))
        .map_err(|e| Failure(2, e.to_string()))?;
    let token = config
        .read_tokens()
        .map_err(|e| Failure(2, format!("tokens: {e}")))?
        .remove(0);
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr = SocketAddr::new(ip, addr.port());
    }
    Client::new(addr, config.tls.as_ref().map(|t| t.cert.as_path()), token).map_err(connection)
}

/// Sends a request; a status that is not 2xx becomes the failure it means.
fn call(client: &Client, method: &str, path: &str) -> Result<Value, Failure> {
    let (status, body) = client.request(method, path).map_err(connection)?;
    let why = body["error"].as_str().unwrap_or("").to_string();
    match status {
        200..=299 => Ok(body),
        404 => Err(Failure(1, why)),
        401 => Err(Failure(
            2,
            format!("{}: the token was refused ({why})", client.url()),
        )),
        _ => Err(Failure(2, format!("{}: HTTP {status} {why}", client.url()))),
    }
}

fn write_failure(e: io::Error) -> Failure {
    Failure(2, format!("writing the listing: {e}"))
}

fn list(client: &Client, json: bool, all: bool) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let mut offset = 0;
    let (mut shown, mut bytes, mut recipients) = (0u64, 0u64, 0u64);
    if json {
        write!(out, "{{\"messages\":[").map_err(write_failure)?;
    }
    loop {
        let page = call(
            client,
            "GET",
            &format!("v1/queue?offset={offset}&limit={PAGE}"),
        )?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in items.iter().filter(|m| all || !finished(m)) {
            let written = if json {
                write!(out, "{}{item}", if shown == 0 { "" } else { "," })
            } else {
                if shown == 0 {
                    writeln!(
                        out,
                        "{:<20} {:>9} {:<20} Sender/Recipients",
                        "Queue ID", "Size", "Arrival"
                    )
                    .map_err(write_failure)?;
                }
                write_message(&mut out, item)
            };
            written.map_err(write_failure)?;
            shown += 1;
            bytes += item["size"].as_u64().unwrap_or(0);
            recipients += item["recipients"].as_array().map_or(0, |r| r.len() as u64);
        }
        offset += items.len();
        if items.is_empty() || offset as u64 >= page["total"].as_u64().unwrap_or(0) {
            break;
        }
    }
    let end = if json {
        writeln!(out, "]}}")
    } else if shown == 0 {
        writeln!(out, "Mail queue is empty")
    } else {
        writeln!(
            out,
            "-- {} KiB in {shown} messages to {recipients} recipients",
            bytes.div_ceil(1024)
        )
    };
    end.map_err(write_failure)
}

fn finished(message: &Value) -> bool {
    let states = message["recipients"].as_array().into_iter().flatten();
    states
        .map(|r| r["state"].as_str())
        .all(|s| matches!(s, Some("delivered" | "bounced")))
}

/// One message in the listing: a line for the message, one per recipient
/// with its state and attempts, the last error below it.
fn write_message(out: &mut impl Write, m: &Value) -> io::Result<()> {
    let from = m["from"].as_str().filter(|f| !f.is_empty()).unwrap_or("<>");
    let (id, arrival) = (text(&m["id"]), text(&m["received_at"]));
    let size = m["size"].as_u64().unwrap_or(0);
    writeln!(out, "{id:<20} {size:>9} {arrival:<20} {from}")?;
    for r in m["recipients"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<10} {:>3} attempts{:<29} {}",
            text(&r["state"]),
            r["attempts"].as_u64().unwrap_or(0),
            r["next_attempt"]
                .as_str()
                .map_or(String::new(), |t| format!(", next {t}")),
            text(&r["address"])
        )?;
        // The remote's own words say more than our summary of them.
        if let Some(error) = r["last_error"].as_str() {
            let why = r["reply"].as_str().unwrap_or(error);
            writeln!(out, "{:52}({why})", "")?;
        }
    }
    Ok(())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn show(client: &Client, id: &str, json: bool) -> Result<(), Failure> {
    let m = call(client, "GET", &format!("v1/messages/{id}"))?;
    let mut out = io::stdout().lock();
    let written = if json {
        writeln!(out, "{m}")
    } else {
        write_details(&mut out, &m)
    };
    written.map_err(write_failure)
}

fn write_details(out: &mut impl Write, m: &Value) -> io::Result<()> {
    let from = m["from"].as_str().filter(|f| !f.is_empty()).unwrap_or("<>");
    writeln!(out, "id:       {}", text(&m["id"]))?;
    writeln!(out, "from:     {from}")?;
    writeln!(out, "size:     {} bytes", m["size"])?;
    writeln!(out, "received: {}", text(&m["received_at"]))?;
    for r in m["recipients"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "\nto {}: {}, {} attempts",
            text(&r["address"]),
            text(&r["state"]),
            r["attempts"]
        )?;
        for (label, key) in [
            ("next attempt", "next_attempt"),
            ("relay", "relay"),
            ("reply", "reply"),
            ("last error", "last_error"),
        ] {
            if let Some(v) = r[key].as_str() {
                writeln!(out, "  {label:<13} {v}")?;
            }
        }
        for a in r["history"].as_array().into_iter().flatten() {
            let relay = a["relay"].as_str().unwrap_or("-");
            writeln!(
                out,
                "  {} {:<9} {relay} {}",
                text(&a["at"]),
                text(&a["state"]),
                text(&a["text"])
            )?;
        }
    }
    Ok(())
}

fn flush(client: &Client, id: Option<&String>) -> Result<(), Failure> {
    match id {
        Some(id) => {
            call(client, "POST", &format!("v1/messages/{id}/flush"))?;
            println!("{id}: flushed");
        }
        None => {
            let v = call(client, "POST", "v1/queue/flush")?;
            println!("flushed {} messages", v["flushed"]);
        }
    }
    Ok(())
}

fn delete(client: &Client, ids: &[String]) -> Result<(), Failure> {
    let mut missing = Vec::new();
    for id in ids {
        match call(client, "DELETE", &format!("v1/messages/{id}")) {
            Ok(_) => println!("{id}: deleted"),
            Err(Failure(1, _)) => missing.push(id.as_str()),
            Err(other) => return Err(other),
        }
    }
    match missing.as_slice() {
        [] => Ok(()),
        ids => Err(Failure(1, format!("no message {}", ids.join(", ")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listing_lines() {
        let m = json!({"id": "ID1", "from": "", "size": 1234, "received_at": "2025-07-01T10:00:00Z",
            "recipients": [
                {"address": "a@b.org", "state": "deferred", "attempts": 2, "next_attempt": "2025-07-01T10:15:00Z", "last_error": "450 4.2.0 busy"},
                {"address": "c@d.org", "state": "delivered", "attempts": 1, "next_attempt": null, "last_error": null}]});
        let mut out = Vec::new();
        write_message(&mut out, &m).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID1                       1234 2025-07-01T10:00:00Z <>"
        );
        assert!(
            lines[1].starts_with("  deferred     2 attempts, next 2025-07-01T10:15:00Z"),
            "{text}"
        );
        assert!(lines[1].ends_with(" a@b.org"), "{text}");
        assert!(lines[2].ends_with("(450 4.2.0 busy)"), "{text}");
        assert!(
            lines[3].contains("delivered") && lines[3].ends_with(" c@d.org"),
            "{text}"
        );
        assert!(!finished(&m));
        assert!(finished(&json!({"recipients": [{"state": "bounced"}]})));
    }
}
