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
    let mut status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Hedwig-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        clean(original.id),
        rfc5322_date(original.arrival)
    );
    for f in failed {
        let _ = write!(
            status,
            "\r\nFinal-Recipient: rfc822; {r}\r\nOriginal-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {}\r\n",
            clean(&f.status),
            r = clean(f.recipient)
        );
        if let Some(mta) = f.remote_mta {
            let _ = write!(status, "Remote-MTA: dns; {}\r\n", clean(mta));
        }
        if let Some(d) = f.diagnostic {
            let _ = write!(status, "Diagnostic-Code: smtp; {}\r\n", clean(d));
        }
        let _ = write!(status, "Last-Attempt-Date: {}\r\n", rfc5322_date(now));
    }
    let headers = hedwig::message::normalize_newlines(headers_of(original.message));
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                BodyPart::Text(text.into()),
            ),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                BodyPart::Text(status.into()),
            ),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                BodyPart::Binary(headers.into()),
            ),
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

    fn sample() -> (Envelope, Vec<u8>) {
        let original = Original {
            id: "ABC",
            from: "sender@origin.test",
            arrival: SystemTime::UNIX_EPOCH,
            message: b"Subject: hello\r\nFrom: sender@origin.test\r\n\r\nsecret body\r\n",
        };
        let failed = [Failed {
            recipient: "nobody@dest.test",
            status: "5.1.1".into(),
            diagnostic: Some("550 5.1.1 <nobody@dest.test>: no such user\r\nInjected: x"),
            remote_mta: Some("mx.dest.test"),
            reason: "remote said 550",
        }];
        dsn(
            "po.test",
            &original,
            &failed,
            SystemTime::UNIX_EPOCH,
            "id@po.test",
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
