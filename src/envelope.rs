//! The envelope: who a message is from and who it goes to, as given in
//! `MAIL FROM` and `RCPT TO`, apart from the message's own headers.

use crate::smtp::address::Address;

/// Sender and recipients of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path; `None` is the null sender `<>` (bounces).
    pub from: Option<Address>,
    /// Forward paths, at least one.
    pub to: Vec<Address>,
}

impl Envelope {
    /// The sender as text: the address, or empty for `<>`.
    pub fn sender(&self) -> &str {
        self.from.as_ref().map_or("", Address::as_str)
    }

    /// The recipient when there is exactly one: what a `Received:` field
    /// may name in `for`, so that no Bcc recipient is shown to the others.
    pub fn sole_recipient(&self) -> Option<&str> {
        match self.to.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        }
    }
}
