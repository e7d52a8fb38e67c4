//! `POST /v1/messages` with a JSON body: the fields an application knows
//! (from, to, subject, text, ...) built into a MIME message with
//! mail-builder. Envelope recipients are to + cc + bcc; Bcc never appears in
//! the headers. A CR or LF in any value bound for a header is refused, so no
//! caller can inject a header.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hedwig::envelope::Envelope;
use hedwig::smtp::address::Address;
use mail_builder::headers::address::Address as MailAddress;
use mail_builder::headers::date::Date;
use mail_builder::headers::text::Text;
use mail_builder::MessageBuilder;
use serde::Deserialize;

/// The JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMessage {
    /// `a@b.org` or `Name <a@b.org>`.
    pub from: String,
    /// Visible recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Visible copies.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Hidden copies: envelope only.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To.
    pub reply_to: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Plain text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Extra header fields.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// One attachment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// File name shown to the reader.
    pub filename: String,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The bytes, base64.
    pub content: String,
}

/// Why a JSON message cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub enum ComposeError {
    /// Malformed: header injection, bad base64 (HTTP 400).
    BadRequest(String),
    /// Well-formed but unusable: bad address, no recipient (HTTP 422).
    Unprocessable(String),
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComposeError::BadRequest(e) | ComposeError::Unprocessable(e) => f.write_str(e),
        }
    }
}

/// Header fields the builder writes itself; callers may not set them.
const RESERVED: [&str; 11] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// Longest header field name or attachment content type. mail-builder folds
/// header values but writes these whole, and a line may not pass 998
/// characters (RFC 5322 2.1.1); real ones are far shorter (RFC 6838 caps a
/// media type's type and subtype at 127 characters each).
const MAX_UNFOLDED: usize = 256;

fn no_newline(field: &str, value: &str) -> Result<(), ComposeError> {
    if value.contains(['\r', '\n']) {
        return Err(ComposeError::BadRequest(format!(
            "header injection: CR or LF in {field}"
        )));
    }
    Ok(())
}

/// Splits `Name <addr>` or `addr`, checking the address.
fn mailbox(field: &str, value: &str) -> Result<(Option<String>, Address), ComposeError> {
    no_newline(field, value)?;
    let value = value.trim();
    let (name, addr) = match value.strip_suffix('>').and_then(|v| v.rsplit_once('<')) {
        Some((name, addr)) => {
            let name = name.trim().trim_matches('"').trim();
            ((!name.is_empty()).then(|| name.to_string()), addr.trim())
        }
        None => (None, value),
    };
    let address = Address::parse(addr)
        .map_err(|e| ComposeError::Unprocessable(format!("{field}: {e}: {value:?}")))?;
    Ok((name, address))
}

fn mailboxes(
    field: &str,
    values: &[String],
) -> Result<Vec<(Option<String>, Address)>, ComposeError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| mailbox(&format!("{field}[{i}]"), v))
        .collect()
}

fn to_mail(list: &[(Option<String>, Address)]) -> MailAddress<'static> {
    MailAddress::new_list(
        list.iter()
            .map(|(n, a)| MailAddress::new_address(n.clone(), a.as_str().to_string()))
            .collect(),
    )
}

