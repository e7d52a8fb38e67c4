//! Bounces: an RFC 3464 delivery status notification (multipart/report with
//! a readable text part, message/delivery-status, and the original's
//! headers as text/rfc822-headers), built with mail-builder. It is sent from
//! the null sender `<>`, so it can never be bounced in turn; the caller never
//! asks for one for a message that itself came from `<>`.

use std::fmt::Write;
use std::time::SystemTime;

use hedwig::envelope::Envelope;
use hedwig::message::rfc5322_date;
use hedwig::smtp::address::Address;
use mail_builder::headers::address::Address as MailAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

/// The original's header section is returned up to this size.
const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// One recipient that failed for good.
#[derive(Debug)]
pub struct Failed<'a> {
    /// The envelope recipient.
    pub recipient: &'a str,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The remote's reply, e.g. `550 5.1.1 <x@y>: no such user`.
    pub diagnostic: Option<&'a str>,
    /// The host that said so.
    pub remote_mta: Option<&'a str>,
    /// Why, for a person.
    pub reason: &'a str,
}

/// The message that failed.
#[derive(Debug)]
pub struct Original<'a> {
    /// Its queue id.
    pub id: &'a str,
    /// Its envelope sender, who gets the DSN.
    pub from: &'a str,
    /// When it was accepted.
    pub arrival: SystemTime,
    /// Its bytes (CRLF lines).
    pub message: &'a [u8],
}

/// Text from a remote server made safe for a header-like field: one line,
/// printable, bounded.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}

/// The header section of a message (all of it when there is no body).
fn headers_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2);
    &message[..end.min(MAX_RETURNED_HEADERS)]
}

/// The message/delivery-status body (RFC 3464): the per-message fields,
/// then one block per recipient; 7bit, long values folded.
fn delivery_status(
    hostname: &str,
    original: &Original<'_>,
    failed: &[Failed<'_>],
    now: SystemTime,
) -> String {
    let mut out = String::new();
    field(&mut out, "Reporting-MTA", &format!("dns; {hostname}"));
    field(&mut out, "X-Hedwig-Queue-ID", &clean(original.id));
    field(&mut out, "Arrival-Date", &rfc5322_date(original.arrival));
    for f in failed {
        out.push_str("\r\n");
        let recipient = address_field(f.recipient);
        field(&mut out, "Final-Recipient", &recipient);
        field(&mut out, "Original-Recipient", &recipient);
        field(&mut out, "Action", "failed");
        field(&mut out, "Status", &clean(&f.status));
        if let Some(mta) = f.remote_mta {
            field(&mut out, "Remote-MTA", &format!("dns; {}", clean(mta)));
        }
        if let Some(d) = f.diagnostic {
            field(&mut out, "Diagnostic-Code", &format!("smtp; {}", clean(d)));
        }
        field(&mut out, "Last-Attempt-Date", &rfc5322_date(now));
    }
    out
}

/// An address-type and address (RFC 3464 section 2.3.2): `rfc822; a@b`, or
/// for an address with non-ASCII characters RFC 6533's `utf-8;` type in its
/// 7-bit form, each such character (and `+`, `=`, `\`) written `\x{HEX}`.
fn address_field(address: &str) -> String {
    let address = clean(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        // QCHAR (RFC 6533 section 3) is printable ASCII but these three.
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", c as u32);
        }
    }
    out
}

/// Longest line we write in the status part (RFC 5322 section 2.1.1's 78).
const WIDTH: usize = 78;
/// Longest word: a line may never pass 998 characters, and only whitespace
/// may be folded.
const MAX_WORD: usize = 900;

/// Appends `Name: value` CRLF, folded at spaces so lines stay within WIDTH
/// where the words allow (RFC 5322 section 2.2.3); a parser unfolds it whole.
fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut line = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let word = match word.char_indices().nth(MAX_WORD) {
            Some((cut, _)) => &word[..cut],
            None => word,
        };
        if line + 1 + word.len() > WIDTH && line > name.len() + 1 {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(word);
        line += 1 + word.len();
    }
    out.push_str("\r\n");
}

