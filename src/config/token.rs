//! Bearer tokens, written inline or kept in a file of their own.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A bearer token: the secret itself, or a file that holds it (read at
/// start, so `--check` passes where the file is not deployed yet).
///
/// `Debug` never prints an inline secret, so configs can be logged.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// The token as written in hedwig.ron.
    Inline(String),
    /// A file whose content, trimmed, is the token.
    File(PathBuf),
}

impl Token {
    /// The token: the inline value, or the trimmed content of the file.
    pub fn read(&self) -> io::Result<String> {
        match self {
            Token::Inline(token) => Ok(token.clone()),
            Token::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                // Editors add a final newline; it is not part of the token.
                let token = text.trim();
                if token.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("token file {} is empty", path.display()),
                    ));
                }
                Ok(token.to_string())
            }
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Inline(_) => f.write_str("Inline(<redacted>)"),
            Token::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_inline_secret() {
        let debug = format!("{:?}", Token::Inline("hunter2".into()));
        assert_eq!(debug, "Inline(<redacted>)");
        let file = format!("{:?}", Token::File("/etc/hedwig/token".into()));
        assert_eq!(file, "File(\"/etc/hedwig/token\")");
    }

    #[test]
    fn reads_inline_and_trimmed_file() {
        assert_eq!(Token::Inline("abc".into()).read().unwrap(), "abc");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(Token::File(path.clone()).read().unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let err = Token::File(path.clone()).read().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let missing = Token::File(dir.path().join("missing")).read().unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().starts_with("reading "));
    }
}
