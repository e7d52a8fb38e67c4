//! The DATA wire format (RFC 5321 section 4.5.2): the server side undoes dot
//! stuffing while it watches for `CRLF.CRLF`; the client side applies it.
//!
//! The receiver works on whatever chunk the socket gave it and keeps only a
//! few bytes of state, so memory per session does not grow with the message.
//! Only `CRLF.CRLF` ends a message. A bare LF or CR anywhere marks the message
//! as refused (the SMTP smuggling class, CVE-2023-51764): a next hop that read
//! `LF.LF` as an end could otherwise be fed a second, forged message.

use super::reply::{replies, Reply};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (also right after DATA).
    LineStart,
    /// A line that so far is one `.`.
    Dot,
    /// `.` then CR at the start of a line: LF ends the message.
    DotCr,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
}

/// Limits the receiver enforces while streaming.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message in bytes after unstuffing.
    pub max_size: u64,
    /// Longest line in bytes, CRLF included.
    pub max_line: usize,
}

/// Streams DATA bytes into message bytes, one chunk at a time.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::data::{DataReceiver, Limits};
/// let mut rx = DataReceiver::new(Limits { max_size: 1000, max_line: 100 });
/// let mut out = Vec::new();
/// let used = rx.feed(b"Hi\r\n..dot\r\n.\r\nQUIT\r\n", &mut out);
/// assert_eq!(used, Some(14));
/// assert_eq!(out, b"Hi\r\n.dot\r\n");
/// assert!(rx.verdict().is_ok());
/// ```
#[derive(Debug)]
pub struct DataReceiver {
    limits: Limits,
    state: State,
    size: u64,
    line: usize,
    too_big: bool,
    line_too_long: bool,
    bare_newline: bool,
}

impl DataReceiver {
    /// A receiver at the start of the message text.
    pub fn new(limits: Limits) -> DataReceiver {
        DataReceiver {
            limits,
            state: State::LineStart,
            size: 0,
            line: 0,
            too_big: false,
            line_too_long: false,
            bare_newline: false,
        }
    }

    /// Consumes `input`, appending message bytes to `out` while the message is
    /// still acceptable. Returns how many bytes of `input` the message used
    /// once `CRLF.CRLF` was seen (the rest are the next commands), else `None`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Text => {
                    // Copy the run up to the next CR or LF in one go (found a
                    // word at a time: this loop sees every byte of every message).
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]);
                    let end = run.map_or(input.len(), |n| i + n);
                    self.emit(&input[i..end], out);
                    i = end;
                    if let Some(&c) = input.get(i) {
                        if c == b'\r' {
                            self.state = State::Cr;
                        } else {
                            self.bare_newline = true;
                        }
                        i += 1;
                    }
                    continue;
                }
                State::LineStart => match b {
                    b'.' => self.state = State::Dot,
                    b'\r' => self.state = State::Cr,
                    b'\n' => self.bare(),
                    _ => {
                        self.state = State::Text;
                        continue;
                    }
                },
                State::Dot => match b {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => self.bare(),
                    // The leading dot was stuffing: drop it, keep the rest of the line.
                    _ => {
                        self.line += 1;
                        self.state = State::Text;
                        continue;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Some(i + 1);
                    }
                    // A line holding `.` and a bare CR: not an end.
                    self.bare();
                    continue;
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n", out);
                        self.line = 0;
                        self.state = State::LineStart;
                    } else {
                        self.bare();
                        continue;
                    }
                }
            }
            i += 1;
        }
        None
    }

    /// Notes a bare CR or LF and carries on inside a line: what follows can
    /// never be read as the end of the message.
    fn bare(&mut self) {
        self.bare_newline = true;
        self.state = State::Text;
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size += bytes.len() as u64;
        self.line += bytes.len();
        if self.line > self.limits.max_line {
            self.line_too_long = true;
        }
        if self.size > self.limits.max_size {
            self.too_big = true;
        }
        if !self.is_refused() {
            out.extend_from_slice(bytes);
        }
    }

    /// Whether the message is already known to be refused; its bytes are then
    /// no longer passed on.
    pub fn is_refused(&self) -> bool {
        self.too_big || self.line_too_long || self.bare_newline
    }

    /// Message bytes seen so far (after unstuffing).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// After the end: `Ok` or the reply that refuses the message.
    pub fn verdict(&self) -> Result<(), Reply> {
        if self.bare_newline {
            Err(replies::bare_newline())
        } else if self.too_big {
            Err(replies::too_big(self.limits.max_size))
        } else if self.line_too_long {
            Err(replies::text_line_too_long(self.limits.max_line))
        } else {
            Ok(())
        }
    }
}

