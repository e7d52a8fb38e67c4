//! Test messages: building them, putting them on the wire, checking what arrived.

/// `text` with every LF turned into CRLF (the input must not contain CR).
pub fn crlf(text: &str) -> Vec<u8> {
    assert!(!text.contains('\r'), "crlf() takes LF-only text");
    text.replace('\n', "\r\n").into_bytes()
}

/// The DATA section for `message` (CRLF lines, ending in CRLF): dot-stuffed, with
/// the terminating `.\r\n`.
pub fn data_section(message: &[u8]) -> Vec<u8> {
    assert!(message.ends_with(b"\r\n"), "a message must end with CRLF");
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// FNV-1a, 64 bit: the body checksum senders put into their messages.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits a message into its header lines (each with its CRLF, continuation lines
/// kept separate) and the body after the empty line.
pub fn split_message(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut headers = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| p + 2)
            .unwrap_or(rest.len());
        let (line, tail) = rest.split_at(end);
        if line == b"\r\n" {
            return (headers, tail);
        }
        headers.push(line);
        rest = tail;
    }
    (headers, rest)
}

/// Whether the header field `line` is named `name` (case-insensitive).
pub fn is_field(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()] == b':'
}

/// Removes the leading `Received: from ...` field (and its continuation lines)
/// that mailman prepends; Err if the body does not start with one.
pub fn strip_received(body: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if !body.starts_with(b"Received: from ") {
        let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!(
            "body does not start with `Received: from `: {head:?}"
        ));
    }
    let mut end = 0;
    loop {
        let line_end = body[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| end + p + 2)
            .ok_or("Received field is not CRLF-terminated")?;
        end = line_end;
        // A continuation line starts with whitespace.
        if !matches!(body.get(end), Some(b' ') | Some(b'\t')) {
            return Ok((&body[..end], &body[end..]));
        }
    }
}

/// Checks that `arrived` (a hand-off body) is `sent` (the message as the client
/// meant it, CRLF, unstuffed) with exactly one `Received: from` field prepended, and
/// `Date:` / `Message-ID:` appended to the header section exactly when `sent` lacks
/// them. Err describes the first difference.
pub fn check_arrived(arrived: &[u8], sent: &[u8]) -> Result<(), String> {
    let (_received, rest) = strip_received(arrived)?;
    let (sent_headers, sent_body) = split_message(sent);
    let (got_headers, got_body) = split_message(rest);
    let show = |l: &[&[u8]]| {
        l.iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect::<Vec<_>>()
    };
    if got_body != sent_body {
        return Err(format!(
            "body differs:\n sent    {:?}\n arrived {:?}",
            String::from_utf8_lossy(sent_body),
            String::from_utf8_lossy(got_body)
        ));
    }
    if got_headers.len() < sent_headers.len()
        || got_headers[..sent_headers.len()] != sent_headers[..]
    {
        return Err(format!(
            "header section differs (after the Received field):\n sent    {:?}\n arrived {:?}",
            show(&sent_headers),
            show(&got_headers)
        ));
    }
    let added = &got_headers[sent_headers.len()..];
    let want_date = !sent_headers.iter().any(|h| is_field(h, "Date"));
    let want_id = !sent_headers.iter().any(|h| is_field(h, "Message-ID"));
    let dates = added.iter().filter(|h| is_field(h, "Date")).count();
    let ids = added.iter().filter(|h| is_field(h, "Message-ID")).count();
    let continuation = added
        .iter()
        .filter(|h| h.starts_with(b" ") || h.starts_with(b"\t"))
        .count();
    let ok = dates == want_date as usize
        && ids == want_id as usize
        && dates + ids + continuation == added.len();
    if !ok {
        return Err(format!(
            "fields appended to the header section: {:?}; expected exactly {}",
            show(added),
            match (want_date, want_id) {
                (true, true) => "one Date and one Message-ID",
                (true, false) => "one Date",
                (false, true) => "one Message-ID",
                (false, false) => "none",
            }
        ));
    }
    for h in added.iter().filter(|h| is_field(h, "Message-ID")) {
        let v = String::from_utf8_lossy(&h[11..]).trim().to_string();
        if !(v.starts_with('<') && v.ends_with('>') && v.contains('@')) {
            return Err(format!("added Message-ID {v:?} is not <local@domain>"));
        }
    }
    Ok(())
}

/// Asserts [`check_arrived`] with a named context.
#[track_caller]
pub fn assert_arrived(what: &str, arrived: &[u8], sent: &[u8]) {
    if let Err(e) = check_arrived(arrived, sent) {
        panic!("{what}: {e}");
    }
}
