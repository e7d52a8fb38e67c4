//! The header section `sendmail` reads before it queues: kept whole field by
//! field (continuation lines included), so `-t` can read To, Cc and Bcc,
//! Bcc can be taken out, and a missing From: can be added.

use hedwig::message::field_name;

/// Header fields in order, each with its continuation lines and CRLFs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Header {
    fields: Vec<Vec<u8>>,
    size: usize,
}

impl Header {
    /// Takes the next line (without its line end) if it belongs to the header
    /// section; `false` when it does not (a blank line or a body line).
    pub fn push(&mut self, line: &[u8]) -> bool {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match self.fields.last_mut() {
            Some(field) if continuation => field.extend_from_slice(line),
            _ if field_name(line).is_some() => self.fields.push(line.to_vec()),
            _ => return false,
        }
        self.fields
            .last_mut()
            .expect("just pushed")
            .extend_from_slice(b"\r\n");
        self.size += line.len() + 2;
        true
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.size
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        self.fields
            .iter()
            .filter(move |f| field_name(f).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())))
    }

    /// Whether a field called `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.named(name).next().is_some()
    }

    /// The unfolded values of every field called `name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.named(name)
            .map(|f| {
                let value = &f[name.len() + 1..];
                let text = String::from_utf8_lossy(value);
                text.replace("\r\n", "").trim().to_string()
            })
            .collect()
    }

    /// Takes out every field called `name`.
    pub fn remove(&mut self, name: &str) {
        self.fields
            .retain(|f| !field_name(f).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())));
        self.size = self.fields.iter().map(Vec::len).sum();
    }

    /// Appends a whole field (with its CRLF).
    pub fn append(&mut self, field: Vec<u8>) {
        self.size += field.len();
        self.fields.push(field);
    }

    /// The fields as written.
    pub fn bytes(&self) -> Vec<u8> {
        self.fields.concat()
    }
}

/// The addresses of an address-list value (RFC 5322 section 3.4): `a@b`,
/// `Name <a@b>`, `"Last, First" <a@b>`, `a@b (comment)`, `group: a@b, c@d;`.
/// Display names, comments and group names are dropped; an empty group
/// (`undisclosed-recipients:;`) gives nothing.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut plain, mut angle) = (String::new(), None::<String>);
    let (mut quoted, mut comment, mut in_angle, mut escaped) = (false, 0u32, false, false);
    let mut finish = |plain: &mut String, angle: &mut Option<String>| {
        let address = angle.take().unwrap_or_else(|| plain.trim().to_string());
        // A source route (`<@relay:a@b>`) is obsolete; keep the mailbox.
        let address = address.rsplit(':').next().unwrap_or("").trim().to_string();
        if !address.is_empty() {
            out.push(address);
        }
        plain.clear();
    };
    for c in value.chars() {
        if escaped {
            escaped = false;
            // Inside quotes the backslash stays: it is part of the address.
            if comment == 0 {
                let to = match &mut angle {
                    Some(a) if in_angle => a,
                    _ => &mut plain,
                };
                to.push('\\');
                to.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '"' => {
                quoted = !quoted;
                if in_angle {
                    angle.get_or_insert_with(String::new).push(c);
                } else {
                    plain.push(c);
                }
            }
            _ if quoted => match &mut angle {
                Some(a) if in_angle => a.push(c),
                _ => plain.push(c),
            },
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            _ if in_angle => angle.get_or_insert_with(String::new).push(c),
            // A group's name ends at its colon; what came before was its name.
            ':' => plain.clear(),
            ',' | ';' => finish(&mut plain, &mut angle),
            _ => plain.push(c),
        }
    }
    finish(&mut plain, &mut angle);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists() {
        let cases: [(&str, &[&str]); 9] = [
            ("a@b.org", &["a@b.org"]),
            ("a@b.org, c@d.org", &["a@b.org", "c@d.org"]),
            ("Jo Doe <jo@x.org>", &["jo@x.org"]),
            (
                "\"Doe, Jo\" <jo@x.org>, ann@y.org",
                &["jo@x.org", "ann@y.org"],
            ),
            (
                "jo@x.org (Jo, the boss), ann@y.org",
                &["jo@x.org", "ann@y.org"],
            ),
            (
                "friends: a@b.org, Cee <c@d.org>; e@f.org",
                &["a@b.org", "c@d.org", "e@f.org"],
            ),
            ("undisclosed-recipients:;", &[]),
            ("<@relay.org:jo@x.org>", &["jo@x.org"]),
            ("\"a\\\"b\"@x.org", &["\"a\\\"b\"@x.org"]),
        ];
        for (value, want) in cases {
            assert_eq!(addresses(value), want, "{value:?}");
        }
        assert!(addresses("").is_empty());
        assert!(addresses(" , ,").is_empty());
    }

    #[test]
    fn fields_folded_found_and_removed() {
        let mut h = Header::default();
        for line in [
            &b"From: me@x.org"[..],
            b"To: a@b.org,",
            b"\tc@d.org",
            b"bcc: secret@e.org",
            b"Subject: hi",
        ] {
            assert!(h.push(line));
        }
        assert!(!h.push(b""), "a blank line ends the section");
        assert!(!h.push(b"body text"), "so does a line that is no field");
        assert_eq!(h.values("to"), ["a@b.org,\tc@d.org"]);
        assert_eq!(addresses(&h.values("To")[0]), ["a@b.org", "c@d.org"]);
        assert_eq!(h.values("BCC"), ["secret@e.org"]);
        h.remove("Bcc");
        assert!(!h.has("bcc"));
        assert!(h.has("FROM"));
        assert_eq!(
            h.bytes(),
            b"From: me@x.org\r\nTo: a@b.org,\r\n\tc@d.org\r\nSubject: hi\r\n"
        );
        assert_eq!(h.size(), h.bytes().len());
        let mut empty = Header::default();
        assert!(!empty.push(b" continuation first"));
    }
}
