//! `sendmail`'s command line, parsed the way getopt parses Postfix's:
//! single-letter options may be grouped (`-ti`), an option's value may be
//! attached (`-fme@x`, `-oi`, `-bp`) or the next argument (`-f me@x`), and
//! `--` ends the options. Options scripts pass that mean nothing here
//! (`-oem`, `-odi`, `-v`, `-bm`, `-B8BITMIME`, ...) are accepted and ignored.

use std::ffi::OsString;
use std::path::PathBuf;

/// What `sendmail` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read a message from stdin and queue it (`-bm`, the default).
    Deliver,
    /// List the queue (`-bp`, or the program called as `mailq`).
    List,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// `-t`: recipients from the To, Cc and Bcc fields too.
    pub extract: bool,
    /// Without `-i` or `-oi`, a line holding only `.` ends the message.
    pub dot_ends: bool,
    /// `-f ADDR` or `-r ADDR`: the envelope sender.
    pub from: Option<String>,
    /// `-F NAME`: the full name for a From: field that is missing.
    pub full_name: Option<String>,
    /// Recipient arguments, as given (each may hold a list).
    pub recipients: Vec<String>,
    /// Deliver or list.
    pub mode: Mode,
}

/// Letters that take a value, and what is done with it.
fn takes_value(letter: char) -> bool {
    matches!(
        letter,
        'f' | 'r' | 'F' | 'o' | 'b' | 'B' | 'N' | 'R' | 'V' | 'X' | 'L' | 'h' | 'O' | 'C'
    )
}

/// Parses the arguments after the program name (and after `sendmail` when
/// called as `mailman sendmail`).
pub fn parse<I: IntoIterator<Item = OsString>>(args: I, mode: Mode) -> Result<Options, String> {
    let mut options = Options {
        config: None,
        extract: false,
        dot_ends: true,
        from: None,
        full_name: None,
        recipients: Vec::new(),
        mode,
    };
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    let mut only_recipients = false;
    while let Some(arg) = args.next() {
        if only_recipients || !arg.starts_with('-') || arg == "-" {
            options.recipients.push(arg);
            continue;
        }
        if arg == "--" {
            only_recipients = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", path)) if !path.is_empty() => options.config = Some(path.into()),
                None if long == "config" => {
                    let path = args.next().filter(|p| !p.is_empty());
                    options.config = Some(path.ok_or("option '--config' needs a path")?.into());
                }
                _ => return Err(format!("unknown option '{arg}'")),
            }
            continue;
        }
        for (i, letter) in arg[1..].char_indices() {
            if !takes_value(letter) {
                match letter {
                    't' => options.extract = true,
                    'i' => options.dot_ends = false,
                    // Verbose, me too, no aliasing, initial submission, GNU mailx's -G.
                    'v' | 'm' | 'n' | 'U' | 'G' => {}
                    _ => return Err(format!("unknown option '-{letter}'")),
                }
                continue;
            }
            let attached = &arg[1 + i + letter.len_utf8()..];
            let value = if attached.is_empty() {
                args.next()
                    .ok_or_else(|| format!("option '-{letter}' needs a value"))?
            } else {
                attached.to_string()
            };
            apply(&mut options, letter, value)?;
            break;
        }
    }
    Ok(options)
}

fn apply(options: &mut Options, letter: char, value: String) -> Result<(), String> {
    match (letter, value.as_str()) {
        ('f' | 'r', _) => options.from = Some(value),
        ('F', _) => options.full_name = Some(value),
        ('o', "i") => options.dot_ends = false,
        ('b', "m") => options.mode = Mode::Deliver,
        ('b', "p") => options.mode = Mode::List,
        ('b', other) => {
            return Err(format!(
                "mode '-b{other}' is not supported (use -bm or -bp)"
            ))
        }
        ('C', _) => options.config = Some(value.into()),
        // -oem, -odi, -oee, -B8BITMIME, -N never, -R hdrs, -V envid, ...
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        parse(args.iter().map(OsString::from), Mode::Deliver)
    }

    #[test]
    fn what_cron_and_scripts_pass() {
        // Debian's cron.
        let o = run(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).unwrap();
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert!(!o.dot_ends && !o.extract);
        assert_eq!(o.recipients, ["root"]);
        // mutt, git send-email, PHP's mail().
        let o = run(&["-oem", "-oi", "-f", "me@x.org", "--", "a@b.org", "c@d.org"]).unwrap();
        assert_eq!(o.from.as_deref(), Some("me@x.org"));
        assert_eq!(o.recipients, ["a@b.org", "c@d.org"]);
        let o = run(&["-t", "-i"]).unwrap();
        assert!(o.extract && !o.dot_ends);
        let o = run(&["-ti", "-odi", "-v", "-bm", "-rbounce@x.org"]).unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.from.as_deref(), Some("bounce@x.org"));
        assert_eq!(o.mode, Mode::Deliver);
        assert!(
            run(&["x@y.org"]).unwrap().dot_ends,
            "a dot ends the message without -i"
        );
    }

    #[test]
    fn list_mode_and_config() {
        assert_eq!(run(&["-bp"]).unwrap().mode, Mode::List);
        let o = run(&["--config", "/etc/h.ron", "-t"]).unwrap();
        assert_eq!(o.config, Some("/etc/h.ron".into()));
        assert_eq!(
            run(&["--config=/x.ron"]).unwrap().config,
            Some("/x.ron".into())
        );
        let o = parse(Vec::<OsString>::new(), Mode::List).unwrap();
        assert_eq!(o.mode, Mode::List);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(run(&["-q"]).unwrap_err(), "unknown option '-q'");
        assert_eq!(run(&["-f"]).unwrap_err(), "option '-f' needs a value");
        assert_eq!(run(&["--bogus"]).unwrap_err(), "unknown option '--bogus'");
        assert_eq!(
            run(&["--config"]).unwrap_err(),
            "option '--config' needs a path"
        );
        assert_eq!(
            run(&["-bs"]).unwrap_err(),
            "mode '-bs' is not supported (use -bm or -bp)"
        );
    }
}
