//! Sender identity for containers: `root@3f2a9c1b7e4d` becomes
//! `root@example.org` before mail leaves the docker host.
//!
//! A container's mail names a domain nobody can verify (its hostname, a
//! container id, `localhost`), so receivers score it as forged and the
//! bounce has nowhere to go. Like Postfix's `masquerade_domains` and
//! `myorigin`, mailman rewrites such a sender to `local@domain`: the
//! envelope sender always, and with `rewrite_from_header` the From:,
//! Sender: and Return-Path: fields too, so the envelope and the header agree
//! (which DMARC alignment needs). A pure rewrite: mailman calls it where a
//! message goes into the spool.

use crate::smtp::address::Address;

/// The configured rule with this host's own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    domain: String,
    headers: bool,
    local_names: Vec<String>,
}

/// The header fields that name the sender.
const SENDER_FIELDS: [&[u8]; 3] = [b"From", b"Sender", b"Return-Path"];

impl Rule {
    /// Rewrites to `domain`; `headers` also rewrites From:/Sender:/Return-Path:.
    /// `local_names` are this host's names (any case), which count as local.
    pub fn new(domain: &str, headers: bool, local_names: &[String]) -> Rule {
        Rule {
            domain: domain.to_ascii_lowercase(),
            headers,
            local_names: local_names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether mail from `domain` must be rewritten: no dot (a container
    /// id or hostname, `localhost`), an address literal, `.localdomain`,
    /// or one of this host's names.
    pub fn is_local(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        !d.contains('.')
            || d.starts_with('[')
            || d.ends_with(".localdomain")
            || self.local_names.contains(&d)
    }

    /// The envelope sender rewritten, when it needs to be.
    pub fn address(&self, address: &Address) -> Option<Address> {
        let domain = address.domain()?;
        if !self.is_local(domain) {
            return None;
        }
        let local = &address.as_str()[..address.as_str().len() - domain.len() - 1];
        Address::parse(&format!("{local}@{}", self.domain)).ok()
    }

    /// The header section (CRLF lines, without the blank line) with the
    /// sender fields rewritten; `None` when nothing changed or headers are
    /// left alone.
    pub fn header_section(&self, head: &[u8]) -> Option<Vec<u8>> {
        if !self.headers {
            return None;
        }
        let mut out = Vec::with_capacity(head.len() + 64);
        let mut changed = false;
        let mut rewriting = false;
        for line in head.split_inclusive(|&b| b == b'\n') {
            let folded = matches!(line.first(), Some(b' ' | b'\t'));
            if !folded {
                rewriting = line.iter().position(|&b| b == b':').is_some_and(|c| {
                    SENDER_FIELDS
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(&line[..c]))
                });
            }
            match rewriting.then(|| self.domains_in(line)).flatten() {
                Some(new) => {
                    out.extend_from_slice(&new);
                    changed = true;
                }
                None => out.extend_from_slice(line),
            }
        }
        changed.then_some(out)
    }

    /// `line` with the domain of each address in it (outside quotes and
    /// comments) that is local replaced by the rule's; `None` if none was.
    fn domains_in(&self, line: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(line.len() + 32);
        let (mut quoted, mut comment, mut escaped) = (false, 0u32, false);
        let mut changed = false;
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            out.push(b);
            i += 1;
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if quoted || comment > 0 => escaped = true,
                b'"' if comment == 0 => quoted = !quoted,
                b'(' if !quoted => comment += 1,
                b')' if !quoted && comment > 0 => comment -= 1,
                b'@' if !quoted && comment == 0 => {
                    let len = line[i..]
                        .iter()
                        .position(|&c| !is_domain_byte(c))
                        .unwrap_or(line.len() - i);
                    let domain = std::str::from_utf8(&line[i..i + len]).unwrap_or("");
                    if !domain.is_empty() && self.is_local(domain) {
                        out.extend_from_slice(self.domain.as_bytes());
                        changed = true;
                    } else {
                        out.extend_from_slice(&line[i..i + len]);
                    }
                    i += len;
                }
                _ => {}
            }
        }
        changed.then_some(out)
    }
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':') || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(headers: bool) -> Rule {
        Rule::new("Example.org", headers, &["docker1.example.net".into()])
    }

    fn addr(s: &str) -> Option<String> {
        rule(true)
            .address(&Address::parse(s).unwrap())
            .map(|a| a.as_str().to_string())
    }

    #[test]
    fn local_senders_are_rewritten() {
        assert_eq!(
            addr("root@3f2a9c1b7e4d").as_deref(),
            Some("root@example.org")
        );
        assert_eq!(addr("app@localhost").as_deref(), Some("app@example.org"));
        assert_eq!(
            addr("x@Docker1.Example.NET").as_deref(),
            Some("x@example.org")
        );
        assert_eq!(addr("x@box.localdomain").as_deref(), Some("x@example.org"));
        assert_eq!(addr("x@[172.17.0.5]").as_deref(), Some("x@example.org"));
        assert_eq!(addr("shop@example.com"), None);
        assert_eq!(addr("a@mail.example.org"), None);
    }

    #[test]
    fn sender_fields_are_rewritten_and_nothing_else() {
        let head = b"Received: from x by root@3f2a9c1b7e4d\r\n\
From: \"root@evil\" <root@3f2a9c1b7e4d> (root@box)\r\n\
To: ops@3f2a9c1b7e4d\r\nSender: app@localhost\r\nReturn-Path: <root@3f2a9c1b7e4d>\r\n\
Reply-To: x@3f2a9c1b7e4d\r\nFROM: a@example.com,\r\n b@web1\r\n";
        let out = String::from_utf8(rule(true).header_section(head).unwrap()).unwrap();
        assert_eq!(
            out,
            "Received: from x by root@3f2a9c1b7e4d\r\n\
From: \"root@evil\" <root@example.org> (root@box)\r\n\
To: ops@3f2a9c1b7e4d\r\nSender: app@example.org\r\nReturn-Path: <root@example.org>\r\n\
Reply-To: x@3f2a9c1b7e4d\r\nFROM: a@example.com,\r\n b@example.org\r\n"
        );
        assert_eq!(rule(false).header_section(head), None);
        assert_eq!(rule(true).header_section(b"From: a@example.com\r\n"), None);
    }
}
