//! What mailman adds to a message on the way in: a `Received:` trace header
//! on top (RFC 5321 section 4.4), and `Date:` and `Message-ID:` at the end of
//! the header section when the message lacks them (as Postfix's cleanup does).
//!
//! [`Stamper`] works on the stream of message bytes: it holds back only the
//! header section (bounded by `max_header_size`) and passes the body through.

use std::time::{SystemTime, UNIX_EPOCH};

/// A date as RFC 5322 section 3.3 writes it, in UTC.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(hedwig::message::rfc5322_date(t), "Tue, 14 Nov 2023 22:13:20 +0000");
/// ```
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    mail_builder::headers::date::Date::new(secs).to_rfc822()
}

/// Makes every line ending CRLF: a bare LF or a bare CR becomes CRLF. A file
/// posted with curl has LF endings; what goes on to an MX must hold no bare
/// CR or LF, so no next hop can read a smuggled message out of it.
///
/// # Examples
///
/// ```
/// assert_eq!(hedwig::message::normalize_newlines(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
/// ```
pub fn normalize_newlines(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut newlines = Newlines::default();
    newlines.push(input, &mut out);
    newlines.finish(&mut out);
    out
}

/// Whether [`normalize_newlines`] would change `input`: a bare CR or LF in it.
///
/// # Examples
///
/// ```
/// assert!(!hedwig::message::has_bare_newline(b"a\r\nb\r\n"));
/// assert!(hedwig::message::has_bare_newline(b"a\r\nb\n"));
/// assert!(hedwig::message::has_bare_newline(b"a\r"));
/// ```
pub fn has_bare_newline(input: &[u8]) -> bool {
    let mut rest = input;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', rest) {
        if rest[i] == b'\n' || rest.get(i + 1) != Some(&b'\n') {
            return true;
        }
        rest = &rest[i + 2..];
    }
    false
}

/// [`normalize_newlines`] for a message that arrives in chunks: a CR at the
/// end of one chunk may be the first half of a CRLF split across two.
///
/// # Examples
///
/// ```
/// let mut n = hedwig::message::Newlines::default();
/// let mut out = Vec::new();
/// for chunk in [&b"a\r"[..], b"\nb\r", b"c\n"] {
///     n.push(chunk, &mut out);
/// }
/// n.finish(&mut out);
/// assert_eq!(out, b"a\r\nb\r\nc\r\n");
/// ```
#[derive(Debug, Default)]
pub struct Newlines {
    /// The last chunk ended in a CR not yet written.
    pending_cr: bool,
}

impl Newlines {
    /// Repairs the next chunk into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(b"\r\n");
            if let Some(after_lf) = rest.strip_prefix(b"\n") {
                rest = after_lf;
            }
        }
        // The text between line ends is copied whole; each CRLF, bare CR or
        // bare LF becomes one CRLF.
        while let Some(i) = memchr::memchr2(b'\r', b'\n', rest) {
            out.extend_from_slice(&rest[..i]);
            if rest[i] == b'\r' && i + 1 == rest.len() {
                // Whether an LF follows is up to the next chunk.
                self.pending_cr = true;
                return;
            }
            out.extend_from_slice(b"\r\n");
            let crlf = rest[i] == b'\r' && rest[i + 1] == b'\n';
            rest = &rest[i + if crlf { 2 } else { 1 }..];
        }
        out.extend_from_slice(rest);
    }

    /// The message ended: a CR held back is a line end of its own.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The facts a `Received:` header records.
#[derive(Clone, Debug)]
pub struct Trace<'a> {
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    /// The client's address.
    pub client_ip: std::net::IpAddr,
    /// Our hostname.
    pub by: &'a str,
    /// What received it: `hedwig mailman` or `hedwig postoffice`.
    pub software: &'a str,
    /// `SMTP`, `ESMTP`, `UTF8SMTP` (RFC 3848), or `HTTP`/`HTTPS` for postoffice's API.
    pub protocol: &'a str,
    /// The queue id.
    pub id: &'a str,
    /// The recipient, named only when there is exactly one (privacy of Bcc).
    pub for_rcpt: Option<&'a str>,
    /// When the message was received.
    pub time: SystemTime,
}

impl Trace<'_> {
    /// The header field, folded, with its CRLF.
    pub fn received(&self) -> String {
        let ip = match self.client_ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let helo: String = self
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let mut h = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {} ({}) with {} id {}",
            self.by, self.software, self.protocol, self.id
        );
        if let Some(rcpt) = self.for_rcpt {
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(self.time)));
        h
    }
}

