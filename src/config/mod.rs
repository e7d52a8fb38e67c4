//! hedwig.ron: the one configuration file both binaries read.
//!
//! The file is a RON struct with an optional section per binary; each binary
//! runs from its own section, and every section present is validated so a
//! typo anywhere is reported. Every error names the file, line, column and
//! field path, in the shape
//! `hedwig.ron:4:15: mailman.listen: invalid socket address "172.17.0.1:2x"`.
//! To get a position for every mistake, all checks run inside deserialization
//! (see `de.rs`); nothing is checked afterwards.
//!
//! The file is judged, not the host: spool directories, interface addresses
//! and token files are dealt with at start, so `--check` passes anywhere.
//!
//! # Examples
//!
//! ```
//! let text = r#"(mailman: (postoffice: (url: "http://127.0.0.1:8025", token: "t")))"#;
//! let config = hedwig::config::parse("hedwig.ron", text).unwrap();
//! assert_eq!(config.mailman.unwrap().max_recipients, 100);
//!
//! let err = hedwig::config::parse("hedwig.ron", "(mailman: (max_recipients: 0))").unwrap_err();
//! assert_eq!(err.to_string(), "hedwig.ron:1:28: mailman.max_recipients: must be at least 1");
//! ```

mod de;
mod delivery;
mod dkim;
mod error;
mod mailman;
mod net;
mod postoffice;
mod token;
mod units;
mod upstream;

use std::path::Path;

use ron::extensions::Extensions;
use serde::Deserialize;

pub use delivery::{Delivery, DeliveryRetry, IpPreference, StartTls};
pub use dkim::{check_keys_with, DkimKey, KeyCheck};
pub use error::ConfigError;
pub use mailman::{Mailman, Masquerade};
pub use net::{system_hostname, AddrError, Listen, Route};
pub use postoffice::{Dns, Postoffice, Tls};
pub use token::Token;
pub use units::{parse_duration, parse_size, UnitError};
pub use upstream::{Retry, Upstream};

/// The whole file: one optional section per binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// mailman's section.
    #[serde(default)]
    pub mailman: Option<Mailman>,
    /// postoffice's section.
    #[serde(default)]
    pub postoffice: Option<Postoffice>,
}

impl Config {
    /// The mailman section, or an error naming `file` when it has none.
    pub fn into_mailman(self, file: &Path) -> Result<Mailman, ConfigError> {
        self.mailman
            .ok_or_else(|| ConfigError::missing_section(file, "mailman"))
    }

    /// What is valid field by field but cannot work together, for
    /// `--check` and the log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(m), Some(p)) = (&self.mailman, &self.postoffice) {
            if m.max_message_size > p.max_message_size {
                out.push(format!(
                    "mailman.max_message_size ({}) is above postoffice.max_message_size ({}): \
                     mailman would take messages postoffice refuses with 413; keep mailman's \
                     at or under postoffice's",
                    m.max_message_size, p.max_message_size
                ));
            }
        }
        out
    }

    /// The postoffice section, or an error naming `file` when it has none.
    pub fn into_postoffice(self, file: &Path) -> Result<Postoffice, ConfigError> {
        self.postoffice
            .ok_or_else(|| ConfigError::missing_section(file, "postoffice"))
    }
}

