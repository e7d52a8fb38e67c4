//! `mailman sendmail` (also the binary called as `sendmail`): what cron and
//! scripts on the host call to send mail. It reads one message from stdin
//! (LF or CRLF), works out the envelope, and writes it into the drop
//! directory ([`crate::maildrop`]) with the spool's durable writer; it exits
//! 0 only once the file is fsync'd, renamed and its directory fsync'd. A
//! running mailman picks it up within 2 s; a stopped one at its next start.
//!
//! Exit codes are sendmail's (sysexits.h): 64 for a usage error or no
//! recipients, 65 for a message that cannot be sent as it is (bad address,
//! too big), 75 (EX_TEMPFAIL) when it cannot be queued now: configuration
//! unreadable, drop directory missing, disk full.

mod args;
mod header;

use std::ffi::OsString;
use std::io::{self, BufRead};
use std::process::ExitCode;
use std::time::SystemTime;

use hedwig::config::Mailman;
use hedwig::envelope::Envelope;
use hedwig::smtp::address::Address;
use hedwig::spool::Spool;

pub use args::Mode;
use header::Header;

/// sysexits.h: the command was used wrongly.
const EX_USAGE: u8 = 64;
/// sysexits.h: the input data was wrong.
const EX_DATAERR: u8 = 65;
/// sysexits.h: a temporary failure; try again later.
const EX_TEMPFAIL: u8 = 75;