/// The `Received:` field of a message a local user submitted with
/// `sendmail`: no client to name, the submitting uid instead, in Postfix's
/// shape, with its CRLF.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(
///     hedwig::message::received_local("host.example", "hedwig mailman", 1000, "ID1", t),
///     "Received: by host.example (hedwig mailman, from userid 1000)\r\n\tid ID1; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
/// );
/// ```
pub fn received_local(by: &str, software: &str, uid: u32, id: &str, time: SystemTime) -> String {
    format!(
        "Received: by {by} ({software}, from userid {uid})\r\n\tid {id}; {}\r\n",
        rfc5322_date(time)
    )
}

/// Adds the trace header and any missing `Date:`/`Message-ID:` to a message
/// streamed through it.
#[derive(Debug)]
pub struct Stamper {
    /// Held-back start of the message while the header section is incomplete;
    /// `None` once it has been written out.
    head: Option<Vec<u8>>,
    received: String,
    date: String,
    message_id: String,
    max_header: usize,
    masquerade: Option<crate::masquerade::Rule>,
    rewrote: bool,
}

impl Stamper {
    /// `received` goes on top; `date` and `message_id` (without angle
    /// brackets) are used only when missing.
    pub fn new(received: String, date: String, message_id: String, max_header: usize) -> Stamper {
        Stamper {
            head: Some(Vec::new()),
            received,
            date,
            message_id,
            max_header,
            masquerade: None,
            rewrote: false,
        }
    }

    /// Also rewrites the sender fields by `rule` (see [`crate::masquerade`]).
    pub fn masquerade(mut self, rule: Option<crate::masquerade::Rule>) -> Stamper {
        self.masquerade = rule;
        self
    }

    /// Whether the masquerade rule changed a header field.
    pub fn rewrote(&self) -> bool {
        self.rewrote
    }

    /// Whether the header section has been written out: from now on every
    /// chunk passes unchanged, and a caller may skip [`Stamper::push`].
    pub fn passes_through(&self) -> bool {
        self.head.is_none()
    }

    /// Takes the next chunk of message bytes; appends what can be written to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(head) = &mut self.head else {
            out.extend_from_slice(chunk);
            return;
        };
        head.extend_from_slice(chunk);
        let scan = scan_headers(head, false);
        if scan.complete || head.len() > self.max_header {
            self.flush(scan, out);
        }
    }

    /// The message ended: writes out whatever was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(head) = &self.head {
            let scan = scan_headers(head, true);
            self.flush(scan, out);
        }
    }

    fn flush(&mut self, scan: Scan, out: &mut Vec<u8>) {
        let Some(head) = self.head.take() else { return };
        out.extend_from_slice(self.received.as_bytes());
        // A header section too large to see whole is passed on as it is.
        if !scan.complete {
            out.extend_from_slice(&head);
            return;
        }
        let section = &head[..scan.end];
        match self
            .masquerade
            .as_ref()
            .and_then(|r| r.header_section(section))
        {
            Some(rewritten) => {
                out.extend_from_slice(&rewritten);
                self.rewrote = true;
            }
            None => out.extend_from_slice(section),
        }
        if !scan.has_date {
            out.extend_from_slice(format!("Date: {}\r\n", self.date).as_bytes());
        }
        if !scan.has_message_id {
            out.extend_from_slice(format!("Message-ID: <{}>\r\n", self.message_id).as_bytes());
        }
        // Keep a body that followed the headers without a blank line apart from them.
        if scan.needs_separator {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&head[scan.end..]);
    }
}

/// What a look at the start of a message found.
#[derive(Debug)]
struct Scan {
    /// The header section's end is known.
    complete: bool,
    /// Offset where the header section ends (before the blank line).
    end: usize,
    has_date: bool,
    has_message_id: bool,
    /// The header section ended at a line that is not a header, not at a blank line.
    needs_separator: bool,
}