/// Reads and parses the file at `path`; messages name it as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses configuration `text`; `name` stands for the file in messages.
pub fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
    // Implicit Some lets `hostname: "x"` stand for `hostname: Some("x")`;
    // explicit `Some(...)` and `None` still work.
    let options = ron::Options::default().with_default_extension(Extensions::IMPLICIT_SOME);
    let invalid = |code: &ron::Error, at, path| ConfigError::invalid(name, code, at, path);
    let mut de = ron::Deserializer::from_str_with_options(text, &options)
        .map_err(|err| invalid(&err.code, err.span.start, String::new()))?;
    match serde_path_to_error::deserialize::<_, Config>(&mut de) {
        Ok(config) => {
            // The span of trailing text starts before the whitespace; its end
            // is the first stray character.
            de.end().map_err(|code| {
                let at = de.span_error(code.clone()).span.end;
                invalid(&code, at, String::new())
            })?;
            Ok(config)
        }
        Err(err) => {
            let unknown_field = matches!(err.inner(), ron::Error::NoSuchStructField { .. });
            let path = error::render_path(err.path(), unknown_field);
            // span.start is where the offending value (or field name) begins.
            let err = de.span_error(err.into_inner());
            Err(invalid(&err.code, err.span.start, path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../hedwig.ron");

    fn error(text: &str) -> String {
        parse("hedwig.ron", text).unwrap_err().to_string()
    }

    #[test]
    fn template_parses_both_sections() {
        let config = parse("hedwig.ron", TEMPLATE).unwrap();
        let mailman = config.mailman.unwrap();
        assert_eq!(mailman.listen, vec!["172.17.0.1:25".parse().unwrap()]);
        assert_eq!(mailman.postoffice.urls, ["https://brandy.example.org:8025"]);
        let postoffice = config.postoffice.unwrap();
        assert_eq!(postoffice.tokens.len(), 1);
    }

    #[test]
    fn invalid_listen_is_placed_at_the_value() {
        // The issue's example; the column is the value's first character.
        let text = r#"(
mailman: (
    postoffice: (url: "http://127.0.0.1:8025", token: "t"),
    listen: ["172.17.0.1:2x"],
),
)"#;
        assert_eq!(
            error(text),
            r#"hedwig.ron:4:15: mailman.listen: invalid socket address "172.17.0.1:2x""#
        );
        // The second entry of a list: still no index in the path.
        let text = "(mailman: (listen: [\"127.0.0.1:25\", \"docker0:x\"]))";
        assert_eq!(
            error(text),
            r#"hedwig.ron:1:38: mailman.listen: invalid socket address "docker0:x""#
        );
    }

    #[test]
    fn unknown_field_names_the_containing_struct() {
        let text = "(\n  mailman: (\n    lisen: [],\n  ),\n)";
        let err = error(text);
        assert!(
            err.starts_with("hedwig.ron:3:5: mailman: unknown field `lisen`, expected one of `listen`, `hostname`,"),
            "{err}"
        );
        let text = "(\n  postoffice: (\n    delivery: (\n      retries: 3,\n    ),\n  ),\n)";
        let err = error(text);
        assert!(
            err.starts_with("hedwig.ron:4:7: postoffice.delivery: unknown field `retries`, expected one of `port`,"),
            "{err}"
        );
        assert_eq!(
            error("(mailmen: ())"),
            "hedwig.ron:1:2: unknown field `mailmen`, expected one of `mailman`, `postoffice`"
        );
    }

    #[test]
    fn bad_duration_and_size() {
        let text = "(\n  mailman: (\n    timeout: \"5x\",\n  ),\n)";
        assert_eq!(
            error(text),
            r#"hedwig.ron:3:15: mailman.timeout: invalid duration "5x": unknown unit "x" (use ms, s, m, h or d)"#
        );
        let text = "(\n  mailman: (\n    max_message_size: \"25Mb\",\n  ),\n)";
        assert_eq!(
            error(text),
            r#"hedwig.ron:3:24: mailman.max_message_size: invalid size "25Mb": unknown unit "Mb" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"#
        );
    }

    #[test]
    fn token_and_token_file_both() {
        let text = r#"(
  mailman: (
    postoffice: (
      url: "http://127.0.0.1:8025",
      token: "t",
      token_file: "/etc/hedwig/token",
    ),
  ),
)"#;
        assert_eq!(
            error(text),
            "hedwig.ron:7:5: mailman.postoffice: set token or token_file, not both"
        );
    }

    #[test]
    fn syntax_errors_carry_position() {
        let text = "(\n  mailman: (\n    max_recipients: 5\n    max_connections: 6,\n  ),\n)";
        assert_eq!(error(text), "hedwig.ron:4:5: mailman: expected comma");
        assert_eq!(
            error("(mailman: (max_recipients: 1,"),
            "hedwig.ron:1:29: mailman: unexpected end of file"
        );
        assert_eq!(
            error("(mailman: (allow: 5))"),
            "hedwig.ron:1:18: mailman.allow: expected opening `[`"
        );
        assert_eq!(
            error("() x"),
            "hedwig.ron:1:4: non-whitespace trailing characters"
        );
        assert_eq!(
            error("()\n\n  x"),
            "hedwig.ron:3:3: non-whitespace trailing characters"
        );
        assert_eq!(
            error(""),
            "hedwig.ron:1:1: expected opening `(` for struct `Config`"
        );
        assert_eq!(
            error("#![enable(nonsense)]\n()"),
            "hedwig.ron:1:11: no RON extension named `nonsense`"
        );
    }

    #[test]
    fn only_a_mailman_section() {
        let text = r#"(mailman: (postoffice: (url: "http://127.0.0.1:8025", token: "t")))"#;
        let config = parse("hedwig.ron", text).unwrap();
        assert!(config.postoffice.is_none());
        let file = Path::new("/tmp/x/hedwig.ron");
        assert!(config.clone().into_mailman(file).is_ok());
        assert_eq!(
            config.into_postoffice(file).unwrap_err().to_string(),
            "/tmp/x/hedwig.ron: no postoffice section"
        );
    }

    #[test]
    fn missing_section() {
        let config = parse("hedwig.ron", "()").unwrap();
        assert_eq!(
            config
                .into_mailman(Path::new("hedwig.ron"))
                .unwrap_err()
                .to_string(),
            "hedwig.ron: no mailman section"
        );
    }

    #[test]
    fn every_section_present_is_checked() {
        // mailman is fine, but a typo in postoffice still fails the file.
        let text = r#"(
  mailman: (postoffice: (url: "http://127.0.0.1:8025", token: "t")),
  postoffice: (tokens: ["t"], queu: "/q"),
)"#;
        assert!(error(text).starts_with("hedwig.ron:3:31: postoffice: unknown field `queu`"));
    }

    #[test]
    fn size_limits_that_cannot_work_together_are_warned_of() {
        let text = |m: &str, p: &str| {
            format!(
                r#"(mailman: (max_message_size: "{m}", postoffice: (url: "http://p:1", token: "t")),
                   postoffice: (tokens: ["t"], max_message_size: "{p}"))"#
            )
        };
        let config = parse("hedwig.ron", &text("25MiB", "25MiB")).unwrap();
        assert!(config.warnings().is_empty());
        let config = parse("hedwig.ron", &text("30MiB", "25MiB")).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("mailman.max_message_size (31457280) is above"),
            "{warnings:?}"
        );
    }

    #[test]
    fn load_names_the_path_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hedwig.ron");
        std::fs::write(&path, "(mailman: (max_recipients: 0))").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:1:28: mailman.max_recipients: must be at least 1",
                path.display()
            )
        );
        let missing = dir.path().join("missing.ron");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        std::fs::write(&path, TEMPLATE).unwrap();
        assert!(load(&path).is_ok());
    }
}
