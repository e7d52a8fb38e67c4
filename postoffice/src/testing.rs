//! Helpers shared by unit tests.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs a Python `script` (a real reader of mail formats: the `email`
/// package) on `input` and asserts it printed `ok`.
pub fn python_says_ok(script: &str, input: &[u8]) {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .expect("python3 reads its input");
    let out = child.wait_with_output().expect("python3 finishes");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "python said: {}\ninput:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(input)
    );
}