/// Reads header lines from the start of `head`. With `at_end`, a last line
/// without CRLF still counts and the section is complete whatever follows.
fn scan_headers(head: &[u8], at_end: bool) -> Scan {
    let mut scan = Scan {
        complete: false,
        end: 0,
        has_date: false,
        has_message_id: false,
        needs_separator: false,
    };
    let mut pos = 0;
    loop {
        let rest = &head[pos..];
        let Some(n) = rest.windows(2).position(|w| w == b"\r\n") else {
            // An unfinished line: only at the end of the message does it settle anything.
            if at_end {
                scan.complete = true;
                scan.end = pos;
                scan.needs_separator = !rest.is_empty();
            }
            return scan;
        };
        let line = &rest[..n];
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t')) && pos > 0;
        let name = field_name(line);
        if line.is_empty() || (!is_continuation && name.is_none()) {
            scan.complete = true;
            scan.end = pos;
            scan.needs_separator = !line.is_empty();
            return scan;
        }
        if let Some(name) = name {
            scan.has_date |= name.eq_ignore_ascii_case(b"Date");
            scan.has_message_id |= name.eq_ignore_ascii_case(b"Message-ID");
        }
        pos += n + 2;
        if at_end && pos == head.len() {
            scan.complete = true;
            scan.end = pos;
            return scan;
        }
    }
}

/// The field name of a header line (RFC 5322 section 2.2: printable ASCII but
/// colon, then a colon).
pub fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_newlines_turns_every_line_end_into_one_crlf() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"", b""),
            (b"\r", b"\r\n"),
            (b"\n", b"\r\n"),
            (b"\r\r\n", b"\r\n\r\n"),
            (b"\n\r", b"\r\n\r\n"),
            (b"a\r", b"a\r\n"),
            (b"no line end", b"no line end"),
            (b"x\r\ny\nz\rw\r\n", b"x\r\ny\r\nz\r\nw\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_newlines(input), want, "{input:?}");
        }
    }

    #[test]
    fn newlines_in_chunks_equal_newlines_whole() {
        let input = b"a\r\nb\rc\nd\r\r\n\n\re\r";
        let whole = normalize_newlines(input);
        for size in 1..input.len() {
            let mut n = Newlines::default();
            let mut out = Vec::new();
            for chunk in input.chunks(size) {
                n.push(chunk, &mut out);
            }
            n.finish(&mut out);
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    fn stamp(msg: &[u8], chunk: usize) -> String {
        let mut s = Stamper::new("Received: x\r\n".into(), "D".into(), "M@h".into(), 200);
        let mut out = Vec::new();
        for piece in msg.chunks(chunk) {
            s.push(piece, &mut out);
        }
        s.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn adds_only_what_is_missing() {
        for chunk in [1, 3, 1000] {
            assert_eq!(
                stamp(b"Subject: a\r\n\r\nbody\r\n", chunk),
                "Received: x\r\nSubject: a\r\nDate: D\r\nMessage-ID: <M@h>\r\n\r\nbody\r\n"
            );
            assert_eq!(
                stamp(b"date: now\r\nMessage-Id: <a@b>\r\n\r\nbody\r\n", chunk),
                "Received: x\r\ndate: now\r\nMessage-Id: <a@b>\r\n\r\nbody\r\n"
            );
        }
    }

    #[test]
    fn folded_headers_and_header_only_messages() {
        assert_eq!(
            stamp(b"Subject: a\r\n b\r\nDate: d\r\n", 2),
            "Received: x\r\nSubject: a\r\n b\r\nDate: d\r\nMessage-ID: <M@h>\r\n"
        );
        assert_eq!(
            stamp(b"", 2),
            "Received: x\r\nDate: D\r\nMessage-ID: <M@h>\r\n"
        );
    }

    #[test]
    fn body_without_headers_gets_a_separator() {
        assert_eq!(
            stamp(b"hello world\r\n", 4),
            "Received: x\r\nDate: D\r\nMessage-ID: <M@h>\r\n\r\nhello world\r\n"
        );
    }

    #[test]
    fn oversized_header_section_passes_unchanged() {
        let mut msg = Vec::new();
        for i in 0..20 {
            msg.extend_from_slice(format!("X-Long-{i}: 0123456789\r\n").as_bytes());
        }
        msg.extend_from_slice(b"\r\nbody\r\n");
        let out = stamp(&msg, 7);
        assert_eq!(
            out.as_bytes(),
            [b"Received: x\r\n".as_slice(), &msg].concat()
        );
    }

    #[test]
    fn received_header_shape() {
        let t = Trace {
            helo: "client.test",
            client_ip: "127.0.0.1".parse().unwrap(),
            by: "mx.test",
            software: "hedwig mailman",
            protocol: "ESMTP",
            id: "ABC",
            for_rcpt: Some("a@b"),
            time: UNIX_EPOCH,
        };
        assert_eq!(
            t.received(),
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (hedwig mailman) with ESMTP id ABC\r\n\
             \tfor <a@b>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