/// Client side: appends `message` (CRLF lines) to `out` with every line that
/// starts with `.` stuffed, a final CRLF if missing, and the `.` terminator.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// hedwig::smtp::data::stuff(b".hidden\r\nlast", &mut out);
/// assert_eq!(out, b"..hidden\r\nlast\r\n.\r\n");
/// ```
pub fn stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 5);
    // Line by line: a whole line is copied at once, a dot added before it
    // when it starts with one.
    let mut rest = message;
    while let Some(&first) = rest.first() {
        if first == b'.' {
            out.push(b'.');
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        out.extend_from_slice(&rest[..end]);
        rest = &rest[end..];
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Client side: when no line of `message` starts with `.`, what [`stuff`]
/// would add after it (the terminator, and a CRLF if missing), so the
/// message can go out as it is, without a stuffed copy; `None` when it
/// must be stuffed.
///
/// # Examples
///
/// ```
/// use hedwig::smtp::data::unstuffed_tail;
/// assert_eq!(unstuffed_tail(b"a\r\nb\r\n"), Some(&b".\r\n"[..]));
/// assert_eq!(unstuffed_tail(b"a\r\nb"), Some(&b"\r\n.\r\n"[..]));
/// assert_eq!(unstuffed_tail(b"a\r\n.b\r\n"), None);
/// assert_eq!(unstuffed_tail(b""), Some(&b".\r\n"[..]));
/// ```
pub fn unstuffed_tail(message: &[u8]) -> Option<&'static [u8]> {
    if message.first() == Some(&b'.') || memchr::memmem::find(message, b"\n.").is_some() {
        return None;
    }
    Some(if message.is_empty() || message.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_size: 1000,
        max_line: 50,
    };

    /// Feeds `input` in chunks of `chunk` bytes; returns (end offset, output, verdict code).
    fn run(input: &[u8], chunk: usize) -> (Option<usize>, Vec<u8>, u16) {
        let mut rx = DataReceiver::new(LIMITS);
        let mut out = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(chunk) {
            if let Some(n) = rx.feed(piece, &mut out) {
                let code = rx.verdict().map_or_else(|r| r.code, |()| 250);
                return (Some(offset + n), out, code);
            }
            offset += piece.len();
        }
        (None, out, 0)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_in_any_chunking() {
        let input = b"Subject: x\r\n\r\nbody\r\n..two dots\r\n.\r\nNOOP\r\n";
        for chunk in 1..input.len() {
            let (end, out, code) = run(input, chunk);
            assert_eq!(end, Some(input.len() - 6), "chunk {chunk}");
            assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n.two dots\r\n");
            assert_eq!(code, 250);
        }
    }

    #[test]
    fn empty_message() {
        assert_eq!(run(b".\r\n", 10), (Some(3), vec![], 250));
    }

    #[test]
    fn smuggling_variants_never_end_early_and_are_refused() {
        let variants: [&[u8]; 6] = [
            b"a\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\r",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
        ];
        for v in variants {
            let mut input = v.to_vec();
            // Nothing short of the real terminator ends the message.
            assert_eq!(run(&input, 1).0, None, "{:?}", String::from_utf8_lossy(v));
            input.extend_from_slice(b"\r\n.\r\n");
            let (end, _, code) = run(&input, 3);
            assert_eq!(end, Some(input.len()));
            assert_eq!(code, 554, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn bare_lf_in_text_refused() {
        assert_eq!(run(b"line one\nline two\r\n.\r\n", 4).2, 554);
        assert_eq!(run(b"x\rx\r\n.\r\n", 4).2, 554);
    }

    #[test]
    fn too_big_is_read_to_the_end_and_not_passed_on() {
        let mut input = Vec::new();
        for _ in 0..40 {
            input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        input.extend_from_slice(b".\r\n");
        let (end, out, code) = run(&input, 64);
        assert_eq!(end, Some(input.len()));
        assert_eq!(code, 552);
        assert!(out.len() <= 1000);
    }

    #[test]
    fn long_line_refused() {
        let mut input = vec![b'x'; 60];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&input, 7).2, 554);
        // Exactly at the limit, CRLF included, is fine.
        let mut input = vec![b'x'; 48];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&input, 7).2, 250);
    }

    #[test]
    fn stuffing_round_trips() {
        let msg = b".a\r\n..b\r\nc.\r\n.\r\n";
        let mut wire = Vec::new();
        stuff(msg, &mut wire);
        assert_eq!(wire, b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n");
        let (end, out, code) = run(&wire, 5);
        assert_eq!((end, code), (Some(wire.len()), 250));
        assert_eq!(out, msg);
    }

    #[test]
    fn a_message_without_dot_lines_goes_out_as_it_is() {
        let cases: [&[u8]; 9] = [
            b"a\r\nb\r\n",
            b"a\r\nb",
            b"a\nb\n",
            b"x",
            b"a.\r\nb.c\r\n",
            b".a\r\n",
            b"a\r\n.\r\n",
            b"a\n.b",
            b"",
        ];
        for message in cases {
            let mut stuffed = Vec::new();
            stuff(message, &mut stuffed);
            match unstuffed_tail(message) {
                Some(tail) => assert_eq!([message, tail].concat(), stuffed, "{message:?}"),
                // Stuffing did add a dot somewhere.
                None => {
                    let tail = if message.ends_with(b"\r\n") { 3 } else { 5 };
                    assert!(
                        stuffed.len() > message.len() + tail,
                        "{message:?} needed no stuffing"
                    )
                }
            }
        }
        assert!(unstuffed_tail(b"a\r\nb\r\n").is_some());
        assert!(unstuffed_tail(b"a\r\n.b").is_none());
    }
}
