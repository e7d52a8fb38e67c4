//! STUB (replaced by the real module).
use hedwig::envelope::Envelope;
use std::time::SystemTime;
/// f
#[derive(Debug)]
pub struct Failed<'a> {
    pub recipient: &'a str,
    pub status: String,
    pub diagnostic: Option<&'a str>,
    pub remote_mta: Option<&'a str>,
    pub reason: &'a str,
}
/// o
#[derive(Debug)]
pub struct Original<'a> {
    pub id: &'a str,
    pub from: &'a str,
    pub arrival: SystemTime,
    pub message: &'a [u8],
}
/// d
pub fn dsn(
    _h: &str,
    o: &Original<'_>,
    _f: &[Failed<'_>],
    _now: SystemTime,
    _mid: &str,
) -> (Envelope, Vec<u8>) {
    (
        Envelope {
            from: None,
            to: vec![hedwig::smtp::address::Address::parse(o.from).unwrap()],
        },
        b"Subject: bounce\r\n\r\nx\r\n".to_vec(),
    )
}
