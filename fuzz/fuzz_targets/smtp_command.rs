//! One SMTP command line (without its CRLF) into `Command::parse`.
//!
//! Invariants: no panic; a refusal carries a 5xx reply; a parsed command
//! prints (its `Display`, what postoffice's client sends) as one line ending
//! in CRLF that parses back to the same command.
#![no_main]

use hedwig::smtp::command::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let cmd = match Command::parse(line) {
        Ok(cmd) => cmd,
        Err(e) => {
            assert!((500..600).contains(&e.0.code), "{line:?}: {:?}", e.0);
            return;
        }
    };
    let wire = cmd.to_string();
    let printed = wire
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("{cmd:?} prints {wire:?}, not one CRLF line"));
    // VRFY keeps its argument as given; mailman only answers it, no client
    // sends it on, so a CR inside it goes nowhere.
    if !matches!(cmd, Command::Vrfy(_)) {
        assert!(
            !printed.contains(['\r', '\n']),
            "{cmd:?} prints {wire:?}, a CR or LF inside the line"
        );
    }
    assert_eq!(
        Command::parse(printed.as_bytes()).as_ref(),
        Ok(&cmd),
        "{wire:?} does not parse back"
    );
});
