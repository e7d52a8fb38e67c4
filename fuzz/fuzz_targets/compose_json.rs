//! A `POST /v1/messages` body into postoffice's compose: JSON, then MIME.
//!
//! postoffice is a binary crate, so its compose module is included here by
//! path; it needs only hedwig, mail-builder, base64 and serde.
//!
//! Invariants: no panic; a built message has no bare CR or LF, a
//! header section whose every line is a field (`name:`) or a fold, no field
//! but the ones compose writes and the caller's own, no Bcc, and no line
//! longer than RFC 5322's 998 characters; the envelope has a sender and
//! distinct recipients.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;

#[path = "../../postoffice/src/compose.rs"]
mod compose;

use compose::{compose, JsonMessage};

/// The fields compose writes itself.
const OWN: [&str; 10] = [
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

fuzz_target!(|body: &[u8]| {
    // As the API does: a body that is not this JSON is a 400 before compose.
    let Ok(msg) = serde_json::from_slice::<JsonMessage>(body) else {
        return;
    };
    let date = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Ok((envelope, bytes)) = compose(&msg, "fuzz@po.test", date) else {
        return;
    };

    assert!(envelope.from.is_some());
    assert!(!envelope.to.is_empty());
    for (i, a) in envelope.to.iter().enumerate() {
        assert!(
            !envelope.to[..i]
                .iter()
                .any(|b| b.as_str().eq_ignore_ascii_case(a.as_str())),
            "recipient {a} twice"
        );
    }

    // No CR or LF stands alone. (The last line may lack its CRLF: an HTML
    // body ends as given, and `stuff` ends the line on the wire.)
    for (i, &b) in bytes.iter().enumerate() {
        let crlf = match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && bytes[i - 1] == b'\r',
            _ => true,
        };
        assert!(crlf, "bare CR or LF at {i}: {:?}", lossy(&bytes));
    }
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 998, "line of {} characters", line.len());
    }

    let header_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no blank line after the header section");
    let lines: Vec<&[u8]> = bytes[..header_end].split(|&b| b == b'\n').collect();
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .unwrap_or_else(|| panic!("header line without a name: {:?}", lossy(line)));
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        assert!(
            !name.is_empty() && name.bytes().all(|c| (33..=126).contains(&c)),
            "bad field name in {:?}",
            lossy(line)
        );
        assert_ne!(name, "bcc", "a Bcc field: {:?}", lossy(line));
        let own = OWN.contains(&name.as_str());
        let callers = msg.headers.keys().any(|k| k.eq_ignore_ascii_case(&name));
        assert!(
            own || callers,
            "field {name:?} nobody asked for: {:?}",
            lossy(line)
        );
    }
});

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
