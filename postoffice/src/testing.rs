//! Helpers shared by unit tests.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs a Python `script` (a real reader of mail formats: the `email`
/// package) on `input` and asserts it printed `ok`.
pub fn python_says_ok(script: &str, input: &[u8]) {
    python_at_says_ok("python3", script, &[], input);
}

/// The Debian Python, whose dist-packages hold the verifiers Debian ships
/// (python3-dkim with python3-nacl); scripts/test installs them.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Runs `script` with `python` on `input`, with `args`, and asserts it printed `ok`.
pub fn python_at_says_ok(python: &str, script: &str, args: &[&str], input: &[u8]) {
    let mut child = Command::new(python)
        .args(["-c", script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} runs: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .expect("python reads its input");
    let out = child.wait_with_output().expect("python finishes");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "python said: {}\ninput:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(input)
    );
}
