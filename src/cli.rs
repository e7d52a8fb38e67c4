//! The command line both binaries share: `[--config PATH] [--check]`.
//!
//! Four flags do not earn an argument-parsing dependency; parsing is a pure
//! function of the arguments ([`parse_from`]) so tests need no process.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use log::LevelFilter;

/// The configuration file used when `--config` is absent and ./hedwig.ron is too.
pub const SYSTEM_CONFIG: &str = "/etc/hedwig/hedwig.ron";

/// The configuration file looked for in the working directory first.
pub const LOCAL_CONFIG: &str = "hedwig.ron";

/// What a binary runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The configuration file to read.
    pub config: PathBuf,
    /// Only validate the configuration file, then exit.
    pub check: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run (or check) with `--config`, if given.
    Run {
        /// The `--config` value, if any.
        config: Option<PathBuf>,
        /// Whether `--check` was given.
        check: bool,
    },
    /// `--help` or `-h`.
    Help,
    /// `--version` or `-V`.
    Version,
}

/// A command line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A flag that is not one of ours.
    UnknownOption(String),
    /// `--config` without its path.
    MissingValue(String),
    /// An argument that is not a flag.
    UnexpectedArgument(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownOption(flag) => write!(f, "unknown option '{flag}'"),
            UsageError::MissingValue(flag) => write!(f, "option '{flag}' needs a path"),
            UsageError::UnexpectedArgument(arg) => write!(f, "unexpected argument '{arg}'"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Parses `std::env::args` for the binary `name`: prints usage and exits 0 on
/// `--help`, prints "NAME VERSION" and exits 0 on `--version`, and prints the
/// problem to stderr and exits 2 on anything it does not understand. The
/// config path is `--config`, else ./hedwig.ron if it exists, else
/// /etc/hedwig/hedwig.ron.
pub fn parse(name: &str, version: &str, about: &str) -> Args {
    match parse_from(std::env::args_os().skip(1)) {
        Ok(Command::Run { config, check }) => Args {
            config: config_path(config),
            check,
        },
        Ok(Command::Help) => {
            print!("{}", usage(name, version, about));
            std::process::exit(0)
        }
        Ok(Command::Version) => {
            println!("{name} {version}");
            std::process::exit(0)
        }
        Err(err) => {
            eprintln!("{name}: {err}\nTry '{name} --help' for more information.");
            std::process::exit(2)
        }
    }
}

/// What both binaries do before they run: parse the arguments, load their
/// section of the config with `section`, answer `--check`, start logging at
/// the level `level` reads from the section. `Err` carries the exit code
/// (0 after `--check`, 2 for a bad file), the message already printed.
pub fn start<T>(
    name: &str,
    version: &str,
    about: &str,
    section: fn(crate::config::Config, &std::path::Path) -> Result<T, crate::config::ConfigError>,
    level: fn(&T) -> LevelFilter,
) -> Result<T, std::process::ExitCode> {
    let args = parse(name, version, about);
    let mut warnings = Vec::new();
    let loaded = crate::config::load(&args.config).and_then(|c| {
        warnings = c.warnings();
        section(c, &args.config)
    });
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return Err(std::process::ExitCode::from(2));
        }
    };
    let file = args.config.display();
    if args.check {
        for w in &warnings {
            println!("{name}: {file}: warning: {w}");
        }
        println!("{name}: {file}: ok");
        return Err(std::process::ExitCode::SUCCESS);
    }
    init_logging(level(&config));
    for w in &warnings {
        log::warn!("{file}: {w}");
    }
    Ok(config)
}

