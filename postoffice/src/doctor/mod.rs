//! `postoffice doctor`: can this host deliver directly, and will what it
//! delivers be believed? One line per check, `ok`, `warn` or `FAIL`, each
//! with the fact found and the fix (the exact record to publish). Exit 0
//! when nothing FAILs.
//!
//! It asks the configured `dns` (so tests point it at a local server),
//! opens one connection to port 25 of a well-known domain's MX (greeting
//! and QUIT only) and never sends mail.

mod checks;
mod spf;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::dns::Resolver;

/// The domain whose MX the port 25 check connects to.
const PROBE_DOMAIN: &str = "gmail.com";

/// How sure a check is that things are right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but providers may score it down.
    Warn,
    /// Mail will be refused or junked.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked, what was found, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// ok, warn or FAIL.
    pub level: Level,
    /// The check and its subject, e.g. `spf example.org`.
    pub check: String,
    /// The fact, and the fix when there is one.
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.level, self.check, self.text)
    }
}

/// What the command line asks doctor to look at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--domain`, repeatable: sender domains besides the `dkim` ones.
    pub domains: Vec<String>,
    /// `--ip`, repeatable: the public addresses mail leaves from, when the
    /// port 25 check cannot see them (NAT).
    pub ips: Vec<IpAddr>,
    /// `--probe`: the domain whose MX the port 25 check connects to.
    pub probe: Option<String>,
}

const USAGE: &str =
    "Usage: postoffice doctor [--config PATH] [--domain D]... [--ip ADDR]... [--probe DOMAIN]

Checks that this host can deliver directly and will be believed: outbound
port 25, reverse DNS of the sending addresses, and for each sender domain
(each dkim domain and each --domain) its SPF, DKIM and DMARC records; one
line per check (ok, warn or FAIL) with the fix. Exits 0 when nothing FAILs.
Uses the configured dns; opens one connection to the MX of --probe
(default gmail.com), sends no mail.

Options:
  -c, --config PATH  configuration file (as for postoffice)
      --domain D     also check sender domain D (repeatable)
      --ip ADDR      a public address mail leaves from (repeatable; default:
                     the source addresses of the port 25 check)
      --probe DOMAIN connect to this domain's MX for the port 25 check
  -h, --help         print this help and exit
";

/// Parses the arguments after `doctor`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    let mut out = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |flag: &str| {
            args.next()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("option '{flag}' needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-c" | "--config" => out.config = Some(value(&arg)?.into()),
            "--domain" => out.domains.push(value(&arg)?.to_ascii_lowercase()),
            "--probe" => out.probe = Some(value(&arg)?),
            "--ip" => {
                let v = value(&arg)?;
                out.ips.push(
                    v.parse()
                        .map_err(|_| format!("invalid address '{v}' for --ip"))?,
                );
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    Ok(Some(out))
}

/// `postoffice doctor ...`: prints the findings, exits 1 if any FAILed, 2
/// for a bad command line or configuration.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "postoffice doctor: {e}\nTry 'postoffice doctor --help' for more information."
            );
            return ExitCode::from(2);
        }
    };
    let path = hedwig::cli::config_path(args.config.clone());
    let config = match hedwig::config::load(&path).and_then(|c| c.into_postoffice(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postoffice doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let dns = match Resolver::new(&config.dns) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("postoffice doctor: dns: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "postoffice doctor: {} as {}, dns {:?}",
        path.display(),
        config.resolved_hostname(),
        config.dns
    );
    let findings = smol::block_on(checks::run(&config, &dns, &args));
    for f in &findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warned = findings.iter().filter(|f| f.level == Level::Warn).count();
    println!(
        "postoffice doctor: {failed} FAIL, {warned} warn, {} checks",
        findings.len()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "--config",
            "/x.ron",
            "--domain",
            "Example.ORG",
            "--domain",
            "b.test",
            "--ip",
            "192.0.2.1",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.config, Some("/x.ron".into()));
        assert_eq!(a.domains, ["example.org", "b.test"]);
        assert_eq!(a.ips, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(parse(&["--help"]).unwrap(), None);
        assert_eq!(
            parse(&["--ip", "x"]).unwrap_err(),
            "invalid address 'x' for --ip"
        );
        assert_eq!(
            parse(&["--domain"]).unwrap_err(),
            "option '--domain' needs a value"
        );
        assert_eq!(parse(&["mail"]).unwrap_err(), "unexpected argument 'mail'");
    }

    #[test]
    fn findings_print_as_one_line() {
        let f = Finding {
            level: Level::Fail,
            check: "spf example.org".into(),
            text: "no SPF record".into(),
        };
        assert_eq!(f.to_string(), "FAIL spf example.org: no SPF record");
        let f = Finding {
            level: Level::Ok,
            ..f
        };
        assert_eq!(f.to_string(), "ok   spf example.org: no SPF record");
    }
}