/// A failure and the exit code it gets.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// One line for stderr.
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Runs `sendmail` with `args` (after the program name); `mode` is what
/// the name it was called by implies (`mailq` lists).
pub fn main(args: Vec<OsString>, mode: Mode) -> ExitCode {
    let options = match args::parse(args, mode) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let path = hedwig::cli::config_path(options.config.clone());
    let config = match hedwig::config::load(&path).and_then(|c| c.into_mailman(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    if options.mode == Mode::List {
        return crate::queue::list(&config, false);
    }
    let stdin = io::stdin().lock();
    let uid = hedwig::privilege::uid();
    match submit(&config, &options, stdin, uid, SystemTime::now()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sendmail: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Reads one message from `input` and drops it durably; returns its id.
pub fn submit(
    config: &Mailman,
    options: &args::Options,
    input: impl BufRead,
    uid: u32,
    now: SystemTime,
) -> Result<String, Failure> {
    let hostname = config.resolved_hostname();
    let max = config.max_message_size;
    let mut lines = Lines {
        input: io::Read::take(input, max.saturating_add(1)),
        dot_ends: options.dot_ends,
        line: Vec::new(),
    };
    let read_error = |e: io::Error| fail(EX_TEMPFAIL, format!("reading the message: {e}"));
    // The header section first: -t needs it before the envelope is written.
    let mut header = Header::default();
    let mut first_body_line = None;
    while let Some(line) = lines.next().map_err(read_error)? {
        if !header.push(line) {
            first_body_line = Some(line.to_vec());
            break;
        }
        if header.size() > config.max_header_size {
            return Err(fail(
                EX_DATAERR,
                format!(
                    "header section larger than max_header_size ({} bytes)",
                    config.max_header_size
                ),
            ));
        }
    }
    let envelope = envelope(config, options, &header, &hostname, uid)?;
    header.remove("Bcc");
    if !header.has("From") {
        if let Some(from) = &envelope.from {
            header.append(from_field(options.full_name.as_deref(), from));
        }
    }

    let drop = crate::maildrop::dir(&config.spool);
    if !drop.is_dir() {
        return Err(fail(
            EX_TEMPFAIL,
            format!(
                "no drop directory {}: start mailman once, or run scripts/install",
                drop.display()
            ),
        ));
    }
    let id = hedwig::id::new(now);
    let cannot = |e: io::Error| {
        fail(
            EX_TEMPFAIL,
            format!("cannot queue in {}: {e}", drop.display()),
        )
    };
    let mut writer =
        Spool::create_in(&drop, &id, &envelope, crate::maildrop::FILE_MODE).map_err(cannot)?;
    let mut size = header.size() as u64;
    writer.write(&header.bytes()).map_err(cannot)?;
    // A blank line ended the header section, or the first body line did.
    let mut pending = first_body_line;
    loop {
        let line = match pending.take() {
            Some(line) => line,
            None => match lines.next().map_err(read_error)? {
                Some(line) => line.to_vec(),
                None => break,
            },
        };
        let mut out = hedwig::message::normalize_newlines(&line);
        out.extend_from_slice(b"\r\n");
        size += out.len() as u64;
        if size > max {
            return Err(fail(
                EX_DATAERR,
                format!("message larger than max_message_size ({max} bytes)"),
            ));
        }
        writer.write(&out).map_err(cannot)?;
    }
    writer.commit().map_err(cannot)?;
    Ok(id)
}

/// The message's lines without their line ends, up to EOF or, unless `-i`,
/// a line holding only a dot.
struct Lines<R> {
    input: R,
    dot_ends: bool,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn next(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        if self.input.read_until(b'\n', &mut self.line)? == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        if self.dot_ends && self.line == b"." {
            return Ok(None);
        }
        Ok(Some(&self.line))
    }
}

/// Sender and recipients: `-f` (else the caller's login at `hostname`),
/// the arguments, and with `-t` To, Cc and Bcc; addresses without a domain
/// get `@hostname`, as Postfix's myorigin.
fn envelope(
    config: &Mailman,
    options: &args::Options,
    header: &Header,
    hostname: &str,
    uid: u32,
) -> Result<Envelope, Failure> {
    let qualify = |a: &str| -> Result<Address, Failure> {
        let a = a.trim().trim_start_matches('<').trim_end_matches('>');
        let full = if a.contains('@') || a.eq_ignore_ascii_case("postmaster") {
            a.to_string()
        } else {
            format!("{a}@{hostname}")
        };
        Address::parse(&full).map_err(|e| fail(EX_DATAERR, format!("{e}: {a:?}")))
    };
    let from = match options.from.as_deref().map(str::trim) {
        Some("" | "<>") => None,
        Some(a) => Some(qualify(a)?),
        None => {
            let login = hedwig::privilege::user_name(uid).unwrap_or_else(|| format!("uid{uid}"));
            Some(qualify(&login)?)
        }
    };
    let mut given: Vec<String> = options
        .recipients
        .iter()
        .flat_map(|r| header::addresses(r))
        .collect();
    if options.extract {
        for name in ["To", "Cc", "Bcc"] {
            for value in header.values(name) {
                given.extend(header::addresses(&value));
            }
        }
    }
    let mut to: Vec<Address> = Vec::new();
    for a in given {
        let a = qualify(&a)?;
        if !to.contains(&a) {
            to.push(a);
        }
    }
    if to.is_empty() {
        let hint = if options.extract {
            "in To, Cc or Bcc"
        } else {
            "given (name them, or use -t)"
        };
        return Err(fail(EX_USAGE, format!("no recipients {hint}")));
    }
    if to.len() > config.max_recipients {
        return Err(fail(
            EX_DATAERR,
            format!(
                "{} recipients, more than max_recipients ({})",
                to.len(),
                config.max_recipients
            ),
        ));
    }
    Ok(Envelope { from, to })
}

/// `From: Full Name <addr>`, encoded as RFC 2047 asks when the name needs it.
fn from_field(name: Option<&str>, from: &Address) -> Vec<u8> {
    use mail_builder::headers::{address::Address as MailAddress, Header as _};
    let address = MailAddress::new_address(name.map(str::to_string), from.as_str().to_string());
    let mut field = b"From: ".to_vec();
    address.write_header(&mut field, 6);
    if !field.ends_with(b"\r\n") {
        field.extend_from_slice(b"\r\n");
    }
    field
}

#[cfg(test)]
mod tests;
