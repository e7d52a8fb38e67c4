//! The "relaxed" canonicalizations of RFC 6376 section 3.4, and the little
//! header parsing signing needs: the fields in order, the body, and the
//! domain of From:.
//!
//! Relaxed, not simple, because mail is re-folded and re-spaced on its way
//! (mailing lists, MTAs that rewrap long header lines): relaxed survives
//! both, and it is what Gmail, Microsoft and every other large signer use.

/// One header field: its name and its whole raw text, folded lines and the
/// final CRLF included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written (compare it ignoring ASCII case).
    pub name: &'a [u8],
    /// `Name: value\r\n`, with any continuation lines.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// The value: everything after the colon, CRLFs included.
    pub fn value(&self) -> &[u8] {
        &self.raw[self.name.len() + 1..]
    }
}

/// Splits a CRLF message into its header fields and its body. Lines that are
/// not fields (no colon) are skipped: they cannot be signed meaningfully and
/// a verifier skips them too.
pub fn split(message: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields = Vec::new();
    // The field being read: where it starts and its name's length.
    let mut open: Option<(usize, usize)> = None;
    let mut at = 0;
    let body = loop {
        let end = memchr_crlf(message, at).map_or(message.len(), |i| i + 2);
        let line = &message[at..end];
        // A folded line belongs to the field above it; anything else ends it.
        if line.is_empty() || !matches!(line[0], b' ' | b'\t') || open.is_none() {
            if let Some((start, name)) = open.take() {
                fields.push(Field {
                    name: &message[start..start + name],
                    raw: &message[start..at],
                });
            }
            if line.is_empty() || line == b"\r\n" {
                break &message[end..];
            }
            let folded = matches!(line[0], b' ' | b'\t');
            open = (!folded)
                .then(|| line.iter().position(|&b| b == b':').map(|c| (at, c)))
                .flatten();
        }
        at = end;
    };
    (fields, body)
}

fn memchr_crlf(haystack: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Relaxed header canonicalization (section 3.4.2) of `raw` ("Name: value"
/// with any folding and CRLF): the name lowercased, the value unfolded, runs
/// of whitespace made one space, none around the colon or at the end. With
/// `crlf`, CRLF is appended (every field but the signature's own).
pub fn relaxed_header(raw: &[u8], crlf: bool, out: &mut Vec<u8>) {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let name = &raw[..colon];
    let name_end = name.iter().rposition(|&b| !is_wsp(b)).map_or(0, |i| i + 1);
    out.extend(name[..name_end].iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut space = false;
    let mut started = false;
    for &b in raw.get(colon + 1..).unwrap_or_default() {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                out.push(b);
                space = false;
                started = true;
            }
        }
    }
    if crlf {
        out.extend_from_slice(b"\r\n");
    }
}

/// Relaxed body canonicalization (section 3.4.4), fed to `sink` a line at a
/// time so a large body is hashed without a copy: whitespace runs made one
/// space, none at line ends, empty lines at the end dropped, a final CRLF
/// ensured; an empty body stays empty.
pub fn relaxed_body(body: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut empty_lines = 0usize;
    let mut line = Vec::with_capacity(1000);
    let mut at = 0;
    while at < body.len() {
        let (end, next) = match memchr_crlf(body, at) {
            Some(i) => (i, i + 2),
            None => (body.len(), body.len()),
        };
        line.clear();
        let mut space = false;
        for &b in &body[at..end] {
            if is_wsp(b) {
                space = true;
            } else {
                if space {
                    line.push(b' ');
                }
                line.push(b);
                space = false;
            }
        }
        if line.is_empty() {
            // Held back: kept only if a non-empty line follows.
            empty_lines += 1;
        } else {
            for _ in 0..empty_lines {
                sink(b"\r\n");
            }
            empty_lines = 0;
            line.extend_from_slice(b"\r\n");
            sink(&line);
        }
        at = next;
    }
}

/// The domain of the first address in a From: value, lowercased; `None`
/// when there is none. Quotes and comments are skipped, so a display name
/// such as `"a@evil.test" <me@example.org>` gives example.org.
pub fn from_domain(value: &[u8]) -> Option<String> {
    let value = String::from_utf8_lossy(value);
    let mut plain = String::new();
    let (mut quoted, mut comment, mut escaped) = (false, 0u32, false);
    let mut angle: Option<String> = None;
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if quoted || comment > 0 => {}
            '<' => angle = Some(String::new()),
            '>' => {
                if let Some(addr) = angle.take() {
                    return domain_of(&addr);
                }
            }
            ',' if angle.is_none() => break,
            _ => match angle.as_mut() {
                Some(addr) => addr.push(c),
                None => plain.push(c),
            },
        }
    }
    domain_of(&plain)
}

