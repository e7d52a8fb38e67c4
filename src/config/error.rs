//! The one error type of configuration loading, and ron's messages in hedwig's voice.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ron::error::Position;
use serde_path_to_error::Segment;

/// Why a configuration could not be had.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The path as given.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not valid RON or not a valid configuration.
    Invalid {
        /// The file name as given.
        file: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// Field path such as `mailman.listen`; empty at the top level.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The binary's section is not in the file.
    MissingSection {
        /// The file name as given.
        file: String,
        /// `mailman` or `postoffice`.
        section: &'static str,
    },
}

// The io error is part of the text rather than a `source`, so printing the
// error alone says everything and printing the chain does not repeat it.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read {}: {source}", file.display())
            }
            ConfigError::Invalid {
                file,
                line,
                column,
                path,
                message,
            } => {
                write!(f, "{file}:{line}:{column}: ")?;
                if !path.is_empty() {
                    write!(f, "{path}: ")?;
                }
                f.write_str(message)
            }
            ConfigError::MissingSection { file, section } => {
                write!(f, "{file}: no {section} section")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub(crate) fn invalid(file: &str, code: &ron::Error, at: Position, path: String) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            line: at.line,
            column: at.col,
            path,
            message: describe(code),
        }
    }

    pub(crate) fn missing_section(file: &Path, section: &'static str) -> Self {
        ConfigError::MissingSection {
            file: file.display().to_string(),
            section,
        }
    }
}

/// `mailman.listen` style: no sequence indexes, and for an unknown field the
/// struct that does not have it, since the field's own name is in the message.
pub(crate) fn render_path(path: &serde_path_to_error::Path, unknown_field: bool) -> String {
    let mut names: Vec<&str> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(key.as_str()),
            Segment::Seq { .. } | Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    if unknown_field {
        names.pop();
    }
    names.join(".")
}

/// ron's messages in hedwig's voice: lowercase, serde's usual wording.
fn describe(code: &ron::Error) -> String {
    use ron::Error as E;
    let one_of = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        match quoted.len() {
            0 => "there are none".to_string(),
            1 => format!("expected {}", quoted[0]),
            _ => format!("expected one of {}", quoted.join(", ")),
        }
    };
    match code {
        E::Message(message) => message.clone(),
        E::NoSuchStructField {
            expected, found, ..
        } => format!("unknown field `{found}`, {}", one_of(expected)),
        E::NoSuchEnumVariant {
            expected, found, ..
        } => format!("unknown variant `{found}`, {}", one_of(expected)),
        E::MissingStructField { field, .. } => format!("missing field `{field}`"),
        E::DuplicateStructField { field, .. } => format!("duplicate field `{field}`"),
        E::InvalidValueForType { expected, found } => format!("expected {expected}, found {found}"),
        E::Eof => "unexpected end of file".to_string(),
        other => lowercase_first(&other.to_string()),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_of_each_kind() {
        let read = ConfigError::Read {
            file: "/etc/hedwig/hedwig.ron".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "not found"),
        };
        assert_eq!(
            read.to_string(),
            "cannot read /etc/hedwig/hedwig.ron: not found"
        );
        let at = Position { line: 2, col: 3 };
        let top = ConfigError::invalid("h.ron", &ron::Error::Eof, at, String::new());
        assert_eq!(top.to_string(), "h.ron:2:3: unexpected end of file");
        let code = ron::Error::ExpectedComma;
        let inner = ConfigError::invalid("h.ron", &code, at, "mailman".into());
        assert_eq!(inner.to_string(), "h.ron:2:3: mailman: expected comma");
        let missing = ConfigError::missing_section(Path::new("h.ron"), "postoffice");
        assert_eq!(missing.to_string(), "h.ron: no postoffice section");
    }

    #[test]
    fn messages_are_lowercase_serde_style() {
        let unknown = ron::Error::NoSuchStructField {
            expected: &["first", "max"],
            found: "frist".into(),
            outer: Some("Retry".into()),
        };
        assert_eq!(
            describe(&unknown),
            "unknown field `frist`, expected one of `first`, `max`"
        );
        let missing = ron::Error::MissingStructField {
            field: "url",
            outer: None,
        };
        assert_eq!(describe(&missing), "missing field `url`");
        assert_eq!(describe(&ron::Error::ExpectedString), "expected string");
    }
}