/// Builds the message: the envelope and the bytes (CRLF lines).
pub fn compose(
    msg: &JsonMessage,
    message_id: &str,
    date: SystemTime,
) -> Result<(Envelope, Vec<u8>), ComposeError> {
    let from = mailbox("from", &msg.from)?;
    let (to, cc, bcc) = (
        mailboxes("to", &msg.to)?,
        mailboxes("cc", &msg.cc)?,
        mailboxes("bcc", &msg.bcc)?,
    );
    let reply_to = msg
        .reply_to
        .as_deref()
        .map(|r| mailbox("reply_to", r))
        .transpose()?;
    if let Some(s) = &msg.subject {
        no_newline("subject", s)?;
    }
    let mut recipients: Vec<Address> = Vec::new();
    for (_, a) in to.iter().chain(&cc).chain(&bcc) {
        if !recipients
            .iter()
            .any(|r| r.as_str().eq_ignore_ascii_case(a.as_str()))
        {
            recipients.push(a.clone());
        }
    }
    if recipients.is_empty() {
        return Err(ComposeError::Unprocessable(
            "no recipients: give at least one of to, cc, bcc".into(),
        ));
    }
    let secs = date
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut b = MessageBuilder::new()
        .from(to_mail(std::slice::from_ref(&from)))
        .date(Date::new(secs))
        .message_id(message_id.to_string());
    if !to.is_empty() {
        b = b.to(to_mail(&to));
    }
    if !cc.is_empty() {
        b = b.cc(to_mail(&cc));
    }
    if let Some(r) = &reply_to {
        b = b.reply_to(to_mail(std::slice::from_ref(r)));
    }
    if let Some(s) = &msg.subject {
        b = b.subject(s.clone());
    }
    for (name, value) in &msg.headers {
        no_newline("header name", name)?;
        no_newline(&format!("header {name}"), value)?;
        if name.is_empty() || !name.bytes().all(|c| (33..=126).contains(&c) && c != b':') {
            return Err(ComposeError::BadRequest(format!(
                "invalid header name {name:?}"
            )));
        }
        if name.len() > MAX_UNFOLDED {
            return Err(ComposeError::BadRequest(format!(
                "header name longer than {MAX_UNFOLDED} characters"
            )));
        }
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ComposeError::Unprocessable(format!(
                "header {name} is set from its own field"
            )));
        }
        b = b.header(name.clone(), Text::new(value.clone()));
    }
    if let Some(t) = &msg.text {
        b = b.text_body(t.clone());
    }
    if let Some(h) = &msg.html {
        b = b.html_body(h.clone());
    }
    if msg.text.is_none() && msg.html.is_none() {
        b = b.text_body(String::new());
    }
    for (i, a) in msg.attachments.iter().enumerate() {
        no_newline(&format!("attachments[{i}].filename"), &a.filename)?;
        no_newline(&format!("attachments[{i}].content_type"), &a.content_type)?;
        let valid_type = a.content_type.split_once('/').is_some_and(|(t, s)| {
            let token = |x: &str| {
                !x.is_empty()
                    && x.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
            };
            token(t) && token(s.split(';').next().unwrap_or("").trim())
        });
        if !valid_type {
            return Err(ComposeError::Unprocessable(format!(
                "attachments[{i}].content_type: not type/subtype: {:?}",
                a.content_type
            )));
        }
        if a.content_type.len() > MAX_UNFOLDED {
            return Err(ComposeError::Unprocessable(format!(
                "attachments[{i}].content_type: longer than {MAX_UNFOLDED} characters"
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.content.trim())
            .map_err(|e| {
                ComposeError::BadRequest(format!("attachments[{i}].content: invalid base64: {e}"))
            })?;
        b = b.attachment(a.content_type.clone(), a.filename.clone(), bytes);
    }
    let bytes = b
        .write_to_vec()
        .map_err(|e| ComposeError::BadRequest(format!("cannot build message: {e}")))?;
    let envelope = Envelope {
        from: Some(from.1),
        to: recipients,
    };
    Ok((envelope, hedwig::message::normalize_newlines(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> JsonMessage {
        serde_json::from_str(json).unwrap()
    }

    fn build(json: &str) -> Result<(Envelope, String), ComposeError> {
        compose(&parse(json), "m1@po.test", UNIX_EPOCH)
            .map(|(e, b)| (e, String::from_utf8(b).unwrap()))
    }

    #[test]
    fn envelope_is_to_cc_bcc_and_bcc_stays_hidden() {
        let (env, text) = build(
            r#"{"from": "App <app@x.test>", "to": ["a@y.test"], "cc": ["b@y.test"], "bcc": ["hidden@z.test", "A@y.test"],
                "subject": "Hi", "text": "hello", "headers": {"X-Tag": "t1"}}"#,
        )
        .unwrap();
        assert_eq!(env.sender(), "app@x.test");
        let to: Vec<&str> = env.to.iter().map(|a| a.as_str()).collect();
        assert_eq!(to, ["a@y.test", "b@y.test", "hidden@z.test"]);
        assert!(!text.to_ascii_lowercase().contains("bcc"));
        assert!(!text.contains("hidden@z.test"));
        assert!(text.contains("Message-ID: <m1@po.test>\r\n"));
        assert!(text.contains("X-Tag: t1\r\n"));
        assert!(text.contains("Subject: Hi\r\n"));
    }

    #[test]
    fn header_injection_is_a_bad_request() {
        for json in [
            r#"{"from": "a@x.test", "to": ["b@y.test"], "subject": "Hi\r\nBcc: evil@z.test"}"#,
            r#"{"from": "a@x.test\nBcc: evil@z.test", "to": ["b@y.test"]}"#,
            r#"{"from": "a@x.test", "to": ["b@y.test"], "headers": {"X-A": "1\nX-B: 2"}}"#,
            r#"{"from": "a@x.test", "to": ["b@y.test"], "headers": {"X-A\nX-B": "1"}}"#,
            r#"{"from": "a@x.test", "to": ["b@y.test"], "attachments": [{"filename": "a\r\nb", "content_type": "text/plain", "content": ""}]}"#,
        ] {
            assert!(
                matches!(build(json), Err(ComposeError::BadRequest(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn unusable_messages_are_unprocessable() {
        for json in [
            r#"{"from": "a@x.test"}"#,
            r#"{"from": "not an address", "to": ["b@y.test"]}"#,
            r#"{"from": "a@x.test", "to": ["b@"]}"#,
            r#"{"from": "a@x.test", "to": ["b@y.test"], "headers": {"Subject": "x"}}"#,
            r#"{"from": "a@x.test", "to": ["b@y.test"], "attachments": [{"filename": "f", "content_type": "pdf", "content": ""}]}"#,
        ] {
            assert!(
                matches!(build(json), Err(ComposeError::Unprocessable(_))),
                "{json}"
            );
        }
        let bad64 = r#"{"from": "a@x.test", "to": ["b@y.test"], "attachments": [{"filename": "f", "content_type": "text/plain", "content": "%%%"}]}"#;
        assert!(matches!(build(bad64), Err(ComposeError::BadRequest(_))));
    }

    #[test]
    fn no_line_past_998_characters() {
        // Found by fuzz/fuzz_targets/compose_json.rs: a 1,100-character
        // header name, or attachment content type, was written on one line.
        let long = "X".repeat(MAX_UNFOLDED + 1);
        let name =
            format!(r#"{{"from": "a@x.test", "to": ["b@y.test"], "headers": {{"{long}": "v"}}}}"#);
        assert!(matches!(build(&name), Err(ComposeError::BadRequest(_))));
        let attachment = |content_type: &str| {
            format!(
                r#"{{"from": "a@x.test", "to": ["b@y.test"], "attachments": [{{"filename": "f", "content_type": "{content_type}", "content": ""}}]}}"#
            )
        };
        let long_type = format!("text/{}", "p".repeat(MAX_UNFOLDED));
        assert!(matches!(
            build(&attachment(&long_type)),
            Err(ComposeError::Unprocessable(_))
        ));
        // At the bound both are accepted, and every line stays within 998.
        let name = format!(
            r#"{{"from": "a@x.test", "to": ["b@y.test"], "headers": {{"{}": "{}"}}}}"#,
            "X".repeat(MAX_UNFOLDED),
            "v ".repeat(600)
        );
        let longest_type = format!("text/{}", "p".repeat(MAX_UNFOLDED - 5));
        for json in [name, attachment(&longest_type)] {
            let (_, text) = build(&json).unwrap();
            assert!(text.split("\r\n").all(|l| l.len() <= 998), "{json}");
        }
    }

    #[test]
    fn python_email_reads_the_mime_tree() {
        let (_, text) = build(
            r#"{"from": "a@x.test", "to": ["b@y.test"], "subject": "Grüße", "text": "plain", "html": "<p>html</p>",
                "attachments": [{"filename": "d.bin", "content_type": "application/octet-stream", "content": "AAECAw=="}]}"#,
        )
        .unwrap();
        assert!(
            !text.replace("\r\n", "").contains(['\r', '\n']),
            "only CRLF line endings"
        );
        let script = r#"
import email, sys
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
assert m.get_content_type() == 'multipart/mixed', m.get_content_type()
assert str(m['Subject']) == 'Grüße', m['Subject']
parts = list(m.iter_parts())
assert parts[0].get_content_type() == 'multipart/alternative'
att = parts[1]
assert att.get_filename() == 'd.bin'
assert att.get_payload(decode=True) == bytes([0, 1, 2, 3])
print('ok')
"#;
        crate::testing::python_says_ok(script, text.as_bytes());
    }
}