fn domain_of(addr: &str) -> Option<String> {
    let (_, domain) = addr.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty() && !domain.contains(char::is_whitespace)).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(raw: &[u8]) -> String {
        let mut out = Vec::new();
        relaxed_header(raw, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn body(raw: &[u8]) -> String {
        let mut out = Vec::new();
        relaxed_body(raw, |chunk| out.extend_from_slice(chunk));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn relaxed_headers_as_rfc_6376_shows() {
        // Section 3.4.6's example.
        assert_eq!(header(b"A: X\r\n"), "a:X\r\n");
        assert_eq!(header(b"B : Y\t\r\n\tZ  \r\n"), "b:Y Z\r\n");
        assert_eq!(header(b"Subject:\r\n"), "subject:\r\n");
        let mut out = Vec::new();
        relaxed_header(b"DKIM-Signature: a=1;\r\n b=", false, &mut out);
        assert_eq!(out, b"dkim-signature:a=1; b=");
    }

    #[test]
    fn relaxed_body_as_rfc_6376_shows() {
        assert_eq!(body(b" C \r\nD \t E\r\n\r\n\r\n"), " C\r\nD E\r\n");
        assert_eq!(body(b""), "");
        assert_eq!(body(b"\r\n\r\n"), "");
        assert_eq!(body(b"no newline"), "no newline\r\n");
        assert_eq!(body(b"a\r\n\r\nb\r\n \r\n"), "a\r\n\r\nb\r\n");
        assert_eq!(body(b"\xe7\x94\xa8  x\r\n"), "\u{7528} x\r\n");
    }

    #[test]
    fn splits_fields_and_body() {
        let m = b"From: a@b.test\r\nSubject: one\r\n two\r\nnot a field\r\n\r\nbody\r\n";
        let (fields, rest) = split(m);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].name, b"Subject");
        assert_eq!(fields[1].raw, b"Subject: one\r\n two\r\n");
        assert_eq!(fields[1].value(), b" one\r\n two\r\n");
        assert_eq!(rest, b"body\r\n");
        let (fields, rest) = split(b"From: a@b.test\r\n");
        assert_eq!((fields.len(), rest), (1, &b""[..]));
    }

    #[test]
    fn from_domains() {
        let d = |v: &str| from_domain(v.as_bytes());
        assert_eq!(d(" a@Example.ORG"), Some("example.org".into()));
        assert_eq!(d(" Me <me@example.org>"), Some("example.org".into()));
        assert_eq!(
            d(" \"x@evil.test <y@evil.test>\" <me@example.org>"),
            Some("example.org".into())
        );
        assert_eq!(
            d(" me@example.org (x@evil.test)"),
            Some("example.org".into())
        );
        assert_eq!(d(" a@one.test, b@two.test"), Some("one.test".into()));
        assert_eq!(
            d(" =?utf-8?q?J=C3=B6rg?= <j@x.test>"),
            Some("x.test".into())
        );
        assert_eq!(d(" undisclosed"), None);
        assert_eq!(d(" <>"), None);
    }
}
