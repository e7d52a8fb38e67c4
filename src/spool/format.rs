//! The spool file's head: the envelope and the idempotency key as text
//! lines above the message, written and read back by the same module.

use std::io::{self, BufRead};

use crate::envelope::Envelope;
use crate::smtp::address::Address;

const MAGIC: &str = "hedwig-spool 1";

/// The head lines for `envelope` and `key`, ending with the blank line.
pub fn write_head(envelope: &Envelope, key: Option<&str>) -> Vec<u8> {
    let mut head = format!("{MAGIC}\nfrom {}\n", envelope.sender());
    for to in &envelope.to {
        head.push_str(&format!("to {to}\n"));
    }
    if let Some(key) = key {
        head.push_str(&format!("key {key}\n"));
    }
    head.push('\n');
    head.into_bytes()
}

/// What a spool file says about its message, above the message bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Sender and recipients.
    pub envelope: Envelope,
    /// The idempotency key the message arrived with.
    pub key: Option<String>,
}

/// Parses the head lines; returns them and the message's offset.
pub fn read_head(mut r: impl BufRead) -> io::Result<(Head, u64)> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool file: {what}"));
    let mut offset = 0u64;
    let mut line = String::new();
    let mut next = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = r.read_line(line)?;
        offset += n as u64;
        if !line.ends_with('\n') {
            return Err(bad("truncated header"));
        }
        line.pop();
        Ok(())
    };
    next(&mut line)?;
    if line != MAGIC {
        return Err(bad("not a hedwig spool file"));
    }
    let mut envelope = Envelope {
        from: None,
        to: Vec::new(),
    };
    let mut key = None;
    loop {
        next(&mut line)?;
        if line.is_empty() {
            break;
        }
        let parse = |s: &str| Address::parse(s).map_err(|e| bad(&e.to_string()));
        match line.split_once(' ') {
            Some(("from", "")) => envelope.from = None,
            Some(("from", a)) => envelope.from = Some(parse(a)?),
            Some(("to", a)) => envelope.to.push(parse(a)?),
            Some(("key", k)) => key = Some(k.to_string()),
            _ => return Err(bad("unknown header line")),
        }
    }
    Ok((Head { envelope, key }, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"hedwig-spool 1\nfrom",
            b"nope\n\n",
            b"hedwig-spool 1\nto @@\n\n",
        ] {
            assert!(read_head(bad).is_err());
        }
    }

    #[test]
    fn heads_read_back_as_written() {
        let envelope = Envelope {
            from: Some(Address::parse("s@x").unwrap()),
            to: vec![Address::parse("a@b").unwrap()],
        };
        let mut bytes = write_head(&envelope, Some("k"));
        let len = bytes.len() as u64;
        bytes.extend_from_slice(b"Subject: x\r\n");
        let (head, offset) = read_head(&bytes[..]).unwrap();
        assert_eq!(offset, len);
        assert_eq!(
            head,
            Head {
                envelope,
                key: Some("k".into())
            }
        );
    }
}