/// The RFC 3463 status for a DSN: the remote's enhanced code when it gave a
/// permanent one, else one that opens our own error (e.g. `5.6.7` for a
/// UTF-8 address the MX cannot take), 4.4.7 for an expired deferral, else
/// 5.0.0.
pub fn status_of(reply: Option<&str>, error: Option<&str>) -> String {
    // The enhanced code opening `text`; a reply's comes after "550 " or "550-".
    let code = |text: Option<&str>, skip: usize| {
        let word = text?.get(skip..)?.split_whitespace().next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let digits =
            |p: &&str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        (parts.len() == 3 && parts.iter().all(digits) && parts[0] == "5").then(|| word.to_string())
    };
    if let Some(c) = code(reply, 4).or_else(|| code(error, 0)) {
        return c;
    }
    if error.is_some_and(|e| e.starts_with("gave up")) {
        "4.4.7".into()
    } else {
        "5.0.0".into()
    }
}

/// Builds the DSN: its envelope (null sender, to the original sender) and bytes.
pub fn dsn(
    hostname: &str,
    original: &Original<'_>,
    failed: &[Failed<'_>],
    now: SystemTime,
    message_id: &str,
) -> (Envelope, Vec<u8>) {
    let mut text = format!(
        "This is the mail system at host {hostname}.\r\n\r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. It's attached below.\r\n\r\n"
    );
    for f in failed {
        let _ = write!(text, "<{}>: {}\r\n", clean(f.recipient), clean(f.reason));
        if let Some(d) = f.diagnostic {
            let _ = write!(
                text,
                "    {} said: {}\r\n",
                clean(f.remote_mta.unwrap_or("the remote server")),
                clean(d)
            );
        }
        text.push_str("\r\n");
    }
    let status = delivery_status(hostname, original, failed, now);
    let headers = hedwig::message::normalize_newlines(headers_of(original.message));
    let headers_encoding = if headers.is_ascii() { "7bit" } else { "8bit" };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                BodyPart::Text(text.into()),
            ),
            // 7bit as RFC 3464 section 2.1 requires: parsers read the fields
            // as they stand, so quoted-printable would cut long ones short.
            MimePart::new(
                ContentType::new("message/delivery-status"),
                BodyPart::Binary(status.into_bytes().into()),
            )
            .transfer_encoding("7bit"),
            // As they are, not base64, so a person and a bounce parser read them.
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                BodyPart::Binary(headers.into()),
            )
            .transfer_encoding(headers_encoding),
        ]),
    );
    let daemon = format!("MAILER-DAEMON@{hostname}");
    let bytes = MessageBuilder::new()
        .from(MailAddress::new_address(
            Some("Mail Delivery System"),
            daemon,
        ))
        .to(original.from)
        .subject("Undelivered Mail Returned to Sender")
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .date(mail_builder::headers::date::Date::new(
            now.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        ))
        .message_id(message_id)
        .body(report)
        .write_to_vec()
        .unwrap_or_default();
    let envelope = Envelope {
        from: None,
        to: Address::parse(original.from).into_iter().collect(),
    };
    (envelope, hedwig::message::normalize_newlines(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "550-5.7.1 [192.0.2.1] The user or domain that you are sending to (or from) has a policy that prohibited the mail that you sent. Please contact your domain administrator for further details. To learn more, visit https://support.example.com/mail/answer/10002 a1-20020a170906";

    /// The DSN for `failed` recipients of a message from sender@origin.test.
    fn dsn_for(message: &[u8], failed: &[Failed<'_>]) -> (Envelope, Vec<u8>) {
        let original = Original {
            id: "ABC",
            from: "sender@origin.test",
            arrival: SystemTime::UNIX_EPOCH,
            message,
        };
        dsn(
            "po.test",
            &original,
            failed,
            SystemTime::UNIX_EPOCH,
            "id@po.test",
        )
    }

    fn long_and_utf8() -> (Envelope, Vec<u8>) {
        let failed = [
            Failed {
                recipient: "long@dest.test",
                status: status_of(Some(LONG), None),
                diagnostic: Some(LONG),
                remote_mta: Some("mx.dest.test"),
                reason: "remote said 550",
            },
            Failed {
                recipient: "用户+tag@例子.test",
                status: status_of(
                    None,
                    Some("5.6.7 non-ASCII address, and the server does not offer SMTPUTF8"),
                ),
                diagnostic: None,
                remote_mta: None,
                reason: "5.6.7 non-ASCII address, and the server does not offer SMTPUTF8",
            },
        ];
        dsn_for(
            b"Subject: hello\r\nFrom: sender@origin.test\r\n\r\nbody\r\n",
            &failed,
        )
    }

    #[test]
    fn status_is_7bit_folded_and_readable_whole() {
        let (_, bytes) = long_and_utf8();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let status = &text[text.find("Reporting-MTA").unwrap()..];
        let status = &status[..status.find("\r\n\r\n--").unwrap()];
        assert!(status.is_ascii());
        assert!(status.split("\r\n").all(|l| l.len() <= WIDTH), "{status}");
        assert!(
            text.contains(
                "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: 7bit\r\n"
            ),
            "{text}"
        );
        assert!(status.contains("Status: 5.7.1\r\n"));
        assert!(
            status.contains(
                "Final-Recipient: utf-8; \\x{7528}\\x{6237}\\x{2B}tag@\\x{4F8B}\\x{5B50}.test\r\n"
            ),
            "{status}"
        );
        assert!(status.contains("Status: 5.6.7\r\n"));
        let script = format!(
            r#"
import email, re, sys
m = email.message_from_bytes(sys.stdin.buffer.read())
blocks = m.get_payload()[1].get_payload()
unfold = lambda v: ' '.join(v.split())
assert unfold(blocks[1]['Diagnostic-Code']) == unfold('smtp; ' + {LONG:?}), blocks[1]['Diagnostic-Code']
t, addr = blocks[2]['Final-Recipient'].split(';', 1)
assert t == 'utf-8', t
addr = re.sub(r'\\x\{{([0-9A-F]+)\}}', lambda x: chr(int(x.group(1), 16)), addr.strip())
assert addr == '用户+tag@例子.test', addr
assert blocks[2]['Status'] == '5.6.7'
headers = m.get_payload()[2]
assert headers['Content-Transfer-Encoding'] == '7bit'
assert 'Subject: hello' in headers.get_payload()
print('ok')
"#
        );
        crate::testing::python_says_ok(&script, &bytes);
    }

    #[test]
    fn dsn_status_from_reply() {
        assert_eq!(status_of(Some("550 5.1.1 no such user"), None), "5.1.1");
        assert_eq!(status_of(Some("550 no such user"), None), "5.0.0");
        assert_eq!(
            status_of(None, Some("gave up after 9 attempts: 450")),
            "4.4.7"
        );
        assert_eq!(status_of(Some("554 x.y.z"), None), "5.0.0");
        assert_eq!(status_of(None, Some("5.6.7 non-ASCII address")), "5.6.7");
        assert_eq!(status_of(Some("550 no"), Some("5.3.4 too big")), "5.3.4");
    }

    fn sample() -> (Envelope, Vec<u8>) {
        let failed = [Failed {
            recipient: "nobody@dest.test",
            status: "5.1.1".into(),
            diagnostic: Some("550 5.1.1 <nobody@dest.test>: no such user\r\nInjected: x"),
            remote_mta: Some("mx.dest.test"),
            reason: "remote said 550",
        }];
        dsn_for(
            b"Subject: hello\r\nFrom: sender@origin.test\r\n\r\nsecret body\r\n",
            &failed,
        )
    }

    #[test]
    fn dsn_goes_from_null_sender_to_original_sender() {
        let (env, bytes) = sample();
        assert_eq!(env.from, None);
        assert_eq!(env.to[0].as_str(), "sender@origin.test");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("multipart/report"));
        assert!(
            text.contains("report-type=\"delivery-status\"")
                || text.contains("report-type=delivery-status")
        );
        assert!(text.contains("Final-Recipient: rfc822; nobody@dest.test\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.dest.test\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("MAILER-DAEMON@po.test"));
        // The original's headers come back, its body does not.
        assert!(text.contains("Subject: hello"));
        assert!(!text.contains("secret body"));
        // A remote's reply cannot add a header line.
        assert!(!text.contains("\r\nInjected: x"));
    }

    #[test]
    fn python_email_reads_the_report() {
        let (_, bytes) = sample();
        let script = r#"
import email, sys
m = email.message_from_bytes(sys.stdin.buffer.read())
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'delivery-status'
parts = m.get_payload()
assert [p.get_content_type() for p in parts] == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], parts
blocks = parts[1].get_payload()
assert blocks[0]['Reporting-MTA'] == 'dns; po.test', blocks[0].items()
assert blocks[1]['Final-Recipient'] == 'rfc822; nobody@dest.test', blocks[1].items()
assert blocks[1]['Action'] == 'failed'
print('ok')
"#;
        crate::testing::python_says_ok(script, &bytes);
    }

    #[test]
    fn no_bare_newlines() {
        let (_, bytes) = sample();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(bytes[i - 1], b'\r');
            }
            if b == b'\r' {
                assert_eq!(bytes[i + 1], b'\n');
            }
        }
    }
}
