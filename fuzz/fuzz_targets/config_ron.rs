//! Text into `hedwig::config::parse`, the RON parser both binaries start with.
//!
//! Invariants: no panic; every refusal is `ConfigError::Invalid` whose
//! position lies inside the text (line 1.., column 1.. up to one past the
//! line's end) and whose message starts with `file:line:col: `.
#![no_main]

use hedwig::config::{parse, ConfigError};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.ron";

fuzz_target!(|bytes: &[u8]| {
    // The loader reads a String, so only UTF-8 ever reaches the parser.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Err(err) = parse(FILE, text) else {
        return;
    };
    let ConfigError::Invalid { line, column, .. } = &err else {
        panic!("parsing text gave {err:?}");
    };
    let (line, column) = (*line, *column);
    let prefix = format!("{FILE}:{line}:{column}: ");
    let message = err.to_string();
    assert!(message.starts_with(&prefix), "{message:?}");
    assert!(message.len() > prefix.len(), "no message: {message:?}");
    // ron counts lines at LF and columns in characters.
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "{message:?}: line {line} of {}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        (1..=width + 1).contains(&column),
        "{message:?}: column {column} of a {width}-character line"
    );
});
