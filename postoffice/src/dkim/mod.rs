//! DKIM signing (RFC 6376, Ed25519 per RFC 8463) of what postoffice delivers.
//!
//! A pure signer: message bytes, the configured keys and the time go in,
//! `DKIM-Signature:` fields to put on top of the message come out. It is
//! called when a message leaves the queue for delivery, so what is queued
//! is signed with the keys of the running configuration (a rotated key
//! applies to mail queued before the rotation).
//!
//! A message is signed with every key whose domain is its From: domain or a
//! parent of it (DMARC's relaxed alignment); with none, it goes unsigned.
//! relaxed/relaxed canonicalization; `h=` lists the fields of [`SIGNED`]
//! the message has, and From once more, so a From: added later breaks the
//! signature instead of riding on it.

mod canon;
pub mod key;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hedwig::config::DkimKey;

pub use key::Key;

/// The fields a signature covers, where present (the list: what a
/// reader sees and what a forger would change).
pub const SIGNED: [&str; 11] = [
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "reply-to",
    "in-reply-to",
    "references",
];

/// Longest line of a signature field we write (RFC 5322's recommended 78).
const WIDTH: usize = 78;

/// One configured key, loaded.
#[derive(Debug)]
struct Loaded {
    config: DkimKey,
    key: Key,
}

/// The keys postoffice signs with.
#[derive(Debug, Default)]
pub struct Signer {
    keys: Vec<Loaded>,
}

impl Signer {
    /// Loads every configured key; the error names the file.
    pub fn load(keys: &[DkimKey]) -> Result<Signer, String> {
        let keys = keys
            .iter()
            .map(|k| {
                let key = Key::load(&k.key).map_err(|e| format!("{}: {e}", k.key.display()))?;
                Ok(Loaded {
                    config: k.clone(),
                    key,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Signer { keys })
    }

    /// One line per key for the start-up log: `example.org (s=ed2026, ed25519-sha256)`.
    pub fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                let (c, a) = (&k.config, k.key.algorithm());
                format!("{} (s={}, {a})", c.domain, c.selector)
            })
            .collect()
    }

    /// `message` as it is to be delivered: with its signatures on top. A
    /// signing failure (OpenSSL refusing a loaded key) is logged and the
    /// message goes unsigned rather than not at all.
    pub fn signed(&self, id: &str, message: Vec<u8>, now: SystemTime) -> Vec<u8> {
        match self.sign(&message, now) {
            Ok(fields) if fields.is_empty() => message,
            Ok(mut fields) => {
                fields.extend_from_slice(&message);
                fields
            }
            Err(e) => {
                log::warn!("{id}: DKIM: {e}; delivering unsigned");
                message
            }
        }
    }

    /// The `DKIM-Signature:` fields for `message` (CRLF lines) signed at
    /// `now`, one per key that covers its From: domain, to be put before
    /// the message's first line; empty when no key applies.
    pub fn sign(&self, message: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let (fields, body) = canon::split(message);
        let Some(domain) = fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(b"from"))
            .and_then(|f| canon::from_domain(f.value()))
        else {
            return Ok(Vec::new());
        };
        let covering: Vec<&Loaded> = self
            .keys
            .iter()
            .filter(|k| k.config.covers(&domain))
            .collect();
        if covering.is_empty() {
            return Ok(Vec::new());
        }
        let body_hash = body_hash(body);
        let (names, headers) = signed_headers(&fields);
        let time = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut out = Vec::new();
        for k in covering {
            let tags = [
                "v=1".to_string(),
                format!("a={}", k.key.algorithm()),
                "c=relaxed/relaxed".to_string(),
                format!("d={}", k.config.domain),
                format!("s={}", k.config.selector),
                format!("t={time}"),
                format!("h={}", names.join(":")),
                format!("bh={body_hash}"),
            ];
            let unsigned = fold_tags(&tags);
            let mut data = headers.clone();
            canon::relaxed_header(unsigned.as_bytes(), false, &mut data);
            let b = base64::engine::general_purpose::STANDARD.encode(k.key.sign(&data)?);
            out.extend_from_slice(unsigned.as_bytes());
            out.extend_from_slice(
                fold_value(&b, unsigned.len() - last_line_start(&unsigned)).as_bytes(),
            );
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }
}

/// `bh=`: the base64 SHA-256 of the relaxed body.
fn body_hash(body: &[u8]) -> String {
    let mut sha = openssl::sha::Sha256::new();
    canon::relaxed_body(body, |chunk| sha.update(chunk));
    base64::engine::general_purpose::STANDARD.encode(sha.finish())
}

/// The `h=` names and the canonicalized fields they select: for each name,
/// every instance the message has, taken from the bottom up as a verifier
/// takes them (section 5.4.2); and From once more.
fn signed_headers(fields: &[canon::Field<'_>]) -> (Vec<&'static str>, Vec<u8>) {
    let mut names = Vec::new();
    let mut data = Vec::new();
    for name in SIGNED {
        let instances = fields
            .iter()
            .rev()
            .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()));
        for field in instances {
            names.push(name);
            canon::relaxed_header(field.raw, true, &mut data);
        }
    }
    // The extra "from" selects no field, so it adds nothing to the hash now,
    // but any From: added later would be selected and break the signature.
    names.push("from");
    (names, data)
}

/// The signature field up to and including `b=`, folded between tags so no
/// line passes WIDTH (the `h=` list also between names).
fn fold_tags(tags: &[String]) -> String {
    let mut out = String::from("DKIM-Signature:");
    let mut line = out.len();
    let mut put = |word: &str, sep: &str, out: &mut String| {
        if line + sep.len() + word.len() > WIDTH {
            out.push_str("\r\n ");
            line = 1;
        } else {
            out.push_str(sep);
            line += sep.len();
        }
        out.push_str(word);
        line += word.len();
    };
    for tag in tags {
        match tag.strip_prefix("h=") {
            Some(list) => {
                let mut names = list.split(':');
                put(&format!("h={}", names.next().unwrap_or("")), " ", &mut out);
                for n in names {
                    put(&format!(":{n}"), "", &mut out);
                }
                put(";", "", &mut out);
            }
            None => put(&format!("{tag};"), " ", &mut out),
        }
    }
    put("b=", " ", &mut out);
    out
}

/// The byte offset where the last line of `s` starts.
fn last_line_start(s: &str) -> usize {
    s.rfind("\r\n").map_or(0, |i| i + 2)
}

/// A base64 value folded to WIDTH, its first piece on a line already `used` long.
fn fold_value(value: &str, used: usize) -> String {
    let mut out = String::new();
    let mut room = WIDTH.saturating_sub(used).max(1);
    let mut rest = value;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(room.min(rest.len()));
        out.push_str(piece);
        rest = tail;
        if !rest.is_empty() {
            out.push_str("\r\n ");
            room = WIDTH - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