/// Caps smol's blocking pool (the threads that do file work) at `n`; call
/// before anything uses it. The pool reads `BLOCKING_MAX_THREADS` once, at
/// its first use; without it, it grows to 500 threads under a backlog.
///
/// With glibc's malloc it also caps the arenas at 2: glibc gives each
/// thread that allocates an arena of its own (up to 8 per core), and a
/// message read on one pool thread and freed on the executor leaves its
/// pages in that thread's arena, so peak memory grew with the pool (100
/// KiB messages: 47 MiB for both binaries, 41 MiB with 2 arenas, and less
/// CPU). musl's malloc has no arenas: nothing to do there.
pub fn limit_blocking_threads(n: usize) {
    std::env::set_var("BLOCKING_MAX_THREADS", n.clamp(1, 10_000).to_string());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a malloc parameter; called at start, before
    // the blocking pool or the executor's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The exit of a binary whose run ended with `result`: 0, or the error
/// printed once, as `NAME: error`, and 1. (Logging it too would put it on
/// stderr twice: the log goes there.)
pub fn exit(name: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse_from<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let mut config = None;
    let mut check = false;
    while let Some(arg) = args.next() {
        // Paths may be any bytes; flags are ASCII, so only they need UTF-8.
        let Some(flag) = arg.to_str() else {
            return Err(UsageError::UnexpectedArgument(arg.to_string_lossy().into()));
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--check" => check = true,
            "-c" | "--config" => {
                let path = args
                    .next()
                    .filter(|path| !path.is_empty())
                    .ok_or_else(|| UsageError::MissingValue(flag.into()))?;
                config = Some(PathBuf::from(path));
            }
            _ if flag.starts_with("--config=") => {
                let path = &flag["--config=".len()..];
                if path.is_empty() {
                    return Err(UsageError::MissingValue("--config".into()));
                }
                config = Some(PathBuf::from(path));
            }
            _ if flag.starts_with('-') && flag != "-" => {
                return Err(UsageError::UnknownOption(flag.into()))
            }
            _ => return Err(UsageError::UnexpectedArgument(flag.into())),
        }
    }
    Ok(Command::Run { config, check })
}

/// The configuration file: `given`, else ./hedwig.ron if it exists, else
/// /etc/hedwig/hedwig.ron.
pub fn config_path(given: Option<PathBuf>) -> PathBuf {
    pick_config(given, Path::new(LOCAL_CONFIG).exists())
}

fn pick_config(given: Option<PathBuf>, local_exists: bool) -> PathBuf {
    match given {
        Some(path) => path,
        None if local_exists => PathBuf::from(LOCAL_CONFIG),
        None => PathBuf::from(SYSTEM_CONFIG),
    }
}

/// The `--help` text.
pub fn usage(name: &str, version: &str, about: &str) -> String {
    format!(
        "{name} {version}
{about}

Usage: {name} [--config PATH] [--check]

Options:
  -c, --config PATH  configuration file (default: ./{LOCAL_CONFIG} if it exists,
                     else {SYSTEM_CONFIG})
      --check        validate the configuration file and exit
  -h, --help         print this help and exit
  -V, --version      print the version and exit

Environment:
  RUST_LOG           log filter; overrides log_level in the configuration
"
    )
}

/// Logs to stderr at `level`, unless RUST_LOG is set, which then decides alone.
/// A second call keeps the first logger.
pub fn init_logging(level: LevelFilter) {
    let rust_log = std::env::var("RUST_LOG").ok();
    // Ignore the error: only a second initialisation fails, and the first stands.
    let _ = logger(level, rust_log.as_deref()).try_init();
}

fn logger(level: LevelFilter, rust_log: Option<&str>) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder.target(env_logger::Target::Stderr);
    match rust_log {
        Some(filters) if !filters.trim().is_empty() => builder.parse_filters(filters),
        _ => builder.filter_level(level),
    };
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse_from(args.iter().map(OsString::from))
    }

    fn config(path: &str, check: bool) -> Result<Command, UsageError> {
        Ok(Command::Run {
            config: Some(path.into()),
            check,
        })
    }

    #[test]
    fn no_arguments() {
        assert_eq!(
            run(&[]),
            Ok(Command::Run {
                config: None,
                check: false
            })
        );
    }

    #[test]
    fn config_in_every_spelling() {
        assert_eq!(
            run(&["--config", "/tmp/h.ron"]),
            config("/tmp/h.ron", false)
        );
        assert_eq!(run(&["--config=/tmp/h.ron"]), config("/tmp/h.ron", false));
        assert_eq!(
            run(&["-c", "/tmp/h.ron", "--check"]),
            config("/tmp/h.ron", true)
        );
        assert_eq!(run(&["--check", "-c", "x"]), config("x", true));
        // A path that looks like a flag is still the value of --config.
        assert_eq!(run(&["--config", "--check"]), config("--check", false));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["--help"]), Ok(Command::Help));
        assert_eq!(run(&["-h", "--bogus"]), Ok(Command::Help));
        assert_eq!(run(&["--check", "-V"]), Ok(Command::Version));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
        let text = usage("mailman", "0.1.0", "SMTP relay.");
        assert!(text.starts_with(
            "mailman 0.1.0\nSMTP relay.\n\nUsage: mailman [--config PATH] [--check]\n"
        ));
    }

    #[test]
    fn usage_errors() {
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        assert_eq!(err(&["--bogus"]), "unknown option '--bogus'");
        assert_eq!(err(&["-x"]), "unknown option '-x'");
        assert_eq!(err(&["--config"]), "option '--config' needs a path");
        assert_eq!(err(&["-c"]), "option '-c' needs a path");
        assert_eq!(err(&["--config="]), "option '--config' needs a path");
        assert_eq!(err(&["--config", ""]), "option '--config' needs a path");
        assert_eq!(err(&["hedwig.ron"]), "unexpected argument 'hedwig.ron'");
        assert_eq!(err(&["--check=yes"]), "unknown option '--check=yes'");
    }

    #[test]
    fn config_path_fallbacks() {
        let given = Some(PathBuf::from("/x.ron"));
        assert_eq!(pick_config(given, true), PathBuf::from("/x.ron"));
        assert_eq!(pick_config(None, true), PathBuf::from("hedwig.ron"));
        assert_eq!(
            pick_config(None, false),
            PathBuf::from("/etc/hedwig/hedwig.ron")
        );
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        assert_eq!(
            logger(LevelFilter::Warn, None).build().filter(),
            LevelFilter::Warn
        );
        assert_eq!(
            logger(LevelFilter::Warn, Some("")).build().filter(),
            LevelFilter::Warn
        );
        let filter = logger(LevelFilter::Warn, Some("debug")).build().filter();
        assert_eq!(filter, LevelFilter::Debug);
        let filter = logger(LevelFilter::Trace, Some("mailman=info"))
            .build()
            .filter();
        assert_eq!(filter, LevelFilter::Info);
    }
}
